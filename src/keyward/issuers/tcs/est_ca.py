"""A token-backed TCS CA served over EST: the ``EstCa`` the EST server calls, and what it needs.

The EST server (keyward.est) knows HTTP, TLS and the wire format; this adapter knows the issuer: which
key algorithm it asks clients for, whose credentials it accepts, and how it signs. Signing goes through
``issuers.tcs.sign`` with an ``IssuerPolicy``, the very path CertificateRequests take, and runs in the
token's worker pool. The operator and the cluster-free ``keyward est-server`` both build their CAs here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, PublicKeyAlgorithmOID

from keyward.est.server.ca import CaUnavailable, ClientIdentity, EnrollRejected
from keyward.est.wire import CsrAttribute, CsrAttrs, oid_value
from keyward.issuers.contract import SigningRequest
from keyward.issuers.signer_names import IssuerRef
from keyward.issuers.tcs.ca import sign
from keyward.keystore import KeystoreError, SigningProcessDied
from keyward.keystore.spec import RSA_SIZES
from keyward.kube.resources import TCS_GROUP
from keyward.pki.errors import IssuerError, RequestError
from keyward.pki.issue import CertificateAuthority, IssuedCertificate
from keyward.pki.keys import fips_key_problem, signature_hash
from keyward.pki.profile import IssuerPolicy, RequestProfile

__all__ = [
    "EST_USAGES",
    "TLS_SERVER_USAGES",
    "BasicCredential",
    "EstServing",
    "ServerCertificate",
    "TcsEstCa",
    "TokenWorkers",
    "certificate_names",
    "csr_attributes_for",
    "host_names",
    "issue_tls_server_certificate",
    "parse_est_spec",
    "parse_issuer_reference",
    "renewal_time",
    "serverkeygen_key",
]

log = logging.getLogger("keyward.est.ca")
T = TypeVar("T")

#: What an EST-enrolled certificate may do. EST clients are mostly devices and services that then prove
#: who they are in TLS, so "client auth" comes with cert-manager's default usages (digital signature for
#: (EC)DHE handshakes, key encipherment for RSA key transport) unless the CSR asks for TLS usages itself.
EST_USAGES: tuple[str, ...] = ("digital signature", "key encipherment", "client auth")
#: Extended key usages a CSR may request from the EST server (in its extensionRequest); others are ignored.
REQUESTABLE_EXTENDED_USAGES: dict[x509.ObjectIdentifier, str] = {
    ExtendedKeyUsageOID.SERVER_AUTH: "server auth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "client auth",
}
#: The EST server's own TLS certificate.
TLS_SERVER_USAGES: tuple[str, ...] = ("digital signature", "key encipherment", "server auth")
#: A token fault: how long clients are told to wait before retrying (the operator re-checks issuers at 30s).
TOKEN_RETRY_SECONDS = 30
#: Retry-After when a signing process died mid-job: a new one is ready within a second.
INTERRUPTED_RETRY_SECONDS = 2

_CURVE_OIDS: dict[type[ec.EllipticCurve], x509.ObjectIdentifier] = {
    ec.SECP256R1: ec.EllipticCurveOID.SECP256R1,
    ec.SECP384R1: ec.EllipticCurveOID.SECP384R1,
    ec.SECP521R1: ec.EllipticCurveOID.SECP521R1,
}

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


class TokenWorkers(Protocol):
    """Where issuance jobs run: ``TokenKeyStore`` (its signing processes or worker threads), or a
    stand-in in tests."""

    async def run_signing(self, fn: Callable[..., T], *args: Any) -> T: ...


@dataclass(frozen=True)
class BasicCredential:
    """The HTTP Basic user and password an issuer accepts; ``repr`` never shows the password."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"BasicCredential(username={self.username!r}, password=<hidden>)"


@dataclass(frozen=True)
class EstServing:
    """A TCS issuer's ``spec.est``: where it is served and who may enroll."""

    label: str
    default: bool = False
    basic_auth_secret: str | None = None
    client_ca_pem: str | None = None
    client_ca_secret: tuple[str, str] | None = None  # (Secret name, key)


