"""The reference check of Kubernetes CSRs that name a namespaced issuer (``keyward.issuers.references``):
asked of the API server with SubjectAccessReviews, once per signing attempt (before signing, or before
an EstOrder is made), and never cached: a permission revoked counts from the next CSR on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keyward.issuers.objects import RequestObject
from keyward.issuers.references import denied_reference, reference_reviews
from keyward.issuers.signer_names import IssuerRef
from keyward.kube.client import Kube
from keyward.kube.resources import SUBJECT_ACCESS_REVIEWS

#: The Failed reason of a CSR whose requester may not use the issuer it names (cert-manager's).
DENIED_REFERENCE = "DeniedReference"


class SignerReferences:
    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    async def denial(self, csr: Mapping[str, Any], ref: IssuerRef) -> str | None:
        """None when the CSR's requester may reference ``ref`` (or ``ref`` needs no check); otherwise why
        the CSR fails. ``ApiError`` when the API server does not answer: nothing is decided then."""
        request = RequestObject.from_body(csr)
        reviews = reference_reviews(request, ref)
        if reviews is None:
            return None
        for review in reviews:
            answer = await self._kube.create(SUBJECT_ACCESS_REVIEWS, review)
            if (answer.get("status") or {}).get("allowed") is True:
                return None
        return denied_reference(request, ref)
