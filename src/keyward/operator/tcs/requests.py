"""CertificateRequests (issuerRef.group tcs.intel.com) and CSRs (TCS signer names) → the signing pipeline
(their events come from ``operator.request_watches``)."""

from __future__ import annotations

import functools

from keyward.kube.resources import TCS_GROUP
from keyward.operator.references import SignerReferences
from keyward.operator.requests import CertificateRequests, Csrs
from keyward.operator.status import StatusWriter
from keyward.operator.tcs.attestations import RequestAttestations
from keyward.operator.tcs.cas import ReadyCas
from keyward.operator.tcs.pipeline import Describe, Recheck, SigningPipeline
from keyward.operator.tcs.token import TokenProvider

CERTIFICATE_REQUEST_KIND = CertificateRequests(TCS_GROUP)


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
        references: SignerReferences | None = None,
    ) -> None:
        shared = functools.partial(
            SigningPipeline,
            cas=cas,
            tokens=tokens,
            writer=writer,
            describe=describe,
            attestations=attestations,
            recheck=recheck,
        )
        self.certificate_requests = shared(CERTIFICATE_REQUEST_KIND)
        self.csrs = shared(Csrs(TCS_GROUP, full_chain=csr_full_chain), references=references)
        cas.listen(self.wake)

    def wake(self, label: str) -> None:
        """Retry the requests waiting for ``label``: an issuer's signer name, or a QuoteAttestation's
        (``attestations.label_of``)."""
        self.certificate_requests.wake(label)
        self.csrs.wake(label)

    def close(self) -> None:
        self.certificate_requests.waiting.close()
        self.csrs.waiting.close()
