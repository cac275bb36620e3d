"""Token-backed CA issuers (TCSIssuer, TCSClusterIssuer): the *check* and the *sign*.

check: make sure the issuer's CA key and certificate are in the token (creating them for a new
self-signed issuer) and usable; anything that stops it from signing is an ``IssuerNotReady`` with a
reason and a message for the Ready condition. sign: turn a checked request into a chain with the
token key. Both are blocking (PKCS#11): the check runs in the key store's worker threads, the sign (with
``decode_and_sign``, the decoding too) in its signing processes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from keyward.issuers.contract import SigningRequest
from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.objects import RequestFields
from keyward.issuers.tcs.quotes import QuoteEvidence, quote_evidence, verified_extension
from keyward.keystore import KeySpec, TokenKeyStore
from keyward.pki.durations import parse_duration
from keyward.pki.issue import (
    CertificateAuthority,
    IssuedCertificate,
    certificate_matches_key,
    issue_certificate,
    self_signed_ca,
    subject_from_spec,
)
from keyward.pki.policy import (
    DEFAULT_EXTENDED_USAGES,
    DEFAULT_FORBIDDEN_ORGANIZATIONS,
    IssuerPolicy,
    check_extended_usages,
    check_pattern,
)

DEFAULT_CA_DURATION = timedelta(hours=87600)
DEFAULT_MAX_DURATION = timedelta(hours=8760)
ROTATION_HINT = "to rotate the CA, create a new issuer and move requests to it"


@dataclass(frozen=True)
class TcsIssuerSpec:
    """A TCSIssuer/TCSClusterIssuer spec with its defaults applied and its values checked."""

    name: str
    secret_name: str = ""
    self_sign: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    key: KeySpec = field(default_factory=KeySpec.default)
    #: spec.privateKey was given: a provisioned CA key must then be of that kind too.
    key_given: bool = False
    subject: x509.Name | None = None
    ca_duration: timedelta = DEFAULT_CA_DURATION
    policy: IssuerPolicy = field(default_factory=IssuerPolicy)
    est: Mapping[str, Any] | None = None

    @classmethod
    def parse(cls, name: str, spec: Mapping[str, Any]) -> TcsIssuerSpec:
        private_key = spec.get("privateKey") or {}
        algorithm = str(private_key.get("algorithm") or "RSA")
        size = private_key.get("size") or (256 if algorithm == "ECDSA" else 3072)
        try:
            key = KeySpec(algorithm, int(size))  # type: ignore[arg-type]
        except (ValueError, TypeError) as exc:
            raise IssuerNotReady("InvalidSpec", f"spec.privateKey: {exc}") from None
        try:
            subject = subject_from_spec(spec.get("subject") or {}, default_cn=name)
        except ValueError as exc:
            raise IssuerNotReady("InvalidSpec", f"spec.subject: {exc}") from None
        max_duration = _duration(spec, "maxDuration", DEFAULT_MAX_DURATION)
        try:
            policy = _issuer_policy(spec, max_duration)
        except ValueError as exc:
            raise IssuerNotReady("InvalidSpec", f"spec.policy{exc}") from None
        return cls(
            name=name,
            secret_name=str(spec.get("secretName") or ""),
            self_sign=bool(spec.get("selfSign", True)),
            labels={str(k): str(v) for k, v in (spec.get("labels") or {}).items()},
            key=key,
            key_given=bool(private_key),
            subject=subject,
            ca_duration=_duration(spec, "caDuration", DEFAULT_CA_DURATION),
            policy=policy,
            est=spec.get("est") or None,
        )


def _issuer_policy(spec: Mapping[str, Any], max_duration: timedelta) -> IssuerPolicy:
    """The issuer's limits: maxDuration and allowCA, and ``spec.policy`` (docs/POLICY.md), whose absent
    fields keep the defaults. A ``ValueError`` message starts with the field's path below spec.policy."""
    rules = spec.get("policy") or {}
    if not isinstance(rules, Mapping):
        raise ValueError(f" must be an object, not {type(rules).__name__}")
    usages = _strings(rules, "allowedExtendedKeyUsages", lambda name: check_extended_usages((name,)))
    organizations = _strings(rules, "forbiddenSubjectOrganizations")
    ranges = _strings(rules, "allowedIPRanges")
    return IssuerPolicy(
        max_duration=max_duration,
        default_duration=min(IssuerPolicy().default_duration, max_duration),
        allow_ca=bool(spec.get("allowCA", False)),
        allowed_extended_usages=DEFAULT_EXTENDED_USAGES if usages is None else frozenset(usages),
        allowed_dns_names=_strings(rules, "allowedDNSNames", check_pattern),
        allowed_ip_ranges=None if ranges is None else tuple(map(_network, ranges)),
        allowed_uris=_strings(rules, "allowedURIs", check_pattern),
        allowed_email_addresses=_strings(rules, "allowedEmailAddresses", check_pattern),
        forbidden_subject_organizations=DEFAULT_FORBIDDEN_ORGANIZATIONS
        if organizations is None
        else organizations,
    )


