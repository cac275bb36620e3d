"""The cluster-free EST server (``keyward est-server``): one token-backed CA, served over RFC 7030.

Everything lives in one state directory, created on first start and reused afterwards:

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

import asyncio
import contextlib
import errno
import functools
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from keyward.errors import UserError
from keyward.est.server import EstServer, ServerTls
from keyward.estserver.workers import ServingProcesses, ServingSetup, hold_port
from keyward.host import ListenAddress
from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.tcs.ca import TcsIssuerSpec, ensure_ca
from keyward.issuers.tcs.est_ca import (
    BasicCredential,
    ServerCertificate,
    TcsEstCa,
    TokenWorkers,
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
EST_LABEL = "ca"  # served at /.well-known/est/ca/ and, as the default CA, at /.well-known/est/
USERNAME = "est"
DEFAULT_HOSTNAMES = ("localhost", "127.0.0.1")
#: Retry a failed TLS renewal this often (the old certificate stays in place meanwhile).
RENEW_RETRY = timedelta(minutes=5)


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
            _save_tls(files, tls)
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
    try:
        return ensure_ca(store, CA_LABEL, spec)
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


def _save_tls(files: StateFiles, tls: ServerCertificate) -> None:
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


# --- serving ------------------------------------------------------------------------------------------

#: The log line format of ``keyward est-server`` and of its serving processes (hence the process ID).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


@dataclass(frozen=True)
class StandaloneOptions:
    state_dir: Path
    listen: ListenAddress
    key_spec: KeySpec | None = None
    hostnames: tuple[str, ...] = DEFAULT_HOSTNAMES
    workers: int = 0  # serving processes (``keyward.estserver.workers``); 0 serves in this process


def standalone_server(
    ca: CertificateAuthority, policy: IssuerPolicy, credential: BasicCredential, signing: TokenWorkers
) -> EstServer:
    """The server ``keyward est-server`` runs: the CA under ``EST_LABEL``, also the default CA. Built in
    each serving process (this function travels to them pickled), or here when there are none."""

    async def workers() -> TokenWorkers:
        return signing

    served = TcsEstCa(EST_LABEL, ca, policy, workers, credentials=lambda: credential)
    return EstServer({EST_LABEL: served}, default_label=EST_LABEL)


async def serve(options: StandaloneOptions) -> None:
    """Run the EST server until cancelled (the CLI cancels on SIGINT/SIGTERM), then close the token."""
    state = await asyncio.to_thread(prepare_state, options.state_dir, options.key_spec, options.hostnames)
    try:
        if options.workers:
            await _serve_in_processes(state, options)
        else:
            await _serve_here(state, options)
    finally:
        await asyncio.to_thread(state.store.close)
        log.info("EST server stopped")


async def _serve_here(state: StandaloneState, options: StandaloneOptions) -> None:
    """One process: the event loop serves, the store's threads sign."""
    server = standalone_server(state.ca, state.policy, state.credential, state.store)
    tls = ServerTls(state.tls.chain_pem, state.tls.key_pem, server.client_trust_anchors())
    try:
        await server.start(options.listen.host, options.listen.port, tls.context)
    except OSError as exc:
        raise _cannot_listen(options.listen, exc) from None
    try:
        print(banner(state, options.listen, server.port), flush=True)
        await _renew_forever(state, lambda new: tls.reload_certificate(new.chain_pem, new.key_pem))
    finally:
        await server.stop()


async def _serve_in_processes(state: StandaloneState, options: StandaloneOptions) -> None:
    """``options.workers`` serving processes on a port this process holds; this one renews the TLS
    certificate (signing in its own store's threads) and restarts processes that die."""
    try:
        held, port = await asyncio.to_thread(hold_port, options.listen)  # resolving the host may block
    except OSError as exc:
        raise _cannot_listen(options.listen, exc) from None
    try:
        setup = ServingSetup(
            make_server=functools.partial(standalone_server, state.ca, state.policy, state.credential),
            tls=state.tls,
            listen=ListenAddress(options.listen.host, port),
            log_level=logging.getLogger().getEffectiveLevel(),
            log_format=LOG_FORMAT,
        )
        processes = ServingProcesses(state.store.config, setup, options.workers)
        await processes.start()
        try:
            print(banner(state, options.listen, port), flush=True)
            await _renew_forever(state, processes.renew_tls)
        finally:
            await processes.stop()
    finally:
        for sock in held:
            sock.close()


def _cannot_listen(listen: ListenAddress, exc: OSError) -> UserError:
    if exc.errno == errno.EADDRINUSE:
        return UserError(
            f"cannot listen on {listen}: the address is already in use",
            "stop whatever listens there, or pick another port with --listen HOST:PORT",
        )
    return UserError(
        f"cannot listen on {listen} ({exc.strerror or exc})",
        "check the address in --listen HOST:PORT (ports below 1024 need privileges)",
    )


async def _renew_forever(state: StandaloneState, install: Callable[[ServerCertificate], None]) -> None:
    """Renew the TLS certificate at two thirds of its lifetime and ``install`` it; the old one serves
    until then."""
    due = renewal_time(state.tls.certificate)
    while True:
        await asyncio.sleep(max(1.0, (due - datetime.now(UTC)).total_seconds()))
        try:
            renewed = await state.store.run(
                issue_tls_server_certificate, state.ca, state.hostnames, state.policy
            )
            await asyncio.to_thread(_save_tls, state.files, renewed)
            install(renewed)
        except Exception as exc:  # keep serving with the current certificate, and try again soon
            log.warning("renewing the EST server's TLS certificate failed (%s); retrying", exc)
            due = datetime.now(UTC) + RENEW_RETRY
            continue
        state.tls = renewed
        due = renewal_time(renewed.certificate)
        log.info("renewed the EST server's TLS certificate; next renewal at %s", due.isoformat())


def banner(state: StandaloneState, listen: ListenAddress, port: int) -> str:
    """How to enroll, with commands that work as printed (the password is read from its file)."""
    host = "127.0.0.1" if listen.host in ("0.0.0.0", "::", "") else listen.host  # noqa: S104
    shown_host = f"[{host}]" if ":" in host else host
    base = f"https://{shown_host}:{port}/.well-known/est"
    files = state.files
    return "\n".join(
        [
            f"keyward EST server listening on {base}/ (also {base}/{EST_LABEL}/)",
            f"  CA certificate: {files.ca_pem}",
            f"  HTTP Basic: user {USERNAME}, password in {files.password}",
            "Enroll a new key with openssl and curl:",
            "  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout device.key "
            "-subj /CN=device -outform DER | base64 > device.b64",
            f"  curl --cacert {files.ca_pem} -u {USERNAME}:$(cat {files.password}) "
            f"-H 'Content-Type: application/pkcs10' --data-binary @device.b64 {base}/simpleenroll "
            "| base64 -d | openssl pkcs7 -inform DER -print_certs -out device.pem",
            "Renew it with the certificate itself: curl --cert device.pem --key device.key ... "
            f"{base}/simplereenroll",
        ]
    )
