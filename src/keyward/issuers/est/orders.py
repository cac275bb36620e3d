"""EstOrders: one enrollment at an EST server per request, as a small state machine.

An EstOrder is created for an approved request once its issuer is ready, and owned by the request. Its
status is the whole memory of the enrollment, so that a restart, a 202 Retry-After or a wrong password
never loses track and never enrolls twice once issued:

``Pending`` → ``Enrolling`` (one attempt; ``nextAttemptTime`` is the attempt's lease) → ``Issued`` |
``Failed`` | ``Waiting`` (``nextAttemptTime`` = when to try again; none: until the issuer is ready).
A chain the server issued is recorded on the order (``status.certificate``) before it is written to the
request, so a write that fails, or a crash in between, leads to writing the recorded chain — never to a
second enrollment.

The transitions are pure functions of (status, outcome, now, policy); the controller only performs them.

Orders the EST seed made (``<request>-order``, run by its kopf handler ``estorder_create``) are taken over,
never duplicated: one whose handler returned a certificate is Issued (the seed wrote it to the request
first); one still retrying waits until the retry the seed scheduled, then goes on with the same CSR.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from keyward.est.client import ClientCertificate, EstError
from keyward.issuers import conditions
from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.est.issuer import client_certificate
from keyward.issuers.objects import Condition, OrderStatus, OrderView, OwnerReference, SecretView
from keyward.issuers.signer_names import (
    IssuerRef,
    MalformedSignerName,
    issuer_ref_from_request,
    parse_signer_name,
)
from keyward.kube.resources import (
    EST_GROUP,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    RENEWAL_SECRET_ANNOTATION,
    SIGNER_ANNOTATION,
    TLS_SECRET_TYPE,
)
from keyward.pki.pem import pem_chain

NAME_LIMIT = 253
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def upstream_order_name(request_name: str) -> str:
    """The name the EST seed gave a CertificateRequest's EstOrder."""
    return f"{request_name}-order"


def order_name(request_name: str, uid: str) -> str:
    """``<request name>-<8 hex of the request's uid>``: stable for a request, distinct across re-creations
    of a name, a DNS-1123 subdomain of at most 253 characters (dots become dashes)."""
    digest = hashlib.sha256(uid.encode()).hexdigest()[:8]
    base = _NOT_DNS.sub("-", request_name.lower())[: NAME_LIMIT - len(digest) - 1]
    base = base.strip("-") or "request"
    return f"{base}-{digest}"


def order_manifest(
    *,
    name: str,
    namespace: str,
    owner: OwnerReference,
    issuer: IssuerRef,
    request_pem: bytes,
    renewal_secret: str | None = None,
) -> dict[str, Any]:
    """The EstOrder for an approved request: owned by it (garbage-collected with it), never by users.
    The signer-name annotation names the issuer (for a CSR the order lives in the operator namespace,
    not the issuer's)."""
    annotations = {SIGNER_ANNOTATION: issuer.signer_name}
    if renewal_secret:
        annotations[RENEWAL_SECRET_ANNOTATION] = renewal_secret
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            "annotations": annotations,
            "ownerReferences": [replace(owner, controller=True).to_body()],
        },
        "spec": {
            "issuerRef": {"name": issuer.name, "kind": issuer.kind, "group": issuer.group},
            "request": base64.b64encode(request_pem).decode("ascii"),
            "renewal": renewal_secret is not None,
        },
    }


def order_issuer(order: OrderView) -> IssuerRef | None:
    """The issuer an EstOrder enrolls with (from its signer-name annotation, else spec.issuerRef)."""
    try:
        ref = parse_signer_name(order.signer_name, group=EST_GROUP)
    except MalformedSignerName:
        ref = None
    if ref is not None:
        return ref
    return issuer_ref_from_request(order.issuer, order.meta.namespace)


