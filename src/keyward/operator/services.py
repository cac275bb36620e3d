"""What the handlers share in one operator process, typed: kopf hands it to every handler as ``memo``.

Made before kopf starts (kopf gives each object a shallow copy of it, so everything shared is made
here or in the startup handler, on the original, before the first copy); the startup handler connects
the API and builds the controllers (``operator.app``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from keyward.kube.client import Kube
from keyward.operator.leader import LeaderElector, Leadership
from keyward.operator.settings import Settings
from keyward.operator.status import StatusWriter
from keyward.operator.tcs.cas import ReadyCas
from keyward.operator.tcs.token import TokenProvider

if TYPE_CHECKING:  # built at startup by operator.app; the handler modules import this one
    from keyward.operator.est.services import EstControllers
    from keyward.operator.est_server.service import EstService
    from keyward.operator.health import ProbeServer
    from keyward.operator.request_watches import RequestWatches
    from keyward.operator.secrets import OwnedObjects, SecretStore
    from keyward.operator.tcs.issuers import TcsIssuers
    from keyward.operator.tcs.requests import TcsRequests

T = TypeVar("T")


class NotStarted(RuntimeError):
    """A handler ran before the operator's startup handler built what it needs (a bug)."""


@dataclass
class Services:
    settings: Settings = field(default_factory=Settings)
    #: The PKCS#11 token, made with the services: one key store per operator process.
    tokens: TokenProvider = field(init=False)
    #: Ready token-backed CAs by signer name, filled by the issuer reconciler.
    cas: ReadyCas = field(default_factory=ReadyCas)
    #: Whether this replica leads (always, without --leader-elect).
    leadership: Leadership = field(default_factory=Leadership)
    elector: LeaderElector | None = None
    #: kopf's stop flag: set when a leader lost its Lease, and once the operator has cleaned up (kopf
    #: waits for its waiter task like any other before it exits).
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    #: The Lease was lost: the process exits 1, to be restarted as a standby.
    leadership_lost: bool = False
    kube_client: Kube | None = None
    writer: StatusWriter | None = None
    tcs_issuer_checks: TcsIssuers | None = None
    tcs_requests: TcsRequests | None = None
    est_controllers: EstControllers | None = None
    est_service: EstService | None = None
    probes: ProbeServer | None = None
    secret_store: SecretStore | None = None
    #: Watches of keyward's own objects (its Secrets, its QuoteAttestations).
    owned: list[OwnedObjects] = field(default_factory=list)
    request_watches: RequestWatches | None = None

    def __post_init__(self) -> None:
        self.tokens = TokenProvider(self.settings)

    @property
    def kube(self) -> Kube:
        return _started(self.kube_client, "the API client")

    @property
    def status(self) -> StatusWriter:
        return _started(self.writer, "the status writer")

    @property
    def tcs_issuers(self) -> TcsIssuers:
        return _started(self.tcs_issuer_checks, "the TCS issuer checks")

    @property
    def tcs(self) -> TcsRequests:
        return _started(self.tcs_requests, "the TCS request pipelines")

    @property
    def est(self) -> EstControllers:
        return _started(self.est_controllers, "the EST controllers")

    @property
    def requests(self) -> RequestWatches:
        return _started(self.request_watches, "the request watches")

    @property
    def est_server(self) -> EstService:
        return _started(self.est_service, "the EST server")


def _started(value: T | None, what: str) -> T:
    if value is None:
        raise NotStarted(f"{what} is used before the operator started")
    return value
