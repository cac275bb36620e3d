"""``cmctl approve|deny|renew`` for the sandbox: the same status writes cmctl makes.

approve/deny set the CertificateRequest's Approved/Denied condition through /status (a decision is final,
so a request already decided is refused); renew sets the Certificate's Issuing=True condition with reason
ManuallyTriggered, which cert-manager (here, the stand-in) answers with a new CertificateRequest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keyward.errors import UserError
from keyward.kube.client import ApiError, Kube
from keyward.kube.resources import CERTIFICATE_REQUESTS, CERTIFICATES, Resource
from keyward.sandbox.certmanager.conditions import (
    Condition,
    conditions_of,
    find_condition,
    is_true,
    utc_now,
    with_condition,
)
from keyward.sandbox.certmanager.names import RENEW_MESSAGE, RENEW_REASON

_ATTEMPTS = 5  # status writes are conditional; re-read and retry when something else wrote meanwhile


async def _update_conditions(
    kube: Kube,
    resource: Resource,
    name: str,
    namespace: str,
    decide: Callable[[dict[str, Any]], list[Condition]],
) -> None:
    """Read, let ``decide`` check and return the new conditions, write them conditionally; retry on 409."""
    for attempt in range(_ATTEMPTS):
        obj = await kube.find(resource, name, namespace)
        if obj is None:
            raise UserError(
                f'{resource.kind} "{name}" does not exist in namespace "{namespace}"',
                f"list them with `kubectl get {resource.plural} -n {namespace}`",
            )
        conditions = decide(obj)
        patch = {
            "metadata": {"resourceVersion": obj["metadata"].get("resourceVersion")},
            "status": {"conditions": conditions},
        }
        try:
            await kube.patch(resource, name, patch, namespace, subresource="status")
            return
        except ApiError as exc:
            if not exc.conflict or attempt == _ATTEMPTS - 1:
                raise


def _decision(
    kind: str, reason: str, message: str, name: str, namespace: str
) -> Callable[..., list[Condition]]:
    def decide(request: dict[str, Any]) -> list[Condition]:
        for decided in ("Approved", "Denied"):
            if is_true(request, decided):
                raise UserError(
                    f'CertificateRequest "{namespace}/{name}" is already {decided.lower()}',
                    "approval decisions are final; renew the Certificate to get a new request "
                    "(keyward sandbox renew CERTIFICATE -n NAMESPACE)",
                )
        return with_condition(conditions_of(request), kind, "True", reason, message, now=utc_now())

    return decide


async def approve(
    kube: Kube,
    name: str,
    namespace: str,
    *,
    reason: str = "KeywardSandbox",
    message: str = "manually approved by keyward sandbox",
) -> None:
    """Approve a CertificateRequest (``cmctl approve``); ``UserError`` if missing or already decided."""
    decide = _decision("Approved", reason, message, name, namespace)
    await _update_conditions(kube, CERTIFICATE_REQUESTS, name, namespace, decide)


async def deny(
    kube: Kube,
    name: str,
    namespace: str,
    *,
    reason: str = "KeywardSandbox",
    message: str = "manually denied by keyward sandbox",
) -> None:
    """Deny a CertificateRequest (``cmctl deny``); ``UserError`` if missing or already decided."""
    decide = _decision("Denied", reason, message, name, namespace)
    await _update_conditions(kube, CERTIFICATE_REQUESTS, name, namespace, decide)


async def renew(kube: Kube, name: str, namespace: str) -> None:
    """Ask for a new issuance now (``cmctl renew``); ``UserError`` if missing or already being issued."""

    def decide(certificate: dict[str, Any]) -> list[Condition]:
        issuing = find_condition(certificate, "Issuing")
        if issuing is not None and issuing.get("status") == "True":
            raise UserError(
                f'Certificate "{namespace}/{name}" is already being issued ({issuing.get("reason")})',
                "wait for its CertificateRequest to finish, or approve or deny it "
                f"(kubectl get certificaterequests -n {namespace})",
            )
        return with_condition(
            conditions_of(certificate),
            "Issuing",
            "True",
            RENEW_REASON,
            RENEW_MESSAGE,
            now=utc_now(),
            generation=certificate.get("metadata", {}).get("generation"),
        )

    await _update_conditions(kube, CERTIFICATES, name, namespace, decide)
