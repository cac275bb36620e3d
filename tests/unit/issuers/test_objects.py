"""The typed views of the objects the domain reads (issuers.objects): whatever shape an object arrives in,
building its view never fails, and what the domain decides from a malformed object is a clear answer: a
RequestError naming the field, a request that waits, no owner, no issuer, a pending answer."""

from __future__ import annotations

import base64
import json
import pickle
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from keyward.issuers import contract
from keyward.issuers.contract import Phase
from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.est.issuer import client_certificate, http_credentials
from keyward.issuers.est.orders import OrderProgress, OrderState, order_issuer, renewal_identity
from keyward.issuers.objects import (
    Condition,
    OrderView,
    QuoteAttestationView,
    RequestFields,
    RequestObject,
    SecretView,
)
from keyward.issuers.references import denied_reference, reference_reviews
from keyward.issuers.signer_names import IssuerRef, issuer_ref_from_request
from keyward.issuers.tcs import attestation
from keyward.issuers.tcs.provisioning import ProvisioningFailed, read_delivery
from keyward.kube.resources import (
    RENEWAL_SECRET_ANNOTATION,
    REQUEST_DURATION_ANNOTATION,
    REQUEST_IS_CA_ANNOTATION,
    SEED_PROGRESS_ANNOTATION,
    SIGNER_ANNOTATION,
)
from keyward.pki.errors import RequestError

SIGNER = "tcsissuer.tcs.intel.com/apps.my-ca"
NAMESPACED = IssuerRef("tcs.intel.com", "TCSIssuer", "my-ca", "apps")
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def csr_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc.example")])
    request = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


REQUEST = base64.b64encode(csr_pem()).decode()


# ---- any shape at all ------------------------------------------------------------------------------------

#: Any JSON value: what a field holds when it is not what the API's schema says.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def shaped(template: Any) -> st.SearchStrategy[Any]:
    """An object shaped like ``template`` (a dict of optional keys, a one-element list of entries, a
    strategy for a leaf), where any part may instead be any JSON value at all."""
    if isinstance(template, dict):
        inner = st.fixed_dictionaries({}, optional={key: shaped(value) for key, value in template.items()})
    elif isinstance(template, list):
        inner = st.lists(shaped(template[0]), max_size=3)
    else:
        inner = template
    return inner | JSON


TEXT = st.text(max_size=12)
STATUS = st.sampled_from(["True", "False", "Unknown", "true", "false", "TRUE"]) | TEXT
CONDITION = {
    "type": st.sampled_from(["Ready", "Approved", "Denied", "Failed", "InvalidRequest", "CASecretReady",
                             "QuoteVerified", "Retrying"]),
    "status": STATUS,
    "reason": st.sampled_from(["Failed", "Denied", "Pending", "Issued", "TCSReconcile"]) | TEXT,
    "message": TEXT,
    "lastTransitionTime": st.just("2026-01-01T11:00:00Z") | TEXT,
    "lastUpdateTime": TEXT,
}  # fmt: skip
BASE64 = st.binary(max_size=24).map(lambda data: base64.b64encode(data).decode()) | TEXT
OBJECT = {
    "metadata": {
        "name": TEXT,
        "namespace": TEXT,
        "uid": TEXT,
        "resourceVersion": TEXT,
        "creationTimestamp": TEXT,
        "annotations": {
            key: TEXT
            for key in (SIGNER_ANNOTATION, RENEWAL_SECRET_ANNOTATION, REQUEST_DURATION_ANNOTATION,
                        REQUEST_IS_CA_ANNOTATION, SEED_PROGRESS_ANNOTATION)
        },
        "ownerReferences": [
            {"apiVersion": TEXT, "kind": TEXT, "name": TEXT, "uid": TEXT, "controller": st.booleans()}
        ],
    },
    "type": st.sampled_from(["kubernetes.io/tls", "kubernetes.io/basic-auth", "Opaque"]),
    "data": {key: BASE64 for key in ("tls.crt", "tls.key", "username", "password")},
    "spec": {
        "request": st.just(REQUEST) | BASE64,
        "duration": st.sampled_from(["1h", "forever", ""]),
        "usages": [st.sampled_from(["server auth", "digital signature"])],
        "isCA": st.booleans(),
        "expirationSeconds": st.integers(min_value=600, max_value=10**6),
        "signerName": st.just(SIGNER) | TEXT,
        "issuerRef": {"group": st.just("tcs.intel.com"), "kind": st.just("TCSIssuer"), "name": TEXT},
        "username": TEXT,
        "uid": TEXT,
        "groups": [TEXT],
        "extra": {"scopes": [TEXT]},
        "renewal": st.booleans(),
        "type": st.sampled_from([attestation.KEY_PROVISIONING, attestation.QUOTE_VERIFICATION]),
        "secretName": TEXT,
        "publicKey": BASE64,
        "quote": BASE64,
        "nonce": BASE64,
        "quoteVersion": TEXT,
    },
    "status": {
        "certificate": BASE64,
        "conditions": [CONDITION],
        "state": st.sampled_from(["Pending", "Enrolling", "Waiting", "Issued", "Failed"]),
        "attempts": st.integers(min_value=0, max_value=9),
        "lastError": TEXT,
        "nextAttemptTime": st.just("2026-01-01T12:00:00Z") | TEXT,
        "estorder_create": {"certificate": BASE64},
        "kopf": {"progress": {"estorder_create": {"delayed": TEXT, "retries": st.integers()}}},
        "secrets": {SIGNER: {"secretName": TEXT, "secretType": st.sampled_from(["KMRA", "Vault"])}},
    },
}  # fmt: skip


