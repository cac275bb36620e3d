"""Key provisioning for TCS issuers with spec.selfSign false (tcs.md): the QuoteAttestation round trip.

When the token holds no CA for such an issuer (a new issuer, or a replica whose token lacks the CA its
issuer shows), the issuer's check calls ``KeyProvisioning.provide``, which moves the round trip on by one
step and says where it stands by raising ``IssuerNotReady`` (the Ready condition shows it):

1. No QuoteAttestation yet: make the wrapping key in the token (or reuse the one there) with the token's
   evidence over it, create the QuoteAttestation (named after the issuer, in its namespace: the operator
   namespace for cluster issuers; ``<issuer>.<replica>`` when replicas each have a token), owned by the
   issuer, and initialize its status. "Initiated key provisioning using QuoteAttestation ...".
2. No answer yet: "Waiting for key provisioning ...". The QuoteAttestation and the Secret it names are
   watched, so an answer is taken at once.
3. Ready=False (the key manager refused), or a Secret that cannot become the CA: the issuer says why, and
   nothing changes until someone asks again: a new value of the issuer's annotation
   ``keyward.io/renew-key-provisioning``, or (after a failure) a change of its spec, replaces the
   QuoteAttestation (and the Secret that answered it).
4. Ready=True: the Secret is checked and the CA taken into the token (``issuers.tcs.provisioning``); the
   wrapping key, the QuoteAttestation and the Secret that answered it are deleted, and ``provide``
   returns: the check goes on to find the CA in the token, write the issuer's Secret and turn Ready.

A QuoteAttestation of the same name that keyward did not make for this issuer is never touched. One whose
public key the token no longer holds the private half of (a token restored or wiped; with the SGX toolkit,
whose wrapping keys are session keys, any restart) is replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.objects import QuoteAttestationView, SecretView
from keyward.issuers.signer_names import IssuerRef
from keyward.issuers.tcs import attestation
from keyward.issuers.tcs.ca import KnownCa, TcsIssuerSpec
from keyward.issuers.tcs.provisioning import ProvisioningFailed, provision_ca, read_delivery
from keyward.keystore import TokenKeyStore, evidence
from keyward.kube.client import ApiError, Kube
from keyward.kube.objects import name_of, owned_by, owner_reference
from keyward.kube.resources import (
    GENERATION_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    QUOTE_ATTESTATIONS,
    RENEW_ANNOTATION,
    REPLICA_ANNOTATION,
    SECRETS,
    SIGNER_ANNOTATION,
    TCS_SEED_FINALIZER,
)
from keyward.operator.secrets import SecretStore
from keyward.operator.status import StatusWriter
from keyward.operator.upstream import release_finalizer
from keyward.pki.keywrap import DEFAULT_WRAP_MECHANISM, WrapMechanism

log = logging.getLogger("keyward.provisioning")
T = TypeVar("T")
#: Runs blocking token work for one issuer (in the key store's threads, under the issuer's lock).
TokenWork = Callable[[Callable[[], T]], Awaitable[T]]
RENEW_HINT = (
    f"to ask again, give the issuer's annotation {RENEW_ANNOTATION} a new value (e.g. kubectl annotate "
    f"--overwrite ... {RENEW_ANNOTATION}=$(date +%s)) or change its spec"
)


def _annotation(body: Mapping[str, Any], key: str) -> str:
    return str(((body.get("metadata") or {}).get("annotations") or {}).get(key) or "")


@dataclass(frozen=True)
class ProvisioningOptions:
    """How this replica asks for keys: the wrap mechanism key managers use, the nonce format, the
    replica's name (None: one replica, or replicas sharing a token) and what identifies the service."""

    mechanism: WrapMechanism = DEFAULT_WRAP_MECHANISM
    random_nonce: bool = True
    replica: str | None = None
    service_id: str = ""


