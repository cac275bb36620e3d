"""TCSIssuer and TCSClusterIssuer: keep the CA in the token, its certificate in a Secret, Ready honest."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any

import kopf

from keyward.errors import UserError
from keyward.issuers import conditions
from keyward.issuers.signer_names import TCS_GROUP, IssuerRef
from keyward.issuers.tcs.ca import IssuerNotReady, TcsIssuerSpec, ensure_ca
from keyward.keystore import KeystoreError
from keyward.kube.resources import SECRETS, TCS_CLUSTER_ISSUERS, TCS_ISSUERS
from keyward.operator.registry import registry
from keyward.operator.services import ReadyCa, Runtime, event_body
from keyward.operator.tcs.secrets import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SIGNER_ANNOTATION,
    ca_secret,
    put_secret,
)
from keyward.pki.issue import pem_chain

log = logging.getLogger("keyward.tcs")
ISSUERS = (TCS_ISSUERS, TCS_CLUSTER_ISSUERS)
RECHECK_SECONDS = 30.0
_locks: dict[str, asyncio.Lock] = {}


def issuer_ref(body: Any) -> IssuerRef:
    namespace = body["metadata"].get("namespace") if body["kind"] == "TCSIssuer" else None
    return IssuerRef(TCS_GROUP, body["kind"], body["metadata"]["name"], namespace)


def secret_namespace(ref: IssuerRef, memo: Runtime) -> str:
    return ref.namespace or memo.settings.operator_namespace


def _backoff(retry: int) -> float:
    return float(min(2 ** min(retry, 6), 60))


async def reconcile(body: Any, patch: Any, memo: Runtime, retry: int = 0) -> None:
    """Make the issuer usable, or say on its Ready condition why it is not."""
    ref = issuer_ref(body)
    label = ref.signer_name
    generation = body["metadata"].get("generation")
    previous = (body.get("status") or {}).get("conditions")
    patch.status["signerName"] = label

    def set_ready(ok: bool, reason: str, message: str) -> None:
        patch.status["conditions"] = conditions.replace(
            previous, conditions.make("Ready", ok, reason, message, previous=previous, generation=generation)
        )

    lock = _locks.setdefault(label, asyncio.Lock())
    async with lock:
        try:
            spec = TcsIssuerSpec.parse(ref.name, body.get("spec") or {})
            store = await memo.tokens.get()
            ca = await store.run(ensure_ca, store, label, spec)
        except IssuerNotReady as exc:
            memo.cas.pop(label, None)
            set_ready(False, exc.reason, exc.message)
            log.warning("%s is not ready: %s", ref, exc.message)
            if not exc.permanent:
                raise kopf.TemporaryError(exc.message, delay=_backoff(retry)) from None
            return
        except UserError as exc:  # KeystoreError, or an unreadable HSM config file
            memo.cas.pop(label, None)
            memo.tokens.reset()
            set_ready(False, "TokenUnavailable", str(exc))
            raise kopf.TemporaryError(str(exc), delay=_backoff(retry)) from None

        ca_pem = pem_chain([ca.certificate])
        memo.cas[label] = ReadyCa(
            ref=ref, ca=ca, policy=spec.policy, ca_pem=ca_pem, est=spec.est, event_body=event_body(body)
        )
        if spec.secret_name:
            await put_secret(
                memo.api,
                ca_secret(
                    spec.secret_name,
                    secret_namespace(ref, memo),
                    ca_pem,
                    signer_name=label,
                    labels=spec.labels,
                    owner=body,
                ),
            )
        set_ready(True, "Reconcile", "Success")
    kick = memo.extras.get("kick_requests")
    if kick is not None:
        kick(label)
    for listener in memo.extras.get("ca_ready_listeners", ()):  # the EST server, for one
        listener(label)


for _resource in ISSUERS:
    _args = (_resource.group, _resource.version, _resource.plural)

    @kopf.on.resume(*_args, registry=registry)
    @kopf.on.create(*_args, registry=registry)
    @kopf.on.update(*_args, field="spec", registry=registry)
    async def reconcile_issuer(body: Any, patch: Any, memo: Runtime, retry: int, **_: Any) -> None:
        await reconcile(body, patch, memo, retry)

    @kopf.timer(
        *_args,
        interval=RECHECK_SECONDS,
        initial_delay=RECHECK_SECONDS,
        idle=RECHECK_SECONDS,
        registry=registry,
    )
    async def recheck_issuer(body: Any, patch: Any, memo: Runtime, **_: Any) -> None:
        """Bring back an issuer whose CA is not in memory (a fault met while signing, say)."""
        if body["metadata"].get("deletionTimestamp"):
            return
        if issuer_ref(body).signer_name not in memo.cas:
            await reconcile(body, patch, memo)

    @kopf.on.delete(*_args, registry=registry)
    async def delete_issuer(body: Any, memo: Runtime, **_: Any) -> None:
        """Remove the CA key and certificate from the token, and the Secret (also after downtime)."""
        ref = issuer_ref(body)
        label = ref.signer_name
        memo.cas.pop(label, None)
        try:
            store = await memo.tokens.get()
            await store.run(store.delete, label)
        except KeystoreError as exc:
            memo.tokens.reset()
            raise kopf.TemporaryError(f"cannot remove the CA key from the token: {exc}", delay=10) from None
        secret_name = (body.get("spec") or {}).get("secretName")
        if secret_name:
            await memo.api.delete(SECRETS, secret_name, secret_namespace(ref, memo))
        log.info("%s deleted: CA key, certificate and Secret removed", ref)


@kopf.on.event("", "v1", "secrets", labels={MANAGED_BY_LABEL: MANAGED_BY}, registry=registry)
async def guard_ca_secret(type: str, body: Any, memo: Runtime, **_: Any) -> None:
    """Put an issuer's CA Secret back when it is deleted or its certificate is altered."""
    label = (body["metadata"].get("annotations") or {}).get(SIGNER_ANNOTATION)
    ready = memo.cas.get(label or "")
    if ready is None:
        return
    expected = base64.b64encode(ready.ca_pem).decode()
    data = body.get("data") or {}
    if type != "DELETED" and data.get("tls.crt") == expected and data.get("ca.crt") == expected:
        return
    issuer_resource = TCS_ISSUERS if ready.ref.namespaced else TCS_CLUSTER_ISSUERS
    issuer = await memo.api.find(issuer_resource, ready.ref.name, ready.ref.namespace)
    if issuer is None or issuer["metadata"].get("deletionTimestamp"):
        return
    spec = TcsIssuerSpec.parse(ready.ref.name, issuer.get("spec") or {})
    if spec.secret_name != body["metadata"]["name"]:
        return
    issuer.setdefault("apiVersion", issuer_resource.api_version)
    issuer.setdefault("kind", issuer_resource.kind)
    await put_secret(
        memo.api,
        ca_secret(
            spec.secret_name,
            secret_namespace(ready.ref, memo),
            ready.ca_pem,
            signer_name=label or "",
            labels=spec.labels,
            owner=issuer,
        ),
    )
    log.warning(
        "restored CA Secret %s/%s of %s",
        body["metadata"].get("namespace"),
        body["metadata"]["name"],
        ready.ref,
    )