def raw_conditions(body: Any) -> list[dict[str, Any]]:
    """The well-formed conditions of a raw object, read independently of the views."""
    status = body.get("status") if isinstance(body, dict) else None
    entries = status.get("conditions") if isinstance(status, dict) else None
    return [c for c in entries or () if isinstance(c, dict)] if isinstance(entries, list) else []


def raw_true(body: Any, type_: str) -> bool:
    """Whether the first condition of ``type_`` says True, read off the raw object."""
    first = next((c for c in raw_conditions(body) if c.get("type") == type_), None)
    return first is not None and first.get("status") == "True"


@settings(max_examples=300, deadline=None)
@given(shaped(OBJECT))
def test_any_object_gives_a_view_and_a_clear_answer(body: Any) -> None:
    """No KeyError, TypeError or AttributeError from any shape: a malformed field reads as absent, a
    request's decoding fails with a RequestError, and nothing unapproved, denied or failed is signed."""
    if not isinstance(body, dict):
        return
    request = RequestObject.from_body(body)
    for phase in (contract.certificate_request_phase(request), contract.csr_phase(request)):
        if phase is Phase.APPROVED:
            assert raw_true(body, "Approved") and not raw_true(body, "Denied")
            assert not raw_true(body, "Failed") and not raw_true(body, "InvalidRequest")
    assert contract.denial_message(request)
    for decode in (contract.from_certificate_request, contract.from_csr):
        try:
            decode(request.fields)
        except RequestError as exc:
            assert str(exc)
    assert pickle.loads(pickle.dumps(request.fields)) == request.fields  # noqa: S301 (our own)
    issuer_ref_from_request(request.issuer, request.meta.namespace)
    reviews = reference_reviews(request, NAMESPACED)
    assert reviews is not None and denied_reference(request, NAMESPACED)

    order = OrderView.from_body(body)
    progress = OrderProgress.of(order)
    assert progress.state in OrderState and progress.to_status(NOW)["state"] == progress.state.value
    progress.due()
    progress.enrolled()
    order_issuer(order)

    secret = SecretView.from_body(body)
    for read in (
        lambda: http_credentials(secret, "Secret ns/s", "Basic"),
        lambda: client_certificate(secret, "Secret ns/s"),
        lambda: read_delivery(secret, "Secret ns/s"),
    ):
        try:
            read()
        except IssuerNotReady as exc:  # ProvisioningFailed is one
            assert exc.reason and exc.message
    renewal_identity(secret, [])

    qa = QuoteAttestationView.from_body(body)
    assert attestation.answer(qa, SIGNER).state in ("pending", "granted", "refused")
    written = attestation.answered_status(qa, True, "delivered")["conditions"]
    kept = [c.type for c in qa.conditions if c.type != "Ready"]
    assert [c["type"] for c in written if c["type"] != "Ready"] == kept, "the other conditions stay"
    with pytest.raises(ValueError, match=r"spec\.publicKey"):
        attestation.published_public_key(qa)


