"""The state directory of ``keyward est-server``, created on first start and reused afterwards:

- a private SoftHSM2 store (``hsm.json``, ``softhsm2.conf``, ``tokens/``) whose token holds two CA keys,
  each generated in the token and never extractable: the enrollment CA's (``keyward-est/ca``), which
  signs what devices enroll for, and the TLS CA's (``keyward-est/tls-ca``), which signs only the server's
  own TLS certificate;
- ``ca.pem``: the enrollment CA certificate, what devices get from /cacerts and what relying parties trust
  for device certificates;
- ``tls-ca.pem``: the TLS CA certificate, the trust anchor EST clients verify this server with
  (``curl --cacert tls-ca.pem``). Kept apart from the enrollment CA so that a device certificate, whatever
  it says, is never a certificate clients accept as this server;
- ``est-password`` (0600): the HTTP Basic password of user ``est``;
- ``tls.crt`` and ``tls.key`` (0600): the server's TLS certificate, issued by the TLS CA for localhost,
  127.0.0.1 and the ``--hostname`` names, renewed at two thirds of its lifetime — unless ``--tls-cert``
  and ``--tls-key`` name a certificate of the operator's own, which is served as it is.

The directory must be the running user's alone (``keyward.statedir``), and nothing in it is written
through a link. A state directory from before the TLS CA gets one on its next start, which says so.

The TLS key is an ordinary file, unlike the CA keys: Python's ``ssl`` (OpenSSL without a PKCS#11
provider) can only serve a key it can read, and this key guards one short-lived server certificate, not
a CA. A leaked TLS key lets someone impersonate this server until the certificate expires; a leaked CA
key would let them mint certificates for anyone, which is why those never leave the token.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from keyward.errors import UserError
from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.tcs.ca import KnownCa, TcsIssuerSpec, ensure_ca, parse_policy
from keyward.issuers.tcs.est_ca import (
    BasicCredential,
    ServerCertificate,
    certificate_names,
    host_names,
    issue_tls_server_certificate,
    renewal_time,
)
from keyward.keystore import KeySpec, TokenKeyStore, create_softhsm_store
from keyward.pki.issue import CertificateAuthority, certificate_matches_key
from keyward.pki.profile import IssuerPolicy
from keyward.statedir import prepare_private_directory, read_private_file, write_private_file

log = logging.getLogger("keyward.est.standalone")

CA_LABEL = "keyward-est/ca"
CA_COMMON_NAME = "keyward EST CA"
TLS_CA_LABEL = "keyward-est/tls-ca"
TLS_CA_COMMON_NAME = "keyward EST server TLS CA"
#: The TLS CA signs one server certificate now and then: ECDSA P-256 (FIPS-approved, quick to verify).
TLS_CA_KEY = KeySpec("ECDSA", 256)
USERNAME = "est"
DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class StateFiles:
    directory: Path

    @property
    def ca_pem(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def tls_ca_pem(self) -> Path:
        return self.directory / "tls-ca.pem"

    @property
    def password(self) -> Path:
        return self.directory / "est-password"

    @property
    def tls_crt(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def tls_key(self) -> Path:
        return self.directory / "tls.key"


@dataclass(frozen=True)
class SuppliedTls:
    """``--tls-cert`` and ``--tls-key``: the operator's own TLS certificate (chain) and key files."""

    certificate: Path
    key: Path


@dataclass
class StandaloneState:
    files: StateFiles
    store: TokenKeyStore
    ca: CertificateAuthority
    #: What the enrollment CA signs (``--policy``), the server's own names excepted for server auth.
    policy: IssuerPolicy
    credential: BasicCredential
    tls: ServerCertificate
    hostnames: tuple[str, ...]
    #: Issues the TLS certificate and its renewals; None when it is supplied (``--tls-cert``).
    tls_ca: CertificateAuthority | None = None

    @property
    def server_names(self) -> tuple[str, ...]:
        """The names clients reach this server by: the host names, and those its certificate carries.
        No device enrolls for them with server auth."""
        return tuple(dict.fromkeys((*self.hostnames, *certificate_names(self.tls.certificate))))