def parse_est_spec(issuer_name: str, est: Mapping[str, Any]) -> EstServing:
    """``spec.est`` with defaults: the label is the issuer's name unless set. The CRD schema has checked
    the shapes already; anything odd that slips through (a hand-edited object) is read as absent."""
    basic = est.get("basicAuthSecretRef") or {}
    trust = est.get("clientCATrust") or {}
    secret_ref = trust.get("secretRef") or {}
    client_ca_secret = None
    if secret_ref.get("name") and secret_ref.get("key"):
        client_ca_secret = (str(secret_ref["name"]), str(secret_ref["key"]))
    return EstServing(
        label=str(est.get("label") or issuer_name),
        default=bool(est.get("default", False)),
        basic_auth_secret=str(basic["name"]) if basic.get("name") else None,
        client_ca_pem=str(trust["pem"]) if trust.get("pem") else None,
        client_ca_secret=client_ca_secret,
    )


def csr_attributes_for(ca_certificate: x509.Certificate) -> CsrAttrs | None:
    """What /csrattrs says: the issuer's own key algorithm, as RFC 7030 section 4.5.2 spells it
    (rsaEncryption as a bare OID; id-ecPublicKey as an attribute carrying the curve). ``None`` for other
    keys, which answers 204."""
    public_key = ca_certificate.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        return CsrAttrs((PublicKeyAlgorithmOID.RSAES_PKCS1_v1_5,))
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        curve_oid = _CURVE_OIDS.get(type(public_key.curve))
        if curve_oid is not None:
            return CsrAttrs((CsrAttribute(PublicKeyAlgorithmOID.EC_PUBLIC_KEY, (oid_value(curve_oid),)),))
    return None


_TEMPLATE_KEYS = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)


