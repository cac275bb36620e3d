"""keyward.keystore: CA keys in a PKCS#11 token (SoftHSM2 by default, any module by config).

Open a :class:`TokenKeyStore` from an :class:`HsmConfig`, generate or find keys by label, and pass the
returned keys to ``cryptography``'s builders: they sign inside the token and cannot be exported.
"""

from keyward.keystore.config import HsmConfig, load_hsm_config
from keyward.keystore.errors import (
    KeyExists,
    KeyNotExtractable,
    KeyNotFound,
    KeystoreClosed,
    KeystoreError,
    ModuleLoadError,
    TokenFull,
    TokenNotFound,
    UnsupportedOperation,
    WrongPin,
)
from keyward.keystore.evidence import Evidence
from keyward.keystore.keys import TokenECPrivateKey, TokenPrivateKey, TokenRSAPrivateKey, key_matches
from keyward.keystore.processes import SigningProcessDied
from keyward.keystore.softhsm import create_softhsm_store
from keyward.keystore.spec import KeySpec
from keyward.keystore.store import TokenKeyStore
from keyward.pki.keywrap import WrapMechanism

__all__ = [
    "Evidence",
    "HsmConfig",
    "KeyExists",
    "KeyNotExtractable",
    "KeyNotFound",
    "KeySpec",
    "KeystoreClosed",
    "KeystoreError",
    "ModuleLoadError",
    "SigningProcessDied",
    "TokenECPrivateKey",
    "TokenFull",
    "TokenKeyStore",
    "TokenNotFound",
    "TokenPrivateKey",
    "TokenRSAPrivateKey",
    "UnsupportedOperation",
    "WrapMechanism",
    "WrongPin",
    "create_softhsm_store",
    "key_matches",
    "load_hsm_config",
]
