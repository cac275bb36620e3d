"""cert-manager's issuer contract, point by point, without a cluster."""

import base64
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyward.issuers import contract
from keyward.issuers.contract import REQUEST_DURATION_ANNOTATION, Phase, SigningRequest
from keyward.issuers.objects import RequestFields, RequestObject
from keyward.pki.errors import RequestError


def certificate_request_phase(body: dict[str, Any]) -> Phase:
    return contract.certificate_request_phase(RequestObject.from_body(body))


def csr_phase(body: dict[str, Any]) -> Phase:
    return contract.csr_phase(RequestObject.from_body(body))


def denial_message(body: dict[str, Any]) -> str:
    return contract.denial_message(RequestObject.from_body(body))


def from_certificate_request(body: dict[str, Any]) -> SigningRequest:
    return contract.from_certificate_request(RequestFields.from_body(body))


def from_csr(body: dict[str, Any]) -> SigningRequest:
    return contract.from_csr(RequestFields.from_body(body))


def cond(type_: str, status: str = "True", reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def cr(*conditions: dict[str, str], certificate: str | None = None) -> dict[str, object]:
    status: dict[str, object] = {"conditions": list(conditions)}
    if certificate:
        status["certificate"] = certificate
    return {"metadata": {"name": "r", "namespace": "ns"}, "status": status}


def test_unapproved_request_waits() -> None:
    assert certificate_request_phase(cr()) is Phase.AWAITING_APPROVAL
    assert certificate_request_phase({"metadata": {}}) is Phase.AWAITING_APPROVAL


def test_approved_request_is_signed() -> None:
    assert certificate_request_phase(cr(cond("Approved"))) is Phase.APPROVED


def test_denied_request_is_never_signed_and_reports_denial() -> None:
    body = cr(cond("Denied", reason="Policy", message="not on my watch"))
    assert certificate_request_phase(body) is Phase.DENIED
    assert denial_message(body) == "not on my watch"


@pytest.mark.parametrize(
    "body",
    [
        cr(cond("Approved"), cond("Ready", "True", "Issued")),
        cr(cond("Approved"), cond("Ready", "False", "Failed")),
        cr(cond("Denied"), cond("Ready", "False", "Denied")),
        cr(cond("Approved"), certificate="Zm9v"),
        cr(cond("Approved"), cond("InvalidRequest")),
    ],
)
def test_finished_requests_are_left_alone(body: dict[str, object]) -> None:
    assert certificate_request_phase(body) is Phase.FINISHED


def test_pending_ready_condition_does_not_finish_a_request() -> None:
    assert (
        certificate_request_phase(cr(cond("Approved"), cond("Ready", "False", "Pending"))) is Phase.APPROVED
    )


def test_csr_signer_acts_only_on_approved_unsigned_unfailed() -> None:
    assert csr_phase(cr()) is Phase.AWAITING_APPROVAL
    assert csr_phase(cr(cond("Approved"))) is Phase.APPROVED
    assert csr_phase(cr(cond("Denied"))) is Phase.FINISHED
    assert csr_phase(cr(cond("Approved"), cond("Failed"))) is Phase.FINISHED
    assert csr_phase(cr(cond("Approved"), certificate="Zm9v")) is Phase.FINISHED


def _csr_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc.example")]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def test_certificate_request_spec_becomes_a_profile() -> None:
    body = {
        "metadata": {"name": "r"},
        "spec": {
            "request": base64.b64encode(_csr_pem()).decode(),
            "duration": "24h",
            "usages": ["server auth"],
            "isCA": False,
        },
    }
    request = from_certificate_request(body)
    assert request.profile.duration is not None and request.profile.duration.total_seconds() == 86400
    assert request.profile.usages == ("server auth",)
    assert request.csr.subject.rfc4514_string() == "CN=svc.example"


def test_bad_duration_is_a_request_error_naming_the_field() -> None:
    body = {"spec": {"request": base64.b64encode(_csr_pem()).decode(), "duration": "forever"}}
    with pytest.raises(RequestError, match=r"spec\.duration"):
        from_certificate_request(body)


def test_csr_duration_from_expiration_seconds_or_annotation() -> None:
    request = base64.b64encode(_csr_pem()).decode()
    by_field = from_csr({"metadata": {}, "spec": {"request": request, "expirationSeconds": 3600}})
    assert by_field.profile.duration is not None and by_field.profile.duration.total_seconds() == 3600
    by_annotation = from_csr(
        {"metadata": {"annotations": {REQUEST_DURATION_ANNOTATION: "2h"}}, "spec": {"request": request}}
    )
    assert by_annotation.profile.duration is not None
    assert by_annotation.profile.duration.total_seconds() == 7200


def test_csr_request_that_is_not_base64_fails() -> None:
    with pytest.raises(RequestError, match="base64"):
        from_csr({"metadata": {}, "spec": {"request": "%%% not base64 %%%"}})