def prepare_state(
    state_dir: Path,
    key_spec: KeySpec | None = None,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    *,
    policy: IssuerPolicy | None = None,
    supplied_tls: SuppliedTls | None = None,
) -> StandaloneState:
    """Create or reuse the CAs, the password and the TLS certificate in ``state_dir``. Blocking."""
    files = StateFiles(prepare_private_directory(state_dir))
    store = TokenKeyStore.open(create_softhsm_store(files.directory))
    try:
        ca = _ensure_ca(store, files, key_spec)
        names = tuple(dict.fromkeys(hostnames))
        tls_ca = None
        if supplied_tls is not None:
            tls = load_supplied_tls(supplied_tls)
        else:
            tls_ca = _ensure_tls_ca(store, files)
            tls = _reusable_tls(files, tls_ca, names) or _new_tls(files, tls_ca, names)
        return StandaloneState(
            files, store, ca, policy or IssuerPolicy(), _credential(files), tls, names, tls_ca
        )
    except BaseException:
        store.close()
        raise


def _known_ca(path: Path) -> list[KnownCa]:
    """The CA an earlier start wrote to ``path``: a token without its key never gets a new one."""
    try:
        return [KnownCa.of(x509.load_pem_x509_certificate(read_private_file(path)), str(path))]
    except (OSError, ValueError):
        return []


