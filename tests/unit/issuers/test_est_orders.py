"""EstOrders without a cluster: names, manifests, renewal detection, the chain split and the state machine."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from keyward.est.client import EstError
from keyward.issuers.est.orders import (
    RENEWAL_SECRET_ANNOTATION,
    Accepted,
    Enrolled,
    IssuerUnavailable,
    OrderProgress,
    OrderState,
    Refused,
    RetryPolicy,
    Unauthorized,
    Unavailable,
    after_attempt,
    classify,
    finish,
    issued_parts,
    order_issuer,
    order_manifest,
    order_name,
    renewal_identity,
    start_attempt,
    upstream_order_name,
    wait_for_issuer,
)
from keyward.issuers.objects import OrderView, OwnerReference, SecretView
from keyward.issuers.signer_names import IssuerRef
from tests.support.pki import Issuer, ec_key, name

from .est_fixtures import tls_secret

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
POLICY = RetryPolicy(
    auth_retry_delay=600, backoff_base=1, backoff_limit=300, max_retry_duration=3600, lease=90
)
FRESH = OrderProgress()
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@pytest.fixture(scope="module")
def ca() -> Issuer:
    return Issuer.self_signed("EST CA")


# ---- names and manifests --------------------------------------------------------------------------------


@given(
    st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,300}[a-z0-9])?", fullmatch=True),
    st.uuids().map(str),
    st.uuids().map(str),
)
def test_order_name_is_stable_valid_and_distinct_per_request(
    request_name: str, uid: str, other_uid: str
) -> None:
    chosen = order_name(request_name, uid)
    assert chosen == order_name(request_name, uid)
    assert len(chosen) <= 253 and DNS_SUBDOMAIN.match(chosen), chosen
    if other_uid != uid:
        assert order_name(request_name, other_uid) != chosen


def order(body: dict[str, object]) -> OrderView:
    return OrderView.from_body(body)


def test_order_manifest_is_owned_by_the_request_and_names_the_issuer() -> None:
    owner = OwnerReference("certificates.k8s.io/v1", "CertificateSigningRequest", "node-csr", "u-1")
    issuer = IssuerRef("est.mitre.org", "EstIssuer", "est", "team-a")
    manifest = order_manifest(
        name="node-csr-1234abcd",
        namespace="keyward-system",
        owner=owner,
        issuer=issuer,
        request_pem=b"-----BEGIN CERTIFICATE REQUEST-----\n",
        renewal_secret=None,
    )
    assert manifest["spec"] == {
        "issuerRef": {"name": "est", "kind": "EstIssuer", "group": "est.mitre.org"},
        "request": base64.b64encode(b"-----BEGIN CERTIFICATE REQUEST-----\n").decode(),
        "renewal": False,
    }
    assert manifest["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "name": "node-csr",
            "uid": "u-1",
            "controller": True,
        }
    ]
    assert order(manifest).owner == OwnerReference(
        "certificates.k8s.io/v1", "CertificateSigningRequest", "node-csr", "u-1", controller=True
    )
    # The order lives in the operator namespace, the issuer in its own: the annotation keeps it apart.
    assert order_issuer(order(manifest)) == issuer
    renewing = order_manifest(
        name="n", namespace="team-a", owner=owner, issuer=issuer, request_pem=b"x", renewal_secret="tls"
    )
    assert renewing["spec"]["renewal"] is True
    assert renewing["metadata"]["annotations"][RENEWAL_SECRET_ANNOTATION] == "tls"


def test_order_without_annotation_falls_back_to_its_issuer_ref() -> None:
    body = {
        "metadata": {"name": "o", "namespace": "ns"},
        "spec": {"issuerRef": {"name": "c", "kind": "EstClusterIssuer", "group": "est.mitre.org"}},
    }
    assert order_issuer(order(body)) == IssuerRef("est.mitre.org", "EstClusterIssuer", "c")


# ---- renewal --------------------------------------------------------------------------------------------


def test_renewal_needs_a_current_certificate_from_this_issuer_with_its_key(ca: Issuer) -> None:
    secret, certificate = tls_secret(ca, "example.com")
    identity = renewal_identity(SecretView.from_body(secret), [ca.certificate])
    assert identity is not None and identity.leaf() == certificate

    stranger = Issuer.self_signed("EST CA")  # same name, another key: not this issuer
    assert renewal_identity(SecretView.from_body(secret), [stranger.certificate]) is None
    expired, _ = tls_secret(ca, lifetime=timedelta(hours=1), not_before=datetime.now(UTC) - timedelta(days=3))
    assert renewal_identity(SecretView.from_body(expired), [ca.certificate]) is None
    assert renewal_identity(None, [ca.certificate]) is None
    opaque = SecretView.from_body({**secret, "type": "Opaque"})
    assert renewal_identity(opaque, [ca.certificate]) is None
    keyless = {"type": "kubernetes.io/tls", "data": {"tls.crt": secret["data"]["tls.crt"], "tls.key": ""}}
    assert renewal_identity(SecretView.from_body(keyless), [ca.certificate]) is None


# ---- what goes into the request's status ----------------------------------------------------------------


def test_chain_and_ca_split_leaf_intermediates_and_root(ca: Issuer) -> None:
    sub_key = ec_key()
    sub_certificate = ca.issue(name("Sub CA"), sub_key.public_key())
    sub = Issuer(sub_certificate, sub_key)
    leaf = sub.issue(name("leaf"), ec_key().public_key())
    # The intermediate from the answer, the root from /cacerts:
    assert issued_parts([leaf, sub_certificate], [ca.certificate]) == (
        [leaf, sub_certificate],
        [ca.certificate],
    )
    # Both from /cacerts (the answer holds the leaf alone):
    assert issued_parts([leaf], [sub_certificate, ca.certificate]) == (
        [leaf, sub_certificate],
        [ca.certificate],
    )
    # No root anywhere: the bundle is the CA.
    assert issued_parts([leaf], [sub_certificate]) == ([leaf, sub_certificate], [sub_certificate])
    direct = ca.issue(name("direct"), ec_key().public_key())
    assert issued_parts([direct, ca.certificate], [ca.certificate]) == ([direct], [ca.certificate])


# ---- the state machine ----------------------------------------------------------------------------------


def attempt(progress: OrderProgress = FRESH, at: datetime = NOW) -> OrderProgress:
    return start_attempt(progress, at, POLICY)


def test_attempt_takes_a_lease_and_counts(ca: Issuer) -> None:
    started = attempt()
    assert (started.state, started.attempts, started.next_attempt) == (
        OrderState.ENROLLING,
        1,
        NOW + timedelta(seconds=90),
    )
    assert started.due() == NOW + timedelta(seconds=90), "another process takes over only after the lease"
    assert OrderProgress().due() is not None and OrderProgress().due() <= NOW  # type: ignore[operator]


def test_200_issues(ca: Issuer) -> None:
    leaf = ca.issue(name("leaf"), ec_key().public_key())
    issued = after_attempt(attempt(), Enrolled((leaf,)), NOW, POLICY)
    assert issued.state is OrderState.ISSUED and issued.finished and issued.due() is None
    assert issued.last_error == "" and f"{leaf.serial_number:x}" in issued.message


def test_202_waits_for_retry_after_without_spending_the_deadline() -> None:
    failing = after_attempt(attempt(), Unavailable("503"), NOW, POLICY)
    pending = after_attempt(attempt(failing), Accepted(42), NOW + timedelta(seconds=5), POLICY)
    assert pending.state is OrderState.WAITING
    assert pending.next_attempt == NOW + timedelta(seconds=47)
    assert pending.failing_since is None and pending.last_error == ""
    assert "202" in pending.message and "42 s" in pending.message


def test_401_retries_after_the_auth_delay_forever() -> None:
    progress = OrderProgress()
    moment = NOW
    for _ in range(20):  # far beyond the maximum retry duration: 401 is the user's to fix, not a timeout
        progress = after_attempt(
            attempt(progress, moment), Unauthorized("401 wrong password"), moment, POLICY
        )
        assert progress.state is OrderState.WAITING
        assert progress.next_attempt == moment + timedelta(seconds=600)
        moment = progress.next_attempt
    assert progress.attempts == 20 and progress.last_error == "401 wrong password"
    assert "credentials read again" in progress.message


def test_other_4xx_fails_at_once() -> None:
    failed = after_attempt(attempt(), Refused("400 CN not allowed"), NOW, POLICY)
    assert failed.state is OrderState.FAILED and failed.last_error == "400 CN not allowed"


def test_transient_failures_back_off_exponentially_then_fail_after_the_maximum_duration() -> None:
    progress = OrderProgress()
    moment = NOW
    delays = []
    while True:
        progress = after_attempt(attempt(progress, moment), Unavailable("connection refused"), moment, POLICY)
        if progress.state is OrderState.FAILED:
            break
        assert progress.next_attempt is not None
        delays.append((progress.next_attempt - moment).total_seconds())
        moment = progress.next_attempt
    assert delays[:6] == [1, 1, 2, 4, 8, 16]
    assert max(delays) == 300, "capped at the backoff limit"
    assert moment - NOW >= timedelta(seconds=3600) and moment - NOW < timedelta(seconds=3600 + 300)
    assert progress.message.startswith(f"gave up after {progress.attempts} attempts")
    assert "connection refused" in progress.message


def test_server_retry_after_on_503_is_honoured_within_the_deadline() -> None:
    waiting = after_attempt(attempt(), Unavailable("503", retry_after=120), NOW, POLICY)
    assert waiting.next_attempt == NOW + timedelta(seconds=120)
    late = after_attempt(
        attempt(waiting), Unavailable("503", retry_after=7200), NOW + timedelta(seconds=3000), POLICY
    )
    assert late.next_attempt == NOW + timedelta(seconds=3600), "never beyond the give-up time"


def test_issuer_trouble_waits_to_be_woken_and_spends_nothing() -> None:
    waiting = after_attempt(attempt(), IssuerUnavailable("Secret gone"), NOW, POLICY)
    assert waiting.state is OrderState.WAITING and waiting.due() is None
    assert wait_for_issuer(OrderProgress(), "EstIssuer ns/x is not ready").due() is None


def test_status_round_trips_through_the_api_shape() -> None:
    failing = after_attempt(attempt(), Unavailable("timeout"), NOW, POLICY)
    status = failing.to_status(NOW)
    assert status["state"] == "Waiting" and status["attempts"] == 1 and status["lastError"] == "timeout"
    assert status["nextAttemptTime"] == "2026-01-01T12:00:01Z"
    read = OrderProgress.of(order({"status": status}))
    assert (read.state, read.attempts, read.failing_since) == (OrderState.WAITING, 1, NOW)
    # The run of failures keeps its start across attempts (the deadline survives restarts):
    later = after_attempt(
        attempt(read, NOW + timedelta(seconds=1)), Unavailable("t"), NOW + timedelta(seconds=1), POLICY
    )
    assert (
        OrderProgress.of(order({"status": later.to_status(NOW + timedelta(seconds=1))})).failing_since == NOW
    )
    issued = finish(read, OrderState.ISSUED, "already finished").to_status(NOW)
    assert issued["nextAttemptTime"] is None
    ready = next(c for c in issued["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["reason"] == "Issued"


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [
        ("auth", Unauthorized),
        ("client", Refused),
        ("config", IssuerUnavailable),
        ("server", Unavailable),
        ("timeout", Unavailable),
        ("tls", Unavailable),
        ("connect", Unavailable),
        ("protocol", Unavailable),
        ("redirect", Unavailable),
        ("too-large", Unavailable),
    ],
)
def test_est_errors_map_to_outcomes(kind: str, outcome: type) -> None:
    assert isinstance(classify(EstError(kind, "m", retry_after=3)), outcome)  # type: ignore[arg-type]


def test_unknown_state_reads_as_pending() -> None:
    assert OrderProgress.of(order({"status": {"state": "Bogus"}})).state is OrderState.PENDING
    assert OrderProgress.of(order({})) == OrderProgress()


# ---- orders the EST seed made ---------------------------------------------------------------------------


def seed_order(
    status: dict[str, object] | None = None, annotations: dict[str, str] | None = None
) -> dict[str, object]:
    """An EstOrder as the EST seed's kopf handler leaves it (its certificaterequest.py, estorder.py)."""
    return {
        "metadata": {
            "name": "test-cert-abcde-order",
            "namespace": "est-operator-test",
            "annotations": {"kopf.zalando.org/last-handled-configuration": "{}", **(annotations or {})},
            "ownerReferences": [
                {
                    "apiVersion": "cert-manager.io/v1",
                    "kind": "CertificateRequest",
                    "name": "test-cert-abcde",
                    "uid": "u-1",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"issuerRef": {"name": "testrfc7030", "kind": "EstIssuer", "group": "est.mitre.org"}},
        "status": status or {},
    }


def test_an_order_the_seed_issued_is_finished_with_its_certificate(ca: Issuer) -> None:
    leaf = ca.issue(name("example.com"), ec_key().public_key())
    certificate = base64.b64encode(leaf.public_bytes(Encoding.PEM)).decode()
    progress = OrderProgress.of(order(seed_order({"estorder_create": {"certificate": certificate}})))
    assert progress.state is OrderState.ISSUED and progress.finished
    assert progress.enrolled() == (leaf,)
    owner = order(seed_order()).owner
    assert owner is not None and owner.uid == "u-1"
    assert upstream_order_name("test-cert-abcde") == "test-cert-abcde-order"


def test_an_order_the_seed_was_retrying_waits_until_the_retry_it_scheduled() -> None:
    record = {"started": "2026-01-01T11:00:00.000000", "delayed": "2026-01-01T12:10:00.000000", "retries": 3}
    by_annotation = OrderProgress.of(
        order(seed_order(annotations={"kopf.zalando.org/estorder_create": json.dumps(record)}))
    )
    by_status = OrderProgress.of(order(seed_order({"kopf": {"progress": {"estorder_create": record}}})))
    for progress in (by_annotation, by_status):
        assert progress.state is OrderState.WAITING and not progress.finished
        assert progress.due() == NOW + timedelta(minutes=10)
        assert progress.attempts == 3


def test_a_seed_order_without_progress_is_enrolled_and_keywards_own_status_wins() -> None:
    started = OrderProgress.of(order(seed_order({"kopf": {"progress": {"estorder_create": {"retries": 0}}}})))
    assert started.state is OrderState.PENDING and started.due() == datetime.min.replace(tzinfo=UTC)
    taken_over = seed_order({"estorder_create": {"certificate": "x"}, "state": "Waiting", "attempts": 4})
    assert OrderProgress.of(order(taken_over)).state is OrderState.WAITING, (
        "keyward's status, once written, is the truth"
    )
    assert OrderProgress.of(order({"metadata": {}, "status": {"state": "Failed"}})).state is OrderState.FAILED
