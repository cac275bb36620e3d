"""Issuer policy applied to what a request asks for: duration bounds, isCA and usages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from keyward.pki.errors import RequestError
from keyward.pki.profile import IssuerPolicy, RequestProfile, check_profile, effective_duration
from keyward.pki.usages import EXTENDED_KEY_USAGES

POLICY = IssuerPolicy()
KEY = ec.generate_private_key(ec.SECP256R1()).public_key()


def test_defaults_match_the_documented_values() -> None:
    documented = IssuerPolicy(
        max_duration=timedelta(hours=8760),
        default_duration=timedelta(days=90),
        min_duration=timedelta(minutes=10),
        allow_ca=False,
        allowed_extended_usages=frozenset(EXTENDED_KEY_USAGES) - {"any", "code signing", "ocsp signing"},
        allowed_dns_names=None,
        allowed_ip_ranges=None,
        allowed_uris=None,
        allowed_email_addresses=None,
        forbidden_subject_organizations=("system:masters",),
    )
    assert IssuerPolicy() == documented
    assert RequestProfile() == RequestProfile(duration=None, usages=(), is_ca=False)


def test_no_duration_means_the_policy_default_of_90_days() -> None:
    assert effective_duration(RequestProfile(), POLICY) == timedelta(days=90)
    assert effective_duration(
        RequestProfile(), IssuerPolicy(default_duration=timedelta(days=7))
    ) == timedelta(days=7)


def test_requested_duration_within_bounds_is_honoured() -> None:
    assert effective_duration(RequestProfile(duration=timedelta(hours=1)), POLICY) == timedelta(hours=1)
    assert effective_duration(RequestProfile(duration=timedelta(minutes=10)), POLICY) == timedelta(minutes=10)


def test_duration_above_maximum_is_capped_not_refused() -> None:
    profile = RequestProfile(duration=timedelta(days=3650))
    assert effective_duration(profile, POLICY) == timedelta(hours=8760)
    assert effective_duration(profile, IssuerPolicy(max_duration=timedelta(days=30))) == timedelta(days=30)


@pytest.mark.parametrize("duration", [timedelta(minutes=9, seconds=59), timedelta(0), -timedelta(hours=1)])
def test_duration_below_minimum_is_refused(duration: timedelta) -> None:
    with pytest.raises(RequestError, match="below this issuer's minimum of 10m0s; request a longer duration"):
        effective_duration(RequestProfile(duration=duration), POLICY)


def test_is_ca_without_allow_ca_is_refused_with_the_fix() -> None:
    with pytest.raises(RequestError, match=r"set spec.allowCA: true on the issuer"):
        check_profile(RequestProfile(is_ca=True), POLICY, KEY)


def test_is_ca_with_allow_ca_adds_cert_sign() -> None:
    duration, usages = check_profile(RequestProfile(is_ca=True), IssuerPolicy(allow_ca=True), KEY)
    assert duration == timedelta(days=90)
    assert usages.key_usage is not None and usages.key_usage.key_cert_sign


def test_profile_check_resolves_usages() -> None:
    _, usages = check_profile(RequestProfile(usages=("server auth", "client auth")), POLICY, KEY)
    assert [oid.dotted_string for oid in usages.extended] == ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]
    with pytest.raises(RequestError, match='unknown usage "nonsense"'):
        check_profile(RequestProfile(usages=("nonsense",)), POLICY, KEY)
