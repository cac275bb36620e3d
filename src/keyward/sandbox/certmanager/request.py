"""The PKCS#10 request cert-manager builds from a Certificate spec, and the identity it asks for.

The same ``Identity`` is read from the spec, from a CSR and from an issued certificate, so "does what we
hold still match what the user asks for" is one comparison whatever we compare against.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from keyward.sandbox.certmanager.keys import PrivateKey, SpecError, signing_hash
from keyward.sandbox.usages import DEFAULT_USAGES, KEY_USAGE_BITS, expected_usages

#: spec.subject list fields in the order cert-manager puts them in the subject (pkg/util/pki/csr.go).
SUBJECT_LIST_FIELDS = (
    ("countries", NameOID.COUNTRY_NAME),
    ("organizations", NameOID.ORGANIZATION_NAME),
    ("organizationalUnits", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("localities", NameOID.LOCALITY_NAME),
    ("provinces", NameOID.STATE_OR_PROVINCE_NAME),
    ("streetAddresses", NameOID.STREET_ADDRESS),
    ("postalCodes", NameOID.POSTAL_CODE),
)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Identity:
    """Who a certificate is for: subject and subjectAltNames, compared without regard to order."""

    common_name: str
    subject: tuple[tuple[str, str], ...]  # (dotted OID, value) of the other subject attributes, sorted
    dns_names: frozenset[str]
    ip_addresses: frozenset[IpAddress]
    uris: frozenset[str]
    emails: frozenset[str]
    is_ca: bool

    @property
    def has_names(self) -> bool:
        return bool(self.common_name or self.dns_names or self.ip_addresses or self.uris or self.emails)


def _strings(spec: Mapping[str, Any], field: str, path: str) -> list[str]:
    value = spec.get(field)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SpecError(f"{path}.{field} must be a list of strings")
    return [item for item in value if item]


def _ip(value: str) -> IpAddress:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        raise SpecError(
            f'spec.ipAddresses: "{value}" is not an IP address; write addresses such as 10.0.0.1 or ::1'
        ) from None


def _subject_attributes(spec: Mapping[str, Any]) -> list[x509.NameAttribute[str]]:
    """The subject in cert-manager's order: spec.subject fields, serialNumber, then commonName."""
    subject = spec.get("subject") or {}
    pairs = [
        (f"spec.subject.{field}", oid, value)
        for field, oid in SUBJECT_LIST_FIELDS
        for value in _strings(subject, field, "spec.subject")
    ]
    if subject.get("serialNumber"):
        pairs.append(("spec.subject.serialNumber", NameOID.SERIAL_NUMBER, str(subject["serialNumber"])))
    if spec.get("commonName"):
        pairs.append(("spec.commonName", NameOID.COMMON_NAME, str(spec["commonName"])))
    attributes = []
    for path, oid, value in pairs:
        try:
            attributes.append(x509.NameAttribute(oid, value))
        except ValueError as exc:  # a country that is not two letters, a commonName over 64 characters
            raise SpecError(f'{path} "{value}": {exc}') from None
    return attributes


def identity_from_spec(spec: Mapping[str, Any]) -> Identity:
    """The identity a Certificate spec asks for; ``SpecError`` for values that cannot go in a certificate."""
    return _identity(
        x509.Name(_subject_attributes(spec)),
        dns=_strings(spec, "dnsNames", "spec"),
        ips=[_ip(value) for value in _strings(spec, "ipAddresses", "spec")],
        uris=_strings(spec, "uris", "spec"),
        emails=_strings(spec, "emailAddresses", "spec"),
        is_ca=bool(spec.get("isCA")),
    )


def _identity(
    name: x509.Name,
    *,
    dns: Sequence[str],
    ips: Sequence[IpAddress],
    uris: Sequence[str],
    emails: Sequence[str],
    is_ca: bool,
) -> Identity:
    common_names = [str(a.value) for a in name if a.oid == NameOID.COMMON_NAME]
    others = sorted((a.oid.dotted_string, str(a.value)) for a in name if a.oid != NameOID.COMMON_NAME)
    return Identity(
        common_name=common_names[0] if common_names else "",
        subject=tuple(others),
        dns_names=frozenset(dns),
        ip_addresses=frozenset(ips),
        uris=frozenset(uris),
        emails=frozenset(emails),
        is_ca=is_ca,
    )


def identity_of(source: x509.Certificate | x509.CertificateSigningRequest) -> Identity:
    """The identity a certificate holds, or a CSR asks for (isCA from its basicConstraints)."""
    try:
        sans = source.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = x509.SubjectAlternativeName([])
    try:
        is_ca = source.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return _identity(
        source.subject,
        dns=sans.get_values_for_type(x509.DNSName),
        ips=[
            ip
            for ip in sans.get_values_for_type(x509.IPAddress)
            if isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address)
        ],
        uris=sans.get_values_for_type(x509.UniformResourceIdentifier),
        emails=sans.get_values_for_type(x509.RFC822Name),
        is_ca=is_ca,
    )


