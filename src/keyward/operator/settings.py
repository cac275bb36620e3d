"""The operator's settings, in one typed place.

Precedence: command-line flags override environment variables, which override defaults. The two seeds'
spellings are settings too: the TCS seed's flags (``--metrics-bind-address``, ``--leader-elect``, the
``--zap-*`` logging flags ...), its ``WATCH_NAMESPACE`` and the pod's own namespace, kopf's run options
(``--liveness``, ``--quiet``, ``--log-format`` ...) and the EST seed's ``CLUSTER_SCOPE_NAMESPACE``.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Self, cast

from keyward.errors import UserError
from keyward.host import MAX_SIGNING_PROCESSES, ListenAddress, processes_per_core
from keyward.keystore.config import HsmConfig, HsmFallback, load_hsm_config
from keyward.pki.durations import parse_duration
from keyward.pki.keywrap import DEFAULT_WRAP_MECHANISM, WRAP_MECHANISMS, WrapMechanism, wrap_mechanism

DEFAULT_OPERATOR_NAMESPACE = "keyward-system"
#: The TCS seed's HSM config path: read when no other is given and the file exists (its Helm chart
#: mounts none and relies on this default).
DEFAULT_HSM_CONFIG_FILE = Path("/etc/hsm/config.json")
#: Where Kubernetes tells a pod its namespace (the TCS seed's fallback for its operator namespace).
SERVICE_ACCOUNT_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

ENV_OPERATOR_NAMESPACE = "KEYWARD_OPERATOR_NAMESPACE"
ENV_WATCH_NAMESPACE = "WATCH_NAMESPACE"  # the TCS seed's: its operator namespace (cluster issuers' Secrets)
ENV_POD_NAMESPACE = "POD_NAMESPACE"  # the downward API's usual name for the pod's namespace
ENV_CLUSTER_SCOPE_NAMESPACE = "CLUSTER_SCOPE_NAMESPACE"  # the EST seed's variable for cluster issuers
ENV_WATCH_NAMESPACES = "KEYWARD_NAMESPACES"  # comma-separated; empty = all namespaces
ENV_HSM_CONFIG_FILE = "KEYWARD_HSM_CONFIG_FILE"
ENV_HEALTH_LISTEN = "KEYWARD_HEALTH_LISTEN"
ENV_METRICS_LISTEN = "KEYWARD_METRICS_LISTEN"
ENV_EST_LISTEN = "KEYWARD_EST_LISTEN"
ENV_EST_TLS_SECRET = "KEYWARD_EST_TLS_SECRET"  # noqa: S105 - a variable name
ENV_EST_ISSUER = "KEYWARD_EST_ISSUER"
ENV_EST_HOSTNAMES = "KEYWARD_EST_HOSTNAMES"  # comma-separated
ENV_EST_DEFAULT_NAMESPACES = "KEYWARD_EST_DEFAULT_NAMESPACES"  # comma-separated
ENV_CSR_FULL_CHAIN = "KEYWARD_CSR_FULL_CERT_CHAIN"
ENV_SIGNING_PROCESSES = "KEYWARD_SIGNING_PROCESSES"
ENV_LEADER_ELECT = "KEYWARD_LEADER_ELECT"
ENV_LEASE_DURATION = "KEYWARD_LEASE_DURATION"
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
# The Kubernetes API: seconds, or Go durations such as 1m (see ApiSettings)
ENV_API_TIMEOUT = "KEYWARD_API_TIMEOUT"
ENV_WRITE_BACKOFF_LIMIT = "KEYWARD_WRITE_BACKOFF_LIMIT"
ENV_WRITE_REFUSED_DELAY = "KEYWARD_WRITE_REFUSED_DELAY"
# TCS issuers: seconds, or Go durations
ENV_TCS_RECHECK_INTERVAL = "KEYWARD_TCS_RECHECK_INTERVAL"
ENV_TCS_RECHECK_FAILED = "KEYWARD_TCS_RECHECK_FAILED"


class _Durations:
    """Settings in seconds, each read from its environment variable (``VARIABLES``) or its default."""

    VARIABLES: ClassVar[dict[str, str]]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(
            **{
                name: _positive_duration(env.get(var), var, getattr(cls, name))
                for name, var in cls.VARIABLES.items()
            }
        )


@dataclass(frozen=True)
class ApiSettings(_Durations):
    """How the operator treats the Kubernetes API when it fails, in seconds (environment: seconds or Go
    durations). Every write that fails is retried until it lands (operator.status)."""

    VARIABLES: ClassVar[dict[str, str]] = {
        "timeout": ENV_API_TIMEOUT,
        "write_backoff_limit": ENV_WRITE_BACKOFF_LIMIT,
        "write_refused_delay": ENV_WRITE_REFUSED_DELAY,
    }
    timeout: float = 30.0  # the longest any one API call may take (no answer: retried as unreachable)
    write_backoff_limit: float = 30.0  # longest wait between retries of a failed write (from 0.5 s, doubling)
    write_refused_delay: float = 60.0  # wait before retrying a write the API refused (403, 400, 422)


@dataclass(frozen=True)
class TcsIssuerSettings(_Durations):
    """How often token-backed issuers are checked again, in seconds (environment: seconds or Go durations).
    A change of the issuer or of its Secret checks it at once."""

    VARIABLES: ClassVar[dict[str, str]] = {
        "recheck_interval": ENV_TCS_RECHECK_INTERVAL,
        "recheck_failed": ENV_TCS_RECHECK_FAILED,
    }
    recheck_interval: float = 300.0  # a ready issuer: is its CA key still in the token?
    recheck_failed: float = 30.0  # an issuer not ready for a reason someone must fix (a missing CA key)


@dataclass(frozen=True)
class EstClientSettings(_Durations):
    """How EST issuers talk to their servers, in seconds (environment: seconds or Go durations, e.g. 10m)."""

    VARIABLES: ClassVar[dict[str, str]] = {
        "recheck_interval": ENV_EST_RECHECK_INTERVAL,
        "auth_retry_delay": ENV_EST_AUTH_RETRY_DELAY,
        "backoff_limit": ENV_EST_BACKOFF_LIMIT,
        "max_retry_duration": ENV_EST_MAX_RETRY_DURATION,
        "timeout": ENV_EST_TIMEOUT,
    }
    recheck_interval: float = 600.0  # issuers re-check /cacerts this often (the seed's 10 minutes)
    auth_retry_delay: float = 600.0  # after a 401, retry this much later with re-read credentials
    backoff_limit: float = 300.0  # longest wait between retries of transient failures
    max_retry_duration: float = 3600.0  # transient failures for this long fail the request
    timeout: float = 30.0  # per read (connect: at most 10 s)


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["plain", "full", "json"]
#: controller-runtime's zap flags and the values they accept (a positive number is a debug verbosity).
ZAP_LEVELS: dict[str, LogLevel] = {"debug": "DEBUG", "info": "INFO", "error": "ERROR"}
ZAP_ENCODERS: dict[str, LogFormat] = {"json": "json", "console": "full"}
ZAP_STACKTRACE_LEVELS = ("info", "error", "panic")
ZAP_TIME_ENCODINGS = ("epoch", "millis", "nano", "iso8601", "rfc3339", "rfc3339nano")


@dataclass(frozen=True)
class Settings:
    """Everything the operator needs to know before it starts."""

    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE
    #: Where operator_namespace came from, for the start-up log line.
    operator_namespace_source: str = "the default"
    #: Namespace of EST cluster issuers' Secrets (the seed's CLUSTER_SCOPE_NAMESPACE), default: operator ns.
    cluster_scope_namespace: str | None = None
    #: Namespaces to watch; empty = the whole cluster.
    namespaces: tuple[str, ...] = ()
    hsm_config_file: Path | None = None
    hsm: HsmConfig = field(default_factory=HsmConfig)
    #: The TCS seed's deprecated --token-label/--user-pin/--so-pin: only where the config file is silent.
    hsm_fallback: HsmFallback = field(default_factory=HsmFallback)
    standalone: bool = False
    #: kopf peering: the peering object's name (default "keyward") and this operator's priority in it.
    peering_name: str | None = None
    priority: int | None = None
    #: Several replicas, one leading through a coordination.k8s.io Lease (the others stand by).
    leader_elect: bool = False
    #: Seconds a leader's Lease lasts without renewal (client-go's default 15; renewed every 2/15 of it).
    lease_duration: float = 15.0
    health_listen: ListenAddress = ListenAddress("0.0.0.0", 8083)  # noqa: S104
    #: The path of the health endpoint on health_listen (kopf's --liveness URL may name another).
    health_path: str = "/healthz"
    metrics_listen: ListenAddress = ListenAddress("0.0.0.0", 8082)  # noqa: S104
    #: Key provisioning (TCS seed): a random nonce in the attestation evidence, and the wrapping of the
    #: CA key the key manager sends (tcs.md: AES key wrap with padding, or AES-GCM).
    use_random_nonce: bool = True
    key_wrap_mechanism: WrapMechanism = DEFAULT_WRAP_MECHANISM
    #: Serve cert-manager CertificateRequests (the TCS seed's --cert-manager-issuer); False: CSRs only.
    cert_manager_issuer: bool = True
    est_listen: ListenAddress = ListenAddress("0.0.0.0", 8443)  # noqa: S104
    #: The EST server's TLS certificate: a kubernetes.io/tls Secret "NAMESPACE/NAME" ...
    est_tls_secret: str | None = None
    #: ... or issued by this TCS issuer ("TCSIssuer/NS/NAME", "TCSClusterIssuer/NAME") for est_hostnames.
    est_issuer: str | None = None
    est_hostnames: tuple[str, ...] = ()
    #: Namespaces besides the operator's whose TCSIssuers may be the EST server's default CA.
    est_default_namespaces: tuple[str, ...] = ()
    csr_full_cert_chain: bool = False
    #: Processes that decode and sign requests, each with its own token session (0: threads only).
    signing_processes: int = field(default_factory=lambda: processes_per_core())
    est_client: EstClientSettings = field(default_factory=EstClientSettings)
    #: This replica's name (the pod's): each replica with a token of its own asks for keys under it.
    replica_name: str | None = None
    #: How long a request carrying an SGX quote waits for the key manager's verdict, in seconds.
    quote_verification_timeout: float = 600.0
    api: ApiSettings = field(default_factory=ApiSettings)
    tcs_issuers: TcsIssuerSettings = field(default_factory=TcsIssuerSettings)
    #: Tracebacks on errors (--verbose, --debug).
    verbose: bool = False
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "full"
    #: kopf's --debug: asyncio's and the HTTP client's debug logs too.
    debug: bool = False

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


def _seconds(variable: str, text: str | None, default: float, *, minimum: float) -> float:
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < minimum:
        raise UserError(
            f"{variable}={text[:40]!r} is not a number of seconds ≥ {minimum:g}", "write it like 15"
        )
    return value


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def load_settings(
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE,
    default_hsm_config_file: Path = DEFAULT_HSM_CONFIG_FILE,
) -> Settings:
    """Build settings from flags (None = not given) over environment over defaults."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None and v != ()}
    env = os.environ if env is None else env

    def pick(flag: str, var: str, default: str | None = None) -> str | None:
        value = flags.get(flag)
        return str(value) if value is not None else env.get(var) or default

    namespaces_flag = flags.get("namespaces")
    if namespaces_flag:
        if flags.get("all_namespaces"):
            raise UserError(
                "--namespace and --all-namespaces are both given", "watch some namespaces, or all of them"
            )
        namespaces = tuple(str(n) for n in namespaces_flag)  # type: ignore[attr-defined]
    elif flags.get("all_namespaces"):
        namespaces = ()
    else:
        namespaces = tuple(n.strip() for n in env.get(ENV_WATCH_NAMESPACES, "").split(",") if n.strip())

    hsm_file = pick("hsm_config_file", ENV_HSM_CONFIG_FILE)
    hsm_path = Path(hsm_file) if hsm_file else None
    if hsm_path is None and default_hsm_config_file.is_file():
        hsm_path = default_hsm_config_file
    fallback = HsmFallback(
        token_label=_text(flags.get("token_label")),
        user_pin=_text(flags.get("user_pin")),
        so_pin=_text(flags.get("so_pin")),
    )
    est_tls_secret, est_issuer, est_hostnames = _est_tls_source(
        pick("est_tls_secret", ENV_EST_TLS_SECRET),
        pick("est_issuer", ENV_EST_ISSUER),
        flags.get("est_hostnames") or env.get(ENV_EST_HOSTNAMES, ""),
    )
    operator_namespace, namespace_source = _operator_namespace(flags, env, namespace_file)
    health_listen, health_path = _health_endpoint(flags, env)
    log_level, log_format = _logging(flags)
    return Settings(
        operator_namespace=operator_namespace,
        operator_namespace_source=namespace_source,
        cluster_scope_namespace=env.get(ENV_CLUSTER_SCOPE_NAMESPACE) or None,
        namespaces=namespaces,
        hsm_config_file=hsm_path,
        hsm=load_hsm_config(hsm_path, env, fallback=fallback),
        hsm_fallback=fallback,
        standalone=bool(flags.get("standalone", False)),
        peering_name=_text(flags.get("peering")),
        priority=_priority(flags.get("priority")),
        leader_elect=bool(flags.get("leader_elect")) or _truthy(env.get(ENV_LEADER_ELECT)),
        lease_duration=_seconds(ENV_LEASE_DURATION, env.get(ENV_LEASE_DURATION), 15.0, minimum=1.0),
        health_listen=health_listen,
        health_path=health_path,
        metrics_listen=ListenAddress.parse(
            pick("metrics_listen", ENV_METRICS_LISTEN, "0.0.0.0:8082") or "", what="metrics"
        ),
        use_random_nonce=_flag_or_env(flags.get("use_random_nonce"), env.get(ENV_USE_RANDOM_NONCE), True),
        key_wrap_mechanism=_wrap_mechanism(pick("key_wrap_mechanism", ENV_KEY_WRAP_MECHANISM)),
        cert_manager_issuer=bool(flags.get("cert_manager_issuer", True)),
        est_listen=ListenAddress.parse(pick("est_listen", ENV_EST_LISTEN, "0.0.0.0:8443") or "", what="EST"),
        est_tls_secret=est_tls_secret,
        est_issuer=est_issuer,
        est_hostnames=est_hostnames,
        est_default_namespaces=_names(
            flags.get("est_default_namespaces") or env.get(ENV_EST_DEFAULT_NAMESPACES, "")
        ),
        csr_full_cert_chain=bool(flags.get("csr_full_cert_chain")) or _truthy(env.get(ENV_CSR_FULL_CHAIN)),
        signing_processes=_signing_processes(pick("signing_processes", ENV_SIGNING_PROCESSES)),
        est_client=EstClientSettings.from_env(env),
        replica_name=_replica_name(pick("replica_name", ENV_REPLICA_NAME) or env.get(ENV_POD_NAME)),
        quote_verification_timeout=_positive_duration(
            pick("quote_verification_timeout", ENV_QUOTE_VERIFICATION_TIMEOUT),
            "--quote-verification-timeout",
            Settings.quote_verification_timeout,
        ),
        api=ApiSettings.from_env(env),
        tcs_issuers=TcsIssuerSettings.from_env(env),
        verbose=bool(flags.get("verbose") or flags.get("debug")),
        log_level=log_level,
        log_format=log_format,
        debug=bool(flags.get("debug", False)),
    )


