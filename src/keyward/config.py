"""The operator's settings, in one typed place.

Precedence: command-line flags override environment variables, which override defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from keyward.errors import UserError
from keyward.keystore.config import HsmConfig, load_hsm_config

DEFAULT_OPERATOR_NAMESPACE = "keyward-system"

ENV_OPERATOR_NAMESPACE = "KEYWARD_OPERATOR_NAMESPACE"
ENV_CLUSTER_SCOPE_NAMESPACE = "CLUSTER_SCOPE_NAMESPACE"  # the EST seed's variable for cluster issuers
ENV_WATCH_NAMESPACES = "KEYWARD_NAMESPACES"  # comma-separated; empty = all namespaces
ENV_HSM_CONFIG_FILE = "KEYWARD_HSM_CONFIG_FILE"
ENV_HEALTH_LISTEN = "KEYWARD_HEALTH_LISTEN"
ENV_METRICS_LISTEN = "KEYWARD_METRICS_LISTEN"
ENV_EST_LISTEN = "KEYWARD_EST_LISTEN"
ENV_CSR_FULL_CHAIN = "KEYWARD_CSR_FULL_CERT_CHAIN"


@dataclass(frozen=True)
class ListenAddress:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, *, what: str) -> ListenAddress:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise UserError(f"{what} address {text!r} is not HOST:PORT", f"write it like 0.0.0.0:{8443}")
        return cls(host.strip("[]") or "0.0.0.0", int(port))  # noqa: S104 - a listen default

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


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
    csr_full_cert_chain: bool = False
    verbose: bool = False

    @property
    def est_cluster_namespace(self) -> str:
        """Where EST cluster issuers keep their Secrets."""
        return self.cluster_scope_namespace or self.operator_namespace


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
        csr_full_cert_chain=bool(flags.get("csr_full_cert_chain")) or _truthy(env.get(ENV_CSR_FULL_CHAIN)),
        verbose=bool(flags.get("verbose", False)),
    )
