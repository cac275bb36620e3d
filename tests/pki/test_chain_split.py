"""cert-manager's chain convention: status.certificate never holds a self-signed root, status.ca does."""

from __future__ import annotations

from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from keyward.pki.pem import is_self_signed, split_chain

from .helpers import NOW, name


def certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


def test_the_root_goes_to_ca_and_never_into_the_chain() -> None:
    root_key, sub_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = certificate("Root", root_key, "Root", root_key, ca=True)
    sub = certificate("Sub", sub_key, "Root", root_key, ca=True)
    leaf = certificate("leaf", leaf_key, "Sub", sub_key, ca=False)
    assert is_self_signed(root) and not is_self_signed(sub) and not is_self_signed(leaf)
    assert split_chain([leaf, sub, root]) == ([leaf, sub], root)
    assert split_chain([leaf, root]) == ([leaf], root)
    assert split_chain([leaf, sub]) == ([leaf, sub], sub), "no root known: the highest intermediate is the CA"
    assert split_chain([root]) == ([root], root), "a lone self-signed certificate stays the chain"


def test_a_certificate_named_after_itself_but_signed_by_another_key_is_no_root() -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    impostor = certificate("Root", key, "Root", other, ca=True)
    leaf = certificate("leaf", ec.generate_private_key(ec.SECP256R1()), "Root", key, ca=False)
    assert not is_self_signed(impostor)
    assert split_chain([leaf, impostor]) == ([leaf, impostor], impostor)
