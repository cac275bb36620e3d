"""The key usage vocabulary shared by cert-manager and Kubernetes CSRs, mapped onto X.509 extensions.

Names are matched exactly, as both APIs spell them (cert-manager's webhook and the Kubernetes API server
only admit these exact strings), so anything else is a request we cannot honour.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from keyward.pki.errors import RequestError

#: keyUsage bits, by the name of the cryptography ``x509.KeyUsage`` argument.
KEY_USAGE_BITS: dict[str, str] = {
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

MICROSOFT_SGC = ObjectIdentifier("1.3.6.1.4.1.311.10.3.3")
NETSCAPE_SGC = ObjectIdentifier("2.16.840.1.113730.4.1")
IPSEC_END_SYSTEM = ObjectIdentifier("1.3.6.1.5.5.7.3.5")
IPSEC_TUNNEL = ObjectIdentifier("1.3.6.1.5.5.7.3.6")
IPSEC_USER = ObjectIdentifier("1.3.6.1.5.5.7.3.7")

#: extendedKeyUsage purposes.
EXTENDED_KEY_USAGES: dict[str, ObjectIdentifier] = {
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "s/mime": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "ipsec end system": IPSEC_END_SYSTEM,
    "ipsec tunnel": IPSEC_TUNNEL,
    "ipsec user": IPSEC_USER,
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "microsoft sgc": MICROSOFT_SGC,
    "netscape sgc": NETSCAPE_SGC,
}

VALID_USAGES: tuple[str, ...] = (*KEY_USAGE_BITS, *EXTENDED_KEY_USAGES)
DEFAULT_USAGES: tuple[str, ...] = ("digital signature", "key encipherment")


@dataclass(frozen=True)
class Usages:
    """What a certificate may be used for: ``key_usage`` None and ``extended`` empty mean "omit"."""

    key_usage: x509.KeyUsage | None
    extended: tuple[ObjectIdentifier, ...]

    @cached_property
    def extensions(self) -> tuple[x509.Extension[x509.ExtensionType], ...]:
        """keyUsage (critical, RFC 5280 §4.2.1.3) and extendedKeyUsage as certificate extensions; built once
        per combination, since ``resolve_usages`` hands out one ``Usages`` per combination."""
        extensions: list[x509.Extension[x509.ExtensionType]] = []
        if self.key_usage is not None:
            extensions.append(x509.Extension(self.key_usage.oid, True, self.key_usage))
        if self.extended:
            extended = x509.ExtendedKeyUsage(list(self.extended))
            extensions.append(x509.Extension(extended.oid, False, extended))
        return tuple(extensions)

    def with_cert_sign(self) -> Usages:
        """The same usages plus keyCertSign, which a CA certificate needs to sign anything."""
        bits = _bits_of(self.key_usage)
        bits["key_cert_sign"] = True
        return Usages(key_usage=x509.KeyUsage(**bits), extended=self.extended)


def _bits_of(key_usage: x509.KeyUsage | None) -> dict[str, bool]:
    names = set(KEY_USAGE_BITS.values())
    if key_usage is None:
        return dict.fromkeys(names, False)
    # cryptography raises when encipher_only/decipher_only are read without key_agreement.
    readable = names if key_usage.key_agreement else names - {"encipher_only", "decipher_only"}
    return {name: name in readable and bool(getattr(key_usage, name)) for name in names}


def resolve_usages(usages: Sequence[str] | None) -> Usages:
    """Map usage names to extensions; empty or None means cert-manager's default (digital signature,
    key encipherment). Unknown names, and encipher/decipher only without key agreement (meaningless per
    RFC 5280), raise ``RequestError``.
    """
    return _resolve(tuple(usages) if usages else DEFAULT_USAGES)


@functools.lru_cache(maxsize=256)
def _resolve(names: tuple[str, ...]) -> Usages:
    """``resolve_usages`` for one tuple of names; requests repeat a handful of combinations, and the
    result is immutable, so it is computed once per combination."""
    unknown = [name for name in names if name not in KEY_USAGE_BITS and name not in EXTENDED_KEY_USAGES]
    if unknown:
        listed = ", ".join(f'"{name}"' for name in unknown)
        noun = "usage" if len(unknown) == 1 else "usages"
        raise RequestError(f"unknown {noun} {listed}; valid usages are: {', '.join(VALID_USAGES)}")
    bits = {KEY_USAGE_BITS[name] for name in names if name in KEY_USAGE_BITS}
    if bits & {"encipher_only", "decipher_only"} and "key_agreement" not in bits:
        raise RequestError(
            'usages "encipher only" and "decipher only" require "key agreement"; add it to the usages'
        )
    key_usage = None
    if bits:
        key_usage = x509.KeyUsage(**{name: name in bits for name in set(KEY_USAGE_BITS.values())})
    extended: list[ObjectIdentifier] = []
    for name in names:
        oid = EXTENDED_KEY_USAGES.get(name)
        if oid is not None and oid not in extended:
            extended.append(oid)
    return Usages(key_usage=key_usage, extended=tuple(extended))
