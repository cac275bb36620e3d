"""EST issuers (EstIssuer, EstClusterIssuer): the spec, the credentials, and the *check*.

An EST issuer is usable when its spec is sound, its credential Secrets exist with the right type and
content, and the EST server — authenticated through the issuer's explicit trust anchors (``spec.cacert``,
RFC 7030 §3.6.1) — answers /cacerts with a bundle that contains, or certifies, every one of those anchors,
or whose every certificate those anchors certify (the seed's rule: a root CA as ``cacert`` and a server
distributing its intermediates). That rule ties the TLS identity of the server to the CA the user meant: a
server that authenticates with our anchors but distributes another CA is taken out of service instead of
being trusted silently.

Nothing here knows Kubernetes beyond a Secret's view (``issuers.objects.SecretView``): Secrets arrive
through a lookup function and
the EST server through an object with ``cacerts()``, so the rules are unit-tested without either.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization

from keyward.est.client import BasicAuth, ClientCertificate, DigestAuth, EstEndpoint, EstError
from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.objects import SecretView
from keyward.kube.resources import BASIC_AUTH_SECRET_TYPE, TLS_SECRET_TYPE

AuthMethod = Literal["Basic", "Digest", "ClientCertificate"]
AUTH_METHODS: tuple[AuthMethod, ...] = ("Basic", "Digest", "ClientCertificate")

#: Reasons on the Ready condition for each kind of EstError met while fetching /cacerts.
_ERROR_REASONS: dict[str, str] = {
    "tls": "TLSError",
    "connect": "ConnectionFailed",
    "timeout": "Timeout",
    "server": "ServerError",
    "protocol": "ProtocolError",
    "redirect": "RedirectRefused",
    "too-large": "ResponseTooLarge",
    "client": "ServerRefused",
    "auth": "Unauthorized",
    "config": "InvalidSpec",
}

SecretLookup = Callable[[str], Awaitable[SecretView | None]]
"""Finds a Secret by name in the issuer's Secret namespace; ``None`` when it does not exist."""


@dataclass(frozen=True)
class EstIssuerSpec:
    """An EstIssuer/EstClusterIssuer spec with its defaults applied and its values checked."""

    endpoint: EstEndpoint
    secret_name: str = ""
    client_cert_secret_name: str = ""
    auth_method: AuthMethod = "ClientCertificate"

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> EstIssuerSpec:
        """Raises ``IssuerNotReady("InvalidSpec", ...)`` naming the field and the fix."""
        anchors = parse_trust_anchors(spec.get("cacert"))
        port = spec.get("port", 443)
        if isinstance(port, bool) or not isinstance(port, int):
            raise IssuerNotReady("InvalidSpec", f"spec.port {str(port)[:20]!r} is not a number in 1-65535")
        try:
            endpoint = EstEndpoint(
                str(spec.get("host") or ""), port, str(spec.get("label") or ""), tuple(anchors)
            )
        except EstError as exc:
            raise IssuerNotReady("InvalidSpec", exc.message) from None
        secret_name = str(spec.get("secretName") or "")
        client_cert_secret_name = str(spec.get("clientCertSecretName") or "")
        method = spec.get("authMethod") or ("Basic" if secret_name else "ClientCertificate")
        if method not in AUTH_METHODS:
            raise IssuerNotReady(
                "InvalidSpec", f"spec.authMethod {str(method)[:40]!r} is not one of {', '.join(AUTH_METHODS)}"
            )
        if method in ("Basic", "Digest") and not secret_name:
            raise IssuerNotReady(
                "InvalidSpec",
                f"spec.authMethod {method} needs spec.secretName: the name of a "
                f"{BASIC_AUTH_SECRET_TYPE} Secret with username and password",
            )
        if method == "ClientCertificate" and not client_cert_secret_name:
            raise IssuerNotReady(
                "InvalidSpec",
                "enrollment needs credentials: set spec.secretName (a kubernetes.io/basic-auth Secret) or "
                f"spec.clientCertSecretName (a {TLS_SECRET_TYPE} Secret with the TLS client certificate)",
            )
        return cls(endpoint, secret_name, client_cert_secret_name, method)

    @property
    def trust_anchors(self) -> tuple[x509.Certificate, ...]:
        return self.endpoint.trust_anchors

    @property
    def secret_names(self) -> tuple[str, ...]:
        """The Secrets this issuer reads (a change to any of them calls for a re-check)."""
        return tuple(n for n in (self.secret_name, self.client_cert_secret_name) if n)


