"""The requests an EstOrder enrolls for (CertificateRequests and CSRs): reading them, and their one write.

The status conventions are those of the TCS adapters (certificaterequests.py, csrs.py), reused for the
Pending, Failed and Denied shapes; only the Issued status differs, because the chain comes from an EST
server instead of our own CA.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from cryptography import x509

from keyward.issuers import conditions
from keyward.issuers.contract import Phase
from keyward.issuers.signer_names import EST_GROUP
from keyward.kube.client import ApiError, Kube
from keyward.kube.resources import CERTIFICATE_REQUESTS, CSRS
from keyward.operator.tcs.certificaterequests import CertificateRequestAdapter
from keyward.operator.tcs.csrs import CsrAdapter
from keyward.pki.pem import pem_chain

log = logging.getLogger("keyward.est.requests")
WRITE_ATTEMPTS = 5


class EstCertificateRequests(CertificateRequestAdapter):
    """cert-manager CertificateRequests whose issuerRef.group is est.mitre.org."""

    def __init__(self) -> None:
        super().__init__(group=EST_GROUP)

    def request_field(self, body: Mapping[str, Any]) -> str:
        return str((body.get("spec") or {}).get("request") or "")

    def enrolled_status(
        self, body: Mapping[str, Any], chain: list[x509.Certificate], ca: list[x509.Certificate], issuer: str
    ) -> dict[str, Any]:
        previous = (body.get("status") or {}).get("conditions")
        return {
            "certificate": base64.b64encode(pem_chain(chain)).decode(),
            "ca": base64.b64encode(pem_chain(ca)).decode(),
            "conditions": conditions.replace(
                previous,
                conditions.make(
                    "Ready",
                    True,
                    "Issued",
                    f"Certificate fetched from {issuer} successfully",
                    previous=previous,
                ),
            ),
        }


class EstCsrs(CsrAdapter):
    """Kubernetes CSRs for estissuer.est.mitre.org/<ns>.<name> or estclusterissuer.est.mitre.org/<name>."""

    def __init__(self, *, full_chain: bool) -> None:
        super().__init__(group=EST_GROUP, full_chain=full_chain)

    def request_field(self, body: Mapping[str, Any]) -> str:
        # spec.request is bytes in the API: base64 in JSON of the PEM, the same shape as an EstOrder's.
        return str((body.get("spec") or {}).get("request") or "")

    def enrolled_status(
        self, body: Mapping[str, Any], chain: list[x509.Certificate], ca: list[x509.Certificate], issuer: str
    ) -> dict[str, Any]:
        certificates = chain if self.full_chain else chain[:1]
        return {"certificate": base64.b64encode(pem_chain(certificates)).decode()}


Owner = EstCertificateRequests | EstCsrs


class Owners:
    """Both adapters, and the exactly-once write of a final status to the owning request."""

    def __init__(self, kube: Kube, *, csr_full_chain: bool) -> None:
        self.kube = kube
        self.certificate_requests = EstCertificateRequests()
        self.csrs = EstCsrs(full_chain=csr_full_chain)

    def for_kind(self, kind: str) -> Owner | None:
        if kind == CERTIFICATE_REQUESTS.kind:
            return self.certificate_requests
        if kind == CSRS.kind:
            return self.csrs
        return None

    async def fetch(self, owner: Owner, name: str, namespace: str | None) -> dict[str, Any] | None:
        return await self.kube.find(owner.resource, name, namespace)

    async def write(
        self,
        owner: Owner,
        body: Mapping[str, Any],
        status: dict[str, Any] | None,
        *,
        event: tuple[str, str] | None = None,
        warning: bool = False,
    ) -> dict[str, Any] | None:
        """One status write, carrying the resourceVersion it was decided on; None when it moved on."""
        if status is None:
            return None
        meta = body["metadata"]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        try:
            written = await self.kube.patch(
                owner.resource, meta["name"], patch, meta.get("namespace"), subresource="status"
            )
        except ApiError as exc:
            if exc.conflict or exc.not_found:
                return None
            raise
        if event is not None:
            _post(body, event, warning)
        return written

    async def finish(
        self,
        owner: Owner,
        body: Mapping[str, Any],
        status_for: Any,
        *,
        event: tuple[str, str],
        warning: bool = False,
    ) -> bool:
        """Write a final status (certificate or failure) exactly once.

        The write carries the resourceVersion of the request as read; when something else wrote the
        request meanwhile (409), it is read again and — if it is still approved and unfinished — written
        again: the enrollment result is never thrown away, and never written over a finished request.
        """
        current: Mapping[str, Any] | None = body
        for _ in range(WRITE_ATTEMPTS):
            if current is None or owner.phase(current) is not Phase.APPROVED:
                return False
            if await self.write(owner, current, status_for(current), event=event, warning=warning):
                return True
            meta = current["metadata"]
            current = await self.fetch(owner, meta["name"], meta.get("namespace"))
        log.warning("could not write the result to %s %s: it kept changing", owner.noun, _name(body))
        return False


def _post(body: Mapping[str, Any], event: tuple[str, str], warning: bool) -> None:
    try:
        (kopf.warn if warning else kopf.info)(dict(body), reason=event[0], message=event[1])  # type: ignore[arg-type]
    except Exception:  # outside kopf's context (tests); an Event is a courtesy, never a failure
        log.debug("could not post the %s event on %s", event[0], _name(body))


def _name(body: Mapping[str, Any]) -> str:
    meta = body["metadata"]
    return f"{meta.get('namespace') + '/' if meta.get('namespace') else ''}{meta['name']}"
