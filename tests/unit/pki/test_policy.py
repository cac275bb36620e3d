"""The issuance policy: what no request gets, whatever it asks, and what an issuer's policy allows."""

from __future__ import annotations

import ipaddress
import pickle
import warnings
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from keyward.pki.csr import load_csr
from keyward.pki.errors import PolicyViolation, RequestError
from keyward.pki.issue import CertificateAuthority
from keyward.pki.policy import DEFAULT_EXTENDED_USAGES, IssuerPolicy
from keyward.pki.profile import RequestProfile
from keyward.pki.usages import EXTENDED_KEY_USAGES
from tests.support.pki import make_csr, pem

from .helpers import extension, issue


def subject(*pairs: tuple[ObjectIdentifier, str]) -> x509.Name:
    """A subject as a requester may write it, bounds and all ignored (cryptography only warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return x509.Name([x509.NameAttribute(oid, value, _validate=False) for oid, value in pairs])


def request(
    key: CertificateIssuerPrivateKeyTypes,
    names: list[x509.GeneralName] | None = None,
    requested: x509.Name | None = None,
) -> x509.CertificateSigningRequest:
    return make_csr(key, sans=names or (), subject=requested)


def refused(rule: str, match: str = "") -> pytest.RaisesContext[PolicyViolation]:
    """``pytest.raises`` for a refusal by ``rule``, whose message names the rule first."""
    return pytest.raises(PolicyViolation, match=rf"^policy {rule}: .*{match}")


def bits(certificate: x509.Certificate) -> set[str]:
    key_usage = extension(certificate, x509.KeyUsage).value
    names = ("digital_signature", "key_encipherment", "data_encipherment", "key_agreement", "key_cert_sign")
    return {bit for bit in names if getattr(key_usage, bit)} | ({"crl_sign"} if key_usage.crl_sign else set())


# ---- usages a leaf never gets, and those it gets only when the issuer allows them ----


@pytest.mark.parametrize("usage", ["cert sign", "crl sign"])
def test_ca_usages_are_refused_without_is_ca(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey, usage: str
) -> None:
    with refused("ca-usages", f'"{usage}" is for CA certificates only'):
        issue(make_csr(leaf_key), ca, RequestProfile(usages=("digital signature", usage)))


def test_ca_usages_are_granted_with_an_allowed_is_ca(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    profile = RequestProfile(usages=("digital signature", "cert sign", "crl sign"), is_ca=True)
    certificate = issue(make_csr(leaf_key, "sub CA"), ca, profile, IssuerPolicy(allow_ca=True))
    assert bits(certificate) == {"digital_signature", "key_cert_sign", "crl_sign"}
    assert extension(certificate, x509.BasicConstraints).value.ca


@pytest.mark.parametrize("usage", ["any", "ocsp signing", "code signing"])
def test_restricted_extended_usages_need_the_issuers_leave(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey, usage: str
) -> None:
    profile = RequestProfile(usages=("digital signature", usage))
    with refused("allowed-extended-key-usages", f'does not grant the extended key usage "{usage}"'):
        issue(make_csr(leaf_key), ca, profile)
    allowing = IssuerPolicy(allowed_extended_usages=DEFAULT_EXTENDED_USAGES | {usage})
    granted = extension(issue(make_csr(leaf_key), ca, profile, allowing), x509.ExtendedKeyUsage).value
    assert list(granted) == [EXTENDED_KEY_USAGES[usage]]


def test_an_issuer_can_narrow_the_extended_usages_it_grants(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    servers_only = IssuerPolicy(allowed_extended_usages=frozenset({"server auth"}))
    certificate = issue(make_csr(leaf_key), ca, RequestProfile(usages=("server auth",)), servers_only)
    assert list(extension(certificate, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    with refused("allowed-extended-key-usages", '"client auth"; it grants "server auth"'):
        issue(make_csr(leaf_key), ca, RequestProfile(usages=("server auth", "client auth")), servers_only)
    # "s/mime" is "email protection" by another name: allowing one allows the other
    mail = IssuerPolicy(allowed_extended_usages=frozenset({"email protection"}))
    certificate = issue(make_csr(leaf_key), ca, RequestProfile(usages=("s/mime",)), mail)
    assert list(extension(certificate, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.EMAIL_PROTECTION]


def test_unknown_extended_usages_in_a_policy_are_refused() -> None:
    with pytest.raises(ValueError, match='"server-auth": not an extended key usage'):
        IssuerPolicy(allowed_extended_usages=frozenset({"server-auth"}))


# ---- key encipherment: RSA keys only (dropped for other keys) ----


def test_encipherment_is_dropped_for_ecdsa_and_ed25519_leaves_and_kept_for_rsa(
    ca: CertificateAuthority,
    rsa_key: rsa.RSAPrivateKey,
    leaf_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    asked = RequestProfile(
        usages=("digital signature", "key encipherment", "data encipherment", "server auth")
    )
    for key in (leaf_key, ed_key):
        certificate = issue(request(key), ca, asked)
        assert bits(certificate) == {"digital_signature"}
        assert list(extension(certificate, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert bits(issue(request(rsa_key), ca, asked)) == {
        "digital_signature",
        "key_encipherment",
        "data_encipherment",
    }
    assert bits(issue(request(leaf_key), ca)) == {"digital_signature"}  # cert-manager's default usages


def test_encipherment_alone_is_refused_for_a_key_that_cannot_encipher(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    with refused("encipherment-needs-rsa", '"key encipherment" can only be granted to RSA keys'):
        issue(request(leaf_key), ca, RequestProfile(usages=("key encipherment", "server auth")))


# ---- subjectAltNames: syntax ----


WELL_FORMED: list[x509.GeneralName] = [
    *(
        x509.DNSName(value)
        for value in (
            "localhost",
            "app.example",
            "*.app.example",
            "App-1.Example.COM",
            "xn--bcher-kva.example",
            "my-svc.my-namespace.svc.cluster.local",
            "a" * 63 + ".example",
            "0.example",
        )
    ),
    *(
        x509.UniformResourceIdentifier(value)
        for value in (
            "spiffe://cluster.local/ns/default/sa/app",
            "https://app.example:8443/path?q=1#frag",
            "http://192.0.2.1/",
            "http://[2001:db8::1]:80/",
            "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "mailto:ops@app.example",
        )
    ),
    *(
        x509.RFC822Name(value)
        for value in ("ops@app.example", "first.last+tag@mail.app.example", "x@y.example")
    ),
    x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
]


def test_well_formed_names_are_issued_as_asked(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    issued = extension(issue(request(leaf_key, WELL_FORMED), ca), x509.SubjectAlternativeName).value
    assert list(issued) == WELL_FORMED


def dns(value: str) -> x509.DNSName:
    return x509.DNSName._init_without_validation(value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "it is empty"),
        ("app\x00.example", "characters other than letters"),
        ("app.example\x00.evil.example", "characters other than letters"),
        ("b\u00fccher.example", "characters other than letters"),
        ("app example.com", "is not 1 to 63 letters"),
        ("exa_mple.com", "is not 1 to 63 letters"),
        ("-app.example", "is not 1 to 63 letters"),
        ("app-.example", "is not 1 to 63 letters"),
        ("a" * 64 + ".example", "is not 1 to 63 letters"),
        (".".join(["abcdefghi"] * 25) + ".example", "more than 253"),
        ("app..example", "empty label"),
        ("app.example.", "empty label"),
        ("*", "a wildcard must be followed by at least two labels"),
        ("*.com", "a wildcard must be followed by at least two labels"),
        ("app.*.example.com", "a wildcard may only be the whole left-most label"),
        ("app*.example.com", "a wildcard may only be the whole left-most label"),
        ("*.*.example.com", "a wildcard may only be the whole left-most label"),
        ("10.0.0.1", "last label is all digits"),
    ],
)
def test_malformed_dns_names_are_refused(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey, value: str, problem: str
) -> None:
    with refused("dns-name-syntax", problem):
        issue(request(leaf_key, [dns(value)]), ca)


def test_ip_addresses_must_be_4_or_16_bytes(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    network = x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))  # 8 bytes: address and mask
    with refused("ip-address-syntax", "10.0.0.0/8 is a network"):
        issue(request(leaf_key, [network]), ca)
    with refused("ip-address-syntax", "2001:db8::/32 is a network"):
        issue(request(leaf_key, [x509.IPAddress(ipaddress.ip_network("2001:db8::/32"))]), ca)
    addresses: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    ]
    assert (
        list(extension(issue(request(leaf_key, addresses), ca), x509.SubjectAlternativeName).value)
        == addresses
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "is empty"),
        ("not a uri", "holds characters a URI cannot"),
        ("relative/path", "has no scheme"),
        ("1http://example.com/", "has no scheme"),
        ("spiffe:", "nothing after its scheme"),
        ("http://", "without a host"),
        ("http://exa\u00e9mple.com/", "holds characters a URI cannot"),
        ("http://example.com/%zz", "holds characters a URI cannot"),
        ("https://example.com:99999/", "authority is malformed"),
        ("spiffe://bad_domain/ns/app", "is not a DNS name or IP address"),
        ("http://[2001:db8::zz]/", "authority is malformed"),
        ("https://" + "a" * 2100 + ".example/", "more than 2048"),
    ],
)
def test_malformed_uris_are_refused(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey, value: str, problem: str
) -> None:
    with refused("uri-syntax", problem):
        issue(request(leaf_key, [x509.UniformResourceIdentifier._init_without_validation(value)]), ca)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("@@", "its local part is not"),
        ("no-at-sign", "is not local-part@domain"),
        ("@app.example", "is not local-part@domain"),
        ("a..b@app.example", "its local part is not"),
        (".a@app.example", "its local part is not"),
        ('"quoted"@app.example', "its local part is not"),
        ("ops\x00@app.example", "its local part is not"),
        ("ops@", "its domain"),
        ("ops@-bad.example", "its domain"),
        ("ops@*.app.example", "its domain"),
        ("o" * 65 + "@app.example", "more than 64"),
    ],
)
def test_malformed_email_addresses_are_refused(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey, value: str, problem: str
) -> None:
    with refused("email-syntax", problem):
        issue(request(leaf_key, [x509.RFC822Name._init_without_validation(value)]), ca)


# ---- bounds ----


def test_at_most_100_subject_alt_names(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    hundred: list[x509.GeneralName] = [x509.DNSName(f"n{index}.app.example") for index in range(100)]
    assert len(extension(issue(request(leaf_key, hundred), ca), x509.SubjectAlternativeName).value) == 100
    with refused("san-count", "101 subjectAltNames, more than the 100"):
        issue(request(leaf_key, [*hundred, x509.DNSName("one-more.app.example")]), ca)
    many: list[x509.GeneralName] = [x509.DNSName(f"n{index}.x") for index in range(10_000)]
    with refused("san-count", "10000 subjectAltNames"):
        issue(request(leaf_key, many), ca)


#: cryptography warns as it parses an over-long attribute; the policy refuses it in its own words
@pytest.mark.filterwarnings("ignore:Attribute's length must be")
def test_common_name_is_at_most_64_characters(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    fits = subject((NameOID.COMMON_NAME, "c" * 64))
    assert issue(request(leaf_key, requested=fits), ca).subject == fits
    for length in (65, 20_000):
        with refused(
            "subject-attributes", f"commonName is {length} characters long, more than its bound of 64"
        ):
            issue(request(leaf_key, requested=subject((NameOID.COMMON_NAME, "c" * length))), ca)


#: cryptography warns as it parses an over-long attribute; the policy refuses it in its own words
@pytest.mark.filterwarnings("ignore:Attribute's length must be")
@pytest.mark.parametrize(
    ("attribute", "problem"),
    [
        ((NameOID.ORGANIZATION_NAME, "o" * 65), "organizationName is 65 characters long"),
        ((NameOID.ORGANIZATIONAL_UNIT_NAME, "u" * 65), "organizationalUnitName is 65"),
        ((NameOID.LOCALITY_NAME, "l" * 129), "localityName is 129"),
        ((NameOID.STATE_OR_PROVINCE_NAME, "s" * 129), "stateOrProvinceName is 129"),
        ((NameOID.SERIAL_NUMBER, "1" * 65), "serialNumber is 65"),
        ((NameOID.EMAIL_ADDRESS, "e" * 256), "emailAddress is 256"),
        ((ObjectIdentifier("1.2.3.4"), "x" * 257), "1.2.3.4 is 257"),
        ((NameOID.COUNTRY_NAME, "DEU"), 'countryName "DEU" is not a two-letter'),
        ((NameOID.ORGANIZATION_NAME, ""), "organizationName is empty"),
        (
            (NameOID.ORGANIZATION_NAME, "Example\x00Evil"),
            r'organizationName "Example\\x00Evil" holds control',
        ),
    ],
)
def test_subject_attributes_are_bounded_and_printable(
    ca: CertificateAuthority,
    leaf_key: ec.EllipticCurvePrivateKey,
    attribute: tuple[ObjectIdentifier, str],
    problem: str,
) -> None:
    with refused("subject-attributes", problem):
        issue(request(leaf_key, requested=subject(attribute, (NameOID.COMMON_NAME, "app.example"))), ca)


def test_a_subject_has_at_most_32_attributes(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    units = [(NameOID.ORGANIZATIONAL_UNIT_NAME, f"unit {index}") for index in range(32)]
    assert len(issue(request(leaf_key, requested=subject(*units)), ca).subject) == 32
    with refused("subject-attributes", "33 attributes, more than 32"):
        issue(request(leaf_key, requested=subject(*units, (NameOID.COMMON_NAME, "app.example"))), ca)


# ---- subjects ----


def test_a_leaf_may_not_carry_the_cas_subject(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    with refused("ca-subject", "is the CA's own"):
        issue(request(leaf_key, requested=ca.certificate.subject), ca)
    shouted = subject((NameOID.COMMON_NAME, "  " + ca.certificate.subject.rfc4514_string()[3:].upper() + " "))
    with refused("ca-subject"):  # names compare case-insensitively, spaces folded (RFC 5280 section 7.1)
        issue(request(leaf_key, requested=shouted), ca)
    with refused("ca-subject"):  # a sub-CA neither
        issue(
            request(leaf_key, requested=ca.certificate.subject),
            ca,
            RequestProfile(is_ca=True),
            IssuerPolicy(allow_ca=True),
        )


def test_nor_the_subject_of_a_ca_above_it(
    ca: CertificateAuthority, ec_key: ec.EllipticCurvePrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    intermediate = issue(
        make_csr(ec_key, "intermediate"), ca, RequestProfile(is_ca=True), IssuerPolicy(allow_ca=True)
    )
    below = CertificateAuthority(intermediate, ec_key, (ca.certificate,))
    with refused("ca-subject"):
        issue(request(leaf_key, requested=ca.certificate.subject), below)


def test_system_masters_is_a_forbidden_organization_by_default(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    admin = subject((NameOID.ORGANIZATION_NAME, "system:masters"), (NameOID.COMMON_NAME, "mallory"))
    with refused("forbidden-subject-organizations", '"system:masters" is forbidden'):
        issue(request(leaf_key, requested=admin), ca)
    team = subject((NameOID.ORGANIZATION_NAME, "team-a"), (NameOID.COMMON_NAME, "alice"))
    assert issue(request(leaf_key, requested=team), ca).subject == team
    own_rules = IssuerPolicy(forbidden_subject_organizations=("team-a",))
    with refused("forbidden-subject-organizations", '"team-a"'):
        issue(request(leaf_key, requested=team), ca, policy=own_rules)
    assert issue(request(leaf_key, requested=admin), ca, policy=own_rules).subject == admin


# ---- keys ----


def test_rsa_keys_need_an_exponent_of_at_least_65537(ca: CertificateAuthority) -> None:
    weak = rsa.generate_private_key(public_exponent=3, key_size=2048)
    csr = request(weak)
    with refused("rsa-exponent", "public exponent 3;"):
        load_csr(pem(csr))
    with refused("rsa-exponent"):
        issue(csr, ca)


# ---- the issuer's enrollment policy: allowed names ----


def test_allowed_dns_names_are_patterns(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    policy = IssuerPolicy(allowed_dns_names=("app.example", "*.apps.example"))
    for value in ("app.example", "APP.example", "a.apps.example", "b.a.apps.example", "*.apps.example"):
        issue(request(leaf_key, [x509.DNSName(value)]), ca, policy=policy)
    for value in ("apps.example", "evil.example", "app.example.evil", "xapps.example"):
        with refused("allowed-dns-names", "matches none of this issuer's spec.policy.allowedDNSNames"):
            issue(request(leaf_key, [x509.DNSName("app.example"), x509.DNSName(value)]), ca, policy=policy)
    with refused("allowed-dns-names"):
        issue(request(leaf_key, [x509.DNSName("app.example")]), ca, policy=IssuerPolicy(allowed_dns_names=()))


def test_allowed_ip_ranges(ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey) -> None:
    policy = IssuerPolicy(
        allowed_ip_ranges=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    )
    for value in ("10.1.2.3", "2001:db8::7"):
        issue(request(leaf_key, [x509.IPAddress(ipaddress.ip_address(value))]), ca, policy=policy)
    with refused("allowed-ip-ranges", r"192.168.0.1 is outside .*\(10.0.0.0/8, 2001:db8::/32\)"):
        issue(request(leaf_key, [x509.IPAddress(ipaddress.ip_address("192.168.0.1"))]), ca, policy=policy)


def test_allowed_uris_and_email_addresses(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    policy = IssuerPolicy(
        allowed_uris=("spiffe://cluster.local/ns/team-a/*",), allowed_email_addresses=("*@team-a.example",)
    )
    good: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier("spiffe://cluster.local/ns/team-a/sa/app"),
        x509.RFC822Name("Ops@TEAM-A.example"),
    ]
    issue(request(leaf_key, good), ca, policy=policy)
    with refused("allowed-uris", "spec.policy.allowedURIs"):
        issue(
            request(leaf_key, [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/team-b/sa/x")]),
            ca,
            policy=policy,
        )
    with refused("allowed-email-addresses", "spec.policy.allowedEmailAddresses"):
        issue(request(leaf_key, [x509.RFC822Name("ops@team-b.example")]), ca, policy=policy)


def test_a_pattern_of_many_wildcards_is_no_denial_of_service(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    """A naive regular expression would try a power of the name's length before saying no."""
    policy = IssuerPolicy(allowed_dns_names=("*a" * 30 + "*.example",))
    name = ".".join(["a" * 63] * 3) + ".other"
    with refused("allowed-dns-names"):
        issue(request(leaf_key, [x509.DNSName(name)]), ca, policy=policy)


