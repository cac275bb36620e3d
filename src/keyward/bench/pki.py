"""(b) Certificates per second through ``keyward.pki`` with the token key: what the operator runs per request.

One issuance = ``load_csr`` (parse, key policy, proof of possession) + ``issue_certificate`` (profile
checks, building, one C_Sign in the token, verifying the result against the CA). The gap to (a) is
keyward's own Python work per certificate.
"""

from __future__ import annotations

import functools
from datetime import timedelta

from cryptography import x509
from cryptography.x509.oid import NameOID

from keyward.bench.csrs import leaf_csr_pem
from keyward.bench.rates import Job
from keyward.bench.tokens import BenchToken
from keyward.keystore import TokenPrivateKey
from keyward.pki.csr import load_csr
from keyward.pki.issue import CertificateAuthority, IssuedCertificate, issue_certificate, self_signed_ca
from keyward.pki.profile import IssuerPolicy, RequestProfile


def bench_ca(key: TokenPrivateKey, name: str) -> CertificateAuthority:
    """A self-signed CA for the token key, as a new TCSIssuer would make it."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"keyward bench {name}")])
    return CertificateAuthority(self_signed_ca(key, subject, timedelta(days=365)), key)


def issue_one(ca: CertificateAuthority, csr_pem: bytes, policy: IssuerPolicy) -> IssuedCertificate:
    """Runs in a signing process, like the operator's decode-and-sign."""
    return issue_certificate(load_csr(csr_pem), RequestProfile(), ca, policy, signature_checked=True)


def issuance_job(token: BenchToken, name: str) -> Job:
    """(b) One certificate through pki with the token key ``name``, in a signing process of the store."""
    key = token.keys[name]
    return functools.partial(
        token.store.run_signing,
        issue_one,
        bench_ca(key, name),
        leaf_csr_pem("leaf.bench.keyward.test"),
        IssuerPolicy(),
    )
