import pytest

from keyward.issuers.objects import IssuerReference
from keyward.issuers.signer_names import (
    IssuerRef,
    MalformedSignerName,
    is_our_group,
    issuer_ref_from_request,
    parse_signer_name,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "tcsissuer.tcs.intel.com/sandbox.my-ca",
            IssuerRef("tcs.intel.com", "TCSIssuer", "my-ca", "sandbox"),
        ),
        (
            "tcsissuers.tcs.intel.com/sandbox.my-ca",
            IssuerRef("tcs.intel.com", "TCSIssuer", "my-ca", "sandbox"),
        ),
        ("tcsclusterissuer.tcs.intel.com/my-ca", IssuerRef("tcs.intel.com", "TCSClusterIssuer", "my-ca")),
        ("tcsclusterissuers.tcs.intel.com/my-ca", IssuerRef("tcs.intel.com", "TCSClusterIssuer", "my-ca")),
        ("estissuer.est.mitre.org/ns.a.b", IssuerRef("est.mitre.org", "EstIssuer", "a.b", "ns")),
        ("estclusterissuer.est.mitre.org/x", IssuerRef("est.mitre.org", "EstClusterIssuer", "x")),
    ],
)
def test_signer_names_of_both_families_and_both_spellings_parse(name: str, expected: IssuerRef) -> None:
    assert parse_signer_name(name) == expected


def test_signer_name_round_trips_to_the_singular_spelling() -> None:
    ref = parse_signer_name("tcsissuers.tcs.intel.com/sandbox.my-ca")
    assert ref is not None
    assert ref.signer_name == "tcsissuer.tcs.intel.com/sandbox.my-ca"


@pytest.mark.parametrize(
    "name", ["kubernetes.io/kube-apiserver-client", "example.com/foo", "", "tcs.intel.com"]
)
def test_other_signers_are_not_ours(name: str) -> None:
    assert parse_signer_name(name) is None


def test_group_filter_ignores_the_other_family() -> None:
    assert parse_signer_name("estissuer.est.mitre.org/ns.x", group="tcs.intel.com") is None


@pytest.mark.parametrize(
    "name",
    [
        "tcsissuer.tcs.intel.com/no-namespace",
        "tcsissuer.tcs.intel.com/",
        "tcsissuer.tcs.intel.com",
        "tcsfoo.tcs.intel.com/ns.x",
        "tcsclusterissuer.tcs.intel.com/a/b",
    ],
)
def test_malformed_names_in_our_groups_are_reported(name: str) -> None:
    assert is_our_group(name) or "/" not in name
    with pytest.raises(MalformedSignerName):
        parse_signer_name(name)


def test_issuer_ref_from_certificate_request_uses_request_namespace_for_namespaced_kinds() -> None:
    ref = issuer_ref_from_request(IssuerReference("tcs.intel.com", "TCSIssuer", "my-ca"), "sandbox")
    assert ref == IssuerRef("tcs.intel.com", "TCSIssuer", "my-ca", "sandbox")
    cluster = issuer_ref_from_request(IssuerReference("tcs.intel.com", "TCSClusterIssuer", "c"), "ns")
    assert cluster == IssuerRef("tcs.intel.com", "TCSClusterIssuer", "c")
    assert issuer_ref_from_request(IssuerReference("cert-manager.io", "Issuer", "x"), "ns") is None
    assert issuer_ref_from_request(IssuerReference("tcs.intel.com", "Other", "x"), "ns") is None