def test_patterns_must_be_printable_ascii() -> None:
    for pattern in ("", "a b.example", "b\u00fccher.example", "x\x00.example"):
        with pytest.raises(ValueError, match="must be non-empty printable ASCII"):
            IssuerPolicy(allowed_dns_names=(pattern,))


def test_the_default_policy_restricts_no_names(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    names: list[x509.GeneralName] = [
        x509.DNSName("anything.example"),
        x509.IPAddress(ipaddress.ip_address("203.0.113.9")),
        x509.UniformResourceIdentifier("https://anything.example/"),
        x509.RFC822Name("anyone@anything.example"),
    ]
    assert list(extension(issue(request(leaf_key, names), ca), x509.SubjectAlternativeName).value) == names


# ---- refusals travel ----


def test_a_refusal_pickles_with_its_rule(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    """Signing processes send refusals back pickled: the rule and the message arrive intact."""
    with pytest.raises(PolicyViolation) as caught:
        issue(request(leaf_key, [dns("")]), ca)
    back = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 (our own)
    assert isinstance(back, PolicyViolation) and isinstance(back, RequestError)
    assert (back.rule, str(back)) == ("dns-name-syntax", str(caught.value))
    assert str(back).startswith('policy dns-name-syntax: dNSName "" is not valid: it is empty')


def test_a_policy_pickles_and_still_matches(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    policy = IssuerPolicy(allowed_dns_names=("*.app.example",), max_duration=timedelta(days=30))
    issue(request(leaf_key, [x509.DNSName("a.app.example")]), ca, policy=policy)  # patterns compiled now
    back = pickle.loads(pickle.dumps(policy))  # noqa: S301 (our own)
    assert back == policy
    issue(request(leaf_key, [x509.DNSName("b.app.example")]), ca, policy=back)
    with refused("allowed-dns-names"):
        issue(request(leaf_key, [x509.DNSName("b.other.example")]), ca, policy=back)


# ---- the EST server's own names ----


SERVER = IssuerPolicy(reserved_server_names=("est.example.com", "127.0.0.1", "::1", "*.est.example.net"))
SERVER_AUTH = RequestProfile(usages=("digital signature", "server auth"))


@pytest.mark.parametrize(
    "names",
    [
        [x509.DNSName("est.example.com")],
        [x509.DNSName("EST.Example.COM")],  # case changes nothing
        [x509.DNSName("device.example"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        [x509.IPAddress(ipaddress.ip_address("::1"))],
        [x509.DNSName("*.example.com")],  # a wildcard covering the server's name
        [x509.DNSName("a.est.example.net")],  # a name the server's wildcard covers
    ],
    ids=["dns", "case", "ip", "ipv6", "covering-wildcard", "covered-by-the-servers-wildcard"],
)
def test_no_server_auth_certificate_for_the_est_servers_own_names(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey, names: list[x509.GeneralName]
) -> None:
    with refused("est-server-names", "is a name of the EST server itself"):
        issue(request(leaf_key, names), ca, SERVER_AUTH, SERVER)


def test_nor_for_a_common_name_or_with_any_purpose(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    with refused("est-server-names", 'commonName "127.0.0.1"'):
        issue(
            request(leaf_key, requested=subject((NameOID.COMMON_NAME, "127.0.0.1"))), ca, SERVER_AUTH, SERVER
        )
    anything = IssuerPolicy(
        reserved_server_names=SERVER.reserved_server_names,
        allowed_extended_usages=DEFAULT_EXTENDED_USAGES | {"any"},
    )
    with refused("est-server-names"):
        issue(request(leaf_key, [dns("est.example.com")]), ca, RequestProfile(usages=("any",)), anything)
    no_extended_usage = RequestProfile(usages=("digital signature",))  # valid for every purpose
    with refused("est-server-names"):
        issue(request(leaf_key, [dns("est.example.com")]), ca, no_extended_usage, SERVER)


def test_client_certificates_for_those_names_and_server_certificates_for_others_are_issued(
    ca: CertificateAuthority, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    client = RequestProfile(usages=("digital signature", "client auth"))
    issued = issue(request(leaf_key, [dns("est.example.com")]), ca, client, SERVER)
    assert list(extension(issued, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    for other in ("device.example.com", "b.a.est.example.net", "est.example.com.evil"):
        issue(request(leaf_key, [dns(other)]), ca, SERVER_AUTH, SERVER)
    issue(request(leaf_key, [dns("est.example.com")]), ca, SERVER_AUTH)  # no EST server: no such rule
