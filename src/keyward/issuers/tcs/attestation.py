"""QuoteAttestation objects (api.md, tcs.md): what keyward asks a key manager, and how it reads the answer.

keyward creates a QuoteAttestation (tcs.intel.com/v1alpha2) for two things. ``KeyProvisioning`` asks for
the CA key of an issuer whose token lacks it, wrapped for the token's wrapping key (``publicKey``), with
the token's evidence over that key (``quote``, ``quoteVersion``, ``nonce``). ``QuoteAttestation`` asks for
a verdict on the SGX quote a signing request carries. Right after creating one, keyward initializes its
status with the seed's ``Init`` condition, so that tools patching the status with JSON patches (the seed's
manual flow appends to ``/status/conditions``) find a list to append to.

The key manager (Intel KMRA's attestation controller, ``keyward provision-key``, or a person with kubectl)
answers through the status: Ready True (for key provisioning after it wrote the Secret
``spec.secretName``), or Ready False with a message when it refuses. The seed's manual flow through
v1alpha1 answers instead with ``status.secrets[signerName]`` naming the Secret and a condition
``CASecretReady`` (or ``QuoteVerified`` False to refuse); both are read. Condition statuses are compared
without regard to case: the seed's documentation writes ``"true"``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keyward.issuers import conditions
from keyward.issuers.objects import Condition, QuoteAttestationView
from keyward.keystore.evidence import Evidence
from keyward.kube.resources import (
    ATTESTATION_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    QUOTE_ATTESTATIONS,
    SIGNER_ANNOTATION,
)

KEY_PROVISIONING = "KeyProvisioning"
QUOTE_VERIFICATION = "QuoteAttestation"
#: The seed's reasons: its own writes, and the attestation controller's.
TCS_REASON = "TCSReconcile"
CONTROLLER_REASON = "AttestationControllerReconcile"
#: The one secretType of v1alpha1's status.secrets keyward reads (tls.key wrapped, tls.crt PEM).
KMRA_SECRET_TYPE = "KMRA"  # noqa: S105 - a Secret format, not a secret
UNATTESTED = (
    "none: this token has no attestation, so the quote is empty; the key transport protects the CA key's "
    "confidentiality only, not against a substituted public key: check that this object is the one "
    "keyward made before you answer it"
)
MAX_NAME = 253


def object_name(*parts: str) -> str:
    """The parts joined by dots, as a DNS subdomain name of at most 253 characters (a long one keeps its
    start and ends in a hash of the whole)."""
    name = ".".join(part for part in parts if part)
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_NAME - len(digest) - 1].rstrip('.-')}-{digest}"


def key_provisioning_name(issuer_name: str, replica: str | None) -> str:
    """The issuer's name, as the seed names it; ``issuer.replica`` when replicas each ask for the key."""
    return object_name(issuer_name, replica or "")


def quote_verification_name(request_name: str) -> str:
    """``<request>.quote``: apart from the issuers' QuoteAttestations in the same namespace."""
    return object_name(request_name, "quote")


def public_key_pem(public_key: rsa.RSAPublicKey) -> bytes:
    """How spec.publicKey carries a key: PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo), as the seed does."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def quote_attestation(
    name: str,
    namespace: str,
    *,
    request_type: str,
    signer_name: str,
    public_key: bytes,
    evidence: Evidence,
    service_id: str,
    owner: Mapping[str, Any],
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A QuoteAttestation as keyward creates it; ``public_key`` is PEM, ``owner`` an ownerReference."""
    notes = {SIGNER_ANNOTATION: signer_name, **(annotations or {})}
    if not evidence.attested:
        notes[ATTESTATION_ANNOTATION] = UNATTESTED
    return {
        "apiVersion": QUOTE_ATTESTATIONS.api_version,
        "kind": QUOTE_ATTESTATIONS.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**(labels or {}), MANAGED_BY_LABEL: MANAGED_BY},
            "annotations": notes,
            "ownerReferences": [dict(owner)],
        },
        "spec": {
            "type": request_type,
            "quote": _b64(evidence.quote),
            "quoteVersion": evidence.quote_version,
            "nonce": _b64(evidence.nonce),
            "serviceId": service_id,
            "publicKey": _b64(public_key),
            "signerName": signer_name,
            "secretName": name,
        },
    }


