"""Typed views of the Kubernetes objects the domain reads: signing requests, EstOrders, Secrets and
QuoteAttestations.

Each view is built by one constructor, ``from_body``, from an object as the API returns it (a plain dict,
or kopf's read-only view of one); it is the only place that reads the raw object, and the domain's
functions take the views. A missing field, or one of the wrong type, never raises: it reads as absent.
The one exception is the fields a signing request is decoded from (``RequestFields``): their problems
are kept and raised as a ``RequestError`` naming the field by the decoder that reads them
(``contract.from_certificate_request``, ``contract.from_csr``), so the request fails with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import UnionType
from typing import Any

from keyward.kube.objects import decode_bytes
from keyward.kube.resources import (
    RENEWAL_SECRET_ANNOTATION,
    REQUEST_DURATION_ANNOTATION,
    REQUEST_IS_CA_ANNOTATION,
    SEED_ORDER_HANDLER,
    SEED_PROGRESS_ANNOTATION,
    SIGNER_ANNOTATION,
)

__all__ = [
    "Condition",
    "IssuerReference",
    "KeySecretEntry",
    "ObjectMeta",
    "OrderStatus",
    "OrderView",
    "OwnerReference",
    "QuoteAttestationView",
    "RequestFields",
    "RequestObject",
    "Requester",
    "SecretView",
    "SeedOrder",
]

_NO_MAPPING: Mapping[str, Any] = {}


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _NO_MAPPING


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _whole(value: object) -> int | None:
    """A JSON integer (not a boolean, which Python counts as one)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _list(value: object) -> list[Any]:
    """A JSON list (a tuple too: objects built in code); anything else reads as an empty one."""
    return list(value) if isinstance(value, list | tuple) else []


def _strings(value: object) -> tuple[str, ...]:
    """A JSON list of strings (anything else in it, or anything but a list, reads as nothing)."""
    return tuple(item for item in _list(value) if isinstance(item, str))


def _annotation(body: Mapping[str, Any], key: str) -> str:
    return _text(_mapping(_mapping(body.get("metadata")).get("annotations")).get(key))


