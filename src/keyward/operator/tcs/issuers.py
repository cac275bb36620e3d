"""TCSIssuer and TCSClusterIssuer: the CA in the token, its certificate in the issuer's Secret, Ready
honest (``operator.issuers`` checks each issuer; this module is the token-backed family's check).

A check finds (or, for a new self-signed issuer, creates) the CA in the token, writes the Secret, and
only then is the issuer Ready and signing. An issuer with spec.selfSign false gets its CA from a key
manager instead (``operator.tcs.provisioning``: a QuoteAttestation round trip, one step per check). It
never replaces a CA: an issuer whose Secret or status already shows a CA that the token does not hold
stops with ``CAKeyMissing`` (or, with spec.selfSign false, asks for that very CA) and leaves everything
as it is. It writes and deletes only Secrets it created (annotated with the issuer's signer name): a
``spec.secretName`` that names someone else's Secret stops the issuer with ``SecretConflict``. A changed
or deleted CA Secret checks its issuer again, which puts it back.

Taking over from the TCS seed: a Secret made for this very issuer object (an ownerReference with its
uid, as the seed writes it, with its ``tcs.intel.com/issuer-protection`` finalizer) is adopted when the
token holds its CA with the key — the seed's CA keys are found by label like keyward's — and becomes
keyward's (annotated, labelled, ``ca.crt`` added, the seed's finalizer released). A Secret whose CA is not
the token's is never overwritten (``CAMismatch``, or ``CAKeyMissing``). Deleting an issuer releases the
seed's finalizer on its Secret and QuoteAttestation.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import kopf
from cryptography import x509

from keyward.errors import UserError
from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.signer_names import IssuerRef, issuer_ref_of
from keyward.issuers.tcs.ca import KeyNeeded, KnownCa, TcsIssuerSpec, ca_fingerprint, ensure_ca
from keyward.keystore import KeystoreError, TokenKeyStore
from keyward.kube.client import ApiError, Kube
from keyward.kube.objects import identity, owned_by
from keyward.kube.resources import (
    QUOTE_ATTESTATIONS,
    RENEW_ANNOTATION,
    SECRETS,
    SIGNER_ANNOTATION,
    TCS_CLUSTER_ISSUERS,
    TCS_ISSUERS,
)
from keyward.operator.est_server.claims import EstClaims
from keyward.operator.issuers import IssuerChecks, Verdict
from keyward.operator.leader import Leadership
from keyward.operator.registry import registry
from keyward.operator.secrets import SecretStore
from keyward.operator.services import Services
from keyward.operator.settings import TcsIssuerSettings
from keyward.operator.status import StatusWriter, configuration_problem, refused
from keyward.operator.tcs.cas import ReadyCa, ReadyCas
from keyward.operator.tcs.provisioning import KeyProvisioning, ProvisioningOptions
from keyward.operator.tcs.secrets import ca_secret, put_secret
from keyward.operator.tcs.token import TokenProvider
from keyward.operator.upstream import release_finalizer
from keyward.pki.issue import CertificateAuthority
from keyward.pki.pem import pem_chain

log = logging.getLogger("keyward.tcs")
T = TypeVar("T")
ISSUERS = (TCS_ISSUERS, TCS_CLUSTER_ISSUERS)
#: The condition saying whether an issuer with spec.est holds its EST label (est_server.claims).
ESTSERVING = "EstServing"


def issuer_ref(body: Mapping[str, Any]) -> IssuerRef:
    meta = body["metadata"]
    return issuer_ref_of(TCS_ISSUERS.group, str(body["kind"]), meta["name"], meta.get("namespace"))


def secret_owner(secret: Mapping[str, Any], signer_name: str) -> str | None:
    """None when ``secret`` is this issuer's own (keyward made it for this signer); else who has it."""
    meta = secret.get("metadata") or {}
    signer = (meta.get("annotations") or {}).get(SIGNER_ANNOTATION)
    if signer == signer_name:
        return None
    if signer:
        return f"the issuer with signer name {signer}"
    owners = [f"{ref.get('kind')} {ref.get('name')}" for ref in meta.get("ownerReferences") or []]
    return ", ".join(owners) if owners else "no keyward issuer (keyward did not create it)"


def _secret_certificate(secret: Mapping[str, Any] | None) -> x509.Certificate | None:
    data = (secret or {}).get("data") or {}
    try:
        return x509.load_pem_x509_certificate(base64.b64decode(data.get("tls.crt") or "", validate=True))
    except (ValueError, binascii.Error):
        return None


