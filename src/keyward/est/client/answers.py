"""Reading the bodies of EST answers as a client, leniently where other servers legitimately differ.

Certificates are taken out of the PKCS#7 with asn1crypto rather than ``cryptography``: a certs-only PKCS#7
is a SET, and servers that write the chain in order (BER, not sorted DER) are common; ``cryptography``
only accepts those through a deprecated fallback. Base64 is what RFC 8951 requires, binary DER is what it
says some servers sent, and both are read.
"""

from __future__ import annotations

from collections.abc import Sequence

from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from keyward.est import wire
from keyward.est.client.errors import EstError
from keyward.est.client.http import Reply

PKCS7_TYPES = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
_ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError)


def wrong_type(where: str, reply: Reply, expected: str) -> EstError:
    answered = reply.media_type[:60] or "no Content-Type"
    return EstError(
        "protocol",
        f"{where}: the server answered {answered}, not {expected}; check that the URL (host, port, label) "
        "points at an EST server",
        status=reply.status,
    )


def certificates_of(reply: Reply, where: str) -> list[x509.Certificate]:
    """The certificates of a certs-only PKCS#7 answer, in the order they arrived."""
    if reply.media_type not in PKCS7_TYPES:
        raise wrong_type(where, reply, "application/pkcs7-mime")
    try:
        der = wire.decode_base64(reply.body, "a DER certs-only PKCS#7")
    except wire.WireError as exc:
        if not reply.body.startswith(b"\x30"):
            raise EstError("protocol", f"{where}: {exc}", status=reply.status) from None
        der = reply.body
    try:
        return pkcs7_certificates(der)
    except wire.WireError as exc:
        raise EstError("protocol", f"{where}: {exc}", status=reply.status) from None


def pkcs7_certificates(der: bytes) -> list[x509.Certificate]:
    """Certificates of a certs-only PKCS#7 (SignedData) in DER or BER; ``WireError`` when there are none."""
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise wire.WireError(f"the PKCS#7 is {info['content_type'].native}, not signed data (certs-only)")
        choices = info["content"]["certificates"]
        encoded = [choice.chosen.dump() for choice in choices if choice.name == "certificate"]
        certificates = [x509.load_der_x509_certificate(bytes(d)) for d in encoded]
    except wire.WireError:
        raise
    except _ASN1_ERRORS as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise wire.WireError(f"the body is not a certs-only PKCS#7 ({reason})") from None
    if not certificates:
        raise wire.WireError("the certs-only PKCS#7 holds no certificate")
    return certificates


def chain_for_key(
    certificates: Sequence[x509.Certificate], public_key: PublicKeyTypes, where: str, whose: str
) -> list[x509.Certificate]:
    """The certificate for ``public_key`` first, then its issuers, then anything else the server sent.

    The PKCS#7 is a SET, so the leaf may arrive anywhere; the key of the request is what identifies it.
    """
    wanted = _spki(public_key)
    leaf = next((c for c in certificates if _spki(c.public_key()) == wanted), None)
    if leaf is None:
        raise EstError(
            "protocol",
            f"{where}: none of the {len(certificates)} certificate(s) returned carries the public key of "
            f"{whose}; the server's answer cannot be used",
            status=200,
        )
    chain = [leaf]
    remaining = [c for c in certificates if c is not leaf]
    current = leaf
    while current.issuer != current.subject:
        issuer = next((c for c in remaining if c.subject == current.issuer), None)
        if issuer is None:
            break
        chain.append(issuer)
        remaining.remove(issuer)
        current = issuer
    return chain + remaining


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
