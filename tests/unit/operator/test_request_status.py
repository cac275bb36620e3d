"""The issued status of both request kinds: cert-manager's chain convention, and Kubernetes CSRs' leaf or
full chain (``--csr-full-cert-chain``), whichever issuer family issued."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyward.operator.requests import CertificateRequests, Csrs
from keyward.pki.pem import split_chain

NOW = datetime.now(UTC)


def _certificate(
    subject: str, issuer: str, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    return (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(signer, hashes.SHA256())
    )


def _chain() -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
    root_key, sub_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _certificate("Root", "Root", root_key, root_key)
    sub = _certificate("Sub", "Root", sub_key, root_key)
    return _certificate("leaf", "Sub", leaf_key, sub_key), sub, root


def _certificates(status: dict[str, object], key: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(base64.b64decode(str(status[key])))


def test_certificate_requests_get_leaf_and_intermediates_and_the_root_as_ca() -> None:
    leaf, sub, root = _chain()
    chain, top = split_chain([leaf, sub, root])
    status = CertificateRequests("tcs.intel.com").issued_status({"status": {}}, chain, [top], "issued")
    assert _certificates(status, "certificate") == [leaf, sub]
    assert _certificates(status, "ca") == [root]


def test_csrs_get_the_leaf_alone_or_the_full_chain_with_the_root() -> None:
    leaf, sub, root = _chain()
    chain, top = split_chain([leaf, sub, root])
    assert _certificates(Csrs("tcs.intel.com").issued_status({}, chain, [top], "issued"), "certificate") == [
        leaf
    ]
    full = Csrs("est.mitre.org", full_chain=True)
    assert _certificates(full.issued_status({}, chain, [top], "issued"), "certificate") == [leaf, sub, root]
    # An EST /cacerts bundle as ca: only the root the chain leads to is appended.
    other_key = ec.generate_private_key(ec.SECP256R1())
    unrelated = _certificate("Other", "Other", other_key, other_key)
    bundle = full.issued_status({}, chain, [unrelated, root], "issued")
    assert _certificates(bundle, "certificate") == [leaf, sub, root]
