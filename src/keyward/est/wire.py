"""RFC 7030 message bodies, both ways, for the EST server and for EST clients.

Every body on the EST wire is base64 (RFC 8951): receivers must accept it with or without line breaks and
must not rely on ``Content-Transfer-Encoding``. Everything that can be wrong with received bytes is raised
as ``WireError``, so that a server can answer 400 and a client can report a broken server, and nothing
else escapes from the decoders. Messages never quote the offending bytes: they may hold keys or secrets.
"""

from __future__ import annotations

import base64
import binascii
import email.policy
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.encoders import encode_noop
from email.message import Message
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.parser import BytesParser
from email.utils import parsedate_to_datetime

from asn1crypto import core
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

#: Where every EST operation lives (RFC 7030 §3.2.2): ``/.well-known/est[/LABEL]/OPERATION``.
WELL_KNOWN = "/.well-known/est"
PKCS10 = "application/pkcs10"
PKCS7_CERTS_ONLY = "application/pkcs7-mime; smime-type=certs-only"
PKCS8 = "application/pkcs8"
CSRATTRS = "application/csrattrs"
MULTIPART_MIXED = "multipart/mixed"

_LINE_LENGTH = 64
_WHITESPACE = re.compile(rb"[ \t\r\n\v\f]+")
_DELTA_SECONDS = re.compile(r"[0-9]+")
DEFAULT_MAX_RETRY_AFTER = 24 * 3600.0


class WireError(ValueError):
    """Received bytes are not the EST message they should be; the message says which and what was expected."""


# --- base64 ---------------------------------------------------------------------------------------------


def encode_base64(der: bytes) -> bytes:
    """Base64 with 64-column lines, as RFC 7030's examples and most EST peers expect."""
    text = base64.b64encode(der)
    lines = [text[i : i + _LINE_LENGTH] for i in range(0, len(text), _LINE_LENGTH)]
    return b"\n".join(lines) + b"\n"


def decode_base64(body: bytes | str, what: str) -> bytes:
    """Decode a base64 body; whitespace and line breaks anywhere are ignored, missing padding is tolerated.

    ``what`` names the expected content for the error message (for example "a PKCS#10 request").
    """
    if isinstance(body, str):
        try:
            body = body.encode("ascii")
        except UnicodeEncodeError:
            raise WireError(f"the body must be base64 of {what}, but it holds non-ASCII characters") from None
    compact = _WHITESPACE.sub(b"", body)
    if not compact:
        raise WireError(f"the body is empty; it must be base64 of {what}")
    if compact.startswith(b"-----BEGIN"):
        raise WireError(
            f"the body is PEM; EST bodies are base64 of DER {what}: drop the -----BEGIN/END lines"
        )
    if len(compact) % 4 == 1:
        raise WireError(f"the body is not valid base64 (truncated); it must be base64 of {what}")
    compact += b"=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise WireError(f"the body is not valid base64; it must be base64 of {what}") from None


# --- PKCS#10 --------------------------------------------------------------------------------------------


def encode_csr(csr: x509.CertificateSigningRequest) -> bytes:
    """The ``application/pkcs10`` body of ``csr``."""
    return encode_base64(csr.public_bytes(serialization.Encoding.DER))


def decode_csr(body: bytes | str) -> x509.CertificateSigningRequest:
    """Parse an ``application/pkcs10`` body; subject, extensions and key are parsed now, not lazily later.

    The signature is not checked here (see ``csr_signature_valid``): a decoder only judges the format.
    """
    der = decode_base64(body, "a DER PKCS#10 request")
    try:
        csr = x509.load_der_x509_csr(der)
        _ = csr.subject
        _ = csr.extensions
        _ = csr.public_key()
        _ = csr.signature_hash_algorithm
    except (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension, x509.InvalidVersion) as exc:
        raise WireError(f"the body is not a usable DER PKCS#10 request ({_reason(exc)})") from None
    return csr


def csr_signature_valid(csr: x509.CertificateSigningRequest) -> bool:
    """Whether the request is signed by the key it names (proof of possession, RFC 7030 §3.4)."""
    try:
        return csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False


# --- certs-only PKCS#7 ----------------------------------------------------------------------------------


def encode_certs_only(certificates: Sequence[x509.Certificate]) -> bytes:
    """The ``application/pkcs7-mime; smime-type=certs-only`` body: a degenerate SignedData, base64."""
    if not certificates:
        raise WireError("a certs-only PKCS#7 needs at least one certificate")
    return encode_base64(pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER))


def decode_certs_only(body: bytes | str) -> list[x509.Certificate]:
    """The certificates of a certs-only PKCS#7 body, in the order they appear.

    That order means nothing: the certificates are a SET OF, which DER sorts (see ``leaf_first``).
    """
    der = decode_base64(body, "a DER certs-only PKCS#7")
    try:
        certificates = pkcs7.load_der_pkcs7_certificates(der)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise WireError(f"the body is not a DER certs-only PKCS#7 ({_reason(exc)})") from None
    if not certificates:
        raise WireError("the certs-only PKCS#7 holds no certificate")
    return certificates