@pytest.mark.parametrize("body", [{}, {"metadata": None, "spec": None, "status": None}, {"metadata": "x"}])
def test_an_empty_object_reads_as_nothing_asked_yet(body: dict[str, Any]) -> None:
    request = RequestObject.from_body(body)
    assert (request.meta.name, request.conditions, request.has_certificate) == ("", (), False)
    assert contract.certificate_request_phase(request) is Phase.AWAITING_APPROVAL
    assert contract.csr_phase(request) is Phase.AWAITING_APPROVAL
    order = OrderView.from_body(body)
    assert order.owner is None and order_issuer(order) is None
    assert OrderProgress.of(order) == OrderProgress()
    assert attestation.answer(QuoteAttestationView.from_body(body), SIGNER).state == "pending"
    assert SecretView.from_body(body).type == "Opaque"


# ---- signing requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ({"conditions": {"type": "Approved", "status": "True"}}, Phase.AWAITING_APPROVAL),
        ({"conditions": "Approved"}, Phase.AWAITING_APPROVAL),
        ({"conditions": [None, 7, "Approved", {"status": "True"}]}, Phase.AWAITING_APPROVAL),
        ({"conditions": [{"type": "Approved", "status": True}]}, Phase.AWAITING_APPROVAL),
        ({"conditions": [{"type": "Approved", "status": "true"}]}, Phase.AWAITING_APPROVAL),
        ({"conditions": [None, {"type": "Approved", "status": "True"}]}, Phase.APPROVED),
        ({"conditions": [{"type": "Approved", "status": "True"}], "certificate": 42}, Phase.FINISHED),
    ],
    ids=[
        "object",
        "string",
        "junk-entries",
        "boolean-status",
        "lower-case",
        "one-good-entry",
        "odd-certificate",
    ],
)
def test_malformed_conditions_never_approve_a_request(status: dict[str, Any], phase: Phase) -> None:
    request = RequestObject.from_body({"metadata": {"name": "r"}, "status": status})
    assert contract.certificate_request_phase(request) is phase
    assert contract.csr_phase(request) is phase


def test_a_request_view_names_it_and_keeps_its_conditions_typed() -> None:
    body = {
        "metadata": {"name": "r", "namespace": "apps", "uid": "u-1", "resourceVersion": "7"},
        "spec": {"issuerRef": {"group": "tcs.intel.com", "kind": "TCSIssuer", "name": "my-ca"}},
        "status": {"conditions": [{"type": "Denied", "status": "True", "reason": "Policy", "message": "no"}]},
    }
    request = RequestObject.from_body(body)
    assert (request.meta.name, request.meta.namespace, request.meta.uid) == ("r", "apps", "u-1")
    assert request.meta.resource_version == "7"
    assert request.conditions == (Condition("Denied", "True", "Policy", "no"),)
    assert issuer_ref_from_request(request.issuer, request.meta.namespace) == NAMESPACED
    assert contract.certificate_request_phase(request) is Phase.DENIED
    assert contract.denial_message(request) == "no"