def _token_ca(
    store: TokenKeyStore,
    files: StateFiles,
    label: str,
    common_name: str,
    key_spec: KeySpec,
    pem: Path,
    what: str,
) -> CertificateAuthority:
    """The CA labelled ``label`` from the token (made there first when neither the token nor ``pem``
    knows it), its certificate written to ``pem``."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    spec = TcsIssuerSpec(name=common_name, key=key_spec, subject=subject)
    known = _known_ca(pem)
    try:
        ca = ensure_ca(store, label, spec, known=known, recorded=known[0] if known else None)
    except IssuerNotReady as exc:
        raise UserError(
            f"the {what} in {files.directory} cannot be used ({exc.reason}: {exc.message})",
            "use a new --state-dir; a CA key is never replaced in place",
        ) from None
    write_private_file(pem, ca.certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return ca


def _ensure_ca(store: TokenKeyStore, files: StateFiles, key_spec: KeySpec | None) -> CertificateAuthority:
    existing = store.find_key(CA_LABEL)
    if existing is not None:
        actual = KeySpec.of_public_key(existing.public_key())
        if key_spec is not None and key_spec != actual:
            raise UserError(
                f"the CA in {files.directory} has a {actual} key but --key-algorithm asks for {key_spec}",
                "drop --key-algorithm (the CA key is never replaced), or use a new --state-dir",
            )
        key_spec = actual
    spec = key_spec or KeySpec.default()
    return _token_ca(store, files, CA_LABEL, CA_COMMON_NAME, spec, files.ca_pem, "CA")


def _ensure_tls_ca(store: TokenKeyStore, files: StateFiles) -> CertificateAuthority:
    new = store.find_key(TLS_CA_LABEL) is None and not files.tls_ca_pem.exists()
    tls_ca = _token_ca(store, files, TLS_CA_LABEL, TLS_CA_COMMON_NAME, TLS_CA_KEY, files.tls_ca_pem, "TLS CA")
    if new and files.tls_crt.exists():
        log.warning(
            "this state directory had no TLS CA: made one (%s). EST clients verify this server with "
            "tls-ca.pem from now on, not ca.pem (which stays the enrollment CA devices get from /cacerts)",
            files.tls_ca_pem,
        )
    return tls_ca


def _credential(files: StateFiles) -> BasicCredential:
    """The Basic password: read back, or created once (URL-safe, so it needs no quoting in ``-u``)."""
    if files.password.exists():
        password = read_private_file(files.password).decode().strip()
        if password:
            return BasicCredential(USERNAME, password)
    password = secrets.token_urlsafe(24)
    write_private_file(files.password, (password + "\n").encode(), mode=0o600)
    return BasicCredential(USERNAME, password)


def _reusable_tls(
    files: StateFiles, tls_ca: CertificateAuthority, hostnames: Sequence[str]
) -> ServerCertificate | None:
    """The saved TLS certificate, if it is ours to keep: issued by the TLS CA for these names, matching
    its key, and not yet due for renewal."""
    try:
        chain_pem, key_pem = read_private_file(files.tls_crt), read_private_file(files.tls_key)
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
        leaf.verify_directly_issued_by(tls_ca.certificate)
        sans = set(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except (OSError, ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm, x509.ExtensionNotFound):
        if files.tls_crt.exists() or files.tls_key.exists():
            log.info("issuing a new TLS certificate: the saved one is unusable or from another CA")
        return None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return None
    if not certificate_matches_key(leaf, key.public_key()):
        return None
    if sans != set(host_names(hostnames)) or datetime.now(UTC) >= renewal_time(leaf):
        return None
    return ServerCertificate(leaf, chain_pem, key_pem)


def _new_tls(files: StateFiles, tls_ca: CertificateAuthority, hostnames: Sequence[str]) -> ServerCertificate:
    tls = issue_tls_server_certificate(tls_ca, hostnames, IssuerPolicy())
    save_tls(files, tls)
    return tls


def save_tls(files: StateFiles, tls: ServerCertificate) -> None:
    write_private_file(files.tls_key, tls.key_pem, mode=0o600)
    write_private_file(files.tls_crt, tls.chain_pem, mode=0o644)


def load_supplied_tls(supplied: SuppliedTls) -> ServerCertificate:
    """``--tls-cert`` (the server certificate first, then its intermediates) and ``--tls-key``, checked:
    a key that matches, a certificate that is valid now and usable for TLS servers."""
    try:
        chain_pem = supplied.certificate.read_bytes()
        key_pem = supplied.key.read_bytes()
    except OSError as exc:
        raise UserError(
            f"cannot read {exc.filename} ({exc.strerror or exc})", "check the --tls-cert and --tls-key paths"
        ) from None
    try:
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
    except ValueError:
        raise UserError(
            f"--tls-cert {supplied.certificate} holds no PEM certificate",
            "give the server certificate (and its intermediates) in PEM",
        ) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise UserError(
            f"--tls-key {supplied.key} holds no unencrypted PEM private key",
            "give the server's private key in PEM, without a passphrase",
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise UserError(f"--tls-key {supplied.key} is neither an RSA nor an ECDSA key", "use one of those")
    if not certificate_matches_key(leaf, key.public_key()):
        raise UserError(
            f"--tls-key {supplied.key} is not the key of the certificate in {supplied.certificate}",
            "give the key that belongs to the certificate",
        )
    now = datetime.now(UTC)
    if not leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc:
        raise UserError(
            f"the certificate in {supplied.certificate} is not valid now (valid "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} to {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)",
            "give a current certificate",
        )
    try:
        purposes = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        purposes = None
    if purposes is not None and ExtendedKeyUsageOID.SERVER_AUTH not in purposes:
        raise UserError(
            f"the certificate in {supplied.certificate} is not for TLS servers (no server auth usage)",
            "give a TLS server certificate",
        )
    return ServerCertificate(leaf, chain_pem, key_pem)


def load_policy(path: Path) -> IssuerPolicy:
    """``--policy FILE``: what the enrollment CA signs, in the fields of a TCS issuer's spec.policy
    (YAML or JSON; docs/POLICY.md)."""
    try:
        rules = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read --policy {path} ({exc.strerror or exc})", "check the path") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(
            f"--policy {path} is not YAML or JSON{where}",
            "write it like the spec.policy of a TCS issuer (docs/POLICY.md)",
        ) from None
    try:
        return parse_policy({} if rules is None else rules)
    except ValueError as exc:
        raise UserError(
            f"--policy {path}: policy{exc}", "write it like the spec.policy of a TCS issuer (docs/POLICY.md)"
        ) from None