def _text(value: object) -> str | None:
    return str(value) if value is not None and str(value) != "" else None


def _operator_namespace(
    flags: Mapping[str, object], env: Mapping[str, str], namespace_file: Path
) -> tuple[str, str]:
    """The operator's namespace (cluster issuers' Secrets) and where it came from: the flag, keyward's
    variable, the TCS seed's WATCH_NAMESPACE, the pod's namespace (POD_NAMESPACE, then the
    service-account file Kubernetes mounts), else keyward-system."""
    if flags.get("operator_namespace"):
        return str(flags["operator_namespace"]), "--operator-namespace"
    for var in (ENV_OPERATOR_NAMESPACE, ENV_WATCH_NAMESPACE, ENV_POD_NAMESPACE):
        if env.get(var, "").strip():
            return env[var].strip(), var
    try:
        found = namespace_file.read_text().strip()
    except OSError:
        found = ""
    if found:
        return found, f"the pod's namespace ({namespace_file})"
    return DEFAULT_OPERATOR_NAMESPACE, "the default"


def _priority(value: object) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value))
    except ValueError:
        raise UserError(f"--priority {str(value)[:20]!r} is not a number", "write it like 100") from None


def _health_endpoint(flags: Mapping[str, object], env: Mapping[str, str]) -> tuple[ListenAddress, str]:
    """The health endpoint: --health-listen / --health-probe-bind-address HOST:PORT, or kopf's --liveness
    URL (e.g. http://0.0.0.0:8080/healthz), which may also name the path."""
    url = _text(flags.get("liveness"))
    listen = _text(flags.get("health_listen"))
    if url is None:
        text = listen or env.get(ENV_HEALTH_LISTEN) or "0.0.0.0:8083"
        return ListenAddress.parse(text, what="health"), "/healthz"
    if listen is not None:
        raise UserError(
            "--liveness and --health-listen (--health-probe-bind-address) are both given",
            "give the health endpoint once",
        )
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port if parts.port is not None else 80
    except ValueError:
        port = -1
    if parts.scheme != "http" or not parts.netloc or port < 0:
        raise UserError(
            f"--liveness {url[:60]!r} is not an http://HOST:PORT/PATH URL",
            "write it like http://0.0.0.0:8080/healthz",
        )
    return ListenAddress(parts.hostname or "0.0.0.0", port), parts.path or "/"  # noqa: S104


