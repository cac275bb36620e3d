"""The Kubernetes resources keyward reads and writes, named once, and how their byte fields decode."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any


def decode_bytes(value: Any) -> bytes | None:
    """A Kubernetes ``[]byte`` field (Secret data, CSR spec.request, status.certificate) as JSON carries
    it, base64; None when it is absent, not a string or not strict base64."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def kopf_name(self) -> str:
        """The ``plural.group`` spelling kopf accepts in handler decorators."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def __str__(self) -> str:
        return self.kopf_name


NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False)
SECRETS = Resource("", "v1", "secrets", "Secret", True)
EVENTS = Resource("", "v1", "events", "Event", True)
CSRS = Resource("certificates.k8s.io", "v1", "certificatesigningrequests", "CertificateSigningRequest", False)
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False)

TCS_GROUP = "tcs.intel.com"
TCS_ISSUERS = Resource(TCS_GROUP, "v1alpha1", "tcsissuers", "TCSIssuer", True)
TCS_CLUSTER_ISSUERS = Resource(TCS_GROUP, "v1alpha1", "tcsclusterissuers", "TCSClusterIssuer", False)
QUOTE_ATTESTATIONS = Resource(TCS_GROUP, "v1alpha2", "quoteattestations", "QuoteAttestation", True)

EST_GROUP = "est.mitre.org"
EST_ISSUERS = Resource(EST_GROUP, "v1alpha1", "estissuers", "EstIssuer", True)
EST_CLUSTER_ISSUERS = Resource(EST_GROUP, "v1alpha1", "estclusterissuers", "EstClusterIssuer", False)
EST_ORDERS = Resource(EST_GROUP, "v1alpha1", "estorders", "EstOrder", True)

CM_GROUP = "cert-manager.io"
CERTIFICATES = Resource(CM_GROUP, "v1", "certificates", "Certificate", True)
CERTIFICATE_REQUESTS = Resource(CM_GROUP, "v1", "certificaterequests", "CertificateRequest", True)