def renewal_identity(
    secret: SecretView | None,
    ca_certificates: Sequence[x509.Certificate],
    *,
    now: datetime | None = None,
) -> ClientCertificate | None:
    """The TLS client identity for simplereenroll, when ``secret`` holds a current certificate from this
    issuer's CA (directly issued by a /cacerts certificate) with its key; ``None`` otherwise."""
    if secret is None or secret.type != TLS_SECRET_TYPE:
        return None
    try:
        identity = client_certificate(secret, "renewal", now=now)
    except IssuerNotReady:
        return None
    leaf = identity.leaf()
    for ca in ca_certificates:
        if ca.subject != leaf.issuer:
            continue
        try:
            leaf.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        return identity
    return None


def issued_parts(
    enrolled: Sequence[x509.Certificate], bundle: Sequence[x509.Certificate]
) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """(certificate chain, CA) for the request's status: the leaf and its intermediates (from the answer or
    the /cacerts bundle), and the self-signed root they lead to, else the whole bundle as the CA."""
    leaf, rest = enrolled[0], list(enrolled[1:])
    chain = [leaf]
    current = leaf
    pool = [*rest, *bundle]
    roots: list[x509.Certificate] = []
    while current.issuer != current.subject and len(chain) < 10:
        issuer = next((c for c in pool if c.subject == current.issuer and c not in chain), None)
        if issuer is None:
            break
        if issuer.subject == issuer.issuer:
            roots.append(issuer)
            break
        chain.append(issuer)
        current = issuer
    return chain, roots or list(bundle)


# --- the state machine ----------------------------------------------------------------------------------


class OrderState(enum.StrEnum):
    PENDING = "Pending"
    ENROLLING = "Enrolling"
    WAITING = "Waiting"
    ISSUED = "Issued"
    FAILED = "Failed"


@dataclass(frozen=True)
class RetryPolicy:
    """Seconds. ``lease`` bounds one attempt: an Enrolling order older than that was abandoned."""

    auth_retry_delay: float = 600.0
    backoff_base: float = 1.0
    backoff_limit: float = 300.0
    max_retry_duration: float = 3600.0
    lease: float = 90.0


@dataclass(frozen=True)
class Enrolled:
    """200: the certificate, leaf first."""

    chain: tuple[x509.Certificate, ...]


@dataclass(frozen=True)
class Accepted:
    """202: the server will issue later; ask again after ``retry_after`` seconds."""

    retry_after: float


@dataclass(frozen=True)
class Unauthorized:
    """401: retried after the auth delay, with the credentials read again (they may have been fixed)."""

    message: str


@dataclass(frozen=True)
class Refused:
    """Another 4xx, or a request the server can never accept: the order fails."""

    message: str


@dataclass(frozen=True)
class Unavailable:
    """5xx, timeouts, TLS and connection trouble, broken answers: retried with backoff, for a while."""

    message: str
    retry_after: float | None = None


@dataclass(frozen=True)
class IssuerUnavailable:
    """The issuer is not ready (or its Secrets are broken): wait until it is, without a deadline."""

    message: str


Outcome = Enrolled | Accepted | Unauthorized | Refused | Unavailable | IssuerUnavailable


def classify(error: EstError) -> Outcome:
    """What an EstError means for the order (see the module docstring of keyward.est.client.errors)."""
    if error.kind == "auth":
        return Unauthorized(error.message)
    if error.kind == "client":
        return Refused(error.message)
    if error.kind == "config":
        return IssuerUnavailable(error.message)
    return Unavailable(error.message, error.retry_after)


