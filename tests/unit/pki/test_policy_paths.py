"""One policy for every path that issues: CertificateRequests, Kubernetes CSRs, EST enroll, re-enroll and
serverkeygen, and the EST server's own TLS certificate all refuse what the issuer's policy refuses."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from keyward.est.server.ca import ClientIdentity, EnrollRejected
from keyward.issuers.contract import SigningRequest, from_certificate_request, from_csr
from keyward.issuers.objects import RequestFields
from keyward.issuers.tcs.ca import decode_and_sign
from keyward.issuers.tcs.est_ca import TcsEstCa, issue_tls_server_certificate
from keyward.pki.errors import PolicyViolation
from keyward.pki.issue import CertificateAuthority
from keyward.pki.policy import IssuerPolicy
from tests.support.pki import ThreadWorkers, make_csr

POLICY = IssuerPolicy(allowed_dns_names=("*.apps.example",))
ADMIN = x509.Name(
    [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
        x509.NameAttribute(NameOID.COMMON_NAME, "mallory"),
    ]
)
ALLOWED = [x509.DNSName("web.apps.example")]
ELSEWHERE = [x509.DNSName("web.other.example")]


def certificate_request(request: x509.CertificateSigningRequest) -> RequestFields:
    pem = request.public_bytes(Encoding.PEM)
    return RequestFields.from_body(
        {"spec": {"request": base64.b64encode(pem).decode(), "usages": ["digital signature", "client auth"]}}
    )


def kubernetes_csr(request: x509.CertificateSigningRequest) -> RequestFields:
    pem = request.public_bytes(Encoding.PEM)
    return RequestFields.from_body(
        {"spec": {"request": base64.b64encode(pem).decode(), "signerName": "tcsissuer.tcs.intel.com/ns.ca"}}
    )


Decode = Callable[[RequestFields], SigningRequest]


@pytest.mark.parametrize(
    ("decode", "shape"),
    [(from_certificate_request, certificate_request), (from_csr, kubernetes_csr)],
    ids=["CertificateRequest", "CertificateSigningRequest"],
)
def test_kubernetes_requests_go_through_the_policy(
    ca: CertificateAuthority,
    decode: Decode,
    shape: Callable[[x509.CertificateSigningRequest], RequestFields],
) -> None:
    issued = decode_and_sign(decode, shape(make_csr(subject=x509.Name([]), sans=ALLOWED)), ca, POLICY)
    assert (
        list(issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        == ALLOWED
    )
    with pytest.raises(PolicyViolation, match=r"^policy forbidden-subject-organizations: "):
        decode_and_sign(decode, shape(make_csr(subject=ADMIN, sans=ALLOWED)), ca, POLICY)
    with pytest.raises(PolicyViolation, match=r"^policy allowed-dns-names: "):
        decode_and_sign(decode, shape(make_csr(subject=x509.Name([]), sans=ELSEWHERE)), ca, POLICY)


def est_ca(ca: CertificateAuthority) -> TcsEstCa:
    return TcsEstCa("ca", ca, POLICY, ThreadWorkers().get)


@pytest.mark.parametrize("renewal", [False, True], ids=["simpleenroll", "simplereenroll"])
async def test_est_enrollment_goes_through_the_policy(ca: CertificateAuthority, renewal: bool) -> None:
    client = ClientIdentity.from_basic("est")
    (leaf,) = await est_ca(ca).enroll(make_csr(subject=x509.Name([]), sans=ALLOWED), client, renewal=renewal)
    assert leaf.issuer == ca.certificate.subject
    with pytest.raises(EnrollRejected, match=r"^policy forbidden-subject-organizations: "):
        await est_ca(ca).enroll(make_csr(subject=ADMIN, sans=ALLOWED), client, renewal=renewal)
    with pytest.raises(EnrollRejected, match=r"^policy allowed-dns-names: "):
        await est_ca(ca).enroll(make_csr(subject=x509.Name([]), sans=ELSEWHERE), client, renewal=renewal)


async def test_est_serverkeygen_goes_through_the_policy(ca: CertificateAuthority) -> None:
    client = ClientIdentity.from_basic("est")
    _, (leaf,) = await est_ca(ca).server_keygen(make_csr(subject=x509.Name([]), sans=ALLOWED), client)
    assert leaf.issuer == ca.certificate.subject
    with pytest.raises(EnrollRejected, match=r"^policy forbidden-subject-organizations: "):
        await est_ca(ca).server_keygen(make_csr(subject=ADMIN, sans=ALLOWED), client)
    with pytest.raises(EnrollRejected, match=r"^policy allowed-dns-names: "):
        await est_ca(ca).server_keygen(make_csr(subject=x509.Name([]), sans=ELSEWHERE), client)


def test_the_est_servers_own_certificate_goes_through_the_policy(ca: CertificateAuthority) -> None:
    issued = issue_tls_server_certificate(ca, ["est.apps.example"], POLICY)
    key_usage = issued.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert key_usage.digital_signature and not key_usage.key_encipherment  # an ECDSA key
    with pytest.raises(PolicyViolation, match=r"^policy allowed-dns-names: "):
        issue_tls_server_certificate(ca, ["est.other.example"], POLICY)
    with pytest.raises(PolicyViolation, match=r"^policy dns-name-syntax: "):
        issue_tls_server_certificate(ca, ["est_server.apps.example"], IssuerPolicy())