class TcsIssuers(IssuerChecks[ReadyCa]):
    def __init__(
        self,
        *,
        kube: Kube,
        writer: StatusWriter,
        tokens: TokenProvider,
        cas: ReadyCas,
        operator_namespace: str,
        leadership: Leadership,
        secrets: SecretStore,
        settings: TcsIssuerSettings,
        provisioning: ProvisioningOptions | None = None,
        est_claims: EstClaims | None = None,
    ) -> None:
        self._kube = kube
        #: The EST labels issuers claim (spec.est): who holds which, for their EstServing condition.
        self._est_claims = est_claims or EstClaims(operator_namespace=operator_namespace)
        self._tokens = tokens
        self._cas = cas
        self._operator_namespace = operator_namespace
        self.provisioning = KeyProvisioning(
            kube=kube,
            writer=writer,
            secrets=secrets,
            wake=self.wake_signer,
            options=provisioning or ProvisioningOptions(),
        )
        #: One token operation per issuer at a time (a check creating the CA, a deletion removing it):
        #: taken in the token's worker thread, so a cancelled check cannot race its own thread.
        self._token_locks: dict[str, threading.Lock] = {}
        super().__init__(
            self._check_issuer,
            writer=writer,
            resources=ISSUERS,
            recheck_ready=settings.recheck_interval,
            recheck_failed=settings.recheck_failed,
            leadership=leadership,
            on_ready=self._became_ready,
            on_unready=lambda ref: cas.discard(ref.signer_name),
            annotations=(RENEW_ANNOTATION,),
        )

    def observe(self, event_type: str, body: Mapping[str, Any]) -> None:
        super().observe(event_type, body)
        changed = self._est_claims.observe(event_type, body)
        if changed:  # another issuer took, or let go of, a label these claim: their EstServing is due
            self.wake(lambda ref, _body: ref in changed)

    def secret_namespace(self, ref: IssuerRef) -> str:
        return ref.namespace or self._operator_namespace

    def secret_changed(self, namespace: str, name: str, secret: Mapping[str, Any] | None) -> None:
        """One of keyward's Secrets changed or was deleted: check its issuer, which puts it back."""
        signer = ((secret or {}).get("metadata") or {}).get("annotations", {}).get(SIGNER_ANNOTATION)

        def uses(ref: IssuerRef, body: Mapping[str, Any]) -> bool:
            if signer is not None and ref.signer_name != signer:
                return False
            ready = self._cas.get(ref.signer_name)
            wanted = (body.get("spec") or {}).get("secretName")
            if wanted != name or self.secret_namespace(ref) != namespace:
                return False
            expected = base64.b64encode(ready.ca_pem).decode() if ready is not None else None
            data = (secret or {}).get("data") or {}
            return secret is None or data.get("tls.crt") != expected or data.get("ca.crt") != expected

        self.wake(uses)

    def wake_signer(self, signer_name: str) -> None:
        """Check the issuer of ``signer_name`` again now (its QuoteAttestation or key Secret changed)."""
        self.wake(lambda ref, body: ref.signer_name == signer_name)

    def _locked(self, label: str, work: Callable[[], Any]) -> Any:
        with self._token_locks.setdefault(label, threading.Lock()):
            return work()

    async def _check_issuer(self, ref: IssuerRef, body: Mapping[str, Any], leading: bool) -> Verdict[ReadyCa]:
        label = ref.signer_name
        recorded_status = {"signerName": label}
        est_serving = {ESTSERVING: self._est_claims.condition(ref)}

        def not_ready(
            reason: str, message: str, *, transient: bool = False, retry_in: float | None = None
        ) -> Verdict[ReadyCa]:
            return Verdict(
                None,
                reason,
                message,
                transient=transient,
                retry_in=retry_in,
                status=recorded_status,
                conditions=est_serving,
            )

        try:
            spec = TcsIssuerSpec.parse(ref.name, body.get("spec") or {})
        except IssuerNotReady as exc:
            return not_ready(exc.reason, exc.message)
        namespace = self.secret_namespace(ref)
        where = f"Secret {namespace}/{spec.secret_name}"
        secret: dict[str, Any] | None = None
        adopting = False  # a Secret made for this issuer by the TCS seed, taken over if its CA is the token's
        if spec.secret_name:
            try:
                secret = await self._kube.find(SECRETS, spec.secret_name, namespace)
            except ApiError as exc:
                return not_ready("SecretUnreadable", f"cannot read {where}: {exc}", transient=True)
            owner = secret_owner(secret, label) if secret is not None else None
            adopting = secret is not None and owner is not None and owned_by(secret, body)
            if owner is not None and not adopting:
                return not_ready(
                    "SecretConflict",
                    f"{where} (spec.secretName) exists and belongs to {owner}; keyward writes only Secrets "
                    "it created: choose another spec.secretName, or delete that Secret",
                )
        known: list[KnownCa] = []
        certificate = _secret_certificate(secret)
        if certificate is not None:
            known.append(KnownCa.of(certificate, where))
        fingerprint = (body.get("status") or {}).get("caFingerprint")
        recorded = KnownCa.recorded(fingerprint, "status.caFingerprint") if fingerprint else None
        if recorded is not None:
            known.append(recorded)
        elif adopting and certificate is not None:
            recorded = known[0]  # a Secret the seed wrote: adopted only with the very CA it holds
        try:
            store = await self._tokens.get()

            async def token(work: Callable[[], T]) -> T:
                result: T = await store.run(self._locked, label, work)
                return result

            def ensure() -> CertificateAuthority:
                return ensure_ca(store, label, spec, known=known, recorded=recorded, create=leading)

            try:
                ca = await token(ensure)
            except KeyNeeded:
                await self.provisioning.provide(
                    ref, body, spec, namespace, known=known, store=store, token=token
                )
                ca = await token(ensure)
        except IssuerNotReady as exc:
            return not_ready(exc.reason, exc.message, transient=not exc.permanent)
        except UserError as exc:  # KeystoreError, or an unreadable HSM config file
            self._tokens.reset()
            return not_ready("TokenUnavailable", str(exc), transient=True)
        ca_pem = pem_chain([ca.certificate])
        recorded_status["caFingerprint"] = ca_fingerprint(ca.certificate)
        if spec.secret_name and leading:
            wanted = ca_secret(
                spec.secret_name, namespace, ca_pem, signer_name=label, labels=spec.labels, owner=body
            )
            try:
                await put_secret(self._kube, wanted, current=secret)
                if adopting:
                    log.info(
                        "%s: adopted %s, written before keyward took over; its CA is the token's", ref, where
                    )
            except ApiError as exc:
                return not_ready(
                    "SecretNotWritten",
                    f"cannot write {where}: {exc}; {_secret_write_problem(exc)}"
                    "the issuer signs nothing until its Secret is written",
                    transient=exc.transient or exc.conflict,
                    retry_in=self._writer.policy.refused if refused(exc) else None,
                )
        ready = ReadyCa(
            ref=ref, ca=ca, policy=spec.policy, ca_pem=ca_pem, est=spec.est, event_body=identity(body)
        )
        return Verdict(ready, status=recorded_status, conditions=est_serving)

    def _became_ready(self, ref: IssuerRef, ready: ReadyCa) -> None:
        current = self._cas.get(ref.signer_name)
        if current is not None and _same(current, ready):
            self._cas.ready(current)  # nothing changed: keep the object the EST server already serves
        else:
            self._cas.ready(ready)

    async def delete(self, body: Mapping[str, Any]) -> None:
        """Remove the CA key and certificate from the token, and the Secret if keyward made it."""
        ref = issuer_ref(body)
        label = ref.signer_name
        self.forget(ref)
        store: TokenKeyStore = await self._tokens.get()
        await store.run(self._locked, label, lambda: store.delete(label))
        namespace = self.secret_namespace(ref)
        await store.run(self._locked, label, lambda: store.delete_wrapping_key(label))
        await self.provisioning.forget(ref, namespace)
        secret_name = (body.get("spec") or {}).get("secretName")
        if secret_name:
            secret = await self._kube.find(SECRETS, secret_name, namespace)
            if secret is not None and owned_by(secret, body):
                await release_finalizer(self._kube, SECRETS, secret)  # the seed's protection ends here
            if secret is not None and secret_owner(secret, label) is None:
                await self._kube.delete(SECRETS, secret_name, namespace)
            elif secret is not None:
                log.info("%s deleted: Secret %s/%s is not its own and stays", ref, namespace, secret_name)
        attestation = await self._kube.find(QUOTE_ATTESTATIONS, ref.name, namespace)
        if attestation is not None and owned_by(attestation, body):
            await release_finalizer(self._kube, QUOTE_ATTESTATIONS, attestation)
        log.info("%s deleted: CA key and certificate removed from the token", ref)