def identity_mismatches(wanted: Identity, actual: Identity) -> list[str]:
    """The spec fields on which ``actual`` differs from ``wanted``, as cert-manager names them."""
    checks = (
        ("spec.commonName", wanted.common_name, actual.common_name),
        ("spec.subject", wanted.subject, actual.subject),
        ("spec.dnsNames", wanted.dns_names, actual.dns_names),
        ("spec.ipAddresses", wanted.ip_addresses, actual.ip_addresses),
        ("spec.uris", wanted.uris, actual.uris),
        ("spec.emailAddresses", wanted.emails, actual.emails),
        ("spec.isCA", wanted.is_ca, actual.is_ca),
    )
    return [field for field, want, have in checks if want != have]


def request_usages(spec: Mapping[str, Any]) -> list[str]:
    """spec.usages, or cert-manager's default (digital signature, key encipherment) when empty."""
    return list(_strings(spec, "usages", "spec") or DEFAULT_USAGES)


def _usage_extensions(spec: Mapping[str, Any]) -> list[tuple[x509.ExtensionType, bool]]:
    """keyUsage (critical) and extendedKeyUsage as cert-manager puts them in its CSRs; a CA gets cert sign."""
    usages, unknown = expected_usages(request_usages(spec), bool(spec.get("isCA")))
    if unknown:
        raise SpecError(
            f"spec.usages: unknown usages {', '.join(unknown)}; use cert-manager's key usage names"
        )
    if usages.bits & {"encipher_only", "decipher_only"} and "key_agreement" not in usages.bits:
        raise SpecError('spec.usages: "encipher only" and "decipher only" need "key agreement"; add it')
    extensions: list[tuple[x509.ExtensionType, bool]] = []
    if usages.bits:
        extensions.append((x509.KeyUsage(**{bit: bit in usages.bits for bit in KEY_USAGE_BITS}), True))
    if usages.extended:
        oids = [x509.ObjectIdentifier(oid) for oid in dict.fromkeys(usages.extended)]
        extensions.append((x509.ExtendedKeyUsage(oids), False))
    return extensions


_TextName = type[x509.DNSName] | type[x509.UniformResourceIdentifier] | type[x509.RFC822Name]


def _text_names(spec: Mapping[str, Any], field: str, kind: _TextName) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for value in _strings(spec, field, "spec"):
        if not value.isascii():
            raise SpecError(
                f'spec.{field}: "{value}" is not ASCII; write international domain names in '
                "punycode (xn--...)"
            )
        names.append(kind(value))
    return names


def _general_names(spec: Mapping[str, Any]) -> list[x509.GeneralName]:
    """SANs in cert-manager's order (DNS, IP, URI, email)."""
    return [
        *_text_names(spec, "dnsNames", x509.DNSName),
        *(x509.IPAddress(_ip(value)) for value in _strings(spec, "ipAddresses", "spec")),
        *_text_names(spec, "uris", x509.UniformResourceIdentifier),
        *_text_names(spec, "emailAddresses", x509.RFC822Name),
    ]


def check_names(spec: Mapping[str, Any]) -> Identity:
    """The spec's identity, checked for everything a CSR needs; ``SpecError`` names the field to fix."""
    identity = identity_from_spec(spec)
    if not identity.has_names:
        raise SpecError(
            "the Certificate names nobody: set spec.commonName or at least one of spec.dnsNames, "
            "spec.ipAddresses, spec.uris or spec.emailAddresses"
        )
    _general_names(spec)
    _usage_extensions(spec)
    return identity


def build_csr(spec: Mapping[str, Any], key: PrivateKey) -> x509.CertificateSigningRequest:
    """The PKCS#10 request cert-manager would send for this Certificate spec, signed with ``key``.

    Subject and SANs from the spec (the SAN extension is critical when the subject is empty, RFC 5280
    §4.2.1.6), basicConstraints CA:TRUE when isCA, keyUsage/extendedKeyUsage from spec.usages.
    """
    identity = check_names(spec)
    subject = x509.Name(_subject_attributes(spec))
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    names = _general_names(spec)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=len(subject) == 0)
    if identity.is_ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    for extension, critical in _usage_extensions(spec):
        builder = builder.add_extension(extension, critical=critical)
    algorithm = signing_hash(key)
    if isinstance(algorithm, hashes.SHA256 | hashes.SHA384 | hashes.SHA512):
        return builder.sign(key, algorithm)
    return builder.sign(key, None)


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(Encoding.PEM)
