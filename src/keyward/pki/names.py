"""Distinguished names from an issuer's ``spec.subject`` (cert-manager's X509Subject field names)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

# In Go's pkix.Name order (country first, common name last), so names read as cert-manager writes them.
SUBJECT_LIST_FIELDS: tuple[tuple[str, ObjectIdentifier], ...] = (
    ("countries", NameOID.COUNTRY_NAME),
    ("organizations", NameOID.ORGANIZATION_NAME),
    ("organizationalUnits", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("localities", NameOID.LOCALITY_NAME),
    ("provinces", NameOID.STATE_OR_PROVINCE_NAME),
    ("streetAddresses", NameOID.STREET_ADDRESS),
    ("postalCodes", NameOID.POSTAL_CODE),
)
_KNOWN = {"commonName", "serialNumber", *(field for field, _ in SUBJECT_LIST_FIELDS)}


def _strings(spec: Mapping[str, Any], field: str) -> list[str]:
    value = spec.get(field)
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"{field} must be a list of strings, got {type(value).__name__}")
    if not all(isinstance(item, str) for item in value):
        raise ValueError(f"{field} must be a list of strings")
    return [item for item in value if item]


def _attribute(field: str, oid: ObjectIdentifier, value: str) -> x509.NameAttribute[str]:
    try:
        return x509.NameAttribute(oid, value)
    except ValueError as exc:  # e.g. a country that is not two letters, a common name over 64 characters
        raise ValueError(f'{field} "{value}": {exc}') from None


def subject_from_spec(spec: Mapping[str, Any], default_cn: str) -> x509.Name:
    """Build the CA subject from ``spec.subject``; commonName defaults to ``default_cn`` (the issuer's name).

    Unknown fields and malformed values raise ``ValueError`` naming the field.
    """
    unknown = sorted(set(spec) - _KNOWN)
    if unknown:
        known = ", ".join(sorted(_KNOWN))
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; known fields are: {known}")
    attributes = [
        _attribute(field, oid, value) for field, oid in SUBJECT_LIST_FIELDS for value in _strings(spec, field)
    ]
    serial = spec.get("serialNumber")
    if serial:
        attributes.append(_attribute("serialNumber", NameOID.SERIAL_NUMBER, str(serial)))
    common_name = spec.get("commonName") or default_cn
    if not isinstance(common_name, str):
        raise ValueError(f"commonName must be a string, got {type(common_name).__name__}")
    if len(common_name) > 64 and not spec.get("commonName"):
        raise ValueError(
            f'the default commonName "{common_name}" (the issuer name) is longer than 64 '
            "characters; set subject.commonName to a shorter name"
        )
    attributes.append(_attribute("commonName", NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)
