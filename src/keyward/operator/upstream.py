"""Running state the upstreams left behind, taken over: their finalizers released where they would have
released them, so that no deletion hangs once the upstream is gone.

The TCS seed puts ``tcs.intel.com/issuer-protection`` on the CA Secrets and QuoteAttestations it creates
and takes it off when their issuer is deleted (internal/k8sutil ``UnsetFinalizer``). keyward does the same
when it handles an issuer's deletion (``operator.tcs.issuers``), when it adopts a seed's CA Secret, and
when a QuoteAttestation carrying the finalizer is being deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from keyward.kube.client import ApiError, Kube
from keyward.kube.objects import name_of
from keyward.kube.resources import QUOTE_ATTESTATIONS, TCS_SEED_FINALIZER, Resource
from keyward.operator.registry import registry
from keyward.operator.services import Services

log = logging.getLogger("keyward.upstream")
#: Attempts at removing a finalizer while others change the object (409) or the API is busy.
RELEASE_ATTEMPTS = 5


async def release_finalizer(
    kube: Kube, resource: Resource, obj: Mapping[str, Any], finalizer: str = TCS_SEED_FINALIZER
) -> bool:
    """Take ``finalizer`` off ``obj`` (a merge patch of the finalizer list with its resourceVersion, read
    again on a conflict). True when it was removed; False when it was not there or the object is gone."""
    current: Mapping[str, Any] | None = obj
    for _ in range(RELEASE_ATTEMPTS):
        if current is None:
            return False
        meta = current["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if finalizer not in finalizers:
            return False
        patch = {
            "metadata": {
                "finalizers": [f for f in finalizers if f != finalizer],
                "resourceVersion": meta["resourceVersion"],
            }
        }
        try:
            await kube.patch(resource, meta["name"], patch, meta.get("namespace"))
        except ApiError as exc:
            if exc.not_found:
                return False
            if not (exc.conflict or exc.transient):
                raise
            await asyncio.sleep(0 if exc.conflict else exc.retry_after or 1.0)
            current = await kube.find(resource, meta["name"], meta.get("namespace"))
            continue
        log.info("%s %s: released the finalizer %s", resource.kind, name_of(current), finalizer)
        return True
    raise ApiError(
        409, "Conflict", f"{resource.kind} {name_of(obj)} kept changing; finalizer {finalizer} stays"
    )


@kopf.on.event(*QUOTE_ATTESTATIONS.handler_args, registry=registry)
async def quote_attestation_event(type: str, body: Any, memo: Services, **_: Any) -> None:
    """A QuoteAttestation the TCS seed made is being deleted: its finalizer must not keep it forever."""
    meta = body.get("metadata") or {}
    if type == "DELETED" or not meta.get("deletionTimestamp"):
        return
    if TCS_SEED_FINALIZER in (meta.get("finalizers") or []):
        try:
            await release_finalizer(memo.kube, QUOTE_ATTESTATIONS, body)
        except ApiError as exc:  # its next event tries again
            log.warning("QuoteAttestation %s: cannot release the seed's finalizer: %s", name_of(body), exc)
