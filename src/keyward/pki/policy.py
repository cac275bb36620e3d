"""The issuance policy: what a CA signs, whoever asks and by whichever path.

``issue_certificate`` applies it to every certificate keyward issues (cert-manager CertificateRequests,
Kubernetes CSRs, EST enroll, re-enroll and serverkeygen, the EST server's own TLS certificate), so one
policy holds for all of them. Some rules hold for every issuer (usages that only a CA certificate may
carry, name syntax, length and count bounds, the CA's own subject); the rest is the issuer's
``IssuerPolicy`` (TCS issuers: ``spec.policy``), with the defaults documented in docs/POLICY.md. Every
refusal is a ``PolicyViolation``: a ``RequestError`` whose message starts with the name of its rule.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from keyward.pki.errors import PolicyViolation, RequestError
from keyward.pki.usages import DEFAULT_USAGES, EXTENDED_KEY_USAGES, KEY_USAGE_BITS, resolve_usages

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# ---- rules: their names, as refusals and docs/POLICY.md state them ----------------------------------

CA_USAGES = "ca-usages"
EXTENDED_KEY_USAGE = "allowed-extended-key-usages"
ENCIPHERMENT = "encipherment-needs-rsa"
SAN_COUNT = "san-count"
DNS_NAME_SYNTAX = "dns-name-syntax"
IP_ADDRESS_SYNTAX = "ip-address-syntax"
URI_SYNTAX = "uri-syntax"
EMAIL_SYNTAX = "email-syntax"
ALLOWED_DNS_NAMES = "allowed-dns-names"
ALLOWED_IP_RANGES = "allowed-ip-ranges"
ALLOWED_URIS = "allowed-uris"
ALLOWED_EMAIL_ADDRESSES = "allowed-email-addresses"
SUBJECT_ATTRIBUTES = "subject-attributes"
CA_SUBJECT = "ca-subject"
FORBIDDEN_ORGANIZATIONS = "forbidden-subject-organizations"
SERVER_NAMES = "est-server-names"

# ---- bounds -------------------------------------------------------------------------------------------

#: At most this many subjectAltName entries in a request.
MAX_SANS = 100
#: RFC 1035 section 2.3.4: 253 characters in the text form of a name, 63 in a label.
MAX_DNS_NAME = 253
#: SPIFFE IDs, the URIs workloads carry most, are at most 2048 bytes; RFC 5280 sets no bound.
MAX_URI = 2048
#: RFC 5321 section 4.5.3.1: 64 characters in a local part, 254 in an address that fits a path.
MAX_EMAIL = 254
MAX_LOCAL_PART = 64
#: Subject attributes: RFC 5280 Appendix A's upper bounds (ub-*), X.520's for the types it leaves out,
#: in characters. countryName is exactly two (ISO 3166 alpha-2).
SUBJECT_BOUNDS: dict[ObjectIdentifier, tuple[str, int]] = {
    NameOID.COMMON_NAME: ("commonName", 64),  # ub-common-name
    NameOID.ORGANIZATION_NAME: ("organizationName", 64),  # ub-organization-name
    NameOID.ORGANIZATIONAL_UNIT_NAME: ("organizationalUnitName", 64),  # ub-organizational-unit-name
    NameOID.LOCALITY_NAME: ("localityName", 128),  # ub-locality-name
    NameOID.STATE_OR_PROVINCE_NAME: ("stateOrProvinceName", 128),  # ub-state-name
    NameOID.COUNTRY_NAME: ("countryName", 2),
    NameOID.SERIAL_NUMBER: ("serialNumber", 64),  # ub-serial-number
    NameOID.TITLE: ("title", 64),  # ub-title
    NameOID.PSEUDONYM: ("pseudonym", 128),  # ub-pseudonym
    NameOID.EMAIL_ADDRESS: ("emailAddress", 255),  # ub-emailaddress-length
    NameOID.SURNAME: ("surname", 32768),  # ub-name
    NameOID.GIVEN_NAME: ("givenName", 32768),  # ub-name
    NameOID.INITIALS: ("initials", 32768),  # ub-name
    NameOID.GENERATION_QUALIFIER: ("generationQualifier", 32768),  # ub-name
    NameOID.STREET_ADDRESS: ("streetAddress", 128),  # X.520 ub-street-address
    NameOID.POSTAL_CODE: ("postalCode", 40),  # X.520 ub-postal-code
    NameOID.BUSINESS_CATEGORY: ("businessCategory", 128),  # X.520 ub-business-category
    NameOID.DOMAIN_COMPONENT: ("domainComponent", 63),  # a DNS label (RFC 4519)
}
#: cryptography warns when it parses a subject attribute outside these bounds; the policy refuses such a
#: request with its own message, so the warning would only be noise in the operator's log.
warnings.filterwarnings("ignore", message=r"Attribute's length must be", category=UserWarning)
#: Attribute types without a standard bound: keyward's own.
OTHER_ATTRIBUTE_BOUND = 256
#: At most this many attributes in a subject.
MAX_SUBJECT_ATTRIBUTES = 32

# ---- usages ---------------------------------------------------------------------------------------------

#: keyUsage bits for signing certificates and CRLs: a CA's, granted only with isCA.
CA_ONLY_USAGES = ("cert sign", "crl sign")
#: Extended key usages granted only when the issuer's policy lists them: a leaf with one of these can
#: vouch for any purpose ("any"), sign code in the CA's name, or answer OCSP for the CA's certificates.
RESTRICTED_EXTENDED_USAGES = ("any", "code signing", "ocsp signing")
DEFAULT_EXTENDED_USAGES: frozenset[str] = frozenset(EXTENDED_KEY_USAGES) - frozenset(
    RESTRICTED_EXTENDED_USAGES
)
#: keyUsage bits for encrypting with the certified key: RSA key transport. RFC 8813 section 3 forbids
#: them for ECDSA keys, RFC 8410 section 5 for Ed25519, so they are dropped from a non-RSA leaf.
ENCIPHERMENT_USAGES = ("key encipherment", "data encipherment")
#: Subject organizations refused by default: Kubernetes grants system:masters every permission, so a
#: client certificate carrying it is cluster-admin wherever the cluster trusts this CA.
DEFAULT_FORBIDDEN_ORGANIZATIONS: tuple[str, ...] = ("system:masters",)


@dataclass(frozen=True)
class IssuerPolicy:
    """An issuer's limits on what it signs: validity, sub-CAs, extended key usages, names and subjects.

    ``None`` for a list of allowed names puts no restriction on that kind of name (beyond its syntax).
    Patterns are matched whole, with ``*`` standing for any run of characters (dots included):
    ``*.example.com`` allows every name below example.com, but not example.com itself. DNS names and
    email addresses match case-insensitively, URIs exactly.
    """

    max_duration: timedelta = timedelta(hours=8760)
    default_duration: timedelta = timedelta(days=90)
    min_duration: timedelta = timedelta(minutes=10)
    allow_ca: bool = False
    allowed_extended_usages: frozenset[str] = DEFAULT_EXTENDED_USAGES
    allowed_dns_names: tuple[str, ...] | None = None
    allowed_ip_ranges: tuple[IPNetwork, ...] | None = None
    allowed_uris: tuple[str, ...] | None = None
    allowed_email_addresses: tuple[str, ...] | None = None
    forbidden_subject_organizations: tuple[str, ...] = DEFAULT_FORBIDDEN_ORGANIZATIONS
    #: The names (DNS names, IP addresses) of an EST server that serves this CA: no certificate for one of
    #: them may be used by a TLS server (rule ``est-server-names``). Set by the EST server, per enrollment.
    reserved_server_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_extended_usages(self.allowed_extended_usages)
        for patterns in (self.allowed_dns_names, self.allowed_uris, self.allowed_email_addresses):
            for pattern in patterns or ():
                check_pattern(pattern)

    @cached_property
    def _dns_names(self) -> re.Pattern[str] | None:
        return _patterns(self.allowed_dns_names, re.IGNORECASE)

    @cached_property
    def _uris(self) -> re.Pattern[str] | None:
        return _patterns(self.allowed_uris, 0)

    @cached_property
    def _email_addresses(self) -> re.Pattern[str] | None:
        return _patterns(self.allowed_email_addresses, re.IGNORECASE)

    @cached_property
    def _server_names(self) -> tuple[frozenset[str], frozenset[IPAddress]]:
        dns: set[str] = set()
        ips: set[IPAddress] = set()
        for name in self.reserved_server_names:
            address = _ip_literal(name.strip("[]"))
            if address is not None:
                ips.add(address)
            elif name:
                dns.add(_dns_key(name))
        return frozenset(dns), frozenset(ips)

    def __getstate__(self) -> dict[str, object]:
        # The compiled patterns are made again on arrival (policies travel with every signing job).
        return {name: value for name, value in self.__dict__.items() if not name.startswith("_")}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)


def check_extended_usages(names: Iterable[str]) -> None:
    """``ValueError`` unless every name is an extended key usage of the vocabulary."""
    unknown = sorted(set(names) - set(EXTENDED_KEY_USAGES))
    if unknown:
        what = "not an extended key usage" if len(unknown) == 1 else "not extended key usages"
        raise ValueError(f"{_listed(unknown)}: {what}; use {_listed(EXTENDED_KEY_USAGES)}")


def check_pattern(pattern: str) -> None:
    """``ValueError`` unless ``pattern`` (of allowed names) is non-empty printable ASCII without spaces."""
    if not pattern or not pattern.isascii() or not pattern.isprintable() or " " in pattern:
        raise ValueError(f"pattern {_shown(pattern)} must be non-empty printable ASCII without spaces")


def _patterns(patterns: Sequence[str] | None, flags: int) -> re.Pattern[str] | None:
    """One regular expression matching any of ``patterns`` whole, ``*`` being any run of characters.

    A glob matches when each piece between stars is found at its earliest place after the previous
    one, so those pieces are matched in atomic groups: the expression never backtracks into them, and
    a pattern with many stars costs linear time, not a power of the name's length."""
    if patterns is None:
        return None
    alternatives = []
    for pattern in patterns:
        first, *pieces = (re.escape(piece) for piece in pattern.split("*"))
        middle = "".join(f"(?>.*?{piece})" for piece in pieces[:-1])
        alternatives.append(f"(?:{first}{middle}.*{pieces[-1]})" if pieces else f"(?:{first})")
    return re.compile("|".join(alternatives) or "(?!)", flags)