def leaf_first(certificates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """Order certificates as a chain: the one that issued none of the others first, then its issuers.

    A certs-only PKCS#7 carries a SET, so an enrollment response's leaf is not necessarily the first
    certificate on the wire. Certificates that are not on the leaf's path keep their order at the end.
    """
    remaining = list(certificates)
    issuers = {c.issuer for c in remaining if c.issuer != c.subject}
    leaves = [c for c in remaining if c.subject not in issuers] or remaining[:1]
    chain: list[x509.Certificate] = []
    current = leaves[0] if leaves else None
    while current is not None and current in remaining:
        chain.append(current)
        remaining.remove(current)
        if current.issuer == current.subject:
            break
        current = next((c for c in remaining if c.subject == current.issuer), None)
    return chain + remaining


# --- CsrAttrs -------------------------------------------------------------------------------------------


class _AttributeValues(core.SetOf):  # type: ignore[misc]
    _child_spec = core.Any


class _Attribute(core.Sequence):  # type: ignore[misc]
    _fields = [("type", core.ObjectIdentifier), ("values", _AttributeValues)]


class _AttrOrOid(core.Choice):  # type: ignore[misc]
    _alternatives = [("oid", core.ObjectIdentifier), ("attribute", _Attribute)]


class _CsrAttrs(core.SequenceOf):  # type: ignore[misc]
    _child_spec = _AttrOrOid


@dataclass(frozen=True)
class CsrAttribute:
    """An ``Attribute`` of a CsrAttrs: a type and its values, each value one DER-encoded ASN.1 element.

    Values are kept sorted by their encoding, the order DER gives a SET OF, so that equal attributes
    compare equal whichever order they were written in.
    """

    oid: x509.ObjectIdentifier
    values: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.values:
            raise WireError(
                f"attribute {self.oid.dotted_string} has no value; an Attribute needs at least one"
            )
        for value in self.values:
            _check_single_element(value, self.oid)
        object.__setattr__(self, "values", tuple(sorted(self.values)))


AttrOrOid = x509.ObjectIdentifier | CsrAttribute


@dataclass(frozen=True)
class CsrAttrs:
    """What a CA asks a client to put into its requests (RFC 7030 §4.5): OIDs and attributes, in order."""

    items: tuple[AttrOrOid, ...] = ()

    def to_der(self) -> bytes:
        """DER of the ``CsrAttrs`` SEQUENCE OF AttrOrOID."""
        return bytes(_CsrAttrs([_to_asn1(item) for item in self.items]).dump(force=True))

    @classmethod
    def from_der(cls, der: bytes) -> CsrAttrs:
        """Parse DER ``CsrAttrs``; any structural problem is a ``WireError``."""
        try:
            parsed = _CsrAttrs.load(der, strict=True)
            return cls(tuple(_from_asn1(choice) for choice in parsed))
        except WireError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
            raise WireError(
                f"the body is not DER CsrAttrs, a SEQUENCE OF AttrOrOID ({_reason(exc)})"
            ) from None


def oid_value(oid: x509.ObjectIdentifier) -> bytes:
    """DER of an OBJECT IDENTIFIER, for attribute values that are OIDs (like a curve for ecPublicKey)."""
    return bytes(core.ObjectIdentifier(oid.dotted_string).dump())


def encode_csrattrs(attrs: CsrAttrs) -> bytes:
    """The ``application/csrattrs`` body."""
    return encode_base64(attrs.to_der())


def decode_csrattrs(body: bytes | str) -> CsrAttrs:
    """Parse an ``application/csrattrs`` body."""
    return CsrAttrs.from_der(decode_base64(body, "DER CsrAttrs"))


def _check_single_element(value: bytes, oid: x509.ObjectIdentifier) -> None:
    try:
        core.Any.load(value, strict=True)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        raise WireError(
            f"a value of attribute {oid.dotted_string} is not one DER-encoded ASN.1 element"
        ) from None


def _to_asn1(item: AttrOrOid) -> _AttrOrOid:
    if isinstance(item, x509.ObjectIdentifier):
        return _AttrOrOid(name="oid", value=core.ObjectIdentifier(item.dotted_string))
    values = _AttributeValues([core.Any.load(value) for value in item.values])
    attribute = _Attribute({"type": core.ObjectIdentifier(item.oid.dotted_string), "values": values})
    return _AttrOrOid(name="attribute", value=attribute)


def _from_asn1(choice: _AttrOrOid) -> AttrOrOid:
    if choice.name == "oid":
        return x509.ObjectIdentifier(choice.chosen.dotted)
    attribute = choice.chosen
    values = tuple(bytes(value.dump()) for value in attribute["values"])
    return CsrAttribute(x509.ObjectIdentifier(attribute["type"].dotted), values)


# --- serverkeygen multipart -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerKeygenResponse:
    """The private key (DER PKCS#8) and certificate(s) of a /serverkeygen response.

    ``repr`` leaves the key out so that the object can show up in logs and tracebacks.
    """

    private_key_pkcs8: bytes
    certificates: tuple[x509.Certificate, ...]

    def __repr__(self) -> str:
        return f"ServerKeygenResponse(private_key_pkcs8=<{len(self.private_key_pkcs8)} bytes>, " + (
            f"certificates={[c.subject.rfc4514_string() for c in self.certificates]})"
        )


def encode_serverkeygen(
    private_key_pkcs8: bytes, certificates: Sequence[x509.Certificate]
) -> tuple[str, bytes]:
    """Build the ``multipart/mixed`` /serverkeygen response: returns (Content-Type header value, body)."""
    key_part = _base64_part(encode_base64(private_key_pkcs8), "pkcs8")
    certs_part = _base64_part(encode_certs_only(certificates), "pkcs7-mime")
    # Written out rather than set_param(), which would quote the value: some EST clients compare verbatim.
    certs_part.replace_header("Content-Type", PKCS7_CERTS_ONLY)
    # Base64 has no '-', so this boundary can never occur inside the parts.
    boundary = f"est-{secrets.token_hex(16)}"
    message = MIMEMultipart("mixed", boundary=boundary, _subparts=[key_part, certs_part])
    flat = message.as_bytes(policy=email.policy.HTTP)
    _, _, body = flat.partition(b"\r\n\r\n")
    return f'{MULTIPART_MIXED}; boundary="{boundary}"', body


def decode_serverkeygen(content_type: str, body: bytes) -> ServerKeygenResponse:
    """Parse a /serverkeygen response given its Content-Type header value (which carries the boundary)."""
    if "\r" in content_type or "\n" in content_type:
        raise WireError("the Content-Type header value holds a line break")
    try:
        header = content_type.encode("ascii")
    except UnicodeEncodeError:
        raise WireError("the Content-Type header value holds non-ASCII characters") from None
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        b"MIME-Version: 1.0\r\nContent-Type: " + header + b"\r\n\r\n" + body
    )
    if message.get_content_type() != MULTIPART_MIXED:
        raise WireError(f"a /serverkeygen response must be {MULTIPART_MIXED}, not {content_type[:60]!r}")
    if not message.is_multipart() or message.get_boundary() is None or message.defects:
        raise WireError("the multipart/mixed body is malformed (missing or unterminated boundary)")
    key_der: bytes | None = None
    certificates: list[x509.Certificate] | None = None
    for part in _parts(message):
        kind = part.get_content_type()
        if kind == PKCS8 and key_der is None:
            key_der = _check_pkcs8(decode_base64(_payload_text(part), "a DER PKCS#8 private key"))
        elif kind == "application/pkcs7-mime" and certificates is None:
            if (part.get_param("smime-type") or "certs-only") != "certs-only":
                raise WireError("only plain application/pkcs8 keys are supported, not encrypted server keys")
            certificates = decode_certs_only(_payload_text(part))
    if key_der is None or certificates is None:
        raise WireError(
            "a /serverkeygen response needs an application/pkcs8 part and an application/pkcs7-mime part"
        )
    return ServerKeygenResponse(key_der, tuple(certificates))