def _strings(
    rules: Mapping[str, Any], field_name: str, check: Callable[[str], None] | None = None
) -> tuple[str, ...] | None:
    """A list of strings under spec.policy, each passing ``check``; None when absent (or null)."""
    value = rules.get(field_name)
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise ValueError(f".{field_name} must be a list of strings")
    for index, item in enumerate(value):
        try:
            if check is not None:
                check(item)
        except ValueError as exc:
            raise ValueError(f".{field_name}[{index}]: {exc}") from None
    return tuple(value)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR range as Go's net.ParseCIDR reads it (the CRD's format: cidr): host bits are cleared."""
    try:
        if "/" in text:
            return ipaddress.ip_network(text, strict=False)
    except ValueError:
        pass
    raise ValueError(f'.allowedIPRanges: "{text}" is not a CIDR range such as 10.0.0.0/8')


def _duration(spec: Mapping[str, Any], field_name: str, default: timedelta) -> timedelta:
    value = spec.get(field_name)
    if not value:
        return default
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise IssuerNotReady("InvalidSpec", f"spec.{field_name}: {exc}") from None


@dataclass(frozen=True)
class KnownCa:
    """Evidence that an issuer already has a CA (its Secret's certificate, or the fingerprint its status
    recorded): a token without that CA's key must never get a new one in its place."""

    fingerprint: bytes
    where: str  # e.g. "Secret ns/name holds", "status.caFingerprint records": for messages

    @classmethod
    def of(cls, certificate: x509.Certificate, where: str) -> KnownCa:
        return cls(certificate.fingerprint(hashes.SHA256()), f"{where} holds")

    @classmethod
    def recorded(cls, fingerprint: str, where: str) -> KnownCa | None:
        """From ``ca_fingerprint``'s text; None when it is not one (a user wrote something else)."""
        try:
            return cls(bytes.fromhex(fingerprint.replace(":", "")), f"{where} records")
        except ValueError:
            return None


def ca_fingerprint(certificate: x509.Certificate) -> str:
    """How status.caFingerprint records a CA: SHA-256 of its DER, hex with colons."""
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


class KeyNeeded(IssuerNotReady):
    """The token holds no CA for an issuer with spec.selfSign false: key provisioning must bring it."""


