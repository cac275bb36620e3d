"""The reference check of Kubernetes CSRs: what keyward asks the API server about a CSR's requester
before a namespaced issuer signs it (cert-manager's attributes, in cert-manager's order)."""

from __future__ import annotations

from typing import Any

import pytest

from keyward.issuers.objects import RequestObject
from keyward.issuers.references import denied_reference, reference_reviews
from keyward.issuers.signer_names import parse_signer_name

CSR: dict[str, Any] = {
    "spec": {
        "signerName": "tcsissuer.tcs.intel.com/team-a.ca",
        "username": "system:serviceaccount:apps:builder",
        "uid": "0d5c1f3e",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:apps", "system:authenticated"],
        "extra": {"authentication.kubernetes.io/pod-name": ["builder-7d9"]},
    }
}


def attributes(group: str, name: str) -> dict[str, str]:
    return {
        "group": group,
        "version": "*",
        "resource": "signers",
        "verb": "reference",
        "namespace": "team-a",
        "name": name,
    }


@pytest.mark.parametrize(
    ("signer", "group"),
    [
        ("tcsissuer.tcs.intel.com/team-a.ca", "tcs.intel.com"),
        ("tcsissuers.tcs.intel.com/team-a.ca", "tcs.intel.com"),  # the plural: the very same questions
        ("estissuer.est.mitre.org/team-a.ca", "est.mitre.org"),
        ("estissuers.est.mitre.org/team-a.ca", "est.mitre.org"),
    ],
)
def test_the_requester_is_asked_about_the_issuer_then_every_issuer_of_its_namespace(
    signer: str, group: str
) -> None:
    ref = parse_signer_name(signer)
    assert ref is not None
    reviews = reference_reviews(RequestObject.from_body(CSR), ref)
    subject = {
        "user": "system:serviceaccount:apps:builder",
        "groups": CSR["spec"]["groups"],
        "uid": "0d5c1f3e",
        "extra": {"authentication.kubernetes.io/pod-name": ["builder-7d9"]},
    }
    assert reviews == [
        {"spec": {**subject, "resourceAttributes": attributes(group, "ca")}},
        {"spec": {**subject, "resourceAttributes": attributes(group, "*")}},
    ]


def test_cluster_issuers_are_not_checked_and_a_csr_without_requester_is_denied() -> None:
    cluster = parse_signer_name("tcsclusterissuer.tcs.intel.com/global")
    assert cluster is not None and reference_reviews(RequestObject.from_body(CSR), cluster) is None
    namespaced = parse_signer_name("tcsissuer.tcs.intel.com/team-a.ca")
    assert namespaced is not None
    anonymous = RequestObject.from_body({"spec": {}})
    assert reference_reviews(anonymous, namespaced) == []
    assert denied_reference(anonymous, namespaced).startswith(
        "a requester the API server did not record may not reference TCSIssuer team-a/ca"
    )