def _shown(value: str | bytes) -> str:
    """A requested value as a message shows it: quoted, control characters escaped, long ones cut."""
    text = value if isinstance(value, str) else value.decode("latin-1")
    escaped = text.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{escaped[:80]}..."' if len(escaped) > 80 else f'"{escaped}"'


# ---- usages ---------------------------------------------------------------------------------------------


def granted_usages(
    requested: Sequence[str], *, is_ca: bool, rsa_key: bool, policy: IssuerPolicy
) -> tuple[str, ...]:
    """The usage names to grant for ``requested`` (empty: cert-manager's default), under the policy.

    Refused: unknown names; "cert sign" and "crl sign" without isCA; an extended usage the policy does
    not allow. Dropped: "key encipherment" and "data encipherment" for a key that is not RSA (refused
    when they were the only key usage bits requested).
    """
    return _granted(tuple(requested) or DEFAULT_USAGES, is_ca, rsa_key, policy.allowed_extended_usages)


@functools.lru_cache(maxsize=256)
def _granted(names: tuple[str, ...], is_ca: bool, rsa_key: bool, allowed: frozenset[str]) -> tuple[str, ...]:
    resolve_usages(names)  # unknown names and meaningless combinations first, in their own words
    ca_only = [name for name in names if name in CA_ONLY_USAGES]
    if ca_only and not is_ca:
        raise PolicyViolation(
            CA_USAGES,
            f"{_listed(ca_only)} {'is' if len(ca_only) == 1 else 'are'} for CA certificates only; drop "
            f"{'it' if len(ca_only) == 1 else 'them'} from the usages, or request a CA certificate (isCA) "
            "from an issuer that allows them",
        )
    allowed_oids = {EXTENDED_KEY_USAGES[name] for name in allowed}
    refused = [
        name
        for name in names
        if name in EXTENDED_KEY_USAGES and EXTENDED_KEY_USAGES[name] not in allowed_oids
    ]
    if refused:
        raise PolicyViolation(
            EXTENDED_KEY_USAGE,
            f"this issuer does not grant the extended key {'usage' if len(refused) == 1 else 'usages'} "
            f"{_listed(refused)}; it grants {_listed(sorted(allowed))} (an issuer's "
            "spec.policy.allowedExtendedKeyUsages lists what it grants)",
        )
    if rsa_key:
        return names
    kept = tuple(name for name in names if name not in ENCIPHERMENT_USAGES)
    if len(kept) < len(names) and not any(name in KEY_USAGE_BITS for name in kept):
        dropped = [name for name in names if name in ENCIPHERMENT_USAGES]
        raise PolicyViolation(
            ENCIPHERMENT,
            f"{_listed(dropped)} can only be granted to RSA keys and the request's key is not RSA; "
            'ask for "digital signature" (or "key agreement") instead',
        )
    return kept


