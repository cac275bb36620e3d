"""CertificateRequests (issuerRef.group tcs.intel.com) and CSRs (TCS signer names) → the signing pipeline."""

from __future__ import annotations

from typing import Any

import kopf

from keyward.kube.resources import CERTIFICATE_REQUESTS, CSRS, TCS_GROUP
from keyward.operator.registry import registry
from keyward.operator.requests import CertificateRequests, Csrs
from keyward.operator.services import Services
from keyward.operator.status import StatusWriter
from keyward.operator.tcs.attestations import RequestAttestations
from keyward.operator.tcs.cas import ReadyCas
from keyward.operator.tcs.pipeline import Describe, Recheck, SigningPipeline
from keyward.operator.tcs.token import TokenProvider

CERTIFICATE_REQUEST_KIND = CertificateRequests(TCS_GROUP)
CSR_KIND = Csrs(TCS_GROUP)


class TcsRequests:
    """The two pipelines of token-backed issuers, woken together when an issuer turns ready."""

    def __init__(
        self,
        *,
        cas: ReadyCas,
        tokens: TokenProvider,
        writer: StatusWriter,
        describe: Describe,
        recheck: Recheck,
        csr_full_chain: bool,
        attestations: RequestAttestations,
    ) -> None:
        self.certificate_requests = SigningPipeline(
            CERTIFICATE_REQUEST_KIND,
            cas=cas,
            tokens=tokens,
            writer=writer,
            describe=describe,
            attestations=attestations,
            recheck=recheck,
        )
        self.csrs = SigningPipeline(
            Csrs(TCS_GROUP, full_chain=csr_full_chain),
            cas=cas,
            tokens=tokens,
            writer=writer,
            describe=describe,
            attestations=attestations,
            recheck=recheck,
        )
        cas.listen(self.wake)

    def wake(self, label: str) -> None:
        """Retry the requests waiting for ``label``: an issuer's signer name, or a QuoteAttestation's
        (``attestations.label_of``)."""
        self.certificate_requests.wake(label)
        self.csrs.wake(label)

    def close(self) -> None:
        self.certificate_requests.waiting.close()
        self.csrs.waiting.close()


def _is_tcs_request(spec: Any, memo: Services, **_: Any) -> bool:
    return memo.settings.cert_manager_issuer and CERTIFICATE_REQUEST_KIND.wants(spec)


def _is_tcs_signer(spec: Any, **_: Any) -> bool:
    return CSR_KIND.wants(spec)


@kopf.on.event(*CERTIFICATE_REQUESTS.handler_args, when=_is_tcs_request, registry=registry)
async def certificate_request_event(type: str, body: Any, memo: Services, **_: Any) -> None:
    if memo.leadership.leading:  # a standby signs nothing; the leader replays every request on taking over
        await memo.tcs.certificate_requests.on_event(type or "ADDED", body)


@kopf.on.event(*CSRS.handler_args, when=_is_tcs_signer, registry=registry)
async def csr_event(type: str, body: Any, memo: Services, **_: Any) -> None:
    if memo.leadership.leading:
        await memo.tcs.csrs.on_event(type or "ADDED", body)
