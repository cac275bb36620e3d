"""What a request asks for (duration, usages, isCA), checked against what an issuer allows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from keyward.pki.durations import format_duration
from keyward.pki.errors import RequestError
from keyward.pki.policy import IssuerPolicy, granted_usages
from keyward.pki.usages import Usages, resolve_usages

__all__ = ["IssuerPolicy", "RequestProfile", "check_ca_allowed", "check_profile", "effective_duration"]


@dataclass(frozen=True)
class RequestProfile:
    """The certificate a request asks for, beyond the CSR itself."""

    duration: timedelta | None = None  # requested; None → policy default
    usages: tuple[str, ...] = ()  # cert-manager/K8s vocabulary; () → default
    is_ca: bool = False


def effective_duration(profile: RequestProfile, policy: IssuerPolicy) -> timedelta:
    """The validity to issue: the requested duration (or the policy default), capped at the maximum.

    A duration above ``max_duration`` is capped rather than refused, as cert-manager's own issuers do and
    as the Kubernetes CSR API allows ("the signer may issue shorter"): the user still gets a working
    certificate, and cert-manager renews it in time because it reads the real notAfter. A duration below
    ``min_duration`` is refused, since such a certificate would need renewing before it could be used.
    """
    duration = policy.default_duration if profile.duration is None else profile.duration
    if duration < policy.min_duration:
        raise RequestError(
            f"requested duration {format_duration(duration)} is below this issuer's minimum "
            f"of {format_duration(policy.min_duration)}; request a longer duration"
        )
    return min(duration, policy.max_duration)


def check_ca_allowed(profile: RequestProfile, policy: IssuerPolicy) -> None:
    """Refuse isCA unless the issuer allows sub-CAs: a CA certificate can mint certificates of its own."""
    if profile.is_ca and not policy.allow_ca:
        raise RequestError(
            "the request asks for a CA certificate (isCA) but this issuer does not issue CA "
            "certificates; set spec.allowCA: true on the issuer or drop isCA from the request"
        )


def check_profile(
    profile: RequestProfile, policy: IssuerPolicy, public_key: CertificatePublicKeyTypes
) -> tuple[timedelta, Usages]:
    """All profile checks at once: the duration to issue and the usages to grant the request's
    ``public_key`` (see ``policy.granted_usages``); ``RequestError`` otherwise."""
    check_ca_allowed(profile, policy)
    names = granted_usages(
        profile.usages, is_ca=profile.is_ca, rsa_key=isinstance(public_key, rsa.RSAPublicKey), policy=policy
    )
    usages = resolve_usages(names)
    return effective_duration(profile, policy), usages.with_cert_sign() if profile.is_ca else usages
