"""The operator's settings, in one typed place.

Precedence: command-line flags override environment variables, which override defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from keyward.errors import UserError
from keyward.host import MAX_SIGNING_PROCESSES, ListenAddress, processes_per_core
from keyward.keystore.config import HsmConfig, load_hsm_config
from keyward.pki.durations import parse_duration
from keyward.pki.keywrap import DEFAULT_WRAP_MECHANISM, WrapMechanism, wrap_mechanism

DEFAULT_OPERATOR_NAMESPACE = "keyward-system"

ENV_OPERATOR_NAMESPACE = "KEYWARD_OPERATOR_NAMESPACE"
ENV_CLUSTER_SCOPE_NAMESPACE = "CLUSTER_SCOPE_NAMESPACE"  # the EST seed's variable for cluster issuers
ENV_WATCH_NAMESPACES = "KEYWARD_NAMESPACES"  # comma-separated; empty = all namespaces
ENV_HSM_CONFIG_FILE = "KEYWARD_HSM_CONFIG_FILE"
ENV_HEALTH_LISTEN = "KEYWARD_HEALTH_LISTEN"
ENV_METRICS_LISTEN = "KEYWARD_METRICS_LISTEN"
ENV_EST_LISTEN = "KEYWARD_EST_LISTEN"
ENV_EST_TLS_SECRET = "KEYWARD_EST_TLS_SECRET"  # noqa: S105 - a variable name
ENV_EST_ISSUER = "KEYWARD_EST_ISSUER"
ENV_EST_HOSTNAMES = "KEYWARD_EST_HOSTNAMES"  # comma-separated
ENV_CSR_FULL_CHAIN = "KEYWARD_CSR_FULL_CERT_CHAIN"
ENV_SIGNING_PROCESSES = "KEYWARD_SIGNING_PROCESSES"
# EST issuers: seconds, or Go durations such as 10m (see EstClientSettings)
ENV_EST_RECHECK_INTERVAL = "KEYWARD_EST_RECHECK_INTERVAL"
ENV_EST_AUTH_RETRY_DELAY = "KEYWARD_EST_AUTH_RETRY_DELAY"
ENV_EST_BACKOFF_LIMIT = "KEYWARD_EST_BACKOFF_LIMIT"
ENV_EST_MAX_RETRY_DURATION = "KEYWARD_EST_MAX_RETRY_DURATION"
ENV_EST_TIMEOUT = "KEYWARD_EST_TIMEOUT"
# Key provisioning and quote verification (tcs.md)
ENV_USE_RANDOM_NONCE = "KEYWARD_USE_RANDOM_NONCE"
ENV_KEY_WRAP_MECHANISM = "KEYWARD_KEY_WRAP_MECHANISM"
ENV_REPLICA_NAME = "KEYWARD_REPLICA_NAME"
ENV_POD_NAME = "POD_NAME"  # the downward API's usual name for the pod's own name
ENV_QUOTE_VERIFICATION_TIMEOUT = "KEYWARD_QUOTE_VERIFICATION_TIMEOUT"
_REPLICA_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class EstClientSettings:
    """How EST issuers talk to their servers, in seconds (environment: seconds or Go durations, e.g. 10m)."""

    recheck_interval: float = 600.0  # issuers re-check /cacerts this often (the seed's 10 minutes)
    auth_retry_delay: float = 600.0  # after a 401, retry this much later with re-read credentials
    backoff_limit: float = 300.0  # longest wait between retries of transient failures
    max_retry_duration: float = 3600.0  # transient failures for this long fail the request
    timeout: float = 30.0  # per read (connect: at most 10 s)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EstClientSettings:
        def seconds(var: str, default: float) -> float:
            return _positive_duration(env.get(var), var, default)

        return cls(
            recheck_interval=seconds(ENV_EST_RECHECK_INTERVAL, cls.recheck_interval),
            auth_retry_delay=seconds(ENV_EST_AUTH_RETRY_DELAY, cls.auth_retry_delay),
            backoff_limit=seconds(ENV_EST_BACKOFF_LIMIT, cls.backoff_limit),
            max_retry_duration=seconds(ENV_EST_MAX_RETRY_DURATION, cls.max_retry_duration),
            timeout=seconds(ENV_EST_TIMEOUT, cls.timeout),
        )


@dataclass(frozen=True)
class Settings:
    """Everything the operator needs to know before it starts."""

    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE
    #: Namespace of EST cluster issuers' Secrets (the seed's CLUSTER_SCOPE_NAMESPACE), default: operator ns.
    cluster_scope_namespace: str | None = None
    #: Namespaces to watch; empty = the whole cluster.
    namespaces: tuple[str, ...] = ()
    hsm_config_file: Path | None = None
    hsm: HsmConfig = field(default_factory=HsmConfig)
    standalone: bool = False
    health_listen: ListenAddress = ListenAddress("0.0.0.0", 8083)  # noqa: S104
    metrics_listen: ListenAddress = ListenAddress("0.0.0.0", 8082)  # noqa: S104
    est_listen: ListenAddress = ListenAddress("0.0.0.0", 8443)  # noqa: S104
    #: The EST server's TLS certificate: a kubernetes.io/tls Secret "NAMESPACE/NAME" ...
    est_tls_secret: str | None = None
    #: ... or issued by this TCS issuer ("TCSIssuer/NS/NAME", "TCSClusterIssuer/NAME") for est_hostnames.
    est_issuer: str | None = None
    est_hostnames: tuple[str, ...] = ()
    csr_full_cert_chain: bool = False
    #: Processes that decode and sign requests, each with its own token session (0: threads only).
    signing_processes: int = field(default_factory=lambda: processes_per_core())
    est_client: EstClientSettings = field(default_factory=EstClientSettings)
    #: The seed's quote nonce format for KMRA 2.2+ (random + timestamp); false: the fixed 0..31.
    use_random_nonce: bool = True
    #: How key managers wrap CA keys for this operator's token (WKEY of tcs.md).
    key_wrap_mechanism: WrapMechanism = DEFAULT_WRAP_MECHANISM
    #: This replica's name (the pod's): each replica with a token of its own asks for keys under it.
    replica_name: str | None = None
    #: How long a request carrying an SGX quote waits for the key manager's verdict, in seconds.
    quote_verification_timeout: float = 600.0
    verbose: bool = False

    @property
    def est_cluster_namespace(self) -> str:
        """Where EST cluster issuers keep their Secrets."""
        return self.cluster_scope_namespace or self.operator_namespace


def _signing_processes(text: str | None) -> int:
    if text is None or not text.strip():
        return processes_per_core()
    value = text.strip()
    if not value.isdigit() or int(value) > MAX_SIGNING_PROCESSES:
        raise UserError(
            f"signing processes {value[:20]!r} is not a number from 0 to {MAX_SIGNING_PROCESSES}",
            "give the number of processes that sign (0: sign in threads); "
            "the default is one per usable core, at most 8",
        )
    return int(value)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def load_settings(
    flags: Mapping[str, object] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build settings from flags (None = not given) over environment over defaults."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None and v != ()}
    env = os.environ if env is None else env

    def pick(flag: str, var: str, default: str | None = None) -> str | None:
        value = flags.get(flag)
        return str(value) if value is not None else env.get(var) or default

    namespaces_flag = flags.get("namespaces")
    if namespaces_flag:
        namespaces = tuple(str(n) for n in namespaces_flag)  # type: ignore[attr-defined]
    else:
        namespaces = tuple(n.strip() for n in env.get(ENV_WATCH_NAMESPACES, "").split(",") if n.strip())

    hsm_file = pick("hsm_config_file", ENV_HSM_CONFIG_FILE)
    hsm_path = Path(hsm_file) if hsm_file else None
    est_tls_secret, est_issuer, est_hostnames = _est_tls_source(
        pick("est_tls_secret", ENV_EST_TLS_SECRET),
        pick("est_issuer", ENV_EST_ISSUER),
        flags.get("est_hostnames") or env.get(ENV_EST_HOSTNAMES, ""),
    )
    return Settings(
        operator_namespace=pick("operator_namespace", ENV_OPERATOR_NAMESPACE, DEFAULT_OPERATOR_NAMESPACE)
        or DEFAULT_OPERATOR_NAMESPACE,
        cluster_scope_namespace=env.get(ENV_CLUSTER_SCOPE_NAMESPACE) or None,
        namespaces=namespaces,
        hsm_config_file=hsm_path,
        hsm=load_hsm_config(hsm_path, env),
        standalone=bool(flags.get("standalone", False)),
        health_listen=ListenAddress.parse(
            pick("health_listen", ENV_HEALTH_LISTEN, "0.0.0.0:8083") or "", what="health"
        ),
        metrics_listen=ListenAddress.parse(
            pick("metrics_listen", ENV_METRICS_LISTEN, "0.0.0.0:8082") or "", what="metrics"
        ),
        est_listen=ListenAddress.parse(pick("est_listen", ENV_EST_LISTEN, "0.0.0.0:8443") or "", what="EST"),
        est_tls_secret=est_tls_secret,
        est_issuer=est_issuer,
        est_hostnames=est_hostnames,
        csr_full_cert_chain=bool(flags.get("csr_full_cert_chain")) or _truthy(env.get(ENV_CSR_FULL_CHAIN)),
        signing_processes=_signing_processes(pick("signing_processes", ENV_SIGNING_PROCESSES)),
        est_client=EstClientSettings.from_env(env),
        use_random_nonce=_flag_or_env(flags.get("use_random_nonce"), env.get(ENV_USE_RANDOM_NONCE), True),
        key_wrap_mechanism=_wrap_mechanism(pick("key_wrap_mechanism", ENV_KEY_WRAP_MECHANISM)),
        replica_name=_replica_name(pick("replica_name", ENV_REPLICA_NAME) or env.get(ENV_POD_NAME)),
        quote_verification_timeout=_positive_duration(
            pick("quote_verification_timeout", ENV_QUOTE_VERIFICATION_TIMEOUT),
            "--quote-verification-timeout",
            Settings.quote_verification_timeout,
        ),
        verbose=bool(flags.get("verbose", False)),
    )


def _flag_or_env(flag: object, text: str | None, default: bool) -> bool:
    if flag is not None:
        return bool(flag)
    if text is None or not text.strip():
        return default
    return _truthy(text)


def _wrap_mechanism(text: str | None) -> WrapMechanism:
    if not text:
        return DEFAULT_WRAP_MECHANISM
    try:
        return wrap_mechanism(text.strip())
    except ValueError as exc:
        raise UserError(f"--key-wrap-mechanism: {exc}", "use the one the key managers wrap with") from None


def _replica_name(text: str | None) -> str | None:
    if not text or not text.strip():
        return None
    name = text.strip()
    if not _REPLICA_NAME.match(name):
        raise UserError(
            f"replica name {name[:70]!r} is not a DNS label (lower-case letters, digits and '-', at most 63)",
            "give the pod's name (KEYWARD_REPLICA_NAME from the downward API's metadata.name)",
        )
    return name


def _positive_duration(text: str | None, what: str, default: float) -> float:
    """Seconds ("600", "1.5") or a Go duration ("10m"); ``default`` when not given."""
    value = (text or "").strip()
    if not value:
        return default
    try:
        plain = value.replace(".", "", 1).isdigit()
        seconds = float(value) if plain else parse_duration(value).total_seconds()
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise UserError(f"{what}={value[:40]!r} is not a positive duration", "write it like 600 or 10m")
    return seconds


def _est_tls_source(
    secret: str | None, issuer: str | None, hostnames: object
) -> tuple[str | None, str | None, tuple[str, ...]]:
    """Check the EST server's TLS options together: one source, well-formed, with host names to certify."""
    items = [hostnames] if isinstance(hostnames, str) else list(hostnames)  # type: ignore[call-overload]
    names = tuple(dict.fromkeys(n.strip() for item in items for n in str(item).split(",") if n.strip()))
    if secret and issuer:
        raise UserError(
            "--est-tls-secret and --est-issuer are both set",
            "choose one source for the EST server's TLS certificate",
        )
    if secret and (secret.count("/") != 1 or not all(secret.split("/"))):
        raise UserError(
            f"--est-tls-secret {secret!r} is not NAMESPACE/NAME", "write it like keyward-system/est-tls"
        )
    if issuer:
        from keyward.issuers.tcs.est_ca import parse_issuer_reference

        try:
            parse_issuer_reference(issuer)
        except ValueError as exc:
            raise UserError(f"--est-issuer: {exc}", "write it like TCSIssuer/my-namespace/my-ca") from None
        if not names:
            raise UserError(
                "--est-issuer needs --est-hostnames",
                "list the names EST clients connect to, e.g. --est-hostnames est.example.com,10.0.0.5",
            )
    return secret or None, issuer or None, names
