"""The issued status of both request kinds: cert-manager's chain convention, and Kubernetes CSRs' leaf or
full chain (``--csr-full-cert-chain``), whichever issuer family issued."""

from __future__ import annotations

import base64

from cryptography import x509

from keyward.operator.requests import CertificateRequests, Csrs
from keyward.pki.pem import split_chain
from tests.support.pki import Issuer, ec_key, name


def _chain() -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
    root = Issuer.self_signed("Root")
    sub_key = ec_key()
    sub = root.issue(name("Sub"), sub_key.public_key())
    return Issuer(sub, sub_key).issue(name("leaf"), ec_key().public_key()), sub, root.certificate


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
    unrelated = Issuer.self_signed("Other").certificate
    bundle = full.issued_status({}, chain, [unrelated, root], "issued")
    assert _certificates(bundle, "certificate") == [leaf, sub, root]