def _listed(names: Iterable[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


# ---- subjectAltNames ------------------------------------------------------------------------------------

#: The subjectAltName kinds copied from a request; others (otherName, directoryName, ...) are dropped.
_COPIED_NAMES = (x509.DNSName, x509.IPAddress, x509.UniformResourceIdentifier, x509.RFC822Name)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
#: RFC 3986's unreserved and reserved characters, and %-escapes: all a URI may contain.
_URI = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})+")
#: RFC 5321's Dot-string (atoms of RFC 5322 atext joined by single dots); quoted local parts are refused.
_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def dns_name_problem(name: str, *, wildcard: bool = True) -> str | None:
    """Why ``name`` is not a DNS name in RFC 1035/5280 preferred syntax (a wildcard only as the whole
    left-most label, followed by at least two labels), or None."""
    if not name:
        return "it is empty"
    if len(name) > MAX_DNS_NAME:
        return f"it is {len(name)} characters long, more than {MAX_DNS_NAME}"
    if not name.isascii() or not name.isprintable():
        return (
            "it holds characters other than letters, digits, hyphens and dots (IDNs go in as xn-- A-labels)"
        )
    labels = name.split(".")
    if wildcard and labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            return "a wildcard must be followed by at least two labels, as in *.example.com"
    for label in labels:
        if "*" in label:
            return "a wildcard may only be the whole left-most label, as in *.example.com"
        if not label:
            return "it has an empty label (two dots in a row, or a dot at either end)"
        if not _LABEL.fullmatch(label):
            return (
                f"its label {_shown(label)} is not 1 to 63 letters, digits and hyphens, "
                "beginning and ending with a letter or digit"
            )
    if labels[-1].isdigit():
        return "its last label is all digits (an IP address goes in as an IP address, not a DNS name)"
    return None


def uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not an absolute URI as RFC 5280 section 4.2.1.6 wants it (RFC 3986 syntax, a
    scheme, and a host that is a DNS name or an IP address when there is an authority), or None."""
    if len(uri) > MAX_URI:
        return f"it is {len(uri)} characters long, more than {MAX_URI}"
    if not _URI.fullmatch(uri):
        return "it is empty or holds characters a URI cannot (spaces, controls, non-ASCII, a bad %-escape)"
    scheme, colon, rest = uri.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        return "it has no scheme; use an absolute URI such as spiffe://cluster.local/ns/default/sa/app"
    if not rest:
        return "it has nothing after its scheme"
    if not rest.startswith("//"):
        return None
    try:
        parts = urlsplit(uri)
        host, _ = parts.hostname, parts.port  # .port checks the port
    except ValueError as exc:
        return f"its authority is malformed ({exc})"
    if not host:
        return "it has an authority (//) without a host"
    if parts.netloc.rpartition("@")[2].startswith("["):
        return None if _ip_literal(host) else f"its host [{host}] is not an IPv6 address"
    if _ip_literal(host) is not None:
        return None
    problem = dns_name_problem(host, wildcard=False)
    return f"its host {_shown(host)} is not a DNS name or IP address: {problem}" if problem else None


def _ip_literal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def email_problem(address: str) -> str | None:
    """Why ``address`` is not a mailbox as RFC 5280 section 4.2.1.6 wants it (RFC 5321: a Dot-string local
    part, @, a DNS name), or None."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "it is not local-part@domain"
    if len(address) > MAX_EMAIL:
        return f"it is {len(address)} characters long, more than {MAX_EMAIL}"
    if len(local) > MAX_LOCAL_PART:
        return f"its local part is {len(local)} characters long, more than {MAX_LOCAL_PART}"
    if not _LOCAL_PART.fullmatch(local):
        return "its local part is not letters, digits and !#$%&'*+/=?^_`{|}~- in dot-separated runs"
    problem = dns_name_problem(domain, wildcard=False)
    return f"its domain {_shown(domain)} is not a DNS name: {problem}" if problem else None


