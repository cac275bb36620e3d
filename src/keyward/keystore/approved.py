"""FIPS mode in the token: the PKCS#11 mechanisms keyward asks a token for, and the hashes it signs.

keyward asks the token for few mechanisms (key pair generation, PKCS#1 v1.5 and ECDSA signatures, the
key provisioning's unwraps); in FIPS mode each must be an approved one (NIST SP 800-131A Rev. 2) and the
hash a signature covers SHA-256, SHA-384 or SHA-512. Whether the token performs them in a validated
module is the token's matter: a FIPS 140-3 validated HSM, configured in its approved mode.
"""

from __future__ import annotations

from pkcs11 import Mechanism

from keyward import fips
from keyward.keystore.errors import UnsupportedOperation

#: The mechanisms FIPS mode lets keyward use: key pairs RSA (FIPS 186-5) and EC; signatures PKCS#1 v1.5
#: over the DigestInfo of an approved hash and ECDSA over an approved hash; RSA-OAEP key transport
#: (SP 800-56B) and AES key wrap with padding or AES-GCM (SP 800-38F, SP 800-38D) for provisioned keys.
APPROVED_MECHANISMS = frozenset(
    {
        Mechanism.RSA_PKCS_KEY_PAIR_GEN,
        Mechanism.EC_KEY_PAIR_GEN,
        Mechanism.RSA_PKCS,
        Mechanism.ECDSA,
        Mechanism.RSA_PKCS_OAEP,
        Mechanism.AES_KEY_WRAP_PAD,
        Mechanism.AES_KEY_WRAP_KWP,
        Mechanism.AES_GCM,
    }
)


def check_mechanism(mechanism: Mechanism, what: str) -> None:
    """In FIPS mode, ``UnsupportedOperation`` for a mechanism that is not approved."""
    if fips.enabled() and mechanism not in APPROVED_MECHANISMS:
        approved = ", ".join(sorted(m.name for m in APPROVED_MECHANISMS))
        raise UnsupportedOperation(
            fips.refusal(f"{what} needs the PKCS#11 mechanism {mechanism.name}", f"one of {approved}")
        )


def check_signature_hash(name: str, what: str) -> None:
    """In FIPS mode, ``UnsupportedOperation`` for a signature over another hash than SHA-256/384/512."""
    if fips.enabled() and name not in fips.APPROVED_SIGNATURE_HASHES:
        raise UnsupportedOperation(
            fips.refusal(f"{what} with {name.upper()}", "SHA-256, SHA-384 or SHA-512"),
        )