def parse_trust_anchors(value: Any) -> list[x509.Certificate]:
    """``spec.cacert``: base64 of PEM certificates (base64 of one DER certificate is accepted too)."""
    text = "".join(str(value or "").split())
    if not text:
        raise IssuerNotReady(
            "InvalidSpec", "spec.cacert is empty; put base64 of the EST server's CA certificates (PEM) there"
        )
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise IssuerNotReady(
            "InvalidSpec", "spec.cacert is not base64; encode the PEM file with `base64 -w0 ca.pem`"
        ) from None
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificates(raw)
        return [x509.load_der_x509_certificate(raw)]
    except ValueError:
        raise IssuerNotReady(
            "InvalidSpec",
            "spec.cacert does not hold PEM certificates; it must be base64 of the PEM CA certificate(s) "
            "of the EST server",
        ) from None


@dataclass(frozen=True)
class EstCredentials:
    """How enrollments authenticate: HTTP Basic/Digest and/or a TLS client certificate (repr: no secrets)."""

    auth: BasicAuth | DigestAuth | None = None
    client_cert: ClientCertificate | None = field(default=None)


async def load_credentials(
    spec: EstIssuerSpec, secrets: SecretLookup, namespace: str, *, now: datetime | None = None
) -> EstCredentials:
    """The credentials from the issuer's Secrets, checked; ``IssuerNotReady`` names what to fix."""
    auth: BasicAuth | DigestAuth | None = None
    client_cert: ClientCertificate | None = None
    if spec.secret_name:
        secret = await _required(
            secrets, spec.secret_name, namespace, "spec.secretName", BASIC_AUTH_SECRET_TYPE
        )
        auth = http_credentials(secret, f"{namespace}/{spec.secret_name}", spec.auth_method)
    if spec.client_cert_secret_name:
        name = spec.client_cert_secret_name
        secret = await _required(secrets, name, namespace, "spec.clientCertSecretName", TLS_SECRET_TYPE)
        client_cert = client_certificate(secret, f"{namespace}/{name}", now=now)
    return EstCredentials(auth, client_cert)


async def _required(
    secrets: SecretLookup, name: str, namespace: str, field_name: str, secret_type: str
) -> SecretView:
    secret = await secrets(name)
    if secret is None:
        raise IssuerNotReady(
            "SecretMissing",
            f"Secret {namespace}/{name} ({field_name}) does not exist; create it with type {secret_type}",
        )
    if secret.type != secret_type:
        raise IssuerNotReady(
            "SecretWrongType",
            f"Secret {namespace}/{name} ({field_name}) has type {secret.type[:60]}, not {secret_type}; "
            f"re-create it with type {secret_type}",
        )
    return secret


def _field(secret: SecretView, key: str, where: str) -> bytes:
    if key in secret.undecodable:
        raise IssuerNotReady("SecretInvalid", f"Secret {where}: data.{key} is not base64")
    value = secret.data.get(key)
    if not value:
        raise IssuerNotReady("SecretInvalid", f"Secret {where} has no {key!r}; add it")
    return value


def http_credentials(secret: SecretView, where: str, method: AuthMethod) -> BasicAuth | DigestAuth:
    """username and password of a kubernetes.io/basic-auth Secret, for Basic (or Digest) authentication."""
    try:
        username = _field(secret, "username", where).decode("utf-8")
        password = _field(secret, "password", where).decode("utf-8")
    except UnicodeDecodeError:
        raise IssuerNotReady(
            "SecretInvalid", f"Secret {where}: username and password must be UTF-8"
        ) from None
    if ":" in username:
        raise IssuerNotReady(
            "SecretInvalid", f"Secret {where}: the username may not contain ':' (HTTP Basic, RFC 7617)"
        )
    return DigestAuth(username, password) if method == "Digest" else BasicAuth(username, password)


def client_certificate(secret: SecretView, where: str, *, now: datetime | None = None) -> ClientCertificate:
    """tls.crt (chain, leaf first) and tls.key of a kubernetes.io/tls Secret, checked to belong together."""
    chain_pem = _field(secret, "tls.crt", where)
    key_pem = _field(secret, "tls.key", where)
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    except (ValueError, IndexError):
        raise IssuerNotReady("SecretInvalid", f"Secret {where}: tls.crt is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise IssuerNotReady(
            "SecretInvalid", f"Secret {where}: tls.key is not an unencrypted PEM private key"
        ) from None
    if _spki(leaf.public_key()) != _spki(key.public_key()):
        raise IssuerNotReady("SecretInvalid", f"Secret {where}: tls.key does not belong to tls.crt")
    moment = now or datetime.now(UTC)
    if not leaf.not_valid_before_utc <= moment <= leaf.not_valid_after_utc:
        validity = f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} to {leaf.not_valid_after_utc:%Y-%m-%d %H:%M}"
        raise IssuerNotReady(
            "SecretInvalid",
            f"Secret {where}: the client certificate is valid from {validity} UTC, not now; "
            "put a current one there",
        )
    return ClientCertificate(chain_pem, key_pem)


