"""KeySpec: the CA key kinds keyward creates, refused early and clearly when unsupported."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st

from keyward.keystore import KeySpec


@pytest.mark.parametrize(
    ("algorithm", "size"), [("RSA", 2048), ("RSA", 3072), ("RSA", 4096), ("ECDSA", 256), ("ECDSA", 384)]
)
def test_supported_specs_are_accepted(algorithm: str, size: int) -> None:
    spec = KeySpec(algorithm, size)  # type: ignore[arg-type]
    assert (spec.algorithm, spec.size) == (algorithm, size)


def test_default_is_rsa_3072() -> None:
    assert KeySpec.default() == KeySpec("RSA", 3072)


@given(size=st.integers().filter(lambda size: size not in (2048, 3072, 4096)))
def test_unsupported_rsa_sizes_are_refused_with_the_choices(size: int) -> None:
    with pytest.raises(ValueError, match=r"RSA key size .* use one of 2048, 3072, 4096"):
        KeySpec("RSA", size)


@given(size=st.integers().filter(lambda size: size not in (256, 384)))
def test_unsupported_curves_are_refused_with_the_choices(size: int) -> None:
    with pytest.raises(ValueError, match=r"ECDSA key size .* use 256 \(P-256\) or 384 \(P-384\)"):
        KeySpec("ECDSA", size)


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="use 'RSA' or 'ECDSA'"):
        KeySpec("DSA", 2048)  # type: ignore[arg-type]


def test_spec_of_an_existing_public_key() -> None:
    assert KeySpec.of_public_key(ec.generate_private_key(ec.SECP384R1()).public_key()) == KeySpec(
        "ECDSA", 384
    )
    assert KeySpec.of_public_key(rsa.generate_private_key(65537, 2048).public_key()) == KeySpec("RSA", 2048)
    with pytest.raises(ValueError, match="use an RSA or ECDSA key"):
        KeySpec.of_public_key(ed25519.Ed25519PrivateKey.generate().public_key())


def test_ecdsa_specs_name_their_curve() -> None:
    assert isinstance(KeySpec("ECDSA", 256).curve, ec.SECP256R1)
    assert isinstance(KeySpec("ECDSA", 384).curve, ec.SECP384R1)
    assert str(KeySpec.default()) == "RSA-3072"
