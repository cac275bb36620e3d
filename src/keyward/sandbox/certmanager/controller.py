"""The sandbox's cert-manager: keeps each Certificate's Secret issued, through CertificateRequests.

A development stand-in for cert-manager's certificates controllers (trigger, key manager, request manager,
issuing, readiness), enough to run the seeds' walkthroughs against keyward. It talks to the API over HTTP
like any client, so it works against a real API server too (but production uses real cert-manager).

Level-triggered: watch events only name a Certificate to look at; each reconcile reads the Certificate,
its Secret and its requests afresh and takes one step (at most one write to the Certificate), so a
restart or a duplicate event never produces a second request for a revision. One worker reconciles, one
Certificate at a time.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from keyward.kube.client import ApiError, Kube
from keyward.kube.resources import CERTIFICATE_REQUESTS, CERTIFICATES, SECRETS
from keyward.kube.watching import Backoff, list_and_watch
from keyward.sandbox.certmanager.conditions import (
    conditions_of,
    find_condition,
    format_time,
    is_true,
    utc_now,
    with_condition,
    without_condition,
)
from keyward.sandbox.certmanager.keys import (
    KeySpec,
    PrivateKey,
    SpecError,
    certifies,
    encode_private_key,
    generate_private_key,
    key_mismatches,
    key_spec,
    load_chain,
    load_private_key,
)
from keyward.sandbox.certmanager.names import (
    APPROVER_MESSAGE,
    APPROVER_REASON,
    CERTIFICATE_NAME,
    CERTIFICATE_REVISION,
    FAILURE_REPORTED,
    NEXT_PRIVATE_KEY_LABEL,
    PRIVATE_KEY_SECRET,
    READY_MESSAGE,
    annotations_of,
    is_owned_by,
    metadata,
    owner_reference,
    owning_certificate,
    revision_of,
)
from keyward.sandbox.certmanager.policy import (
    Issued,
    check_spec,
    issuance_trigger,
    read_issued,
    renewal_time,
    request_mismatches,
    secret_bytes,
)
from keyward.sandbox.certmanager.request import build_csr, csr_pem, request_usages
from keyward.sandbox.certmanager.secret import TLS_SECRET_TYPE, template_metadata, tls_secret_content

log = logging.getLogger("keyward.sandbox.certmanager")

Body = dict[str, Any]
WorkItem = tuple[str, str, str]  # ("certificate" | "request", namespace, name)
CERTIFICATE = "certificate"
REQUEST = "request"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def request_failure(request: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when a CertificateRequest ended without a certificate: denied, failed or invalid."""
    denied = find_condition(request, "Denied")
    if denied is not None and denied.get("status") == "True":
        return "Denied", str(denied.get("message") or "the request was denied")
    ready = find_condition(request, "Ready")
    if ready is not None and ready.get("status") == "False" and ready.get("reason") in ("Failed", "Denied"):
        return str(ready["reason"]), str(ready.get("message") or "the issuer failed the request")
    invalid = find_condition(request, "InvalidRequest")
    if invalid is not None and invalid.get("status") == "True":
        return "Failed", str(invalid.get("message") or "the request is invalid")
    return None


def is_decided(request: Mapping[str, Any]) -> bool:
    return is_true(request, "Approved") or is_true(request, "Denied")


def _status_changes(obj: Mapping[str, Any], fragment: Mapping[str, Any]) -> bool:
    status = obj.get("status") or {}
    return any(status.get(field) != value for field, value in fragment.items())