def _json_kind(value: object) -> str:
    """What a JSON value is, for messages that say a field has the wrong type."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


# ---- parts every object has ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectMeta:
    """What names an object: name, namespace ("" for cluster-scoped objects), uid, resourceVersion and
    creationTimestamp (RFC 3339, as the API writes it)."""

    name: str
    namespace: str
    uid: str
    resource_version: str
    created: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ObjectMeta:
        meta = _mapping(body.get("metadata"))
        return cls(
            name=_text(meta.get("name")),
            namespace=_text(meta.get("namespace")),
            uid=_text(meta.get("uid")),
            resource_version=_text(meta.get("resourceVersion")),
            created=_text(meta.get("creationTimestamp")),
        )


@dataclass(frozen=True)
class Condition:
    """One entry of ``status.conditions``. ``status`` as written: True, False, Unknown (the TCS seed's
    tools write them in lower case)."""

    type: str
    status: str = ""
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""
    last_update_time: str = ""
    observed_generation: int | None = None

    @classmethod
    def from_body(cls, body: object) -> Condition | None:
        """None for an entry that is not a condition (not an object, or without a type)."""
        entry = _mapping(body)
        type_ = _text(entry.get("type"))
        if not type_:
            return None
        return cls(
            type=type_,
            status=_text(entry.get("status")),
            reason=_text(entry.get("reason")),
            message=_text(entry.get("message")),
            last_transition_time=_text(entry.get("lastTransitionTime")),
            last_update_time=_text(entry.get("lastUpdateTime")),
            observed_generation=_whole(entry.get("observedGeneration")),
        )

    @property
    def true(self) -> bool:
        return self.status == "True"

    def is_(self, status: str) -> bool:
        """The status, compared without regard to case."""
        return self.status.lower() == status.lower()

    def said(self, fallback: str) -> str:
        """What the condition says: its message, else its reason, else ``fallback``."""
        return self.message or self.reason or fallback

    def to_body(self) -> dict[str, Any]:
        """The condition as the API carries it (the fields it had), to write it back beside a new one."""
        body: dict[str, Any] = {"type": self.type, "status": self.status}
        named = {
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
            "lastUpdateTime": self.last_update_time,
        }
        body.update({key: value for key, value in named.items() if value})
        if self.observed_generation is not None:
            body["observedGeneration"] = self.observed_generation
        return body


def _conditions(status: Mapping[str, Any]) -> tuple[Condition, ...]:
    found = (Condition.from_body(entry) for entry in _list(status.get("conditions")))
    return tuple(condition for condition in found if condition is not None)


class HasConditions:
    """Lookups in the ``conditions`` of a view."""

    conditions: tuple[Condition, ...]

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def is_true(self, type_: str) -> bool:
        condition = self.condition(type_)
        return condition is not None and condition.true


@dataclass(frozen=True)
class OwnerReference:
    """An ownerReference: the object that owns another (``controller``: the one in charge of it)."""

    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool = False

    @classmethod
    def from_body(cls, body: object) -> OwnerReference | None:
        """None for an entry that names no object (no kind, name or uid)."""
        entry = _mapping(body)
        kind, name, uid = (_text(entry.get(key)) for key in ("kind", "name", "uid"))
        if not (kind and name and uid):
            return None
        return cls(_text(entry.get("apiVersion")), kind, name, uid, entry.get("controller") is True)

    def to_body(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": self.controller,
        }


@dataclass(frozen=True)
class IssuerReference:
    """A request's (or an EstOrder's) ``spec.issuerRef``, as written: group, kind and name."""

    group: str = ""
    kind: str = ""
    name: str = ""

    @classmethod
    def from_body(cls, body: object) -> IssuerReference:
        ref = _mapping(body)
        return cls(_text(ref.get("group")), _text(ref.get("kind")), _text(ref.get("name")))


# ---- signing requests: cert-manager CertificateRequests and Kubernetes CSRs ------------------------------


@dataclass(frozen=True)
class RequestFields:
    """The fields a signing request is decoded from: spec.request, spec.duration, spec.usages and
    spec.isCA (CertificateRequests), spec.expirationSeconds and cert-manager's annotations (CSRs). Small
    and picklable: this, not the whole object, goes to a signing process. ``problems`` holds, per field
    of the wrong type, what is wrong with it; the decoder that reads the field raises it."""

    request: str = ""
    duration: str = ""
    usages: tuple[str, ...] = ()
    is_ca: bool = False
    expiration_seconds: int | None = None
    duration_annotation: str = ""
    is_ca_annotation: str = ""
    problems: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RequestFields:
        spec = _mapping(body.get("spec"))
        problems: list[tuple[str, str]] = []

        def typed(key: str, kind: type | UnionType, default: Any, what: str) -> Any:
            value = spec.get(key)
            if value is None:
                return default
            if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
                return value
            problems.append((f"spec.{key}", f"spec.{key} must be {what}, not {_json_kind(value)}"))
            return default

        request = typed("request", str, "", "a string: the base64 of a PEM PKCS#10 request")
        duration = typed("duration", str, "", 'a duration such as "2160h" (90 days)')
        usages = typed("usages", list | tuple, [], 'a list of key usages such as ["digital signature"]')
        if len(_strings(usages)) != len(usages):
            problems.append(("spec.usages", "spec.usages must be a list of key usages (strings)"))
        return cls(
            request=request,
            duration=duration,
            usages=_strings(usages),
            is_ca=typed("isCA", bool, False, "true or false"),
            expiration_seconds=typed("expirationSeconds", int, None, "a whole number of seconds"),
            duration_annotation=_annotation(body, REQUEST_DURATION_ANNOTATION),
            is_ca_annotation=_annotation(body, REQUEST_IS_CA_ANNOTATION),
            problems=tuple(problems),
        )

    def problem(self, *fields: str) -> str | None:
        """What is wrong with the first of ``fields`` that has the wrong type; None when they are sound."""
        return next((said for name, said in self.problems if name in fields), None)


@dataclass(frozen=True)
class Requester:
    """Who created a Kubernetes CSR, as the API server recorded it (spec.username, uid, groups, extra)."""

    username: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestObject(HasConditions):
    """A cert-manager CertificateRequest or a Kubernetes CertificateSigningRequest: what cert-manager's
    issuer contract reads of it. ``issuer`` is a CertificateRequest's spec.issuerRef, ``signer_name`` a
    CSR's spec.signerName, ``requester`` a CSR's requester."""

    meta: ObjectMeta
    conditions: tuple[Condition, ...]
    has_certificate: bool
    issuer: IssuerReference
    signer_name: str
    requester: Requester
    fields: RequestFields

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> RequestObject:
        spec = _mapping(body.get("spec"))
        status = _mapping(body.get("status"))
        extra = _mapping(spec.get("extra"))
        return cls(
            meta=ObjectMeta.from_body(body),
            conditions=_conditions(status),
            has_certificate=bool(status.get("certificate")),
            issuer=IssuerReference.from_body(spec.get("issuerRef")),
            signer_name=_text(spec.get("signerName")),
            requester=Requester(
                username=_text(spec.get("username")),
                uid=_text(spec.get("uid")),
                groups=_strings(spec.get("groups")),
                extra={str(key): _strings(values) for key, values in extra.items()},
            ),
            fields=RequestFields.from_body(body),
        )


# ---- Secrets ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretView:
    """A Secret: its type ("Opaque" when it names none) and its data, decoded. ``undecodable`` names the
    keys whose value is not base64 (they are not in ``data``). The data never shows in the repr."""

    meta: ObjectMeta
    type: str
    data: Mapping[str, bytes] = field(repr=False)
    undecodable: frozenset[str] = frozenset()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> SecretView:
        data: dict[str, bytes] = {}
        undecodable: set[str] = set()
        for key, value in _mapping(body.get("data")).items():
            decoded = decode_bytes(value)
            if decoded is None:
                undecodable.add(str(key))
            else:
                data[str(key)] = decoded
        secret_type = _text(body.get("type")) or "Opaque"
        return cls(ObjectMeta.from_body(body), secret_type, data, frozenset(undecodable))


# ---- EstOrders -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderStatus(HasConditions):
    """keyward's status of an EstOrder (``issuers.est.orders.OrderProgress`` makes sense of it)."""

    state: str = ""
    attempts: int = 0
    last_error: str = ""
    next_attempt_time: str = ""
    certificate: str = ""
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class SeedOrder:
    """What the EST seed's kopf handler left on an order it ran: whether it ran, the certificate it
    returned, and the retry it scheduled (``delayed``, after ``retries`` retries)."""

    ran: bool = False
    certificate: str = ""
    delayed: str = ""
    retries: int = 0


