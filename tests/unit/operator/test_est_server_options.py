"""The operator's EST server options: one TLS source, well-formed, checked before anything starts."""

from __future__ import annotations

import pytest

from keyward.errors import UserError
from keyward.operator.settings import load_settings


def test_tls_from_a_secret_or_from_an_issuer_for_host_names() -> None:
    by_secret = load_settings(
        {"est_tls_secret": "keyward-system/est-tls", "est_listen": "127.0.0.1:9443"}, env={}
    )
    assert (by_secret.est_tls_secret, by_secret.est_issuer, str(by_secret.est_listen)) == (
        "keyward-system/est-tls",
        None,
        "127.0.0.1:9443",
    )
    by_issuer = load_settings(
        {
            "est_issuer": "TCSIssuer/ns/tls-ca",
            "est_hostnames": ("est.example,10.0.0.5", "est.example", "localhost"),
        },
        env={},
    )
    assert by_issuer.est_hostnames == ("est.example", "10.0.0.5", "localhost")
    from_env = load_settings(
        env={"KEYWARD_EST_ISSUER": "TCSClusterIssuer/root", "KEYWARD_EST_HOSTNAMES": "a.example, b.example"}
    )
    assert (from_env.est_issuer, from_env.est_hostnames) == (
        "TCSClusterIssuer/root",
        ("a.example", "b.example"),
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"est_tls_secret": "ns/tls", "est_issuer": "TCSIssuer/ns/ca", "est_hostnames": ("a",)},
            "--est-tls-secret and --est-issuer are both set: choose one source",
        ),
        ({"est_tls_secret": "just-a-name"}, "--est-tls-secret 'just-a-name' is not NAMESPACE/NAME"),
        (
            {"est_issuer": "TCSIssuer/ca", "est_hostnames": ("a",)},
            "--est-issuer: issuer reference 'TCSIssuer/ca'",
        ),
        ({"est_issuer": "TCSIssuer/ns/ca"}, "--est-issuer needs --est-hostnames: list the names EST clients"),
    ],
)
def test_bad_tls_options_are_one_line_naming_the_fix(flags: dict[str, object], message: str) -> None:
    with pytest.raises(UserError) as raised:
        load_settings(flags, env={})
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)
