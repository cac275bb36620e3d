"""Signing requests that carry SGX attestation evidence (tcs.md, "CSRs carrying attestation evidence").

An SGX workload (Intel's Istio, for one) puts three extensions in its CSR, each a DER string of base64
text: the SGX quote (1.3.6.1.4.1.54392.5.1283), the public key it quoted (…1284, the Crypto API Toolkit's
``CK_RSA_PUBLIC_KEY_PARAMS || exponent || modulus``) and the nonce bound into it (…1547). Such a request is
never signed before a key manager has verified the quote: the signing job hands the evidence back
instead of signing (``decode_and_sign`` in ``issuers.tcs.ca``), the operator asks for a verdict through a
QuoteAttestation, and only a request whose very quote was verified is signed, with the extension
…1283 = UTF8String "SGX Quote has been verified" added by the issuer. A request whose extensions are not
what they claim to be fails with the reason.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keyward.keystore.evidence import parse_quoted_public_key
from keyward.pki.errors import RequestError

OID_QUOTE = x509.ObjectIdentifier("1.3.6.1.4.1.54392.5.1283")
OID_QUOTE_PUBLIC_KEY = x509.ObjectIdentifier("1.3.6.1.4.1.54392.5.1284")
OID_QUOTE_NONCE = x509.ObjectIdentifier("1.3.6.1.4.1.54392.5.1547")
VERIFIED_MESSAGE = "SGX Quote has been verified"
QUOTE_VERSION = "ECDSA Quote 3"

#: sgx_quote_t version 3: a 48-byte header and a 384-byte report body, then the signature data's length
#: (uint32, little-endian) and the signature data itself. Attestation key types: ECDSA P-256 (2), P-384 (3).
_HEADER = struct.Struct("<HH")
_SIGNATURE_LENGTH = struct.Struct("<I")
_SIGNATURE_LENGTH_AT = 48 + 384
_ECDSA_KEY_TYPES = (2, 3)
_STRING_TYPES = (core.UTF8String, core.PrintableString, core.IA5String)
_NAMES = {
    OID_QUOTE: "SGX quote",
    OID_QUOTE_PUBLIC_KEY: "SGX quote public key",
    OID_QUOTE_NONCE: "SGX quote nonce",
}


@dataclass(frozen=True)
class QuoteEvidence:
    """What a request says about itself: the quote, the public key it is over (PEM), and the nonce."""

    quote: bytes
    public_key_pem: bytes
    nonce: bytes


def verified_extension() -> x509.Extension[x509.ExtensionType]:
    """…1283 = UTF8String "SGX Quote has been verified", not critical: what the seed adds on success."""
    value = x509.UnrecognizedExtension(OID_QUOTE, core.UTF8String(VERIFIED_MESSAGE).dump())
    return x509.Extension(OID_QUOTE, False, value)


def quote_evidence(csr: x509.CertificateSigningRequest) -> QuoteEvidence | None:
    """The SGX evidence ``csr`` carries, None when it carries no quote; ``RequestError`` when it is not
    what its extensions claim (not base64 text, not a quote, not a public key, or a part missing)."""
    try:
        extensions = {extension.oid: extension.value for extension in csr.extensions}
    except (ValueError, x509.DuplicateExtension) as exc:
        raise RequestError(f"the request's extensions cannot be read: {exc}") from None
    if OID_QUOTE not in extensions:
        return None
    parts = {}
    for oid, name in _NAMES.items():
        value = extensions.get(oid)
        if value is None:
            raise RequestError(
                f"the request carries an SGX quote ({OID_QUOTE.dotted_string}) but no {name} extension "
                f"({oid.dotted_string}); an SGX workload sends all three"
            )
        parts[oid] = _base64_string(value, name, oid)
    quote = parts[OID_QUOTE]
    problem = _not_a_quote(quote)
    if problem:
        raise RequestError(
            f"the request's SGX quote extension ({OID_QUOTE.dotted_string}) does not hold an SGX ECDSA "
            f"quote: {problem}"
        )
    try:
        public_key, rest = parse_quoted_public_key(parts[OID_QUOTE_PUBLIC_KEY])
    except ValueError as exc:
        raise RequestError(
            f"the request's SGX quote public key extension ({OID_QUOTE_PUBLIC_KEY.dotted_string}) does not "
            f"hold an RSA public key as CK_RSA_PUBLIC_KEY_PARAMS || exponent || modulus: {exc}"
        ) from None
    if rest or public_key.key_size < 2048:
        what = "more than an RSA public key" if rest else f"an RSA-{public_key.key_size} key, under 2048 bits"
        raise RequestError(
            f"the request's SGX quote public key extension ({OID_QUOTE_PUBLIC_KEY.dotted_string}) "
            f"holds {what}"
        )
    nonce = parts[OID_QUOTE_NONCE]
    if not nonce:
        raise RequestError(
            f"the request's SGX quote nonce extension ({OID_QUOTE_NONCE.dotted_string}) is empty"
        )
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return QuoteEvidence(quote=quote, public_key_pem=pem, nonce=nonce)


def _base64_string(value: x509.ExtensionType, name: str, oid: x509.ObjectIdentifier) -> bytes:
    where = f"the request's {name} extension ({oid.dotted_string})"
    if not isinstance(value, x509.UnrecognizedExtension):
        raise RequestError(f"{where} is not an SGX extension")
    try:
        parsed = core.Asn1Value.load(value.value, strict=True)
        if not isinstance(parsed, _STRING_TYPES):
            raise ValueError(f"a {type(parsed).__name__}")
        text = str(parsed.native)
    except ValueError as exc:
        raise RequestError(f"{where} is not a DER string of base64 text ({exc})") from None
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{where} is a string but not base64 text") from None


def _not_a_quote(quote: bytes) -> str | None:
    if len(quote) < _SIGNATURE_LENGTH_AT + _SIGNATURE_LENGTH.size:
        return f"{len(quote)} bytes, shorter than a quote's header and report body"
    version, key_type = _HEADER.unpack_from(quote)
    if version != 3 or key_type not in _ECDSA_KEY_TYPES:
        return f"version {version}, attestation key type {key_type} (expected version 3, ECDSA)"
    (signature_length,) = _SIGNATURE_LENGTH.unpack_from(quote, _SIGNATURE_LENGTH_AT)
    expected = _SIGNATURE_LENGTH_AT + _SIGNATURE_LENGTH.size + signature_length
    if signature_length == 0 or expected != len(quote):
        return f"it states {signature_length} bytes of signature data, but is {len(quote)} bytes long"
    return None
