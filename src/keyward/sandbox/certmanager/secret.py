"""The content cert-manager writes into a Certificate's Secret once a request is issued (pure)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from keyward.sandbox.certmanager.keys import PrivateKey, encode_private_key
from keyward.sandbox.certmanager.names import (
    ALT_NAMES,
    CERTIFICATE_NAME,
    COMMON_NAME,
    IP_SANS,
    SECRET_LABEL,
    URI_SANS,
)
from keyward.sandbox.certmanager.policy import ISSUER_GROUP, ISSUER_KIND, ISSUER_NAME
from keyward.sandbox.certmanager.request import identity_of

TLS_SECRET_TYPE = "kubernetes.io/tls"  # noqa: S105 (a Secret type, not a secret)


@dataclass(frozen=True)
class SecretContent:
    data: dict[str, str | None]  # base64 values; None removes an entry (a merge patch deletes it)
    annotations: dict[str, str]
    labels: dict[str, str]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def template_metadata(spec: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(annotations, labels) from spec.secretTemplate."""
    template = spec.get("secretTemplate") or {}
    return dict(template.get("annotations") or {}), dict(template.get("labels") or {})


def certificate_annotations(name: str, spec: Mapping[str, Any], leaf: x509.Certificate) -> dict[str, str]:
    """The cert-manager.io/* annotations: which Certificate and issuer, and the names, at a glance."""
    ref = spec.get("issuerRef") or {}
    identity = identity_of(leaf)
    return {
        CERTIFICATE_NAME: name,
        ISSUER_NAME: str(ref.get("name") or ""),
        ISSUER_KIND: str(ref.get("kind") or "Issuer"),
        ISSUER_GROUP: str(ref.get("group") or ""),
        COMMON_NAME: identity.common_name,
        ALT_NAMES: ",".join(sorted(identity.dns_names)),
        IP_SANS: ",".join(sorted(str(ip) for ip in identity.ip_addresses)),
        URI_SANS: ",".join(sorted(identity.uris)),
    }


def tls_secret_content(
    name: str,
    spec: Mapping[str, Any],
    chain_pem: bytes,
    ca_pem: bytes,
    leaf: x509.Certificate,
    key: PrivateKey,
    encoding: str,
) -> SecretContent:
    """tls.crt (the chain as issued), tls.key (spec.privateKey.encoding), ca.crt (if the issuer gave one)."""
    template_annotations, template_labels = template_metadata(spec)
    return SecretContent(
        data={
            "tls.crt": _b64(chain_pem),
            "tls.key": _b64(encode_private_key(key, encoding)),
            "ca.crt": _b64(ca_pem) if ca_pem else None,
        },
        annotations={**template_annotations, **certificate_annotations(name, spec, leaf)},
        labels={**template_labels, SECRET_LABEL: "true"},
    )
