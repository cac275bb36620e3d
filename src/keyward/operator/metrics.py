"""The operator's Prometheus metrics (docs/METRICS.md is their contract) on a registry of its own.

Counters and histograms are counted where things happen; gauges that describe the present (requests
parked, issuers ready, tokens usable) are read at scrape time from the controllers, so they can never
drift from what the controllers hold.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

_REQUEST = ("issuer_kind", "request_kind")
ISSUED = Counter(
    "keyward_certificates_issued", "Requests answered with a certificate", _REQUEST, registry=REGISTRY
)
FAILED = Counter(
    "keyward_certificates_failed", "Requests answered with a final failure", _REQUEST, registry=REGISTRY
)
DENIED = Counter(
    "keyward_certificates_denied",
    "Denied requests marked failed without signing",
    _REQUEST,
    registry=REGISTRY,
)
SIGNING_LATENCY = Histogram(
    "keyward_signing_latency_seconds",
    "From picking up an approved request to its certificate written",
    ["issuer_kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
API_WRITE_FAILURES = Counter(
    "keyward_api_write_failures",
    "Writes to the Kubernetes API that failed, by HTTP status",
    ["code"],
    registry=REGISTRY,
)
EST_REQUESTS = Counter(
    "keyward_est_requests",
    "Requests to the operator's EST server",
    ["operation", "status"],
    registry=REGISTRY,
)
EST_ENROLLMENT = Histogram(
    "keyward_est_enrollment_seconds",
    "EST issuers: from an EstOrder's creation to its certificate",
    ["issuer_kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)


@dataclass(frozen=True)
class IssuerState:
    kind: str
    namespace: str
    name: str
    ready: bool


@dataclass
class Sources:
    """What the gauges read at scrape time (set when the operator is built)."""

    parked: Callable[[], Iterable[tuple[str, int]]] = lambda: ()
    issuers: Callable[[], Iterable[IssuerState]] = lambda: ()
    token_up: Callable[[], Iterable[tuple[str, bool]]] = lambda: ()


class _Present(Collector):
    def __init__(self) -> None:
        self.sources = Sources()

    def collect(self) -> Iterator[Metric]:
        parked = GaugeMetricFamily(
            "keyward_requests_parked",
            "Approved requests waiting now, by what they wait for",
            labels=["reason"],
        )
        counts: dict[str, int] = {}
        for reason, count in self.sources.parked():
            counts[reason] = counts.get(reason, 0) + count
        for reason, count in sorted(counts.items()):
            parked.add_metric([reason], count)
        yield parked
        ready = GaugeMetricFamily(
            "keyward_issuer_ready",
            "1 when the issuer's Ready condition is True",
            labels=["kind", "namespace", "name"],
        )
        for issuer in self.sources.issuers():
            ready.add_metric([issuer.kind, issuer.namespace, issuer.name], 1 if issuer.ready else 0)
        yield ready
        token = GaugeMetricFamily(
            "keyward_token_up", "1 when the token holding the issuer's CA key can be used", labels=["issuer"]
        )
        for signer, up in self.sources.token_up():
            token.add_metric([signer], 1 if up else 0)
        yield token


PRESENT = _Present()
REGISTRY.register(PRESENT)