def serverkeygen_key(requested: object, issuer: object) -> PrivateKey:
    """A fresh in-memory key for /serverkeygen, of the CSR's key type when that is one we certify
    (RSA 2048/3072/4096, ECDSA P-256/P-384/P-521, Ed25519), else of the issuer's own type.

    RFC 7030 section 4.4.1 says the server ignores the CSR's key *value*; its type is the client's only
    way to say which algorithm it can use without CSR attributes, so it is honoured.
    """
    for template in (requested, issuer):
        if isinstance(template, _TEMPLATE_KEYS) and fips_key_problem(template):
            continue  # FIPS mode: approved keys only (the request was refused unless it is the issuer)
        if isinstance(template, rsa.RSAPublicKey) and template.key_size in RSA_SIZES:
            return rsa.generate_private_key(public_exponent=65537, key_size=template.key_size)
        if isinstance(template, ec.EllipticCurvePublicKey) and type(template.curve) in _CURVE_OIDS:
            return ec.generate_private_key(type(template.curve)())
        if isinstance(template, ed25519.Ed25519PublicKey):
            return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _request_for_key(
    key: PrivateKey, subject: x509.Name, names: Sequence[x509.GeneralName]
) -> x509.CertificateSigningRequest:
    """A CSR for ``key``: the signing code certifies CSRs, and proof of possession comes for free."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    algorithm = signature_hash(key)
    if isinstance(algorithm, hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
        return builder.sign(key, algorithm)
    return builder.sign(key, None)


def _requested_names(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    try:
        return list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _pkcs8_der(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class TcsEstCa:
    """One token-backed CA under one EST label.

    ``credentials`` and ``client_trust`` are read at request time, so a changed Secret takes effect for the
    next request without rebuilding the CA. ``workers`` gives the token's worker pool (the operator reopens
    the token after a fault); ``on_token_fault`` hears about token failures, so the owner can take the CA
    out of service and reopen the token. ``server_names`` gives the names of the EST server that serves
    the CA (read per request: its TLS certificate may change): no device enrolls for them with server
    auth (policy rule ``est-server-names``), whatever else the CA's policy allows.
    """

    def __init__(
        self,
        label: str,
        ca: CertificateAuthority,
        policy: IssuerPolicy,
        workers: Callable[[], Awaitable[TokenWorkers]],
        *,
        credentials: Callable[[], BasicCredential | None] = lambda: None,
        client_trust: Callable[[], Sequence[x509.Certificate]] = lambda: (),
        on_token_fault: Callable[[Exception], None] | None = None,
        usages: Sequence[str] = EST_USAGES,
        server_names: Callable[[], Sequence[str]] = lambda: (),
    ) -> None:
        self.label = label
        self.ca = ca
        self.policy = policy
        self._workers = workers
        self._credentials = credentials
        self._client_trust = client_trust
        self._on_token_fault = on_token_fault
        self._server_names = server_names
        self._enrollment_policy: tuple[tuple[str, ...], IssuerPolicy] = ((), policy)
        self._profile = RequestProfile(duration=None, usages=tuple(usages), is_ca=False)
        self._attributes = csr_attributes_for(ca.certificate)

    def __repr__(self) -> str:
        return f"TcsEstCa(label={self.label!r}, ca={self.ca.certificate.subject.rfc4514_string()!r})"

    def ca_certificates(self) -> Sequence[x509.Certificate]:
        return [self.ca.certificate, *self.ca.chain]

    def csr_attributes(self) -> CsrAttrs | None:
        return self._attributes

    def check_basic(self, username: str, password: str) -> bool:
        """Constant time in the password and the user name: both are compared, whatever the first gives."""
        expected = self._credentials()
        if expected is None:
            return False
        user_ok = hmac.compare_digest(username.encode(), expected.username.encode())
        password_ok = hmac.compare_digest(password.encode(), expected.password.encode())
        return user_ok and password_ok

    def client_ca_trust(self) -> Sequence[x509.Certificate]:
        return self._client_trust()

    async def enroll(
        self, csr: x509.CertificateSigningRequest, client: ClientIdentity, *, renewal: bool
    ) -> list[x509.Certificate]:
        """``csr``'s signature was verified by the EST server (proof of possession) before this call."""
        issued = await self._sign(csr)
        return [issued.certificate]

    async def server_keygen(
        self, csr: x509.CertificateSigningRequest, client: ClientIdentity
    ) -> tuple[bytes, list[x509.Certificate]]:
        """The key is made in this process's memory, never in the token: it is the client's key, handed
        over once in the response and then forgotten (nothing keeps a reference)."""
        key = await asyncio.to_thread(serverkeygen_key, csr.public_key(), self.ca.certificate.public_key())
        request = _request_for_key(key, csr.subject, _requested_names(csr))
        issued = await self._sign(request)
        return _pkcs8_der(key), [issued.certificate]

    def _profile_for(self, csr: x509.CertificateSigningRequest) -> RequestProfile:
        """The configured usages, with the TLS usages the CSR requests (server auth, client auth) instead
        of the default "client auth" when it requests any: the seed's example asks for both."""
        try:
            requested = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (x509.ExtensionNotFound, ValueError):
            return self._profile
        tls = [REQUESTABLE_EXTENDED_USAGES[oid] for oid in requested if oid in REQUESTABLE_EXTENDED_USAGES]
        if not tls:
            return self._profile
        base = [u for u in self._profile.usages if u not in REQUESTABLE_EXTENDED_USAGES.values()]
        return RequestProfile(duration=None, usages=(*base, *tls), is_ca=False)

    def _policy(self) -> IssuerPolicy:
        """The CA's policy with the server's own names reserved (made again only when they change)."""
        names = tuple(self._server_names())
        if names != self._enrollment_policy[0]:
            reserved = dataclasses.replace(self.policy, reserved_server_names=names)
            self._enrollment_policy = (names, reserved)
        return self._enrollment_policy[1]

    async def _sign(self, csr: x509.CertificateSigningRequest) -> IssuedCertificate:
        try:
            workers = await self._workers()
            request = SigningRequest(csr, self._profile_for(csr))
            return await workers.run_signing(sign, self.ca, request, self._policy())
        except RequestError as exc:
            raise EnrollRejected(str(exc)) from None
        except IssuerError as exc:
            raise CaUnavailable(str(exc)) from None
        except SigningProcessDied:
            log.warning("EST CA %r: a signing process died during an enrollment", self.label)
            raise CaUnavailable("signing was interrupted; retry", INTERRUPTED_RETRY_SECONDS) from None
        except (KeystoreError, OSError, RuntimeError) as exc:
            log.warning("EST CA %r: the token failed while signing: %s", self.label, exc)
            if self._on_token_fault is not None:
                self._on_token_fault(exc)
            raise CaUnavailable(
                "the CA's key store is unavailable right now; retry later", TOKEN_RETRY_SECONDS
            ) from None


