"""Verdicts on the SGX quotes signing requests carry (tcs.md): one QuoteAttestation per such request.

The signing job hands a request's evidence back instead of signing it (``issuers.tcs.quotes``); the
pipeline asks ``RequestAttestations.check`` where the verdict stands. The first time, it creates a
QuoteAttestation of type QuoteAttestation (in the request's namespace, the operator namespace for a
Kubernetes CSR; named ``<request>.<kind>``; owned by the request) with the quote, its public key and
nonce, and the request waits, parked under ``label`` (the QuoteAttestation's watch wakes it). Ready=True
verifies the quote: the request is signed with the "SGX Quote has been verified" extension. Ready=False,
or no verdict within the timeout, fails it with the reason, unsigned. Either way the QuoteAttestation is
deleted once the request's result is written (``done``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from keyward.issuers.objects import QuoteAttestationView
from keyward.issuers.signer_names import IssuerRef
from keyward.issuers.tcs import attestation
from keyward.issuers.tcs.quotes import QUOTE_VERSION, QuoteEvidence
from keyward.keystore import Evidence
from keyward.kube.client import ApiError, Kube
from keyward.kube.objects import owner_reference
from keyward.kube.resources import MANAGED_BY, MANAGED_BY_LABEL, QUOTE_ATTESTATIONS, REQUEST_ANNOTATION
from keyward.operator.status import StatusWriter

log = logging.getLogger("keyward.attestations")
#: The longest a request waits between two looks at its QuoteAttestation (its watch wakes it sooner).
LOOK_AGAIN = 60.0


@dataclass(frozen=True)
class Outcome:
    """Where a request's quote stands: ``waiting`` (parked under ``label``, looked at again after
    ``delay``), ``verified``, or ``refused`` with the reason."""

    state: Literal["waiting", "verified", "refused"]
    message: str = ""
    label: str = ""
    delay: float | None = None


def label_of(namespace: str, name: str) -> str:
    """What requests waiting for the QuoteAttestation ``namespace/name`` are parked under."""
    return f"quote:{namespace}/{name}"


class RequestAttestations:
    def __init__(
        self, *, kube: Kube, writer: StatusWriter, timeout: float, operator_namespace: str, service_id: str
    ) -> None:
        self._kube = kube
        self._writer = writer
        self._timeout = timeout
        self._operator_namespace = operator_namespace
        self._service_id = service_id
        #: Requests (uid) with a QuoteAttestation of theirs: deleted once their result is written.
        self._asked: dict[str, tuple[str, str]] = {}

    def where(self, body: Mapping[str, Any]) -> tuple[str, str]:
        meta = body["metadata"]
        namespace = meta.get("namespace") or self._operator_namespace
        return namespace, attestation.object_name(meta["name"], str(body.get("kind") or "").lower())

    async def check(self, body: Mapping[str, Any], ref: IssuerRef, quoted: QuoteEvidence) -> Outcome:
        namespace, name = self.where(body)
        where = f"QuoteAttestation {namespace}/{name}"
        label = label_of(namespace, name)
        uid = str(body["metadata"].get("uid"))
        try:
            qa = await self._kube.find(QUOTE_ATTESTATIONS, name, namespace)
            if qa is not None and not _asks_for(qa, uid, quoted):
                if (qa["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
                    return Outcome("refused", f"{where} exists and was not made by keyward for this request")
                await self._kube.delete(QUOTE_ATTESTATIONS, name, namespace)  # left from an earlier request
                qa = None
            if qa is None:
                await self._ask(body, ref, quoted, namespace, name)
                self._asked[uid] = (namespace, name)
                return Outcome("waiting", _waiting(where), label, LOOK_AGAIN)
        except ApiError as exc:
            return Outcome("waiting", f"cannot ask for the verdict on its SGX quote ({where}): {exc}", label)
        self._asked[uid] = (namespace, name)
        answer = attestation.answer(QuoteAttestationView.from_body(qa), ref.signer_name)
        if answer.state == "granted":
            return Outcome("verified", answer.message)
        if answer.state == "refused":
            return Outcome("refused", f"the key manager refused its SGX quote ({where}): {answer.message}")
        waited = (datetime.now(UTC) - _created(qa)).total_seconds()
        if waited >= self._timeout:
            return Outcome(
                "refused",
                f"no verdict on its SGX quote within {self._timeout:.0f}s ({where} is unanswered): is a key "
                "manager (attestation controller) watching QuoteAttestations?",
            )
        return Outcome("waiting", _waiting(where), label, min(LOOK_AGAIN, self._timeout - waited))

    async def done(self, body: Mapping[str, Any]) -> None:
        """The request's result is written: its QuoteAttestation, if it has one, is no longer needed."""
        asked = self._asked.pop(str(body["metadata"].get("uid")), None)
        if asked is None:
            return
        try:
            await self._kube.delete(QUOTE_ATTESTATIONS, asked[1], asked[0])
        except ApiError as exc:
            log.warning("could not delete QuoteAttestation %s/%s: %s", asked[0], asked[1], exc)

    def forget(self, body: Mapping[str, Any]) -> None:
        """The request is gone (its QuoteAttestation goes with it: the request owns it)."""
        self._asked.pop(str(body["metadata"].get("uid")), None)

    async def _ask(
        self, body: Mapping[str, Any], ref: IssuerRef, quoted: QuoteEvidence, namespace: str, name: str
    ) -> None:
        wanted = attestation.quote_attestation(
            name,
            namespace,
            request_type=attestation.QUOTE_VERIFICATION,
            signer_name=ref.signer_name,
            public_key=quoted.public_key_pem,
            evidence=Evidence("sgx", quoted.quote, QUOTE_VERSION, quoted.nonce),
            service_id=self._service_id,
            owner=owner_reference(body, controller=False),
            annotations={REQUEST_ANNOTATION: str(body["metadata"].get("uid"))},
        )
        created = await self._kube.create(QUOTE_ATTESTATIONS, wanted, namespace)
        self._writer.write_soon(QUOTE_ATTESTATIONS, created, attestation.initial_status())
        log.info("asked for a verdict on an SGX quote for %s: QuoteAttestation %s/%s", ref, namespace, name)


def _waiting(where: str) -> str:
    return f"Waiting for the verdict on its SGX quote: {where}"


def _asks_for(qa: Mapping[str, Any], uid: str, quoted: QuoteEvidence) -> bool:
    """The QuoteAttestation is keyward's, for this request and this very quote."""
    meta = qa.get("metadata") or {}
    return (
        (meta.get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY
        and (meta.get("annotations") or {}).get(REQUEST_ANNOTATION) == uid
        and QuoteAttestationView.from_body(qa).quote == quoted.quote
    )


def _created(qa: Mapping[str, Any]) -> datetime:
    stamp = str((qa.get("metadata") or {}).get("creationTimestamp") or "")
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)