@pytest.mark.parametrize(
    ("spec", "decode", "said"),
    [
        ({"request": 42}, contract.from_certificate_request, "spec.request must be a string"),
        ({"request": REQUEST, "duration": 3600}, contract.from_certificate_request, "spec.duration must be"),
        ({"request": REQUEST, "usages": "server auth"}, contract.from_certificate_request, "spec.usages"),
        ({"request": REQUEST, "usages": ["tls", 7]}, contract.from_certificate_request, "spec.usages"),
        ({"request": REQUEST, "isCA": "true"}, contract.from_certificate_request, "spec.isCA must be true"),
        ({"request": [REQUEST]}, contract.from_csr, "spec.request must be a string"),
        ({"request": REQUEST, "expirationSeconds": "3600"}, contract.from_csr, "spec.expirationSeconds"),
        ({"request": REQUEST, "expirationSeconds": True}, contract.from_csr, "a whole number of seconds"),
        ({"request": REQUEST, "usages": {"a": 1}}, contract.from_csr, "spec.usages must be a list"),
    ],
    ids=["cr-request", "cr-duration", "cr-usages", "cr-usage", "cr-isca", "csr-request", "csr-expiration",
         "csr-expiration-bool", "csr-usages"],
)  # fmt: skip
def test_a_field_of_the_wrong_type_fails_the_request_naming_it(
    spec: dict[str, Any], decode: Any, said: str
) -> None:
    fields = RequestFields.from_body({"spec": spec})
    with pytest.raises(RequestError, match=said):
        decode(fields)


def test_the_fields_sent_to_a_signing_process_are_small_and_decode_the_same() -> None:
    body = {
        "metadata": {
            "name": "r",
            "annotations": {
                REQUEST_DURATION_ANNOTATION: "2h",
                REQUEST_IS_CA_ANNOTATION: "TRUE",
                "x": "y" * 5000,
            },
            "managedFields": [{"big": "x" * 10_000}],
        },
        "spec": {"request": REQUEST, "usages": ["client auth"], "signerName": SIGNER, "groups": ["a"] * 500},
        "status": {"conditions": [{"type": "Approved", "status": "True", "message": "m" * 5000}]},
    }
    fields = RequestFields.from_body(body)
    sent = pickle.dumps(fields)
    assert len(sent) < 2_000, "only what decoding reads travels, not the object"
    request = contract.from_csr(pickle.loads(sent))  # noqa: S301 (our own)
    assert request.profile.usages == ("client auth",) and request.profile.is_ca
    assert request.profile.duration is not None and request.profile.duration.total_seconds() == 7200


def test_a_csr_requester_is_read_as_recorded_and_odd_entries_are_left_out() -> None:
    body = {"spec": {"username": "alice", "groups": ["devs", 3, None], "extra": {"scopes": ["a", 1], "n": 5}}}
    reviews = reference_reviews(RequestObject.from_body(body), NAMESPACED)
    assert reviews is not None and reviews[0]["spec"]["user"] == "alice"
    assert reviews[0]["spec"]["groups"] == ["devs"]
    assert reviews[0]["spec"]["extra"] == {"scopes": ["a"], "n": []}


# ---- Secrets ---------------------------------------------------------------------------------------------


def test_a_secret_view_decodes_its_data_and_never_shows_it() -> None:
    password = "s3cr3t-password"
    body = {
        "metadata": {"name": "creds", "namespace": "apps"},
        "type": "kubernetes.io/basic-auth",
        "data": {
            "username": base64.b64encode(b"alice").decode(),
            "password": base64.b64encode(password.encode()).decode(),
            "broken": "%%% not base64",
            "number": 12,
        },
    }
    secret = SecretView.from_body(body)
    assert secret.data == {"username": b"alice", "password": password.encode()}
    assert secret.undecodable == {"broken", "number"}
    assert password not in repr(secret) and base64.b64encode(password.encode()).decode() not in repr(secret)
    assert http_credentials(secret, "Secret apps/creds", "Basic").username == "alice"
    with pytest.raises(IssuerNotReady, match=r"data\.username is not base64"):
        http_credentials(
            SecretView.from_body({**body, "data": {"username": "%%", "password": "cHc="}}), "x", "Basic"
        )


@pytest.mark.parametrize("data", [None, "text", ["tls.crt"], {"tls.key": None}])
def test_a_secret_without_usable_data_is_named_missing_it(data: Any) -> None:
    secret = SecretView.from_body({"type": "kubernetes.io/tls", "data": data})
    with pytest.raises(IssuerNotReady, match=r"has no 'tls\.crt'"):
        client_certificate(secret, "Secret apps/tls")
    with pytest.raises(ProvisioningFailed, match=r"has no tls\.key"):
        read_delivery(secret, "Secret apps/key")
    assert renewal_identity(secret, []) is None


# ---- EstOrders -------------------------------------------------------------------------------------------