# --- the EST server's own TLS certificate -------------------------------------------------------------


@dataclass(frozen=True)
class ServerCertificate:
    """A TLS server certificate with its in-memory key, as PEM for ``ServerTls``."""

    certificate: x509.Certificate
    chain_pem: bytes
    key_pem: bytes

    def __repr__(self) -> str:
        return f"ServerCertificate(subject={self.certificate.subject.rfc4514_string()!r}, key=<hidden>)"


def host_names(hostnames: Sequence[str]) -> list[x509.GeneralName]:
    """SANs for host names and IP addresses (``localhost`` → DNS, ``127.0.0.1`` → IP)."""
    names: list[x509.GeneralName] = []
    for host in hostnames:
        text = host.strip().strip("[]")
        if not text:
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text)))
        except ValueError:
            names.append(x509.DNSName(text))
    return names


def certificate_names(certificate: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a (server) certificate's subjectAltName holds, as text."""
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in sans if isinstance(name, x509.DNSName | x509.IPAddress)]


def issue_tls_server_certificate(
    ca: CertificateAuthority,
    hostnames: Sequence[str],
    policy: IssuerPolicy,
    *,
    key: CertificateIssuerPrivateKeyTypes | None = None,
) -> ServerCertificate:
    """A server certificate for ``hostnames`` from the CA, through the same signing code. Blocking (the
    CA key signs in the token). The key is a new ECDSA P-256 key unless ``key`` is given."""
    names = host_names(hostnames)
    if not names:
        raise ValueError("the EST server certificate needs at least one host name or IP address")
    server_key = key or ec.generate_private_key(ec.SECP256R1())
    if not isinstance(server_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("the EST server key must be RSA or ECDSA")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0].strip()[:64])])
    request = SigningRequest(
        _request_for_key(server_key, subject, names),
        RequestProfile(duration=None, usages=TLS_SERVER_USAGES, is_ca=False),
    )
    issued = sign(ca, request, policy)
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ServerCertificate(issued.certificate, issued.chain_pem(), key_pem)


def renewal_time(certificate: x509.Certificate) -> datetime:
    """When to renew a server certificate: at two thirds of its lifetime, as cert-manager does."""
    lifetime: timedelta = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    return certificate.not_valid_before_utc + lifetime * 2 / 3


def parse_issuer_reference(text: str) -> IssuerRef:
    """``TCSIssuer/NAMESPACE/NAME`` or ``TCSClusterIssuer/NAME`` (kinds case-insensitive, plural too)."""
    kind, _, rest = text.strip().partition("/")
    parts = rest.split("/") if rest else []
    namespaced = kind.lower() in ("tcsissuer", "tcsissuers")
    cluster = kind.lower() in ("tcsclusterissuer", "tcsclusterissuers")
    if namespaced and len(parts) == 2 and all(parts):
        return IssuerRef(TCS_GROUP, "TCSIssuer", parts[1], parts[0])
    if cluster and len(parts) == 1 and parts[0]:
        return IssuerRef(TCS_GROUP, "TCSClusterIssuer", parts[0])
    raise ValueError(
        f"issuer reference {text!r} is neither TCSIssuer/NAMESPACE/NAME nor TCSClusterIssuer/NAME"
    )