def _base64_part(text: bytes, subtype: str) -> MIMEApplication:
    part = MIMEApplication(text.decode("ascii"), subtype, _encoder=encode_noop)
    del part["MIME-Version"]
    part["Content-Transfer-Encoding"] = "base64"
    return part


def _parts(message: Message) -> Iterable[Message]:
    payload = message.get_payload()
    if not isinstance(payload, list):
        raise WireError("the multipart/mixed body holds no parts")
    return [part for part in payload if isinstance(part, Message)]


def _payload_text(part: Message) -> str:
    payload = part.get_payload()
    if not isinstance(payload, str):
        raise WireError(f"the {part.get_content_type()} part is itself multipart")
    return payload


def _check_pkcs8(der: bytes) -> bytes:
    try:
        serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise WireError("the application/pkcs8 part is not an unencrypted DER PKCS#8 private key") from None
    return der


# --- Retry-After ----------------------------------------------------------------------------------------


def parse_retry_after(
    value: str, *, now: datetime | None = None, max_seconds: float = DEFAULT_MAX_RETRY_AFTER
) -> float:
    """Seconds to wait from a Retry-After value (delta-seconds or HTTP-date), clamped to [0, max_seconds].

    The bound protects a client from a server (or a typo) telling it to wait for years.
    """
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        # More than 15 digits is beyond any sensible bound; int() of huge strings is also refused by Python.
        return max_seconds if len(text) > 15 else float(min(int(text), max_seconds))
    try:
        when = parsedate_to_datetime(text)
    except (ValueError, TypeError, IndexError, OverflowError):
        raise WireError(
            f"Retry-After {value[:40]!r} is neither delta-seconds nor an HTTP date "
            "(like 'Wed, 21 Oct 2015 07:28:00 GMT')"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, min(delta, max_seconds))


def _reason(exc: Exception) -> str:
    """A short, secret-free reason: cryptography's messages name structures, never the input bytes."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]