def test_an_order_without_a_controller_owner_or_a_known_issuer_names_none() -> None:
    owners = [
        {"kind": "CertificateRequest", "name": "r", "uid": "u-1"},  # not the controller
        {"kind": "CertificateRequest", "name": "r", "controller": True},  # no uid
        "junk",
    ]
    order = OrderView.from_body({"metadata": {"ownerReferences": owners}, "spec": {"issuerRef": "est"}})
    assert order.owner is None and order_issuer(order) is None
    order = OrderView.from_body(
        {"metadata": {"ownerReferences": {"kind": "x"}, "annotations": {SIGNER_ANNOTATION: 5}}}
    )
    assert order.owner is None and order.signer_name == ""


def test_an_orders_odd_status_reads_as_a_fresh_order() -> None:
    status = {"state": 3, "attempts": "three", "nextAttemptTime": ["soon"], "conditions": "Ready"}
    progress = OrderProgress.of(OrderView.from_body({"status": status}))
    assert progress == OrderProgress() and progress.due() == datetime.min.replace(tzinfo=UTC)


def test_an_unreadable_seed_annotation_falls_back_to_kopfs_status_record() -> None:
    record = {"delayed": "2026-01-01T12:10:00", "retries": 2}
    body = {
        "metadata": {"annotations": {SEED_PROGRESS_ANNOTATION: "{not json"}},
        "status": {"kopf": {"progress": {"estorder_create": record}}},
    }
    progress = OrderProgress.of(OrderView.from_body(body))
    assert progress.state is OrderState.WAITING and progress.attempts == 2
    listed = {"metadata": {"annotations": {SEED_PROGRESS_ANNOTATION: json.dumps([1, 2])}}}
    assert OrderView.from_body(listed).seed.ran is False


def test_order_conditions_keep_their_times_through_a_status_write() -> None:
    retrying = {
        "type": "Retrying",
        "status": "True",
        "reason": "TransientFailure",
        "message": "timeout",
        "lastTransitionTime": "2026-01-01T11:00:00Z",
    }
    progress = OrderProgress.of(
        OrderView.from_body({"status": {"state": "Waiting", "conditions": [retrying]}})
    )
    assert progress.failing_since == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    written = progress.to_status(NOW)["conditions"]
    assert next(c for c in written if c["type"] == "Retrying")["lastTransitionTime"] == "2026-01-01T11:00:00Z"


# ---- QuoteAttestations -----------------------------------------------------------------------------------


def test_a_quote_attestation_view_reads_its_spec_and_tolerates_odd_entries() -> None:
    body = {
        "metadata": {"name": "my-ca", "namespace": "apps", "resourceVersion": "3"},
        "spec": {"type": "KeyProvisioning", "signerName": SIGNER, "quote": "%%%", "nonce": "bm9uY2U="},
        "status": {
            "conditions": [{"type": "CASecretReady", "status": "true"}],
            "secrets": {SIGNER: "wrapped-key", "other": {"secretName": 5}},
        },
    }
    qa = QuoteAttestationView.from_body(body)
    assert (qa.request_type, qa.signer_name, qa.secret_name) == ("KeyProvisioning", SIGNER, "my-ca")
    assert (qa.quote, qa.nonce) == (b"", b"nonce")
    found = attestation.answer(qa, SIGNER)
    assert found.state == "pending" and f"names no Secret for {SIGNER}" in found.message


def test_an_answer_keeps_the_conditions_already_there_as_they_were() -> None:
    init = {
        "type": "Init",
        "status": "True",
        "reason": "TCSReconcile",
        "lastUpdateTime": "2026-01-01T10:00:00Z",
    }
    qa = QuoteAttestationView.from_body(
        {"status": {"conditions": [init, {"type": "Ready", "status": "Unknown"}]}}
    )
    written = attestation.answered_status(qa, True, "CA key delivered")["conditions"]
    assert written[0] == init
    assert [(c["type"], c["status"], c["message"]) for c in written[1:]] == [
        ("Ready", "True", "CA key delivered")
    ]
    assert all(Condition.from_body(c) is not None for c in written)