@dataclass(frozen=True)
class OrderProgress:
    """An EstOrder's status, typed. ``failing_since`` starts a run of transient failures (the deadline)."""

    state: OrderState = OrderState.PENDING
    attempts: int = 0
    last_error: str = ""
    next_attempt: datetime | None = None
    failing_since: datetime | None = None
    message: str = "waiting for the first attempt"
    conditions: tuple[Condition, ...] = field(default=(), compare=False)
    #: The chain the EST server issued (base64 of PEM, leaf first), recorded before it is written to the
    #: request: a retry writes it instead of enrolling a second time.
    certificate: str = ""

    @classmethod
    def of(cls, order: OrderView) -> OrderProgress:
        """An order's progress: keyward's status, or what the EST seed left on an order it ran."""
        seed = order.seed
        if order.status.state or not seed.ran:
            return cls._of_status(order.status)
        if seed.certificate:
            return cls(
                state=OrderState.ISSUED,
                certificate=seed.certificate,
                message="issued by the EST operator before keyward took over",
            )
        delayed = parse_time(seed.delayed)
        if delayed is None:
            return cls(message="taken over from the EST operator: enrolling with its request")
        return cls(
            state=OrderState.WAITING,
            attempts=seed.retries,
            next_attempt=delayed,
            message="taken over from the EST operator: asking again when it would have",
        )

    @classmethod
    def _of_status(cls, status: OrderStatus) -> OrderProgress:
        try:
            state = OrderState(status.state or "Pending")
        except ValueError:
            state = OrderState.PENDING
        retrying = status.condition("Retrying")
        ready = status.condition("Ready")
        failing_since = None
        if retrying is not None and retrying.true:
            failing_since = parse_time(retrying.last_transition_time)
        return cls(
            state=state,
            attempts=status.attempts,
            last_error=status.last_error,
            next_attempt=parse_time(status.next_attempt_time),
            failing_since=failing_since,
            message=(ready.message if ready is not None else "") or cls.message,
            conditions=status.conditions,
            certificate=status.certificate,
        )

    def enrolled(self) -> tuple[x509.Certificate, ...] | None:
        """The recorded chain, if the EST server already issued it (None when none, or unreadable)."""
        if not self.certificate:
            return None
        try:
            chain = x509.load_pem_x509_certificates(base64.b64decode(self.certificate, validate=True))
        except (ValueError, binascii.Error):
            return None
        return tuple(chain) or None

    @property
    def finished(self) -> bool:
        return self.state in (OrderState.ISSUED, OrderState.FAILED)

    def due(self) -> datetime | None:
        """When the next attempt may start: ``None`` when finished or waiting to be woken (issuer)."""
        if self.finished:
            return None
        if self.state is OrderState.PENDING:
            return datetime.min.replace(tzinfo=UTC)
        if self.state is OrderState.ENROLLING:
            return self.next_attempt or datetime.min.replace(tzinfo=UTC)
        return self.next_attempt

    def to_status(self, now: datetime) -> dict[str, Any]:
        ready_reason = {
            OrderState.ISSUED: "Issued",
            OrderState.FAILED: "Failed",
            OrderState.ENROLLING: "Enrolling",
        }.get(self.state, "Pending")
        previous = [condition.to_body() for condition in self.conditions]
        ready = conditions.make(
            "Ready", self.state is OrderState.ISSUED, ready_reason, self.message, previous=previous, now=now
        )
        retrying = conditions.make(
            "Retrying",
            self.failing_since is not None,
            "TransientFailure" if self.failing_since is not None else "NoFailure",
            self.last_error if self.failing_since is not None else "",
            previous=previous,
            now=self.failing_since or now,
        )
        status: dict[str, Any] = {
            "state": self.state.value,
            "attempts": self.attempts,
            "lastError": self.last_error,
            "nextAttemptTime": format_time(self.next_attempt) if self.next_attempt else None,
            "conditions": conditions.replace(conditions.replace(previous, ready), retrying),
        }
        if self.certificate:
            status["certificate"] = self.certificate
        return status


def start_attempt(progress: OrderProgress, now: datetime, policy: RetryPolicy) -> OrderProgress:
    """Enrolling, one more attempt; the lease tells other processes when this attempt is abandoned."""
    return replace(
        progress,
        state=OrderState.ENROLLING,
        attempts=progress.attempts + 1,
        next_attempt=now + timedelta(seconds=policy.lease),
        message=f"attempt {progress.attempts + 1} in progress",
    )