def _spki(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def anchors_outside_bundle(
    anchors: Sequence[x509.Certificate], bundle: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    """The trust anchors that are neither in the /cacerts bundle nor certified by it.

    An anchor passes when it is a bundle certificate (same certificate, or same subject and key: a
    re-issued CA), or when a chain of signatures leads from it to one (through other anchors or bundle
    certificates): an intermediate or the server's own certificate configured as the anchor is fine.
    """
    return _unlinked(anchors, bundle)


def bundle_outside_anchors(
    anchors: Sequence[x509.Certificate], bundle: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    """The /cacerts certificates that are neither trust anchors nor certified by one (the seed's rule).

    A bundle certificate passes when it is an anchor or a chain of signatures leads from it to one
    (through other bundle certificates or anchors): a server that distributes intermediates of the
    configured root CA, without the root itself, passes.
    """
    return _unlinked(bundle, anchors)


def _unlinked(
    certificates: Sequence[x509.Certificate], targets: Sequence[x509.Certificate]
) -> list[x509.Certificate]:
    """Those of ``certificates`` that neither are one of ``targets`` (same subject and key) nor lead to one
    by a chain of signatures through ``certificates`` and ``targets``."""
    pool = [*targets, *certificates]
    wanted = {_identity(c) for c in targets}
    verdicts: dict[bytes, bool] = {}

    def reaches(certificate: x509.Certificate, depth: int) -> bool:
        if _identity(certificate) in wanted:
            return True
        key = certificate.fingerprint(hashes.SHA256())
        if key in verdicts or depth > 8:
            return verdicts.get(key, False)
        verdicts[key] = False  # cycle guard while exploring
        for issuer in pool:
            if (
                issuer is not certificate
                and issuer.subject == certificate.issuer
                and _signed_by(certificate, issuer)
                and reaches(issuer, depth + 1)
            ):
                verdicts[key] = True
                break
        return verdicts[key]

    return [certificate for certificate in certificates if not reaches(certificate, 0)]


def _identity(certificate: x509.Certificate) -> bytes:
    return certificate.subject.public_bytes() + _spki(certificate.public_key())


def _signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


class CacertsSource(Protocol):
    """What the check needs of an EST client: /cacerts through the explicit trust anchors."""

    async def cacerts(self) -> list[x509.Certificate]: ...


@dataclass(frozen=True)
class EstIssuerCheck:
    """A usable issuer: its credentials (as read now) and the CA bundle its server distributes."""

    credentials: EstCredentials
    ca_certificates: tuple[x509.Certificate, ...]


async def check_est_issuer(
    spec: EstIssuerSpec,
    secrets: SecretLookup,
    namespace: str,
    client: CacertsSource,
    *,
    now: datetime | None = None,
) -> EstIssuerCheck:
    """Whether the issuer can enroll now; ``IssuerNotReady`` (reason, message) when it cannot.

    Secret problems and a trust-anchor mismatch are ``permanent`` (they need a user's fix; the caller
    re-checks when the spec or a Secret changes, and periodically); server trouble is transient.
    """
    credentials = await load_credentials(spec, secrets, namespace, now=now)
    try:
        bundle = await client.cacerts()
    except EstError as exc:
        reason = _ERROR_REASONS.get(exc.kind, "ServerError")
        raise IssuerNotReady(reason, exc.message, permanent=exc.kind == "config") from None
    outside = anchors_outside_bundle(spec.trust_anchors, bundle)
    if outside and bundle_outside_anchors(spec.trust_anchors, bundle):
        raise IssuerNotReady(
            "TrustAnchorMismatch",
            f"the EST server at {spec.endpoint.url('cacerts')} distributes {_names(bundle)}, which neither "
            f"contains nor certifies the trust anchor {_names(outside)} of spec.cacert, nor is certified by "
            "spec.cacert; the issuer is out of service until spec.cacert holds the CA of this EST server",
        )
    return EstIssuerCheck(credentials, tuple(bundle))


def _names(certificates: Sequence[x509.Certificate]) -> str:
    names = [c.subject.rfc4514_string()[:80] or "(empty subject)" for c in certificates[:4]]
    more = f" and {len(certificates) - 4} more" if len(certificates) > 4 else ""
    return ", ".join(repr(n) for n in names) + more
