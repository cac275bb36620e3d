"""The key usage vocabulary of Kubernetes CSRs and cert-manager, as the sandbox's own oracle.

Written against the upstream tables, not keyward.pki (which it checks): cert-manager's
pkg/api/util ``KeyUsageType``/``ExtKeyUsageType`` and pkg/util/pki
``KeyUsagesForCertificateOrCertificateRequest`` (isCA adds cert sign; no usages means digital
signature + key encipherment; every name adds its bit or appends its extended usage, so duplicates
stay), and kube's certificates validation ``allValidUsages``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

#: keyUsage bit names (cryptography ``x509.KeyUsage`` arguments) in RFC 5280 bit order.
KEY_USAGE_BITS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
KEY_USAGES: dict[str, str] = {
    "signing": "digital_signature",
    "digital signature": "digital_signature",
    "content commitment": "content_commitment",
    "key encipherment": "key_encipherment",
    "key agreement": "key_agreement",
    "data encipherment": "data_encipherment",
    "cert sign": "key_cert_sign",
    "crl sign": "crl_sign",
    "encipher only": "encipher_only",
    "decipher only": "decipher_only",
}
#: extendedKeyUsage purposes by dotted OID.
EXTENDED_KEY_USAGES: dict[str, str] = {
    "any": "2.5.29.37.0",
    "server auth": "1.3.6.1.5.5.7.3.1",
    "client auth": "1.3.6.1.5.5.7.3.2",
    "code signing": "1.3.6.1.5.5.7.3.3",
    "email protection": "1.3.6.1.5.5.7.3.4",
    "s/mime": "1.3.6.1.5.5.7.3.4",
    "ipsec end system": "1.3.6.1.5.5.7.3.5",
    "ipsec tunnel": "1.3.6.1.5.5.7.3.6",
    "ipsec user": "1.3.6.1.5.5.7.3.7",
    "timestamping": "1.3.6.1.5.5.7.3.8",
    "ocsp signing": "1.3.6.1.5.5.7.3.9",
    "microsoft sgc": "1.3.6.1.4.1.311.10.3.3",
    "netscape sgc": "2.16.840.1.113730.4.1",
}
ALL_USAGES: tuple[str, ...] = (*KEY_USAGES, *EXTENDED_KEY_USAGES)
DEFAULT_USAGES: tuple[str, ...] = ("digital signature", "key encipherment")
_NAMES_BY_BIT = {bit: name for name, bit in KEY_USAGES.items() if name != "signing"}
_NAMES_BY_OID = {oid: name for name, oid in reversed(EXTENDED_KEY_USAGES.items())}


@dataclass(frozen=True)
class UsageSet:
    """keyUsage bits and extended usage OIDs (in order, duplicates kept), as Go's x509 holds them."""

    bits: frozenset[str]
    extended: tuple[str, ...]

    def key_usage_names(self) -> list[str]:
        return [_NAMES_BY_BIT[bit] for bit in KEY_USAGE_BITS if bit in self.bits]

    def extended_names(self) -> list[str]:
        return [_NAMES_BY_OID.get(oid, oid) for oid in self.extended]


def expected_usages(usages: Sequence[str] | None, is_ca: bool) -> tuple[UsageSet, list[str]]:
    """What a CertificateRequest's usages (and isCA) ask for, and the names no table knows."""
    bits: set[str] = {"key_cert_sign"} if is_ca else set()
    extended: list[str] = []
    unknown: list[str] = []
    for name in usages or DEFAULT_USAGES:
        if name in KEY_USAGES:
            bits.add(KEY_USAGES[name])
        elif name in EXTENDED_KEY_USAGES:
            extended.append(EXTENDED_KEY_USAGES[name])
        else:
            unknown.append(str(name))
    return UsageSet(frozenset(bits), tuple(extended)), unknown


def csr_usages(csr: x509.CertificateSigningRequest) -> tuple[UsageSet | None, tuple[str, ...] | None]:
    """The keyUsage bits and known extended usages a CSR encodes (None where it has no such extension)."""
    bits: frozenset[str] | None = None
    extended: tuple[str, ...] | None = None
    try:
        key_usage = csr.extensions.get_extension_for_class(x509.KeyUsage).value
        readable = KEY_USAGE_BITS if key_usage.key_agreement else KEY_USAGE_BITS[:7]
        bits = frozenset(bit for bit in readable if getattr(key_usage, bit))
    except x509.ExtensionNotFound:
        pass
    try:
        purposes = csr.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        extended = tuple(oid.dotted_string for oid in purposes if oid.dotted_string in _NAMES_BY_OID)
    except x509.ExtensionNotFound:
        pass
    if bits is None and extended is None:
        return None, None
    return UsageSet(bits or frozenset(), extended or ()), extended


def basic_constraints_ca(csr: x509.CertificateSigningRequest) -> bool | None:
    """CA:TRUE/FALSE of the CSR's basicConstraints, None when it has none."""
    try:
        return bool(csr.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return None
