"""The state directory of ``keyward est-server``, created on first start and reused afterwards:

- a private SoftHSM2 store (``hsm.json``, ``softhsm2.conf``, ``tokens/``) whose token holds the CA key
  (labelled ``keyward-est/ca``, generated in the token, never extractable) and the CA certificate;
- ``ca.pem``: the CA certificate, the trust anchor EST clients need (``curl --cacert``);
- ``est-password`` (0600): the HTTP Basic password of user ``est``;
- ``tls.crt`` and ``tls.key`` (0600): the server's TLS certificate, issued by the CA for localhost and
  127.0.0.1, renewed at two thirds of its lifetime.

The TLS key is an ordinary file, unlike the CA key: Python's ``ssl`` (OpenSSL without a PKCS#11
provider) can only serve a key it can read, and this key guards one short-lived server certificate, not
the CA. A leaked TLS key lets someone impersonate this server until the certificate expires; a leaked CA
key would let them mint certificates for anyone, which is why that one never leaves the token.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from keyward.errors import UserError
from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.tcs.ca import KnownCa, TcsIssuerSpec, ensure_ca
from keyward.issuers.tcs.est_ca import (
    BasicCredential,
    ServerCertificate,
    host_names,
    issue_tls_server_certificate,
    renewal_time,
)
from keyward.keystore import KeySpec, TokenKeyStore, create_softhsm_store
from keyward.pki.issue import CertificateAuthority, certificate_matches_key
from keyward.pki.profile import IssuerPolicy

log = logging.getLogger("keyward.est.standalone")

CA_LABEL = "keyward-est/ca"
CA_COMMON_NAME = "keyward EST CA"
USERNAME = "est"
DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class StateFiles:
    directory: Path

    @property
    def ca_pem(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def password(self) -> Path:
        return self.directory / "est-password"

    @property
    def tls_crt(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def tls_key(self) -> Path:
        return self.directory / "tls.key"


@dataclass
class StandaloneState:
    files: StateFiles
    store: TokenKeyStore
    ca: CertificateAuthority
    policy: IssuerPolicy
    credential: BasicCredential
    tls: ServerCertificate
    hostnames: tuple[str, ...]


def prepare_state(
    state_dir: Path, key_spec: KeySpec | None = None, hostnames: Sequence[str] = DEFAULT_HOSTNAMES
) -> StandaloneState:
    """Create or reuse the CA, the password and the TLS certificate in ``state_dir``. Blocking."""
    files = StateFiles(_writable_directory(state_dir))
    store = TokenKeyStore.open(create_softhsm_store(files.directory))
    try:
        ca = _ensure_ca(store, files.directory, key_spec)
        _write_file(files.ca_pem, ca.certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
        policy = IssuerPolicy()
        names = tuple(dict.fromkeys(hostnames))
        tls = _reusable_tls(files, ca, names)
        if tls is None:
            tls = issue_tls_server_certificate(ca, names, policy)
            save_tls(files, tls)
        return StandaloneState(files, store, ca, policy, _credential(files), tls, names)
    except BaseException:
        store.close()
        raise


def _writable_directory(state_dir: Path) -> Path:
    directory = Path(state_dir).expanduser().resolve()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the state directory {directory} ({exc.strerror or exc})",
            "choose a directory you can write with --state-dir",
        ) from None
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise UserError(
            f"the state directory {directory} is not a writable directory",
            "choose a directory you can write with --state-dir",
        )
    return directory


def _known_ca(path: Path) -> list[KnownCa]:
    """The CA an earlier start wrote to ``ca.pem``: a token without its key never gets a new one."""
    try:
        return [KnownCa.of(x509.load_pem_x509_certificate(path.read_bytes()), str(path))]
    except (OSError, ValueError):
        return []


def _ensure_ca(store: TokenKeyStore, directory: Path, key_spec: KeySpec | None) -> CertificateAuthority:
    existing = store.find_key(CA_LABEL)
    if existing is not None:
        actual = KeySpec.of_public_key(existing.public_key())
        if key_spec is not None and key_spec != actual:
            raise UserError(
                f"the CA in {directory} has a {actual} key but --key-algorithm asks for {key_spec}",
                "drop --key-algorithm (the CA key is never replaced), or use a new --state-dir",
            )
        key_spec = actual
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    spec = TcsIssuerSpec(name=CA_COMMON_NAME, key=key_spec or KeySpec.default(), subject=subject)
    known = _known_ca(directory / "ca.pem")
    try:
        return ensure_ca(store, CA_LABEL, spec, known=known, recorded=known[0] if known else None)
    except IssuerNotReady as exc:
        raise UserError(
            f"the CA in {directory} cannot be used ({exc.reason}: {exc.message})",
            "use a new --state-dir; the CA key is never replaced in place",
        ) from None


def _credential(files: StateFiles) -> BasicCredential:
    """The Basic password: read back, or created once (URL-safe, so it needs no quoting in ``-u``)."""
    if files.password.exists():
        password = files.password.read_text().strip()
        if password:
            return BasicCredential(USERNAME, password)
    password = secrets.token_urlsafe(24)
    _write_file(files.password, (password + "\n").encode(), mode=0o600)
    return BasicCredential(USERNAME, password)


def _reusable_tls(
    files: StateFiles, ca: CertificateAuthority, hostnames: Sequence[str]
) -> ServerCertificate | None:
    """The saved TLS certificate, if it is ours to keep: issued by this CA for these names, matching its
    key, and not yet due for renewal."""
    try:
        chain_pem, key_pem = files.tls_crt.read_bytes(), files.tls_key.read_bytes()
        leaf = x509.load_pem_x509_certificates(chain_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
        leaf.verify_directly_issued_by(ca.certificate)
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


def save_tls(files: StateFiles, tls: ServerCertificate) -> None:
    _write_file(files.tls_key, tls.key_pem, mode=0o600)
    _write_file(files.tls_crt, tls.chain_pem, mode=0o644)


def _write_file(path: Path, content: bytes, *, mode: int) -> None:
    """Write through a temporary file created with ``mode``: readers never see a half-written or, for
    secrets, a briefly world-readable file."""
    pending = path.with_name(f".{path.name}.new")
    with contextlib.suppress(FileNotFoundError):
        pending.unlink()
    descriptor = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
    pending.replace(path)