def record(progress: OrderProgress, chain: Sequence[x509.Certificate]) -> OrderProgress:
    """The EST server issued ``chain``: keep it on the order before it goes to the request."""
    leaf = chain[0]
    return replace(
        progress,
        certificate=base64.b64encode(pem_chain(chain)).decode(),
        message=f"enrolled serial {leaf.serial_number:x}; writing it to the request",
    )


def wait_for_issuer(progress: OrderProgress, message: str) -> OrderProgress:
    """The issuer cannot enroll now: wait to be woken when it is ready (no deadline, no attempt spent)."""
    return replace(progress, state=OrderState.WAITING, next_attempt=None, last_error=message, message=message)


def finish(progress: OrderProgress, state: OrderState, message: str) -> OrderProgress:
    """Issued or Failed without an attempt (the request was finished by other means)."""
    return replace(progress, state=state, next_attempt=None, message=message)


def after_attempt(
    progress: OrderProgress, outcome: Outcome, now: datetime, policy: RetryPolicy
) -> OrderProgress:
    """The order after an attempt ended with ``outcome``."""
    if isinstance(outcome, Enrolled):
        leaf = outcome.chain[0]
        return replace(
            progress,
            state=OrderState.ISSUED,
            last_error="",
            next_attempt=None,
            failing_since=None,
            message=f"issued serial {leaf.serial_number:x}, valid to {format_time(leaf.not_valid_after_utc)}",
        )
    if isinstance(outcome, Accepted):
        return replace(
            progress,
            state=OrderState.WAITING,
            next_attempt=now + timedelta(seconds=outcome.retry_after),
            failing_since=None,
            last_error="",
            message=f"the EST server accepted the request for later issuance (202); asking again in "
            f"{_seconds(outcome.retry_after)}",
        )
    if isinstance(outcome, Unauthorized):
        delay = policy.auth_retry_delay
        return replace(
            progress,
            state=OrderState.WAITING,
            next_attempt=now + timedelta(seconds=delay),
            failing_since=None,
            last_error=outcome.message,
            message=f"{outcome.message}; retrying in {_seconds(delay)} with the credentials read again",
        )
    if isinstance(outcome, Refused):
        return replace(
            progress,
            state=OrderState.FAILED,
            next_attempt=None,
            failing_since=None,
            last_error=outcome.message,
            message=outcome.message,
        )
    if isinstance(outcome, IssuerUnavailable):
        return wait_for_issuer(progress, outcome.message)
    return _transient(progress, outcome, now, policy)


def _transient(
    progress: OrderProgress, outcome: Unavailable, now: datetime, policy: RetryPolicy
) -> OrderProgress:
    since = progress.failing_since or now
    elapsed = (now - since).total_seconds()
    if elapsed >= policy.max_retry_duration:
        return replace(
            progress,
            state=OrderState.FAILED,
            next_attempt=None,
            failing_since=since,
            last_error=outcome.message,
            message=f"gave up after {progress.attempts} attempts over {_seconds(elapsed)}: {outcome.message}",
        )
    # Exponential without a counter: wait as long as the failures have lasted (1, 1, 2, 4, 8 ... s).
    delay = min(max(policy.backoff_base, elapsed), policy.backoff_limit)
    if outcome.retry_after is not None:
        delay = max(1.0, outcome.retry_after)
    delay = min(delay, max(1.0, policy.max_retry_duration - elapsed))
    return replace(
        progress,
        state=OrderState.WAITING,
        next_attempt=now + timedelta(seconds=delay),
        failing_since=since,
        last_error=outcome.message,
        message=f"{outcome.message}; retrying in {_seconds(delay)}",
    )


def _seconds(value: float) -> str:
    if value >= 120:
        return f"{value / 60:.0f} min"
    return f"{value:.0f} s" if value >= 10 else f"{round(value, 1):g} s"


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