def _secret_write_problem(error: ApiError) -> str:
    """What to fix when the API refuses the Secret (with the separator before what follows)."""
    if error.status == 422 and "metadata.labels" in error.message:
        return "spec.labels holds a value Kubernetes does not accept as a label (fix spec.labels); "
    return f"{configuration_problem(error)}; " if refused(error) else ""


def _same(a: ReadyCa, b: ReadyCa) -> bool:
    return a.ca_pem == b.ca_pem and a.policy == b.policy and a.est == b.est and a.event_body == b.event_body


for _resource in ISSUERS:

    @kopf.on.event(*_resource.handler_args, registry=registry)
    async def tcs_issuer_event(type: str, body: Any, memo: Services, **_: Any) -> None:
        memo.tcs_issuers.observe(type or "ADDED", body)

    @kopf.on.delete(*_resource.handler_args, registry=registry)
    async def delete_issuer(body: Any, memo: Services, **_: Any) -> None:
        """Remove the CA from the token and the Secret (also after downtime: kopf's finalizer)."""
        try:
            await memo.tcs_issuers.delete(body)
        except KeystoreError as exc:
            memo.tokens.reset()
            raise kopf.TemporaryError(f"cannot remove the CA key from the token: {exc}", delay=10) from None
        except ApiError as exc:
            raise kopf.TemporaryError(f"cannot remove the CA Secret: {exc}", delay=10) from None