def initial_status() -> dict[str, Any]:
    """The seed's ``Init`` condition, written right after the object is created."""
    condition = conditions.make(
        "Init", True, TCS_REASON, "Object status initialized", time_field="lastUpdateTime"
    )
    return {"conditions": [condition]}


def answered_status(
    qa: QuoteAttestationView, ok: bool, message: str, *, reason: str = CONTROLLER_REASON
) -> dict[str, Any]:
    """A key manager's answer: the Ready condition beside the conditions already there."""
    previous = [condition.to_body() for condition in qa.conditions]
    ready = conditions.make("Ready", ok, reason, message, previous=previous, time_field="lastUpdateTime")
    return {"conditions": conditions.replace(previous, ready)}


@dataclass(frozen=True)
class Answer:
    """The key manager's answer so far: still ``pending``, ``granted`` (the key is in ``secret_name``,
    or the quote verified) or ``refused``; ``message`` says what it said (or what is missing)."""

    state: Literal["pending", "granted", "refused"]
    message: str
    secret_name: str = ""


def answer(qa: QuoteAttestationView, signer_name: str) -> Answer:
    """Read a QuoteAttestation's status: v1alpha2's Ready condition, or v1alpha1's manual flow."""
    ready = qa.condition("Ready")
    if _is(ready, "true"):
        return Answer("granted", _said(ready, "Ready"), qa.secret_name)
    if _is(ready, "false"):
        return Answer("refused", _said(ready, "Ready=False"))
    secrets_ready = qa.condition("CASecretReady")
    if _is(secrets_ready, "true"):
        entry = qa.secrets.get(signer_name)
        if entry is None or not entry.secret_name:
            return Answer(
                "pending", f"CASecretReady is true but status.secrets names no Secret for {signer_name}"
            )
        named, secret_type = entry.secret_name, entry.secret_type or KMRA_SECRET_TYPE
        if secret_type != KMRA_SECRET_TYPE:
            return Answer(
                "refused",
                f"status.secrets names Secret {named} of secretType {secret_type!r}; keyward reads "
                f"{KMRA_SECRET_TYPE} Secrets (tls.key wrapped, tls.crt the certificate)",
            )
        return Answer("granted", _said(secrets_ready, "CASecretReady"), named)
    if secrets_ready is not None and secrets_ready.is_("false") and secrets_ready.reason != TCS_REASON:
        return Answer("refused", _said(secrets_ready, "CASecretReady=False"))
    verified = qa.condition("QuoteVerified")
    if _is(verified, "false"):
        return Answer("refused", _said(verified, "QuoteVerified=False"))
    return Answer("pending", "no verdict yet")


def published_public_key(qa: QuoteAttestationView) -> rsa.RSAPublicKey:
    """spec.publicKey as a key (PEM ``PUBLIC KEY`` or ``RSA PUBLIC KEY``, or DER); ``ValueError`` naming
    what is wrong."""
    try:
        data = base64.b64decode(qa.public_key, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("spec.publicKey is not base64") from None
    loaders = (
        (serialization.load_pem_public_key, serialization.load_der_public_key)
        if data.lstrip().startswith(b"-----BEGIN")
        else (serialization.load_der_public_key,)
    )
    for load in loaders:
        try:
            key = load(data)
        except (ValueError, TypeError):
            continue
        if isinstance(key, rsa.RSAPublicKey):
            return key
        raise ValueError(f"spec.publicKey is a {type(key).__name__}, not an RSA public key")
    raise ValueError("spec.publicKey is not a PEM or DER public key")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _is(condition: Condition | None, status: str) -> bool:
    return condition is not None and condition.is_(status)


def _said(condition: Condition | None, fallback: str) -> str:
    return condition.said(fallback) if condition is not None else fallback