def _logging(flags: Mapping[str, object]) -> tuple[LogLevel, LogFormat]:
    """Log level and format from kopf's --debug/--verbose/--quiet/--log-format and the TCS seed's zap
    flags (--zap-devel: debug level and console format unless --zap-log-level/--zap-encoder say else)."""
    devel = bool(flags.get("zap_devel"))
    zap_level = _text(flags.get("zap_log_level"))
    level: LogLevel = "DEBUG" if devel else "INFO"
    if zap_level is not None:
        if zap_level.lower() in ZAP_LEVELS:
            level = ZAP_LEVELS[zap_level.lower()]
        elif zap_level.isdigit() and int(zap_level) > 0:
            level = "DEBUG"  # a debug verbosity: the higher, the more
        else:
            raise UserError(
                f"--zap-log-level {zap_level[:20]!r} is not a log level",
                "use debug, info, error, or a number above 0 (debug verbosity)",
            )
    if flags.get("debug") or flags.get("verbose"):
        level = "DEBUG"
    elif flags.get("quiet"):
        level = "WARNING"
    for flag, value, allowed in (
        ("--zap-stacktrace-level", flags.get("zap_stacktrace_level"), ZAP_STACKTRACE_LEVELS),
        ("--zap-time-encoding", flags.get("zap_time_encoding"), ZAP_TIME_ENCODINGS),
        ("--zap-encoder", flags.get("zap_encoder"), tuple(ZAP_ENCODERS)),
    ):
        if value is not None and str(value) not in allowed:
            raise UserError(f"{flag} {str(value)[:20]!r} is not known", f"use one of {', '.join(allowed)}")
    log_format: LogFormat = "full"
    if flags.get("zap_encoder") is not None:
        log_format = ZAP_ENCODERS[str(flags["zap_encoder"])]
    if flags.get("log_format") is not None:
        log_format = cast(LogFormat, str(flags["log_format"]).lower())
    return level, log_format


def _names(values: object) -> tuple[str, ...]:
    """Comma-separated names, from one string (the environment) or several (a repeated flag)."""
    items = [values] if isinstance(values, str) else list(values)  # type: ignore[call-overload]
    return tuple(dict.fromkeys(n.strip() for item in items for n in str(item).split(",") if n.strip()))


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
    except ValueError:
        raise UserError(
            f"--key-wrap-mechanism {text.strip()[:30]!r} is not known",
            f"use the one the key managers wrap with: {', '.join(WRAP_MECHANISMS)}",
        ) from None


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
    names = _names(hostnames)
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