def ensure_ca(
    store: TokenKeyStore,
    label: str,
    spec: TcsIssuerSpec,
    *,
    known: Sequence[KnownCa] = (),
    recorded: KnownCa | None = None,
    create: bool = True,
    now: datetime | None = None,
) -> CertificateAuthority:
    """The issuer's CA from the token, created there first for a new self-signed issuer. Blocking.

    Never replaces what it finds: a key without a certificate, a certificate that does not match its
    key, or a key of another type than the spec asks for all stop the issuer with a reason. And never
    creates a CA for an issuer that already had one (``known``: its Secret holds a CA certificate, or
    its status recorded one) — a token that lost the key (a pod rescheduled onto an empty volume, a
    second replica with a token of its own) stops the issuer instead of silently replacing its CA. A
    token whose CA is not the one the issuer's status ``recorded`` stops it too. Without ``create`` (a
    standby replica) a missing CA is reported, never made.
    """
    store.recover_pending(label)  # a crash while this CA was being created: finish it or discard it
    key = store.find_key(label)
    certificate = store.find_certificate(label)
    if key is None and certificate is None and not spec.self_sign:
        raise KeyNeeded(
            "Pending",
            f"spec.selfSign is false and the token holds no CA key for this issuer (label {label}); "
            "it comes by key provisioning (a QuoteAttestation)",
        )
    if key is None and certificate is None and known:
        raise IssuerNotReady(
            "CAKeyMissing",
            f"{known[0].where} this issuer's CA certificate, but the token holds no key for it "
            f"(label {label}); nothing is signed and no new CA is made: restore the token, or give it the "
            "key (key provisioning: spec.selfSign false with a QuoteAttestation, or keyward provision-key); "
            f"to start over with a new CA, delete the issuer and create it again ({ROTATION_HINT})",
        )
    if key is None and certificate is None and not create:
        raise IssuerNotReady(
            "NotCreatedYet",
            f"the token holds no CA key labelled {label} yet; the leading replica creates the CA",
        )
    if key is None and certificate is None:
        subject = spec.subject
        assert subject is not None
        key, certificate = store.create_ca(
            label, spec.key, lambda new_key: self_signed_ca(new_key, subject, spec.ca_duration, now=now)
        )
        return CertificateAuthority(certificate=certificate, key=key)
    if key is None:
        raise IssuerNotReady(
            "KeyMissing",
            f"the token holds a CA certificate labelled {label} but no private "
            f"key; the certificate is kept for inspection: {ROTATION_HINT}",
        )
    if certificate is None:
        raise IssuerNotReady(
            "CertificateMissing",
            f"the token holds a CA key labelled {label} but no "
            f"certificate; the key is never replaced silently: {ROTATION_HINT}",
        )
    if not certificate_matches_key(certificate, key.public_key()):
        raise IssuerNotReady(
            "KeyMismatch",
            f"the CA certificate labelled {label} does not match the CA key in the token: {ROTATION_HINT}",
        )
    try:
        actual = KeySpec.of_public_key(key.public_key())
    except ValueError as exc:
        raise IssuerNotReady("UnsupportedKey", f"the CA key in the token: {exc}") from None
    if (spec.self_sign or spec.key_given) and actual != spec.key:
        raise IssuerNotReady(
            "KeyChangeRefused",
            f"spec.privateKey asks for {spec.key} but the CA key in the "
            f"token is {actual}; the CA key is never replaced: {ROTATION_HINT}",
        )
    if certificate.not_valid_after_utc <= (now or datetime.now(UTC)):
        raise IssuerNotReady(
            "CAExpired", f"the CA certificate expired at {certificate.not_valid_after_utc}: {ROTATION_HINT}"
        )
    if recorded is not None and recorded.fingerprint != certificate.fingerprint(hashes.SHA256()):
        raise IssuerNotReady(
            "CAMismatch",
            f"the token's CA (label {label}) is not the one {recorded.where} for this issuer; "
            "nothing is signed and nothing is overwritten: restore the token that holds the issuer's CA "
            f"key, or delete the issuer and create it again to start over ({ROTATION_HINT})",
        )
    return CertificateAuthority(certificate=certificate, key=key)


def sign(
    ca: CertificateAuthority,
    request: SigningRequest,
    policy: IssuerPolicy,
    *,
    issuer_extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
) -> IssuedCertificate:
    """Issue the certificate for a checked request with the CA key (in the token). Blocking.

    A ``SigningRequest`` holds a CSR whose signature was verified when it was decoded (``load_csr``, or
    the EST server's proof-of-possession check), so it is not verified a second time here."""
    return issue_certificate(
        request.csr, request.profile, ca, policy, signature_checked=True, issuer_extensions=issuer_extensions
    )


def decode_and_sign(
    decode: Callable[[RequestFields], SigningRequest],
    fields: RequestFields,
    ca: CertificateAuthority,
    policy: IssuerPolicy,
    verified_quote: bytes | None = None,
) -> IssuedCertificate | QuoteEvidence:
    """Decode a request's fields with ``decode`` (``from_certificate_request``, ``from_csr``) and sign
    it: one job for a signing process, so that parsing and the proof-of-possession check run there too.

    A request carrying an SGX quote (``issuers.tcs.quotes``) is signed only when ``verified_quote`` is
    that very quote, with the "SGX Quote has been verified" extension; otherwise its evidence comes back,
    unsigned, for the caller to have it verified."""
    request = decode(fields)
    evidence = quote_evidence(request.csr)
    if evidence is None:
        return sign(ca, request, policy)
    if verified_quote is None or verified_quote != evidence.quote:
        return evidence
    return sign(ca, request, policy, issuer_extensions=(verified_extension(),))


#: The fields of a TCS issuer's spec.policy (docs/POLICY.md).
POLICY_FIELDS = (
    "allowedDNSNames",
    "allowedIPRanges",
    "allowedURIs",
    "allowedEmailAddresses",
    "allowedExtendedKeyUsages",
    "forbiddenSubjectOrganizations",
)


def parse_policy(rules: Mapping[str, Any], *, max_duration: timedelta = DEFAULT_MAX_DURATION) -> IssuerPolicy:
    """An issuance policy written like a TCS issuer's ``spec.policy`` (``keyward est-server --policy``),
    where no schema has pruned unknown fields; ``ValueError`` whose message starts with the offending
    field's path below it."""
    unknown = sorted(set(rules) - set(POLICY_FIELDS)) if isinstance(rules, Mapping) else []
    if unknown:
        raise ValueError(f".{unknown[0]}: not a policy field; the fields are {', '.join(POLICY_FIELDS)}")
    return _issuer_policy({"policy": rules}, max_duration)
