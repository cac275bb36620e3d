"""Attestation evidence over the wrapping key: which provider a token gets, the seed's nonce format, and
the SGX toolkit's export format (read here from bytes laid out as the toolkit documents them: there is
no SGX enclave on this machine)."""

from __future__ import annotations

import struct
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import Attribute, Mechanism, ObjectClass

from keyward.keystore import TokenKeyStore, UnsupportedOperation, evidence
from keyward.keystore.sessions import ThreadSession
from keyward.keystore.unwrap import wrapping_label
from tests.unit.issuers.sgx_requests import exported_public_key


def test_the_random_nonce_is_28_random_bytes_and_a_little_endian_timestamp() -> None:
    first, second = evidence.nonce(True, now=1_700_000_000), evidence.nonce(True, now=1_700_000_000)
    assert len(first) == evidence.NONCE_BYTES == 32
    assert struct.unpack("<I", first[28:]) == (1_700_000_000,)
    assert first[:28] != second[:28], "fresh random bytes every time"
    assert struct.unpack("<I", evidence.nonce()[28:])[0] == pytest.approx(time.time(), abs=5)


def test_without_random_nonces_the_nonce_is_the_seeds_fixed_sequence() -> None:
    assert evidence.nonce(False) == bytes(range(32))


def test_a_token_without_the_quote_mechanism_gives_no_evidence_and_says_so(
    store: TokenKeyStore, label: str
) -> None:
    nonce = evidence.nonce()
    public_key, first = store.prepare_wrapping_key(label, nonce)
    assert (first.provider, first.quote, first.quote_version, first.nonce) == ("none", b"", "none", nonce)
    assert not first.attested
    assert isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == 3072
    again, second = store.prepare_wrapping_key(label, evidence.nonce(False))
    assert again == public_key, "the wrapping key in the token is reused"
    assert second.nonce == bytes(range(32))
    assert store.delete_wrapping_key(label)


def test_the_sgx_provider_is_chosen_only_where_the_toolkit_mechanism_is_offered() -> None:
    assert evidence.choose({Mechanism.RSA_PKCS_OAEP}).name == "none"
    chosen = evidence.choose({Mechanism.RSA_PKCS_OAEP, evidence.CKM_EXPORT_ECDSA_QUOTE_RSA_PUBLIC_KEY})
    assert (chosen.name, chosen.quote_version, chosen.token_object) == ("sgx", "ECDSA Quote 3", False)


def test_the_sgx_quote_call_reaches_the_module_and_a_token_without_it_refuses(
    store: TokenKeyStore, label: str
) -> None:
    """C_WrapKey with the toolkit's mechanism, no wrapping key and the 40-byte parameters reaches
    SoftHSM2, which does not know the mechanism: a clear refusal, not a crash."""
    store.generate_wrapping_key(label)

    def quote(session: ThreadSession) -> bytes:
        found = {Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: wrapping_label(label)}
        (public,) = session.find(found)
        return evidence.SgxQuotes().attest(public, evidence.nonce())

    with pytest.raises(UnsupportedOperation, match="does not support the mechanism"):
        store._sessions.call("quote the wrapping key", quote)
    with pytest.raises(ValueError, match="nonce is 32 bytes"):
        evidence.SgxQuotes().attest(None, b"short")


def test_the_toolkits_export_format_gives_the_key_and_the_quote() -> None:
    key = rsa.generate_private_key(65537, 3072).public_key()
    parsed, quote = evidence.parse_quoted_public_key(exported_public_key(key) + b"QUOTE")
    assert parsed.public_numbers() == key.public_numbers() and quote == b"QUOTE"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x01\x02", "too few"),
        (struct.pack("@LL", 3, 4096) + b"\x01\x00\x01", "do not fit"),
        (struct.pack("@LL", 0, 384) + bytes(384), "do not fit"),
        (struct.pack("@LL", 1, 8) + b"\x02" + bytes(8), "not valid"),
    ],
    ids=["short", "modulus-past-the-end", "no-exponent", "even-exponent"],
)
def test_a_malformed_export_is_a_value_error(data: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        evidence.parse_quoted_public_key(data)
