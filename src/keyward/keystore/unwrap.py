"""Key provisioning: a wrapping key pair in the token, and unwrapping a CA key sent by a key manager.

The wrapped key is ``WSWK || WKEY`` (tcs.md): WSWK is a fresh AES-256 key encrypted with RSA-OAEP
(SHA-1, MGF1-SHA1, empty label) under the wrapping public key; WKEY is the CA key's PKCS#8 DER wrapped
under that AES key with RFC 5649 key wrap with padding, or with AES-GCM (12-byte IV || ciphertext || tag).
Both steps are C_UnwrapKey calls, so neither the AES key nor the CA key is ever in keyward's memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Literal

import pkcs11.exceptions as p11
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import MGF, Attribute, GCMParams, KeyType, Mechanism, ObjectClass

from keyward.keystore.errors import KeyNotFound, KeystoreError, UnsupportedOperation
from keyward.keystore.objects import (
    curve_of,
    ec_parameters,
    new_key_id,
    private_key_template,
    public_key_template,
    rsa_public_key,
)
from keyward.keystore.sessions import ThreadSession
from keyward.keystore.signing import SIGNATURE_MECHANISMS
from keyward.keystore.spec import KeySpec

WRAPPING_KEY_BITS = 3072
GCM_IV_BYTES = 12
GCM_TAG_BITS = 128
#: RSA-OAEP with SHA-1 and MGF1-SHA1 and no label, as the key manager uses it.
OAEP_SHA1 = (Mechanism.SHA_1, MGF.SHA1, None)
#: What a wrong or corrupt wrapped key looks like to the token.
_BAD_WRAPPED_KEY = (
    p11.WrappedKeyInvalid,
    p11.WrappedKeyLenRange,
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.DataInvalid,
    p11.DataLenRange,
    p11.TemplateInconsistent,
    p11.AttributeValueInvalid,
)
#: SoftHSM2 reports failed RSA-OAEP decryption and a failed key wrap integrity check as CKR_GENERAL_ERROR.
_UNWRAP_FAILED = (*_BAD_WRAPPED_KEY, p11.GeneralError, p11.FunctionFailed)


def wrapping_label(label: str) -> str:
    """The wrapping key's CKA_LABEL: apart from the CA key's, with '#', which no signer name contains."""
    return f"{label}#wrapping"


def _wrapping_private_keys(session: ThreadSession, label: str) -> list[Any]:
    return session.find(
        {
            Attribute.CLASS: ObjectClass.PRIVATE_KEY,
            Attribute.LABEL: wrapping_label(label),
            Attribute.UNWRAP: True,
        }
    )


def generate_wrapping_key(
    session: ThreadSession, label: str, exists: Callable[[str], KeystoreError], *, token_object: bool = True
) -> rsa.RSAPublicKey:
    """An RSA-3072 key pair whose private half can only unwrap and never leaves the token. A session
    object (``token_object`` false) where the token quotes session keys only (see ``evidence``)."""
    if _wrapping_private_keys(session, label):
        raise exists(wrapping_label(label))
    key_id = new_key_id()
    public, _ = session.session.generate_keypair(
        KeyType.RSA,
        WRAPPING_KEY_BITS,
        store=token_object,
        public_template=public_key_template(wrapping_label(label), key_id, verify=False, wrap=True),
        private_template=private_key_template(
            wrapping_label(label), key_id, Mechanism.RSA_PKCS_OAEP, sign=False, unwrap=True
        ),
    )
    return rsa_public_key(public)


def wrapping_public_key(session: ThreadSession, label: str) -> rsa.RSAPublicKey | None:
    found = _wrapping_private_keys(session, label)
    return rsa_public_key(found[0]) if found else None


def delete_wrapping_key(session: ThreadSession, label: str) -> bool:
    doomed = [
        found
        for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY)
        for found in session.find({Attribute.CLASS: object_class, Attribute.LABEL: wrapping_label(label)})
    ]
    for found in doomed:
        found.destroy()
    return bool(doomed)


def unwrap_private_key(
    session: ThreadSession,
    label: str,
    wrapped: bytes,
    mechanism: Literal["aes_key_wrap_pad", "aes_gcm"],
    spec: KeySpec,
) -> bytes:
    """Unwrap the CA key into the token labelled ``label``; returns its new CKA_ID."""
    found = _wrapping_private_keys(session, label)
    if not found:
        raise KeyNotFound(
            f"there is no wrapping key for '{label}' in the token",
            "generate one (generate_wrapping_key) and have the key manager wrap the CA key for it",
        )
    wrapping_key = found[0]
    split = len(wrapping_key[Attribute.MODULUS])
    if len(wrapped) <= split:
        raise KeystoreError(
            f"the wrapped key for '{label}' is {len(wrapped)} bytes, too short for WSWK || WKEY",
            f"send the {split}-byte RSA-OAEP encrypted AES key followed by the wrapped PKCS#8 key",
        )
    try:
        transport_key = wrapping_key.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.AES,
            wrapped[:split],
            mechanism=Mechanism.RSA_PKCS_OAEP,
            mechanism_param=OAEP_SHA1,
            store=False,
            template={
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.UNWRAP: True,
                Attribute.ENCRYPT: False,
                Attribute.DECRYPT: False,
                Attribute.WRAP: False,
                Attribute.SIGN: False,
                Attribute.VERIFY: False,
                Attribute.DERIVE: False,
            },
        )
    except _UNWRAP_FAILED as exc:
        raise _not_for_this_key(label, "the AES key (WSWK)", exc) from None
    try:
        return _unwrap_ca_key(session, transport_key, label, wrapped[split:], mechanism, spec)
    finally:
        with contextlib.suppress(p11.ObjectHandleInvalid, p11.KeyHandleInvalid):
            transport_key.destroy()  # the SGX toolkit destroys an unwrapping key itself once it unwrapped


def _unwrap_ca_key(
    session: ThreadSession,
    transport_key: Any,
    label: str,
    wrapped_key: bytes,
    mechanism: Literal["aes_key_wrap_pad", "aes_gcm"],
    spec: KeySpec,
) -> bytes:
    parameter: Any = None
    if mechanism == "aes_key_wrap_pad":
        # RFC 5649 is CKM_AES_KEY_WRAP_KWP since PKCS#11 3.0; SoftHSM2 offers it as CKM_AES_KEY_WRAP_PAD.
        offered = session.session.token.slot.get_mechanisms()
        wrap_mechanism = (
            Mechanism.AES_KEY_WRAP_KWP
            if Mechanism.AES_KEY_WRAP_KWP in offered
            else Mechanism.AES_KEY_WRAP_PAD
        )
        data = wrapped_key
    elif mechanism == "aes_gcm":
        wrap_mechanism = Mechanism.AES_GCM
        parameter = GCMParams(wrapped_key[:GCM_IV_BYTES], None, GCM_TAG_BITS)
        data = wrapped_key[GCM_IV_BYTES:]
    else:
        raise ValueError(
            f"key wrap mechanism {mechanism!r} is not supported: use aes_key_wrap_pad or aes_gcm"
        )
    key_id = new_key_id()
    key_type = KeyType.RSA if spec.algorithm == "RSA" else KeyType.EC
    try:
        key = transport_key.unwrap_key(
            ObjectClass.PRIVATE_KEY,
            key_type,
            data,
            mechanism=wrap_mechanism,
            mechanism_param=parameter,
            store=True,
            template=private_key_template(label, key_id, SIGNATURE_MECHANISMS[key_type]),
        )
    except (p11.MechanismInvalid, p11.MechanismParamInvalid):
        raise UnsupportedOperation(
            f"the token cannot unwrap keys with {mechanism} ({wrap_mechanism.name})",
            "have the key manager wrap with the other mechanism (--key-wrap-mechanism aes_key_wrap_pad)",
        ) from None
    except _UNWRAP_FAILED as exc:
        raise _not_for_this_key(label, f"the {spec} CA key (WKEY)", exc) from None
    problem = _spec_mismatch(key, spec)
    if problem:
        key.destroy()
        raise KeystoreError(
            f"the unwrapped key for '{label}' is {problem}, not the expected {spec}",
            "have the key manager wrap the CA key of the certificate it sends",
        )
    return key_id


def _spec_mismatch(key: Any, spec: KeySpec) -> str | None:
    if spec.algorithm == "RSA":
        bits = rsa_public_key(key).key_size
        return None if bits == spec.size else f"RSA-{bits}"
    curve = curve_of(key[Attribute.EC_PARAMS])
    return None if key[Attribute.EC_PARAMS] == ec_parameters(spec.curve) else f"ECDSA on {curve.name}"


def _not_for_this_key(label: str, what: str, exc: Exception) -> KeystoreError:
    return KeystoreError(
        f"the token could not unwrap {what} for '{label}' ({type(exc).__name__}): it was not wrapped for "
        "this issuer's wrapping key, or is corrupt",
        "have the key manager wrap it again for the wrapping public key in the issuer's QuoteAttestation",
    )
