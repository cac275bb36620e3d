"""The signing pipeline shared by CertificateRequests and Kubernetes CSRs.

Event in → phase decision (issuers.requests) → issuer lookup in memory → decode + sign in a signing
process of the token (its worker threads without them) → one status write out (plus an Event).

Exactly once. Every status write is a JSON merge patch carrying the ``metadata.resourceVersion`` of the
object version the decision was made on, so the API server refuses it (409) if anything wrote the
object in between — a second operator instance, or our own earlier write. Within a process, a request
is signed by one task at a time (``_inflight``) and not again after its write succeeded (``_issued``).
A crash after signing but before the write leaves nothing visible: the certificate never left the
process, and the request is signed afresh after the restart, so users only ever see one certificate.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import kopf

from keyward.issuers.contract import Phase, SigningRequest, request_fields
from keyward.issuers.signer_names import IssuerRef
from keyward.issuers.tcs.ca import decode_and_sign
from keyward.keystore import KeystoreError, SigningProcessDied
from keyward.kube.client import ApiError
from keyward.kube.resources import Resource
from keyward.operator.services import ReadyCa, Runtime
from keyward.pki.errors import IssuerError, RequestError
from keyward.pki.issue import IssuedCertificate

log = logging.getLogger("keyward.signing")

ISSUED_MEMORY = 10_000


class RequestAdapter(Protocol):
    """How one kind of request (CertificateRequest, CSR) reads and is written."""

    resource: Resource

    def phase(self, body: Mapping[str, Any]) -> Phase: ...
    def issuer(self, body: Mapping[str, Any]) -> IssuerRef | None: ...
    def decode(self, body: Mapping[str, Any]) -> SigningRequest: ...
    def issued_status(
        self, body: Mapping[str, Any], issued: IssuedCertificate, ca: ReadyCa
    ) -> dict[str, Any]: ...
    def failed_status(self, body: Mapping[str, Any], reason: str, message: str) -> dict[str, Any]: ...
    def denied_status(self, body: Mapping[str, Any]) -> dict[str, Any] | None: ...
    def pending_status(self, body: Mapping[str, Any], message: str) -> dict[str, Any] | None: ...


@dataclass
class _Parked:
    body: Mapping[str, Any]
    label: str
    attempts: int = 0
    timer: asyncio.TimerHandle | None = None


def _key(body: Mapping[str, Any]) -> str:
    return str(body["metadata"]["uid"])


class SigningPipeline:
    def __init__(
        self,
        memo: Runtime,
        adapter: RequestAdapter,
        issuer_state: Callable[[IssuerRef], Mapping[str, Any] | None],
    ) -> None:
        self.memo = memo
        self.adapter = adapter
        self.issuer_state = issuer_state
        self._inflight: dict[str, Mapping[str, Any] | None] = {}
        self._issued: OrderedDict[str, None] = OrderedDict()
        self._parked: dict[str, _Parked] = {}

    # ---- entry points -------------------------------------------------------------------------
    async def on_event(self, event_type: str, body: Mapping[str, Any]) -> None:
        key = _key(body)
        if event_type == "DELETED":
            self._unpark(key)
            return
        if key in self._issued:
            return
        if key in self._inflight:
            self._inflight[key] = body  # newest version, in case our write meets a conflict
            return
        if key in self._parked:
            self._parked[key].body = body
        await self._handle(body)

    def kick(self, label: str) -> None:
        """The issuer behind ``label`` turned Ready: retry what waits for it, now."""
        for key, parked in list(self._parked.items()):
            if parked.label == label:
                self._unpark(key)
                asyncio.get_running_loop().create_task(self._handle(parked.body))

    # ---- the decision ---------------------------------------------------------------------------
    async def _handle(self, body: Mapping[str, Any]) -> None:
        adapter = self.adapter
        phase = adapter.phase(body)
        key = _key(body)
        if phase is Phase.FINISHED:
            self._unpark(key)
            return
        if phase is Phase.AWAITING_APPROVAL:
            return
        if phase is Phase.DENIED:
            status = adapter.denied_status(body)
            if status is not None:
                await self._write(body, status, event=("Denied", "the request was denied; not signed"))
            return
        ref = adapter.issuer(body)
        if ref is None:
            return
        ready = self.memo.cas.get(ref.signer_name)
        if ready is None:
            await self._wait_for_issuer(body, ref)
            return
        self._inflight[key] = None
        try:
            await self._sign_and_write(body, ready)
        finally:
            newer = self._inflight.pop(key, None)
        if newer is not None and key not in self._issued:
            await self._handle(newer)

    async def _sign_and_write(self, body: Mapping[str, Any], ready: ReadyCa) -> None:
        adapter = self.adapter
        key = _key(body)
        try:
            store = await self.memo.tokens.get()
            issued = await store.run_signing(
                decode_and_sign, adapter.decode, request_fields(body), ready.ca, ready.policy
            )
        except RequestError as exc:
            self._unpark(key)
            await self._write(
                body,
                adapter.failed_status(body, "Failed", str(exc)),
                event=("Failed", f"request rejected: {exc}"),
                warning=True,
            )
            return
        except SigningProcessDied as exc:
            # The process is replaced on the next job; the token and the issuer are fine.
            log.warning("signing %s: %s", _name(body), exc)
            await self._retry_later(body, ready.ref.signer_name, f"signing was interrupted: {exc}")
            return
        except (KeystoreError, IssuerError, OSError, RuntimeError) as exc:
            # Belongs to the issuer (token gone, key vanished): take it out of service and retry later.
            log.warning("signing %s failed in the token: %s", _name(body), exc)
            self.memo.cas.pop(ready.ref.signer_name, None)
            self.memo.tokens.reset()
            await self._retry_later(body, ready.ref.signer_name, f"the token failed while signing: {exc}")
            return
        if await self._write(
            body,
            adapter.issued_status(body, issued, ready),
            event=(
                "Issued",
                f"certificate issued by {ready.ref}, serial "
                f"{issued.certificate.serial_number:x}, not after "
                f"{issued.certificate.not_valid_after_utc.isoformat()}",
            ),
        ):
            self._remember_issued(key)
            self._unpark(key)

    async def _wait_for_issuer(self, body: Mapping[str, Any], ref: IssuerRef) -> None:
        state = self.issuer_state(ref)
        if state is None:
            message = f"{ref} not found; waiting for it to exist"
        else:
            message = f"{ref} is not ready: {state.get('message') or 'not reconciled yet'}"
        await self._retry_later(body, ref.signer_name, message)

    async def _retry_later(self, body: Mapping[str, Any], label: str, message: str) -> None:
        """Park the request as Pending until its issuer can sign. Waiting for an issuer is never a
        permanent failure (cert-manager's contract, point 5): a token fault takes the issuer out of service
        until its re-check, so every wait here is a wait for the issuer — retried with backoff capped at
        five minutes, and at once when the issuer turns Ready (``kick``)."""
        key = _key(body)
        parked = self._parked.get(key)
        if parked is None:
            parked = self._parked[key] = _Parked(body=body, label=label)
        parked.body, parked.label = body, label
        parked.attempts += 1
        status = self.adapter.pending_status(body, message)
        if status is not None:
            written = await self._write(body, status)
            if written is not None:
                parked.body = written
        if parked.timer is not None:
            parked.timer.cancel()
        delay = min(2.0 ** min(parked.attempts, 8), 300.0)
        loop = asyncio.get_running_loop()
        parked.timer = loop.call_later(delay, lambda: loop.create_task(self._retry_parked(key)))

    async def _retry_parked(self, key: str) -> None:
        parked = self._parked.get(key)
        if parked is not None:
            parked.timer = None
            await self._handle(parked.body)

    def _unpark(self, key: str) -> None:
        parked = self._parked.pop(key, None)
        if parked is not None and parked.timer is not None:
            parked.timer.cancel()

    def _remember_issued(self, key: str) -> None:
        self._issued[key] = None
        while len(self._issued) > ISSUED_MEMORY:
            self._issued.popitem(last=False)

    # ---- the one write --------------------------------------------------------------------------
    async def _write(
        self,
        body: Mapping[str, Any],
        status: dict[str, Any],
        *,
        event: tuple[str, str] | None = None,
        warning: bool = False,
    ) -> dict[str, Any] | None:
        """Write status with the resourceVersion precondition; None when the object moved on."""
        meta = body["metadata"]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": status}
        try:
            written = await self.memo.api.patch(
                self.adapter.resource, meta["name"], patch, meta.get("namespace"), subresource="status"
            )
        except ApiError as exc:
            if exc.conflict or exc.not_found:
                log.debug("%s changed before our write (%s); the next event decides", _name(body), exc)
                return None
            raise
        if event is not None:
            (kopf.warn if warning else kopf.info)(dict(body), reason=event[0], message=event[1])
        return written


def _name(body: Mapping[str, Any]) -> str:
    meta = body["metadata"]
    return f"{meta.get('namespace') + '/' if meta.get('namespace') else ''}{meta['name']}"