def requested_names(csr: x509.CertificateSigningRequest, policy: IssuerPolicy) -> list[x509.GeneralName]:
    """The subjectAltNames to copy from ``csr`` (DNS, IP, URI, email), each checked for its syntax and
    against the policy's allowed names; ``PolicyViolation`` for the first that fails."""
    try:
        requested = list(csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []
    except ValueError as exc:
        raise RequestError(f"the request's subjectAltName extension cannot be parsed ({exc})") from None
    if len(requested) > MAX_SANS:
        raise PolicyViolation(
            SAN_COUNT,
            f"the request has {len(requested)} subjectAltNames, more than the {MAX_SANS} an issuer signs "
            "in one certificate; split the names over several certificates",
        )
    names: list[x509.GeneralName] = [name for name in requested if isinstance(name, _COPIED_NAMES)]
    for name in names:
        _check_name(name, policy)
    return names


def _check_name(name: x509.GeneralName, policy: IssuerPolicy) -> None:
    if isinstance(name, x509.DNSName):
        _check_text("dNSName", name.value, dns_name_problem(name.value), DNS_NAME_SYNTAX)
        _check_allowed("dNSName", name.value, policy._dns_names, ALLOWED_DNS_NAMES, "allowedDNSNames")
    elif isinstance(name, x509.UniformResourceIdentifier):
        _check_text("URI", name.value, uri_problem(name.value), URI_SYNTAX)
        _check_allowed("URI", name.value, policy._uris, ALLOWED_URIS, "allowedURIs")
    elif isinstance(name, x509.RFC822Name):
        _check_text("email address", name.value, email_problem(name.value), EMAIL_SYNTAX)
        _check_allowed(
            "email address",
            name.value,
            policy._email_addresses,
            ALLOWED_EMAIL_ADDRESSES,
            "allowedEmailAddresses",
        )
    elif isinstance(name, x509.IPAddress):
        address = name.value
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            raise PolicyViolation(
                IP_ADDRESS_SYNTAX,
                f"iPAddress {address} is a network (an address and a mask, {address.max_prefixlen // 4} "
                "bytes), not an address of 4 (IPv4) or 16 (IPv6) bytes",
            )
        ranges = policy.allowed_ip_ranges
        if ranges is not None and not any(address in network for network in ranges):
            raise PolicyViolation(
                ALLOWED_IP_RANGES,
                f"iPAddress {address} is outside this issuer's spec.policy.allowedIPRanges "
                f"({', '.join(map(str, ranges)) or 'none'})",
            )


def _check_text(kind: str, value: str, problem: str | None, rule: str) -> None:
    if problem is not None:
        raise PolicyViolation(rule, f"{kind} {_shown(value)} is not valid: {problem}")


def _check_allowed(
    kind: str, value: str, allowed: re.Pattern[str] | None, rule: str, spec_field: str
) -> None:
    if allowed is not None and not allowed.fullmatch(value):
        raise PolicyViolation(
            rule, f"{kind} {_shown(value)} matches none of this issuer's spec.policy.{spec_field}"
        )


# ---- the EST server's own names ------------------------------------------------------------------------

#: Extended key usages with which a certificate authenticates a TLS server (none at all: any purpose).
_SERVER_PURPOSES = frozenset({EXTENDED_KEY_USAGES["server auth"], EXTENDED_KEY_USAGES["any"]})


def _dns_key(name: str) -> str:
    return name.rstrip(".").lower()


def _covers(wildcard: str, name: str) -> bool:
    """Whether the wildcard DNS name ``*.rest`` matches ``name`` (one label in place of the star)."""
    return wildcard.startswith("*.") and name.partition(".")[2] == wildcard[2:] and "." in name


def _dns_overlap(a: str, b: str) -> bool:
    return a == b or _covers(a, b) or _covers(b, a)


def check_server_names(
    names: Sequence[x509.GeneralName],
    subject: x509.Name,
    extended_usages: Sequence[ObjectIdentifier],
    policy: IssuerPolicy,
) -> None:
    """Refuse a certificate a TLS server could present (server auth, "any", or no extended key usage at
    all) for a name of the EST server it is enrolled through (``policy.reserved_server_names``): whoever
    holds it could pass for that server with clients that trust the CA. The subjectAltNames count, and a
    commonName (which old clients still match)."""
    dns, ips = policy._server_names
    if not (dns or ips) or (extended_usages and not _SERVER_PURPOSES & set(extended_usages)):
        return
    wanted: list[tuple[str, str]] = [
        ("dNSName" if isinstance(name, x509.DNSName) else "iPAddress", str(name.value))
        for name in names
        if isinstance(name, x509.DNSName | x509.IPAddress)
    ]
    wanted += [("commonName", str(a.value)) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    for kind, value in wanted:
        address = _ip_literal(value.strip("[]"))
        if (address in ips) if address is not None else any(_dns_overlap(_dns_key(value), d) for d in dns):
            raise PolicyViolation(
                SERVER_NAMES,
                f"{kind} {_shown(value)} is a name of the EST server itself; a certificate enrolled here "
                "for it may not authenticate a TLS server (server auth): request client auth only, or "
                "leave that name out",
            )


# ---- subjects -------------------------------------------------------------------------------------------

#: C0 and C1 control characters, DEL included: never part of a name shown to anyone.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def comparable_name(name: x509.Name) -> tuple[tuple[tuple[str, str], ...], ...]:
    """``name`` as RFC 5280 section 7.1 compares names: attribute values case-folded, with runs of spaces
    collapsed and outer spaces dropped (the effect of RFC 4518's preparation on ordinary text)."""
    return tuple(
        tuple(sorted((attribute.oid.dotted_string, _folded(attribute.value)) for attribute in rdn))
        for rdn in name.rdns
    )


def _folded(value: str | bytes) -> str:
    text = value if isinstance(value, str) else value.hex()
    return " ".join(text.split()).casefold()


def check_subject(
    subject: x509.Name, ca_names: frozenset[tuple[tuple[tuple[str, str], ...], ...]], policy: IssuerPolicy
) -> None:
    """Refuse a subject with too many or malformed attributes, one of the CA's own (``ca_names``, from
    ``comparable_name``), or a forbidden organization."""
    attributes = list(subject)
    if len(attributes) > MAX_SUBJECT_ATTRIBUTES:
        raise PolicyViolation(
            SUBJECT_ATTRIBUTES,
            f"the subject has {len(attributes)} attributes, more than {MAX_SUBJECT_ATTRIBUTES}",
        )
    for attribute in attributes:
        _check_attribute(attribute)
    if attributes and comparable_name(subject) in ca_names:
        raise PolicyViolation(
            CA_SUBJECT,
            f"the requested subject {_shown(subject.rfc4514_string())} is the CA's own; a certificate "
            "carrying its issuer's subject looks self-issued to path validation: choose another subject",
        )
    forbidden = set(policy.forbidden_subject_organizations)
    for value in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME):
        if value.value in forbidden:
            raise PolicyViolation(
                FORBIDDEN_ORGANIZATIONS,
                f"the subject's organization {_shown(value.value)} is forbidden by this issuer "
                "(spec.policy.forbiddenSubjectOrganizations); Kubernetes reads organizations as groups",
            )


def _check_attribute(attribute: x509.NameAttribute[str | bytes]) -> None:
    value = attribute.value
    if not isinstance(value, str):
        return  # a BIT STRING (x500UniqueIdentifier): nothing to show, nothing to bound here
    name, bound = SUBJECT_BOUNDS.get(attribute.oid, (attribute.oid.dotted_string, OTHER_ATTRIBUTE_BOUND))
    if not value:
        raise PolicyViolation(SUBJECT_ATTRIBUTES, f"the subject's {name} is empty; leave it out instead")
    if _CONTROL.search(value):
        raise PolicyViolation(
            SUBJECT_ATTRIBUTES, f"the subject's {name} {_shown(value)} holds control characters"
        )
    if attribute.oid == NameOID.COUNTRY_NAME and not (
        len(value) == 2 and value.isascii() and value.isalpha()
    ):
        raise PolicyViolation(
            SUBJECT_ATTRIBUTES, f"the subject's countryName {_shown(value)} is not a two-letter ISO 3166 code"
        )
    if len(value) > bound:
        raise PolicyViolation(
            SUBJECT_ATTRIBUTES,
            f"the subject's {name} is {len(value)} characters long, more than its bound of {bound}",
        )


__all__ = [
    "CA_ONLY_USAGES",
    "DEFAULT_EXTENDED_USAGES",
    "DEFAULT_FORBIDDEN_ORGANIZATIONS",
    "MAX_SANS",
    "RESTRICTED_EXTENDED_USAGES",
    "IssuerPolicy",
    "check_extended_usages",
    "check_pattern",
    "check_server_names",
    "check_subject",
    "comparable_name",
    "dns_name_problem",
    "email_problem",
    "granted_usages",
    "requested_names",
    "uri_problem",
]
