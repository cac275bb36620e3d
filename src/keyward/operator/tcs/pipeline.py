"""The signing pipeline of token-backed issuers, shared by CertificateRequests and Kubernetes CSRs.

Event in → phase decision (issuers.contract) → issuer lookup in memory → decode + sign in a signing
process of the token (its worker threads without them) → one status write out (plus an Event).

Exactly once. Every status write carries the ``metadata.resourceVersion`` the decision was made on
(``operator.status``). Within a process, a request is signed by one task at a time (``_inflight``) and not
again after its write succeeded (``_issued``); a write that fails is retried until it lands, and when the
request changed meanwhile the same certificate is written to its new version if it still wants one —
a certificate is never signed twice for a request. A crash after signing but before the write leaves
nothing visible: the certificate never left the process, and the request is signed afresh after the
restart, so users only ever see one certificate.

A request carrying an SGX quote is signed only after a key manager verified the quote
(``operator.tcs.attestations``); while it waits it is parked like a request waiting for its issuer.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from keyward.issuers.contract import Phase
from keyward.issuers.objects import RequestFields
from keyward.issuers.signer_names import IssuerRef
from keyward.issuers.tcs.ca import decode_and_sign
from keyward.issuers.tcs.quotes import QuoteEvidence
from keyward.keystore import KeystoreError, SigningProcessDied
from keyward.kube.client import ApiError
from keyward.kube.objects import name_of
from keyward.operator import metrics
from keyward.operator.references import DENIED_REFERENCE, SignerReferences
from keyward.operator.requests import RequestKind
from keyward.operator.status import StatusWriter
from keyward.operator.tcs.attestations import Outcome, RequestAttestations
from keyward.operator.tcs.cas import ReadyCa, ReadyCas
from keyward.operator.tcs.token import TokenProvider
from keyward.operator.waiting import Waiting
from keyward.pki.errors import IssuerError, RequestError
from keyward.pki.issue import IssuedCertificate
from keyward.pki.pem import split_chain

log = logging.getLogger("keyward.signing")

ISSUED_MEMORY = 10_000
#: Why requests for an issuer wait (it does not exist, or why it is not ready), for their Pending message;
#: None while its first check is under way (its outcome wakes them, or a retry tells why they wait).
Describe = Callable[[IssuerRef], str | None]
#: Check an issuer again now: it failed while signing (its Ready condition then says why).
Recheck = Callable[[IssuerRef], None]
ISSUED_MESSAGE = "Certificate fetched from issuer successfully"


def _key(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["uid"])


class SigningPipeline:
    """Requests of one kind for token-backed issuers."""

    def __init__(
        self,
        kind: RequestKind,
        *,
        cas: ReadyCas,
        tokens: TokenProvider,
        writer: StatusWriter,
        describe: Describe,
        attestations: RequestAttestations,
        recheck: Recheck,
        references: SignerReferences | None = None,
    ) -> None:
        self.kind = kind
        #: The reference check (Kubernetes CSRs: may the requester use the namespaced issuer it names?).
        self.references = references
        self.cas = cas
        self.tokens = tokens
        self.writer = writer
        self.describe = describe
        #: Verdicts on the SGX quotes requests carry.
        self.attestations = attestations
        self.recheck = recheck
        self._inflight: dict[str, Mapping[str, Any] | None] = {}
        self._issued: OrderedDict[str, None] = OrderedDict()
        #: Approved requests whose issuer cannot sign yet, woken when it turns ready.
        self.waiting: Waiting[str, Mapping[str, Any]] = Waiting(self._consider, name=f"{kind.noun}s")

    # ---- entry points -------------------------------------------------------------------------
    async def on_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        key = _key(body)
        if event_type == "DELETED":
            self.waiting.release(key)
            self.attestations.forget(body)
            return
        self.waiting.update(key, body)
        await self._consider(body)

    async def _consider(self, body: Mapping[str, Any]) -> None:
        """An event, or a parked request's retry: decide, unless it is done or being signed already."""
        key = _key(body)
        if key in self._issued:
            return
        if key in self._inflight:
            self._inflight[key] = body  # newest version, in case our write meets a conflict
            return
        await self._handle(body)

    def wake(self, signer_name: str) -> None:
        """The issuer behind ``signer_name`` turned ready: retry what waits for it, now."""
        self.waiting.wake(signer_name)

    # ---- the decision ---------------------------------------------------------------------------
    async def _handle(self, body: Mapping[str, Any]) -> None:
        kind = self.kind
        phase = kind.phase(body)
        key = _key(body)
        if phase is Phase.FINISHED:
            self.waiting.release(key)
            return
        if phase is Phase.AWAITING_APPROVAL:
            return
        if phase is Phase.DENIED:
            status = kind.denied_status(body)
            if status is not None:
                written = await self.writer.write(
                    kind.resource, body, status, event=("Denied", "the request was denied; not signed")
                )
                ref = kind.issuer(body)
                if written is not None and ref is not None:
                    metrics.DENIED.labels(ref.kind, kind.resource.kind).inc()
            return
        ref = kind.issuer(body)
        if ref is None:
            return
        ready = self.cas.get(ref.signer_name)
        if ready is None:
            message = self.describe(ref)
            if message is None:
                self.waiting.park(key, body, ref.signer_name, reason="issuer_not_ready")
                return
            reason = "issuer_missing" if "not found" in message else "issuer_not_ready"
            await self._park(body, ref.signer_name, message, reason)
            return
        self._inflight[key] = None
        try:
            if await self._may_sign(body, ready):
                await self._sign_and_write(body, ready)
        finally:
            newer = self._inflight.pop(key, None)
        if newer is not None and key not in self._issued:
            await self._handle(newer)

    async def _may_sign(self, body: Mapping[str, Any], ready: ReadyCa) -> bool:
        """The reference check, asked anew for each attempt: a requester who may not use the issuer gets
        the request failed, never signed; an API server that does not answer leaves it waiting."""
        if self.references is None:
            return True
        try:
            denial = await self.references.denial(body, ready.ref)
        except ApiError as exc:
            log.warning("%s %s: cannot check its requester: %s", self.kind.noun, name_of(body), exc)
            message = f"cannot check whether the requester may use {ready.ref} ({exc}); retrying"
            await self._park(body, ready.ref.signer_name, message, "reference_check")
            return False
        if denial is None:
            return True
        await self._fail(body, DENIED_REFERENCE, denial, event=(DENIED_REFERENCE, denial))
        return False

    async def _sign(self, body: Mapping[str, Any], ready: ReadyCa) -> IssuedCertificate | Outcome:
        """Decode and sign in a signing process; a request carrying an SGX quote only once the quote is
        verified (``attestations``): until then, where its verdict stands."""
        store = await self.tokens.get()
        job = (decode_and_sign, self.kind.decode, RequestFields.from_body(body), ready.ca, ready.policy)
        issued = await store.run_signing(*job)
        if not isinstance(issued, QuoteEvidence):
            return issued
        outcome = await self.attestations.check(body, ready.ref, issued)
        if outcome.state != "verified":
            return outcome
        signed = await store.run_signing(*job, issued.quote)
        if isinstance(signed, QuoteEvidence):  # pragma: no cover - the job signs the quote it was given
            raise RequestError("the request's SGX quote changed while it was verified")
        return signed

    async def _sign_and_write(self, body: Mapping[str, Any], ready: ReadyCa) -> None:
        kind = self.kind
        key = _key(body)
        started = time.monotonic()
        labels = (ready.ref.kind, kind.resource.kind)
        try:
            issued = await self._sign(body, ready)
        except RequestError as exc:
            problem = str(exc)
            await self._fail(body, "Failed", problem, event=("Failed", f"request rejected: {problem}"))
            return
        except SigningProcessDied as exc:
            # The process is replaced on the next job; the token and the issuer are fine.
            log.warning("signing %s: %s", name_of(body), exc)
            await self._park(
                body, ready.ref.signer_name, f"signing was interrupted: {exc}", "token_unavailable"
            )
            return
        except (KeystoreError, IssuerError, OSError, RuntimeError) as exc:
            # Belongs to the issuer (token gone, key vanished): take it out of service and retry later.
            log.warning("signing %s failed in the token: %s", name_of(body), exc)
            self.cas.discard(ready.ref.signer_name, only=ready)
            self.tokens.reset()
            self.recheck(ready.ref)
            await self._park(
                body, ready.ref.signer_name, f"the token failed while signing: {exc}", "token_unavailable"
            )
            return
        if isinstance(issued, Outcome):
            if issued.state == "waiting":
                await self._park(body, issued.label, issued.message, "quote_verification", delay=issued.delay)
                return
            problem = f"This request was denied since quote attestation failed: {issued.message}"
            await self._fail(
                body, "AttestationFailed", problem, event=("AttestationFailed", f"not signed: {problem}")
            )
            await self.attestations.done(body)
            return
        written = await self.writer.finish(
            kind.resource,
            body,
            lambda current: self._issued_status(current, issued),
            wanted=self._wants_result,
            event=(
                "Issued",
                f"certificate issued by {ready.ref}, serial {issued.certificate.serial_number:x}, "
                f"not after {issued.certificate.not_valid_after_utc.isoformat()}",
            ),
        )
        if written is not None:
            self._remember_issued(key)
            metrics.ISSUED.labels(*labels).inc()
            metrics.SIGNING_LATENCY.labels(ready.ref.kind).observe(time.monotonic() - started)
        self.waiting.release(key)
        await self.attestations.done(body)

    async def _fail(
        self, body: Mapping[str, Any], reason: str, problem: str, *, event: tuple[str, str]
    ) -> None:
        """The request fails for good (never signed): the reason, in the status, once."""
        self.waiting.release(_key(body))
        if await self.writer.finish(
            self.kind.resource,
            body,
            lambda current: self.kind.failed_status(current, reason, problem),
            wanted=self._wants_result,
            event=event,
            warning=True,
        ):
            ref = self.kind.issuer(body)
            metrics.FAILED.labels(ref.kind if ref else "", self.kind.resource.kind).inc()

    def _issued_status(self, body: Mapping[str, Any], issued: IssuedCertificate) -> dict[str, Any]:
        chain, top = split_chain((issued.certificate, issued.ca_certificate, *issued.chain))
        return self.kind.issued_status(body, chain, [top], ISSUED_MESSAGE)

    def _wants_result(self, body: Mapping[str, Any]) -> bool:
        """Still approved and unfinished: the result signed for an earlier version still belongs."""
        return self.kind.phase(body) is Phase.APPROVED

    async def _park(
        self,
        body: Mapping[str, Any],
        label: str,
        message: str,
        reason: str,
        *,
        delay: float | None = None,
    ) -> None:
        """Park the request as Pending until its issuer can sign. Waiting for an issuer is never a
        permanent failure (cert-manager's contract): a token fault takes the issuer out of service until
        its re-check, so every wait here is a wait for the issuer — retried with backoff capped at five
        minutes, and at once when the issuer turns ready (``wake``)."""
        key = _key(body)
        self.waiting.park(key, body, label, delay=delay, reason=reason)
        status = self.kind.pending_status(body, message)
        if status is not None:
            written = await self.writer.write(self.kind.resource, body, status)
            if written is not None:
                self.waiting.update(key, written)

    def _remember_issued(self, key: str) -> None:
        self._issued[key] = None
        while len(self._issued) > ISSUED_MEMORY:
            self._issued.popitem(last=False)