@dataclass(frozen=True)
class OrderView:
    """An EstOrder: the request it is for (``owner``, its controller owner reference), the issuer (the
    signer-name annotation, else spec.issuerRef), the CSR (spec.request: base64 of PEM), whether it
    renews (spec.renewal, with the Secret to authenticate with), its status and the EST seed's traces."""

    meta: ObjectMeta
    owner: OwnerReference | None
    signer_name: str
    issuer: IssuerReference
    request: str
    renewal: bool
    renewal_secret: str
    status: OrderStatus
    seed: SeedOrder

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> OrderView:
        meta = _mapping(body.get("metadata"))
        spec = _mapping(body.get("spec"))
        status = _mapping(body.get("status"))
        owners = (OwnerReference.from_body(entry) for entry in _list(meta.get("ownerReferences")))
        return cls(
            meta=ObjectMeta.from_body(body),
            owner=next((owner for owner in owners if owner is not None and owner.controller), None),
            signer_name=_annotation(body, SIGNER_ANNOTATION),
            issuer=IssuerReference.from_body(spec.get("issuerRef")),
            request=_text(spec.get("request")),
            renewal=spec.get("renewal") is True,
            renewal_secret=_annotation(body, RENEWAL_SECRET_ANNOTATION),
            status=OrderStatus(
                state=_text(status.get("state")),
                attempts=_whole(status.get("attempts")) or 0,
                last_error=_text(status.get("lastError")),
                next_attempt_time=_text(status.get("nextAttemptTime")),
                certificate=_text(status.get("certificate")),
                conditions=_conditions(status),
            ),
            seed=_seed_order(body, status),
        )


def _seed_order(body: Mapping[str, Any], status: Mapping[str, Any]) -> SeedOrder:
    """kopf's record of the seed's handler (its annotation, JSON, else status.kopf.progress) and result."""
    record: object = None
    text = _annotation(body, SEED_PROGRESS_ANNOTATION)
    if text:
        try:
            record = json.loads(text)
        except ValueError:
            record = None
    if not isinstance(record, Mapping):
        record = _mapping(_mapping(_mapping(status.get("kopf")).get("progress")).get(SEED_ORDER_HANDLER))
    result = _mapping(status.get(SEED_ORDER_HANDLER))
    return SeedOrder(
        ran=SEED_ORDER_HANDLER in status or bool(record),
        certificate=_text(result.get("certificate")),
        delayed=_text(record.get("delayed")),
        retries=_whole(record.get("retries")) or 0,
    )


# ---- QuoteAttestations -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySecretEntry:
    """An entry of v1alpha1's ``status.secrets`` (the seed's manual flow): the Secret holding a signer's
    key, and its format ("" when it names none)."""

    secret_name: str
    secret_type: str


@dataclass(frozen=True)
class QuoteAttestationView(HasConditions):
    """A QuoteAttestation: what it asks (spec.type, signerName, the wrapping ``public_key`` as base64
    text, the evidence: quote, quoteVersion, nonce, decoded; empty when not base64) and the Secret it asks
    for (spec.secretName, else its name), and the key manager's answer (conditions, status.secrets)."""

    meta: ObjectMeta
    request_type: str
    signer_name: str
    secret_name: str
    public_key: str
    quote: bytes
    quote_version: str
    nonce: bytes
    conditions: tuple[Condition, ...]
    secrets: Mapping[str, KeySecretEntry]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> QuoteAttestationView:
        meta = ObjectMeta.from_body(body)
        spec = _mapping(body.get("spec"))
        status = _mapping(body.get("status"))
        secrets = {
            str(signer): KeySecretEntry(_text(entry.get("secretName")), _text(entry.get("secretType")))
            for signer, entry in _mapping(status.get("secrets")).items()
            if isinstance(entry, Mapping)
        }
        return cls(
            meta=meta,
            request_type=_text(spec.get("type")),
            signer_name=_text(spec.get("signerName")),
            secret_name=_text(spec.get("secretName")) or meta.name,
            public_key=_text(spec.get("publicKey")),
            quote=decode_bytes(spec.get("quote")) or b"",
            quote_version=_text(spec.get("quoteVersion")),
            nonce=decode_bytes(spec.get("nonce")) or b"",
            conditions=_conditions(status),
            secrets=secrets,
        )
