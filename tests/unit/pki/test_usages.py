"""The usage vocabulary of cert-manager and Kubernetes CSRs, mapped to keyUsage and extendedKeyUsage."""

from __future__ import annotations

import pytest
from cryptography import x509

from keyward.pki.errors import RequestError
from keyward.pki.usages import EXTENDED_KEY_USAGES, KEY_USAGE_BITS, resolve_usages

ALL_BITS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)

# Written out independently of the module under test: the OIDs as RFC 5280 and the vendors define them.
EXPECTED_EKU_OIDS = {
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
EXPECTED_BITS = {
    "signing": "digital_signature",
    "digital signature": "digital_signature",
    "content commitment": "content_commitment",
    "key encipherment": "key_encipherment",
    "key agreement": "key_agreement",
    "data encipherment": "data_encipherment",
    "cert sign": "key_cert_sign",
    "crl sign": "crl_sign",
}


def set_bits(key_usage: x509.KeyUsage | None) -> set[str]:
    assert key_usage is not None
    bits = {bit for bit in ALL_BITS if getattr(key_usage, bit)}
    if key_usage.key_agreement:
        bits |= {bit for bit in ("encipher_only", "decipher_only") if getattr(key_usage, bit)}
    return bits


def test_vocabulary_is_complete() -> None:
    assert set(KEY_USAGE_BITS) == {*EXPECTED_BITS, "encipher only", "decipher only"}
    assert set(EXTENDED_KEY_USAGES) == set(EXPECTED_EKU_OIDS)


@pytest.mark.parametrize(("usage", "bit"), sorted(EXPECTED_BITS.items()))
def test_each_key_usage_sets_its_bit_only(usage: str, bit: str) -> None:
    resolved = resolve_usages([usage])
    assert set_bits(resolved.key_usage) == {bit}
    assert resolved.extended == ()


@pytest.mark.parametrize(
    ("usage", "bit"), [("encipher only", "encipher_only"), ("decipher only", "decipher_only")]
)
def test_encipher_and_decipher_only_come_with_key_agreement(usage: str, bit: str) -> None:
    assert set_bits(resolve_usages(["key agreement", usage]).key_usage) == {"key_agreement", bit}


@pytest.mark.parametrize("usage", ["encipher only", "decipher only"])
def test_encipher_or_decipher_only_without_key_agreement_is_refused(usage: str) -> None:
    with pytest.raises(RequestError, match='require "key agreement"'):
        resolve_usages([usage])


@pytest.mark.parametrize(("usage", "oid"), sorted(EXPECTED_EKU_OIDS.items()))
def test_each_extended_usage_maps_to_its_oid(usage: str, oid: str) -> None:
    resolved = resolve_usages([usage])
    assert [o.dotted_string for o in resolved.extended] == [oid]
    assert resolved.key_usage is None


@pytest.mark.parametrize("usages", [None, [], ()])
def test_default_is_digital_signature_and_key_encipherment(usages: list[str] | None) -> None:
    resolved = resolve_usages(usages)
    assert set_bits(resolved.key_usage) == {"digital_signature", "key_encipherment"}
    assert resolved.extended == ()


def test_mixed_usages_keep_order_and_drop_duplicates() -> None:
    resolved = resolve_usages(
        ["server auth", "digital signature", "s/mime", "client auth", "email protection"]
    )
    assert [o.dotted_string for o in resolved.extended] == [
        "1.3.6.1.5.5.7.3.1",
        "1.3.6.1.5.5.7.3.4",
        "1.3.6.1.5.5.7.3.2",
    ]
    assert set_bits(resolved.key_usage) == {"digital_signature"}


@pytest.mark.parametrize("unknown", ["foo", "Server Auth", "serverAuth", ""])
def test_unknown_usage_is_named_with_the_valid_ones(unknown: str) -> None:
    with pytest.raises(RequestError) as caught:
        resolve_usages(["digital signature", unknown])
    message = str(caught.value)
    assert f'unknown usage "{unknown}"' in message
    assert "valid usages are: signing, digital signature" in message
    assert "netscape sgc" in message


def test_several_unknown_usages_are_all_named() -> None:
    with pytest.raises(RequestError, match='unknown usages "foo", "bar"'):
        resolve_usages(["foo", "server auth", "bar"])


def test_cert_sign_is_added_for_ca_certificates() -> None:
    assert set_bits(resolve_usages(["server auth"]).with_cert_sign().key_usage) == {"key_cert_sign"}
    assert set_bits(resolve_usages(None).with_cert_sign().key_usage) == {
        "digital_signature",
        "key_encipherment",
        "key_cert_sign",
    }
    with_agreement = resolve_usages(["key agreement", "encipher only"]).with_cert_sign()
    assert set_bits(with_agreement.key_usage) == {"key_agreement", "encipher_only", "key_cert_sign"}