class KeyProvisioning:
    """The QuoteAttestation round trip of one operator replica, for every issuer that needs a key."""

    def __init__(
        self,
        *,
        kube: Kube,
        writer: StatusWriter,
        secrets: SecretStore,
        wake: Callable[[str], None],
        options: ProvisioningOptions,
    ) -> None:
        self._kube = kube
        self._writer = writer
        self._secrets = secrets
        self._wake = wake
        self._mechanism = options.mechanism
        self._random_nonce = options.random_nonce
        self._replica = options.replica
        self._service_id = options.service_id
        #: Answers that could not become the CA, by signer: ((QuoteAttestation uid, Secret version), why).
        self._failed: dict[str, tuple[tuple[str, str], ProvisioningFailed]] = {}
        #: Secrets that answer a QuoteAttestation, and the signer each answers for.
        self._answers: dict[tuple[str, str], str] = {}
        secrets.listen(self._secret_changed)

    def name(self, ref: IssuerRef) -> str:
        return attestation.key_provisioning_name(ref.name, self._replica)

    async def provide(
        self,
        ref: IssuerRef,
        body: Mapping[str, Any],
        spec: TcsIssuerSpec,
        namespace: str,
        *,
        known: Sequence[KnownCa],
        store: TokenKeyStore,
        token: TokenWork[Any],
    ) -> None:
        """One step of the round trip; returns once the CA is in the token, else raises IssuerNotReady."""
        label = ref.signer_name
        name = self.name(ref)
        where = f"QuoteAttestation {namespace}/{name}"
        qa = await self._api(f"read {where}", self._kube.find(QUOTE_ATTESTATIONS, name, namespace))
        if qa is not None and _left_by_the_seed(qa, body, label):
            # The TCS seed's request for this issuer: its wrapping key died with the seed's process, so
            # keyward asks anew under the same name (the seed's finalizer released first).
            log.info("%s: %s was left by the TCS seed; asking anew", ref, where)
            await self._api(
                f"release the seed's finalizer of {where}",
                release_finalizer(self._kube, QUOTE_ATTESTATIONS, qa),
            )
            await self._withdraw(qa, namespace)
            qa = None
        if qa is not None:
            problem = _not_for(qa, label)
            if problem:
                raise IssuerNotReady(
                    "QuoteAttestationConflict",
                    f"{where} {problem}; keyward leaves it alone: delete it, or name this replica "
                    "(--replica-name) so that it asks under another name",
                )
            wrapping = await token(lambda: store.wrapping_public_key(label))
            if wrapping is None or not _publishes(qa, wrapping):
                if wrapping is not None:
                    raise IssuerNotReady(
                        "QuoteAttestationConflict",
                        f"{where} asks for the key of another token (its publicKey is not this token's "
                        "wrapping key): give each replica its own name (--replica-name, KEYWARD_REPLICA_NAME "
                        "from the pod's name), so that each asks under its own",
                    )
                log.info("%s: %s asks for a wrapping key the token no longer holds; asking anew", ref, where)
                await self._withdraw(qa, namespace)
                qa = None
        view = QuoteAttestationView.from_body(qa) if qa is not None else None
        answer = attestation.answer(view, label) if view is not None else None
        if (
            qa is not None
            and view is not None
            and answer is not None
            and self._renewal_asked(label, qa, body, answer)
        ):
            log.info("%s: key provisioning asked for again; replacing %s", ref, where)
            await self._withdraw(qa, namespace, view.secret_name)
            qa = answer = None
        if qa is None or answer is None:
            await self._request(ref, body, spec, namespace, name, store, token)
            raise IssuerNotReady("Pending", f"Initiated key provisioning using {where}")
        if answer.state == "pending":
            raise IssuerNotReady(
                "Pending",
                f"Waiting for key provisioning: {where} has {answer.message}; a key manager answers it "
                "(Intel KMRA, or keyward provision-key)",
            )
        if answer.state == "refused":
            raise IssuerNotReady(
                "KeyProvisioningRefused", f"the key manager refused {where}: {answer.message}; {RENEW_HINT}"
            )
        await self._take(ref, body, spec, namespace, qa, answer, known=known, store=store, token=token)

    async def _take(
        self,
        ref: IssuerRef,
        body: Mapping[str, Any],
        spec: TcsIssuerSpec,
        namespace: str,
        qa: Mapping[str, Any],
        answer: attestation.Answer,
        *,
        known: Sequence[KnownCa],
        store: TokenKeyStore,
        token: TokenWork[Any],
    ) -> None:
        label = ref.signer_name
        where = f"Secret {namespace}/{answer.secret_name}"
        self._answers[(namespace, answer.secret_name)] = label
        secret = await self._secrets.get(namespace, answer.secret_name)
        if secret is None:
            raise IssuerNotReady(
                "KeyProvisioningFailed",
                f"QuoteAttestation {name_of(qa)} is answered, but {where} it names does not exist: the key "
                "manager writes the Secret before it answers",
            )
        attempt = (str(qa["metadata"].get("uid")), str(secret["metadata"].get("resourceVersion")))
        failed = self._failed.get(label)
        if failed is not None and failed[0] == attempt:
            raise failed[1]
        try:
            delivery = read_delivery(SecretView.from_body(secret), where)
            await token(lambda: provision_ca(store, label, delivery, self._mechanism, spec, known=known))
        except ProvisioningFailed as exc:
            refused = ProvisioningFailed(exc.reason, f"{exc.message}; {RENEW_HINT}")
            self._failed[label] = (attempt, refused)
            log.warning("%s: the key from %s was not taken: %s", ref, where, exc.message)
            self._writer.events.post(
                body, exc.reason, f"the CA key in {where} was not taken: {exc.message}", warning=True
            )
            raise refused from None
        self._failed.pop(label, None)
        log.info("%s: CA key and certificate taken into the token from %s", ref, where)
        self._writer.events.post(
            body,
            "KeyProvisioned",
            f"CA {delivery.certificate.subject.rfc4514_string()} provisioned into the token from {where}",
        )
        await self._withdraw(qa, namespace, answer.secret_name)

    async def _request(
        self,
        ref: IssuerRef,
        body: Mapping[str, Any],
        spec: TcsIssuerSpec,
        namespace: str,
        name: str,
        store: TokenKeyStore,
        token: TokenWork[Any],
    ) -> None:
        label = ref.signer_name
        nonce = evidence.nonce(self._random_nonce)
        public_key, proof = await token(lambda: store.prepare_wrapping_key(label, nonce))
        notes = {
            RENEW_ANNOTATION: _annotation(body, RENEW_ANNOTATION),
            GENERATION_ANNOTATION: str((body.get("metadata") or {}).get("generation") or ""),
        }
        if self._replica:
            notes[REPLICA_ANNOTATION] = self._replica
        wanted = attestation.quote_attestation(
            name,
            namespace,
            request_type=attestation.KEY_PROVISIONING,
            signer_name=label,
            public_key=attestation.public_key_pem(public_key),
            evidence=proof,
            service_id=self._service_id,
            owner=owner_reference(body),
            labels=spec.labels,
            annotations=notes,
        )
        where = f"QuoteAttestation {namespace}/{name}"
        try:
            created = await self._kube.create(QUOTE_ATTESTATIONS, wanted, namespace)
        except ApiError as exc:
            raise IssuerNotReady(
                "QuoteAttestationNotCreated",
                f"cannot create {where}: {exc}",
                permanent=not (exc.transient or exc.conflict),
            ) from None
        self._writer.write_soon(QUOTE_ATTESTATIONS, created, attestation.initial_status())
        if proof.attested:
            said = f"with an SGX quote ({proof.quote_version})"
        else:
            said = "without attestation evidence: the token has none, so the transport is confidential only"
            log.warning(
                "%s: token offers no attestation; %s carries no evidence, so the key transport protects the "
                "CA key's confidentiality only, not against a substituted public key",
                ref,
                where,
            )
        log.info("%s: asked for the CA key with %s (%s)", ref, where, proof.provider)
        self._writer.events.post(
            body, "KeyProvisioningRequested", f"asked for the CA key with {where}, {said}"
        )

    def _renewal_asked(
        self, label: str, qa: Mapping[str, Any], body: Mapping[str, Any], answer: attestation.Answer
    ) -> bool:
        """A new value of the issuer's renewal annotation; or, after a failure, a new spec."""
        if _annotation(body, RENEW_ANNOTATION) != _annotation(qa, RENEW_ANNOTATION):
            return True
        failed = self._failed.get(label)
        failed_here = answer.state == "refused" or (
            failed is not None and failed[0][0] == str(qa["metadata"].get("uid"))
        )
        generation = str((body.get("metadata") or {}).get("generation") or "")
        return failed_here and generation != _annotation(qa, GENERATION_ANNOTATION)

    async def _withdraw(self, qa: Mapping[str, Any], namespace: str, answered_by: str = "") -> None:
        """Delete a QuoteAttestation keyward made, and the Secret ``answered_by`` if it is the one the
        QuoteAttestation named (a Secret of another name, v1alpha1's manual flow, is the user's)."""
        meta = qa["metadata"]
        self._failed.pop(_annotation(qa, SIGNER_ANNOTATION), None)
        try:
            await self._kube.delete(QUOTE_ATTESTATIONS, meta["name"], namespace)
            if answered_by and answered_by == QuoteAttestationView.from_body(qa).secret_name:
                await self._kube.delete(SECRETS, answered_by, namespace)
        except ApiError as exc:
            log.warning("could not delete %s or the Secret that answered it: %s", name_of(qa), exc)

    async def forget(self, ref: IssuerRef, namespace: str) -> None:
        """The issuer is being deleted: its QuoteAttestation goes (its owner reference would take it too)."""
        self._failed.pop(ref.signer_name, None)
        try:
            await self._kube.delete(QUOTE_ATTESTATIONS, self.name(ref), namespace)
        except ApiError as exc:
            log.warning("%s deleted: could not delete its QuoteAttestation: %s", ref, exc)

    def _secret_changed(self, namespace: str, name: str, secret: Mapping[str, Any] | None) -> None:
        label = self._answers.get((namespace, name))
        if label is not None:
            self._wake(label)

    @staticmethod
    async def _api(doing: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except ApiError as exc:
            raise IssuerNotReady(
                "QuoteAttestationUnreadable", f"cannot {doing}: {exc}", permanent=not exc.transient
            ) from None


def _left_by_the_seed(qa: Mapping[str, Any], issuer: Mapping[str, Any], label: str) -> bool:
    """A KeyProvisioning QuoteAttestation the TCS seed made for this issuer object (its finalizer, an owner
    reference to the issuer, its signer name)."""
    meta = qa.get("metadata") or {}
    spec = qa.get("spec") or {}
    return (
        TCS_SEED_FINALIZER in (meta.get("finalizers") or [])
        and (meta.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY
        and owned_by(qa, issuer)
        and spec.get("type") == attestation.KEY_PROVISIONING
        and spec.get("signerName") == label
    )


def _not_for(qa: Mapping[str, Any], label: str) -> str | None:
    """Why a QuoteAttestation of this issuer's name is not keyward's request for this issuer's key."""
    meta = qa.get("metadata") or {}
    if (meta.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
        return "exists and was not made by keyward"
    signer = _annotation(qa, SIGNER_ANNOTATION)
    if signer != label:
        return f"was made for {signer or 'another signer'}"
    request_type = (qa.get("spec") or {}).get("type")
    if request_type != attestation.KEY_PROVISIONING:
        return f"is a request of type {request_type}, not {attestation.KEY_PROVISIONING}"
    return None


def _publishes(qa: Mapping[str, Any], wrapping: Any) -> bool:
    try:
        published = attestation.published_public_key(QuoteAttestationView.from_body(qa))
        return bool(published.public_numbers() == wrapping.public_numbers())
    except ValueError:
        return False
