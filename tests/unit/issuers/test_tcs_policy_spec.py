"""A TCS issuer's spec.policy, read into the pki IssuerPolicy that every issuance of the issuer obeys."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyward.issuers.contract import SigningRequest
from keyward.issuers.tcs.ca import POLICY_FIELDS, IssuerNotReady, TcsIssuerSpec, sign
from keyward.kube.crds import load_crds
from keyward.pki.errors import PolicyViolation
from keyward.pki.issue import CertificateAuthority, self_signed_ca
from keyward.pki.policy import DEFAULT_EXTENDED_USAGES, DEFAULT_FORBIDDEN_ORGANIZATIONS, IssuerPolicy
from keyward.pki.profile import RequestProfile
from keyward.pki.usages import EXTENDED_KEY_USAGES

CORRECT = Path(__file__).resolve().parents[2] / "data" / "crd-cases" / "tcsissuer-correct.yaml"


def policy_of(spec: dict[str, Any]) -> IssuerPolicy:
    return TcsIssuerSpec.parse("my-ca", spec).policy


def test_without_spec_policy_the_defaults_hold() -> None:
    policy = policy_of({"maxDuration": "720h", "allowCA": True})
    assert policy == IssuerPolicy(
        max_duration=timedelta(hours=720), default_duration=timedelta(days=30), allow_ca=True
    )
    assert policy.allowed_extended_usages == DEFAULT_EXTENDED_USAGES
    assert policy.allowed_dns_names is None and policy.allowed_ip_ranges is None
    assert policy.forbidden_subject_organizations == ("system:masters",)
    assert policy_of({"policy": {}}) == policy_of({})


def test_every_policy_field_is_read() -> None:
    spec = yaml.safe_load(CORRECT.read_text())["spec"]
    policy = policy_of(spec)
    assert policy.allowed_dns_names == ("*.apps.example.com", "apps.example.com")
    assert policy.allowed_ip_ranges == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert policy.allowed_uris == ("spiffe://cluster.local/ns/apps/*",)
    assert policy.allowed_email_addresses == ("*@example.com",)
    assert policy.allowed_extended_usages == {"server auth", "client auth", "ocsp signing"}
    assert policy.forbidden_subject_organizations == ("system:masters", "system:nodes")
    assert policy.allow_ca and policy.max_duration == timedelta(hours=720, minutes=30)
    # Go's net.ParseCIDR, as the API server's format: cidr, accepts host bits; they are cleared
    assert policy_of({"policy": {"allowedIPRanges": ["10.1.2.3/8"]}}).allowed_ip_ranges == (
        ipaddress.ip_network("10.0.0.0/8"),
    )
    # an empty list allows none; an empty forbidden list forbids none
    assert policy_of(
        {"policy": {"allowedDNSNames": [], "forbiddenSubjectOrganizations": []}}
    ) == IssuerPolicy(allowed_dns_names=(), forbidden_subject_organizations=())


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("everything", "spec.policy must be an object, not str"),
        ({"allowedDNSNames": "*.example.com"}, "spec.policy.allowedDNSNames must be a list of strings"),
        ({"allowedURIs": [1]}, "spec.policy.allowedURIs must be a list of strings"),
        ({"allowedDNSNames": ["ok.example", "a b"]}, 'spec.policy.allowedDNSNames[1]: pattern "a b" must be'),
        ({"allowedEmailAddresses": [""]}, 'spec.policy.allowedEmailAddresses[0]: pattern "" must be'),
        ({"allowedIPRanges": ["10.0.0.1"]}, 'spec.policy.allowedIPRanges: "10.0.0.1" is not a CIDR range'),
        ({"allowedIPRanges": ["10.0.0.0/33"]}, 'spec.policy.allowedIPRanges: "10.0.0.0/33" is not a CIDR'),
        (
            {"allowedExtendedKeyUsages": ["serverAuth"]},
            'spec.policy.allowedExtendedKeyUsages[0]: "serverAuth"',
        ),
        (
            {"forbiddenSubjectOrganizations": "system:masters"},
            "spec.policy.forbiddenSubjectOrganizations must be a list",
        ),
    ],
)
def test_a_malformed_policy_stops_the_issuer_naming_the_field(rules: object, message: str) -> None:
    with pytest.raises(IssuerNotReady) as caught:
        policy_of({"policy": rules})
    assert caught.value.reason == "InvalidSpec"
    assert caught.value.message.startswith(message), caught.value.message


@pytest.mark.parametrize(
    "crd",
    [
        crd
        for crd in load_crds()
        if crd["spec"]["group"] == "tcs.intel.com" and "Issuer" in crd["spec"]["names"]["kind"]
    ],
    ids=lambda crd: crd["spec"]["names"]["kind"],
)
def test_the_crds_offer_the_vocabulary_and_defaults_keyward_applies(crd: dict[str, Any]) -> None:
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    policy = spec["policy"]["properties"]
    assert policy["allowedExtendedKeyUsages"]["items"]["enum"] == list(EXTENDED_KEY_USAGES)
    assert tuple(policy["forbiddenSubjectOrganizations"]["default"]) == DEFAULT_FORBIDDEN_ORGANIZATIONS
    assert set(policy) == set(POLICY_FIELDS)


def test_an_issuers_policy_governs_what_it_signs() -> None:
    spec = TcsIssuerSpec.parse("my-ca", yaml.safe_load(CORRECT.read_text())["spec"])
    key = ec.generate_private_key(ec.SECP256R1())
    ca = CertificateAuthority(self_signed_ca(key, spec.subject or x509.Name([]), timedelta(days=30)), key)
    leaf_key = ec.generate_private_key(ec.SECP256R1())

    def request(dns_name: str, organization: str = "apps", usages: tuple[str, ...] = ()) -> SigningRequest:
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(subject)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
            .sign(leaf_key, hashes.SHA256())
        )
        return SigningRequest(csr, RequestProfile(usages=usages))

    issued = sign(
        ca, request("web.apps.example.com", usages=("digital signature", "ocsp signing")), spec.policy
    )
    assert issued.certificate.issuer == ca.certificate.subject
    for refused, rule in (
        (request("web.other.example.com"), "allowed-dns-names"),
        (request("web.apps.example.com", organization="system:nodes"), "forbidden-subject-organizations"),
        (request("web.apps.example.com", usages=("code signing",)), "allowed-extended-key-usages"),
    ):
        with pytest.raises(PolicyViolation) as caught:
            sign(ca, refused, spec.policy)
        assert caught.value.rule == rule