class CertManagerStandIn:
    """cert-manager's certificate lifecycle for the sandbox; ``run()`` until cancelled.

    ``auto_approve`` approves every new CertificateRequest as cert-manager's built-in approver does;
    by default a person approves with ``keyward sandbox approve`` (as in the TCS walkthrough).
    ``namespaces`` limits the watch; empty means every namespace.
    """

    def __init__(self, kube: Kube, *, auto_approve: bool = False, namespaces: Sequence[str] = ()) -> None:
        self._kube = kube
        self._auto_approve = auto_approve
        self._namespaces = tuple(namespaces)
        self._queue: asyncio.Queue[WorkItem] = asyncio.Queue()
        self._queued: set[WorkItem] = set()
        self._retries: dict[WorkItem, Backoff] = {}
        self._renewals: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._secret_users: dict[tuple[str, str], set[str]] = {}  # (ns, secret) -> Certificate names

    async def run(self) -> None:
        """Watch Certificates, CertificateRequests and Secrets and reconcile; survives API errors."""
        watched = (
            (CERTIFICATES, self._on_certificate),
            (CERTIFICATE_REQUESTS, self._on_request),
            (SECRETS, self._on_secret),
        )
        try:
            async with asyncio.TaskGroup() as group:
                for namespace in self._namespaces or (None,):
                    for resource, handler in watched:
                        group.create_task(list_and_watch(self._kube, resource, namespace, handler))
                group.create_task(self._work())
        finally:
            for timer in self._renewals.values():
                timer.cancel()
            self._renewals.clear()

    # -- events -----------------------------------------------------------------------------------------

    def _enqueue(self, item: WorkItem, delay: float = 0.0) -> None:
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._enqueue, item)
        elif item not in self._queued:
            self._queued.add(item)
            self._queue.put_nowait(item)

    async def _on_certificate(self, event: str, certificate: Body) -> None:
        meta = metadata(certificate)
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        if event == "DELETED":
            timer = self._renewals.pop((namespace, name), None)
            if timer is not None:
                timer.cancel()
            self._forget_secret_user(namespace, name)
            return
        self._remember_secret_user(namespace, name, (certificate.get("spec") or {}).get("secretName"))
        self._enqueue((CERTIFICATE, namespace, name))

    async def _on_request(self, event: str, request: Body) -> None:
        meta = metadata(request)
        namespace = meta.get("namespace", "")
        if self._auto_approve and event != "DELETED" and not is_decided(request):
            self._enqueue((REQUEST, namespace, meta.get("name", "")))
        owner = owning_certificate(request)
        if owner:
            self._enqueue((CERTIFICATE, namespace, owner))

    async def _on_secret(self, event: str, secret: Body) -> None:
        meta = metadata(secret)
        namespace = meta.get("namespace", "")
        users = set(self._secret_users.get((namespace, meta.get("name", "")), ()))
        if meta.get("labels", {}).get(NEXT_PRIVATE_KEY_LABEL) and owning_certificate(secret):
            users.add(str(owning_certificate(secret)))
        for name in users:
            self._enqueue((CERTIFICATE, namespace, name))

    def _remember_secret_user(self, namespace: str, name: str, secret_name: str | None) -> None:
        self._forget_secret_user(namespace, name)
        if secret_name:
            self._secret_users.setdefault((namespace, secret_name), set()).add(name)

    def _forget_secret_user(self, namespace: str, name: str) -> None:
        for (ns, _), users in self._secret_users.items():
            if ns == namespace:
                users.discard(name)

    def _schedule_renewal(self, namespace: str, name: str, when: datetime) -> None:
        previous = self._renewals.pop((namespace, name), None)
        if previous is not None:
            previous.cancel()
        delay = max((when - utc_now()).total_seconds(), 0.0) + 1.0
        self._renewals[(namespace, name)] = asyncio.get_running_loop().call_later(
            delay, self._enqueue, (CERTIFICATE, namespace, name)
        )

    # -- the worker -------------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            self._queued.discard(item)
            kind, namespace, name = item
            try:
                if kind == CERTIFICATE:
                    await self._reconcile(namespace, name)
                else:
                    await self._approve_automatically(namespace, name)
                self._retries.pop(item, None)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.conflict:  # someone wrote meanwhile: look again at the fresh object
                    self._enqueue(item)
                    continue
                self._retry(item, exc)
            except Exception as exc:
                self._retry(item, exc)

    def _retry(self, item: WorkItem, exc: Exception) -> None:
        delay = self._retries.setdefault(item, Backoff(first=0.5, limit=60.0)).next()
        kind, namespace, name = item
        log.warning(
            "%s %s/%s: %s: %s; retrying in %.1fs", kind, namespace, name, type(exc).__name__, exc, delay
        )
        self._enqueue(item, delay)

    async def _approve_automatically(self, namespace: str, name: str) -> None:
        request = await self._kube.find(CERTIFICATE_REQUESTS, name, namespace)
        if request is None or is_decided(request):
            return
        conditions = with_condition(
            conditions_of(request), "Approved", "True", APPROVER_REASON, APPROVER_MESSAGE, now=utc_now()
        )
        await self._write_status(CERTIFICATE_REQUESTS, request, {"conditions": conditions})
        log.info("approved CertificateRequest %s/%s", namespace, name)

    async def _write_status(self, resource: Any, obj: Mapping[str, Any], fragment: Mapping[str, Any]) -> Body:
        """Merge-patch /status, conditional on the version we decided on (409 if it changed since)."""
        meta = metadata(obj)
        patch = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": dict(fragment)}
        return await self._kube.patch(
            resource, meta["name"], patch, meta.get("namespace"), subresource="status"
        )

    # -- reconcile --------------------------------------------------------------------------------------

    async def _reconcile(self, namespace: str, name: str) -> None:
        certificate = await self._kube.find(CERTIFICATES, name, namespace)
        if certificate is None or metadata(certificate).get("deletionTimestamp"):
            return
        try:
            await self._reconcile_spec(certificate)
        except SpecError as exc:
            await self._report_invalid_spec(certificate, str(exc))

    async def _reconcile_spec(self, certificate: Body) -> None:
        meta, spec, status = (
            metadata(certificate),
            certificate.get("spec") or {},
            certificate.get("status") or {},
        )
        namespace = meta["namespace"]
        check_spec(spec)  # before any write, so an unusable spec is reported once rather than retried
        requests = [
            r for r in await self._kube.list(CERTIFICATE_REQUESTS, namespace) if is_owned_by(r, certificate)
        ]
        requests.sort(key=lambda r: (metadata(r).get("creationTimestamp") or "", metadata(r).get("name")))
        revision = int(status.get("revision") or 0)
        secret = await self._kube.find(SECRETS, spec["secretName"], namespace)
        issuing = find_condition(certificate, "Issuing")
        attempts = [r for r in requests if revision_of(r) == revision + 1]
        if issuing is not None and issuing.get("status") == "True":
            await self._continue_issuance(certificate, secret, attempts, revision + 1)
            return
        failed = issuing is not None and issuing.get("status") == "False"
        if failed:
            await self._mark_failures_reported(attempts)
        if failed and issuing is not None and issuing.get("observedGeneration") == meta.get("generation"):
            return  # the failure stays on show until `renew` or a spec change asks for another attempt
        current = next(
            (r for r in reversed(requests) if revision_of(r) == revision and is_true(r, "Ready")), None
        )
        now = utc_now()
        trigger = issuance_trigger(certificate, secret, current, now)
        if trigger is not None:
            conditions = with_condition(
                conditions_of(certificate),
                "Issuing",
                "True",
                trigger.reason,
                trigger.message,
                now=now,
                generation=meta.get("generation"),
            )
            if trigger.unready:
                conditions = with_condition(
                    conditions,
                    "Ready",
                    "False",
                    trigger.reason,
                    trigger.message,
                    now=now,
                    generation=meta.get("generation"),
                )
            await self._write_status(CERTIFICATES, certificate, {"conditions": conditions})
            log.info("Certificate %s/%s needs issuance: %s", namespace, meta["name"], trigger.message)
            self._enqueue((CERTIFICATE, namespace, meta["name"]))
            return
        await self._keep_up_to_date(certificate, secret, now)

    async def _report_invalid_spec(self, certificate: Body, problem: str) -> None:
        meta = metadata(certificate)
        conditions = with_condition(
            without_condition(conditions_of(certificate), "Issuing"),
            "Ready",
            "False",
            "InvalidSpec",
            f"{problem}; fix the Certificate's spec",
            now=utc_now(),
            generation=meta.get("generation"),
        )
        if _status_changes(certificate, {"conditions": conditions}):
            await self._write_status(CERTIFICATES, certificate, {"conditions": conditions})
            log.warning(
                "Certificate %s/%s cannot be issued: %s", meta.get("namespace"), meta.get("name"), problem
            )

    async def _keep_up_to_date(self, certificate: Body, secret: Body | None, now: datetime) -> None:
        """The Secret is valid and fits the spec: Ready=True, template metadata synced, renewal scheduled."""
        meta, spec = metadata(certificate), certificate.get("spec") or {}
        issued = read_issued(secret)
        if secret is None or not isinstance(issued, Issued):
            return
        leaf = issued.certificate
        renew_at = renewal_time(leaf, spec)
        conditions = with_condition(
            without_condition(conditions_of(certificate), "Issuing"),
            "Ready",
            "True",
            "Ready",
            READY_MESSAGE,
            now=now,
            generation=meta.get("generation"),
        )
        fragment: dict[str, Any] = {
            "conditions": conditions,
            "notBefore": format_time(leaf.not_valid_before_utc),
            "notAfter": format_time(leaf.not_valid_after_utc),
            "renewalTime": format_time(renew_at),
        }
        if _status_changes(certificate, fragment) or (certificate.get("status") or {}).get(
            "nextPrivateKeySecretName"
        ):
            await self._write_status(
                CERTIFICATES, certificate, {**fragment, "nextPrivateKeySecretName": None}
            )
        await self._sync_template(secret, spec)
        await self._delete_spare_keys(certificate, keep=None)
        self._schedule_renewal(meta["namespace"], meta["name"], renew_at)

    async def _sync_template(self, secret: Body, spec: Mapping[str, Any]) -> None:
        wanted_annotations, wanted_labels = template_metadata(spec)
        meta = metadata(secret)
        have_annotations, have_labels = meta.get("annotations") or {}, meta.get("labels") or {}
        if all(have_annotations.get(k) == v for k, v in wanted_annotations.items()) and all(
            have_labels.get(k) == v for k, v in wanted_labels.items()
        ):
            return
        await self._kube.patch(
            SECRETS,
            meta["name"],
            {"metadata": {"annotations": wanted_annotations, "labels": wanted_labels}},
            meta["namespace"],
        )

    async def _delete_spare_keys(self, certificate: Body, keep: str | None) -> None:
        """Remove next-key Secrets of this Certificate that no issuance needs (say, after a crash)."""
        meta = metadata(certificate)
        spare = await self._kube.list(
            SECRETS, meta["namespace"], label_selector=f"{NEXT_PRIVATE_KEY_LABEL}=true"
        )
        for secret in spare:
            name = metadata(secret).get("name")
            if is_owned_by(secret, certificate) and name != keep:
                await self._kube.delete(SECRETS, str(name), meta["namespace"])

    async def _mark_failures_reported(self, attempts: list[Body]) -> None:
        """Catch up on marking failed requests whose failure the Certificate reports (after a crash)."""
        for request in attempts:
            if request_failure(request) is not None:
                await self._mark_reported(request)

    async def _mark_reported(self, request: Body) -> None:
        if FAILURE_REPORTED not in annotations_of(request):
            meta = metadata(request)
            await self._kube.patch(
                CERTIFICATE_REQUESTS,
                meta["name"],
                {"metadata": {"annotations": {FAILURE_REPORTED: "true"}}},
                meta["namespace"],
            )

    # -- issuance ---------------------------------------------------------------------------------------

    async def _continue_issuance(
        self, certificate: Body, secret: Body | None, attempts: list[Body], revision: int
    ) -> None:
        """One step of issuing ``revision``: create its request, or act on the request's outcome."""
        spec, namespace = certificate.get("spec") or {}, metadata(certificate)["namespace"]
        live: list[Body] = []
        for request in attempts:
            stale = FAILURE_REPORTED in annotations_of(request) or request_mismatches(spec, request)
            if stale or live:  # a reported failure, an outdated spec, or a second request for the revision
                await self._kube.delete(CERTIFICATE_REQUESTS, metadata(request)["name"], namespace)
                log.info(
                    "deleted CertificateRequest %s/%s (%s)",
                    namespace,
                    metadata(request)["name"],
                    "superseded" if stale else "duplicate",
                )
            else:
                live.append(request)
        if not live:
            await self._request_issuance(certificate, secret, revision)
            return
        request = live[0]
        failure = request_failure(request)
        if is_true(request, "Ready") and (request.get("status") or {}).get("certificate"):
            await self._complete_issuance(certificate, secret, request, revision)
        elif failure is not None:
            await self._report_failure(certificate, request, *failure)

    async def _request_issuance(self, certificate: Body, secret: Body | None, revision: int) -> None:
        meta, spec = metadata(certificate), certificate.get("spec") or {}
        wanted = key_spec(spec)
        found = await self._private_key(certificate, secret, wanted)
        if found is None:
            return  # a new key Secret was recorded; the next reconcile builds the request
        key, key_secret = found
        csr = build_csr(spec, key)
        request_spec: dict[str, Any] = {
            "request": _b64(csr_pem(csr)),
            "issuerRef": dict(spec.get("issuerRef") or {}),
            "usages": request_usages(spec),
        }
        if spec.get("duration"):
            request_spec["duration"] = spec["duration"]
        if spec.get("isCA"):
            request_spec["isCA"] = True
        body = {
            "metadata": {
                "generateName": f"{meta['name']}-",
                "namespace": meta["namespace"],
                "annotations": {
                    CERTIFICATE_NAME: meta["name"],
                    CERTIFICATE_REVISION: str(revision),
                    PRIVATE_KEY_SECRET: key_secret,
                },
                "ownerReferences": [owner_reference(certificate)],
            },
            "spec": request_spec,
        }
        created = await self._kube.create(CERTIFICATE_REQUESTS, body, meta["namespace"])
        log.info(
            "created CertificateRequest %s/%s for Certificate %s (revision %d)",
            meta["namespace"],
            metadata(created).get("name"),
            meta["name"],
            revision,
        )

    async def _private_key(
        self, certificate: Body, secret: Body | None, wanted: KeySpec
    ) -> tuple[PrivateKey, str] | None:
        """The key to request with and the Secret holding it, or None after storing a new one.

        rotationPolicy Never keeps the key in the Certificate's Secret while it fits the spec; otherwise
        the key is a new one kept in a next-key Secret (recorded in status.nextPrivateKeySecretName) until
        the issued certificate joins it in the Certificate's Secret.
        """
        meta, spec, status = (
            metadata(certificate),
            certificate.get("spec") or {},
            certificate.get("status") or {},
        )
        if wanted.reuses_key and secret is not None:
            existing = load_private_key(secret_bytes(secret, "tls.key"))
            if existing is not None and not key_mismatches(existing.public_key(), wanted):
                return existing, str(spec["secretName"])
        next_name = status.get("nextPrivateKeySecretName")
        if next_name:
            stored = await self._kube.find(SECRETS, next_name, meta["namespace"])
            key = load_private_key(secret_bytes(stored, "tls.key"))
            if key is not None and not key_mismatches(key.public_key(), wanted):
                return key, str(next_name)
        key = await asyncio.to_thread(generate_private_key, wanted)
        created = await self._kube.create(
            SECRETS,
            {
                "metadata": {
                    "generateName": f"{meta['name']}-",
                    "namespace": meta["namespace"],
                    "labels": {NEXT_PRIVATE_KEY_LABEL: "true"},
                    "annotations": {CERTIFICATE_NAME: meta["name"]},
                    "ownerReferences": [owner_reference(certificate)],
                },
                "type": "Opaque",
                "data": {"tls.key": _b64(encode_private_key(key, "PKCS8"))},
            },
            meta["namespace"],
        )
        try:
            await self._write_status(
                CERTIFICATES, certificate, {"nextPrivateKeySecretName": metadata(created)["name"]}
            )
        except Exception:
            await self._kube.delete(SECRETS, metadata(created)["name"], meta["namespace"])
            raise
        self._enqueue((CERTIFICATE, meta["namespace"], meta["name"]))
        return None

    async def _complete_issuance(
        self, certificate: Body, secret: Body | None, request: Body, revision: int
    ) -> None:
        """Store the issued chain with its key in the Secret, then record the new revision."""
        meta, spec = metadata(certificate), certificate.get("spec") or {}
        namespace, request_name = meta["namespace"], metadata(request)["name"]
        status = request.get("status") or {}
        try:
            chain_pem = base64.b64decode(status.get("certificate") or "")
            ca_pem = base64.b64decode(status.get("ca") or "")
            leaf = load_chain(chain_pem)[0]
        except ValueError:
            await self._report_failure(
                certificate,
                request,
                "Failed",
                "the issuer wrote a status.certificate that is not a PEM chain",
            )
            return
        key_secret = annotations_of(request).get(PRIVATE_KEY_SECRET, "")
        holder = (
            secret
            if key_secret == spec["secretName"]
            else await self._kube.find(SECRETS, key_secret, namespace)
        )
        key = load_private_key(secret_bytes(holder, "tls.key"))
        if key is None or not certifies(leaf, key.public_key()):
            await self._report_failure(
                certificate,
                request,
                "Failed",
                f"the private key for this request (Secret {key_secret}) is gone or "
                "does not match the issued certificate",
            )
            return
        content = tls_secret_content(
            meta["name"], spec, chain_pem, ca_pem, leaf, key, key_spec(spec).encoding
        )
        if secret is None:
            await self._kube.create(
                SECRETS,
                {
                    "metadata": {
                        "name": spec["secretName"],
                        "namespace": namespace,
                        "annotations": content.annotations,
                        "labels": content.labels,
                    },
                    "type": TLS_SECRET_TYPE,
                    "data": {k: v for k, v in content.data.items() if v is not None},
                },
                namespace,
            )
        else:
            await self._kube.patch(
                SECRETS,
                spec["secretName"],
                {
                    "metadata": {"annotations": content.annotations, "labels": content.labels},
                    "data": content.data,
                },
                namespace,
            )
        now = utc_now()
        renew_at = renewal_time(leaf, spec)
        conditions = with_condition(
            without_condition(conditions_of(certificate), "Issuing"),
            "Ready",
            "True",
            "Ready",
            READY_MESSAGE,
            now=now,
            generation=meta.get("generation"),
        )
        await self._write_status(
            CERTIFICATES,
            certificate,
            {
                "conditions": conditions,
                "revision": revision,
                "notBefore": format_time(leaf.not_valid_before_utc),
                "notAfter": format_time(leaf.not_valid_after_utc),
                "renewalTime": format_time(renew_at),
                "nextPrivateKeySecretName": None,
                "lastFailureTime": None,
                "failedIssuanceAttempts": None,
            },
        )
        log.info(
            "Certificate %s/%s issued (revision %d) from CertificateRequest %s; renewal at %s",
            namespace,
            meta["name"],
            revision,
            request_name,
            format_time(renew_at),
        )
        await self._delete_spare_keys(certificate, keep=None)
        await self._prune_history(certificate, revision)
        self._schedule_renewal(namespace, meta["name"], renew_at)

    async def _prune_history(self, certificate: Body, revision: int) -> None:
        """Keep only spec.revisionHistoryLimit revisions of requests, as cert-manager does when it is set."""
        limit = (certificate.get("spec") or {}).get("revisionHistoryLimit")
        if not isinstance(limit, int) or limit < 1:
            return
        namespace = metadata(certificate)["namespace"]
        for request in await self._kube.list(CERTIFICATE_REQUESTS, namespace):
            old = revision_of(request)
            if is_owned_by(request, certificate) and old is not None and old <= revision - limit:
                await self._kube.delete(CERTIFICATE_REQUESTS, metadata(request)["name"], namespace)

    async def _report_failure(self, certificate: Body, request: Body, reason: str, message: str) -> None:
        """Issuing=False and Ready=False with the request's reason; no automatic retry (renew tries again)."""
        meta, status = metadata(certificate), certificate.get("status") or {}
        request_name, now = metadata(request)["name"], utc_now()
        generation = meta.get("generation")
        issuing_message = (
            f"CertificateRequest {request_name}: {reason}: {message}; to try again run "
            f"`keyward sandbox renew {meta['name']} -n {meta['namespace']}` or change the spec"
        )
        conditions = with_condition(
            conditions_of(certificate),
            "Issuing",
            "False",
            reason,
            issuing_message,
            now=now,
            generation=generation,
        )
        conditions = with_condition(
            conditions, "Ready", "False", reason, message, now=now, generation=generation
        )
        await self._write_status(
            CERTIFICATES,
            certificate,
            {
                "conditions": conditions,
                "lastFailureTime": format_time(now),
                "failedIssuanceAttempts": int(status.get("failedIssuanceAttempts") or 0) + 1,
            },
        )
        log.warning(
            "Certificate %s/%s: issuance failed: %s", meta["namespace"], meta["name"], issuing_message
        )
        await self._mark_reported(request)
