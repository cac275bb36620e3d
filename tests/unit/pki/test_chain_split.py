"""cert-manager's chain convention: status.certificate never holds a self-signed root, status.ca does."""

from __future__ import annotations

from keyward.pki.pem import is_self_signed, split_chain
from tests.support.pki import Issuer, ec_key, name


def test_the_root_goes_to_ca_and_never_into_the_chain() -> None:
    root = Issuer.self_signed("Root")
    sub_key = ec_key()
    sub = root.issue(name("Sub"), sub_key.public_key())
    leaf = Issuer(sub, sub_key).issue(name("leaf"), ec_key().public_key())
    assert is_self_signed(root.certificate) and not is_self_signed(sub) and not is_self_signed(leaf)
    assert split_chain([leaf, sub, root.certificate]) == ([leaf, sub], root.certificate)
    assert split_chain([leaf, sub]) == ([leaf, sub], sub), "no root known: the highest intermediate is the CA"
    assert split_chain([root.certificate]) == ([root.certificate], root.certificate), (
        "a lone self-signed certificate stays the chain"
    )


def test_a_certificate_named_after_itself_but_signed_by_another_key_is_no_root() -> None:
    root = Issuer.self_signed("Root")
    key = ec_key()
    impostor = Issuer(root.certificate, ec_key()).issue(name("Root"), key.public_key())
    leaf = Issuer(impostor, key).issue(name("leaf"), ec_key().public_key())
    assert impostor.subject == impostor.issuer and not is_self_signed(impostor)
    assert split_chain([leaf, impostor]) == ([leaf, impostor], impostor)
