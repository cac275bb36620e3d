"""The Kubernetes resources keyward reads and writes, its API groups, Secret types, labels and
annotations: each named once, here. Constants only (no I/O), so the domain may use them too."""

from __future__ import annotations

from dataclasses import dataclass

TCS_GROUP = "tcs.intel.com"
EST_GROUP = "est.mitre.org"
CM_GROUP = "cert-manager.io"
CSR_GROUP = "certificates.k8s.io"

TLS_SECRET_TYPE = "kubernetes.io/tls"  # noqa: S105 - a Secret type, not a secret
BASIC_AUTH_SECRET_TYPE = "kubernetes.io/basic-auth"  # noqa: S105 - a Secret type, not a secret

#: The label on every object keyward creates, and its value.
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "keyward"
#: The signer (issuer) an object keyward created belongs to.
SIGNER_ANNOTATION = "keyward.io/signer-name"
#: The TCS seed's finalizer on the CA Secrets and QuoteAttestations it created (internal/k8sutil).
TCS_SEED_FINALIZER = "tcs.intel.com/issuer-protection"
#: On a QuoteAttestation: the operator replica (token) that asked, and the request it asks about.
REPLICA_ANNOTATION = "keyward.io/replica"
REQUEST_ANNOTATION = "keyward.io/request-uid"
#: On a QuoteAttestation: what evidence it carries, said for people ("none: ..." without attestation).
ATTESTATION_ANNOTATION = "keyward.io/attestation"
#: On a TCS issuer, set by users: a new value asks for key provisioning again (a new QuoteAttestation);
#: on the QuoteAttestation, the value it was made for. Beside it, the issuer generation it was made for.
RENEW_ANNOTATION = "keyward.io/renew-key-provisioning"
GENERATION_ANNOTATION = "keyward.io/issuer-generation"
#: On an EstOrder: the Certificate's Secret whose certificate and key authenticate a renewal.
RENEWAL_SECRET_ANNOTATION = "keyward.io/renewal-secret"  # noqa: S105 - a Secret's name, not a secret
#: The EST seed's kopf handler for EstOrders: its result lands in status.<name>, its progress in kopf's
#: annotation ``kopf.zalando.org/<name>`` and status.kopf.progress.<name>.
SEED_ORDER_HANDLER = "estorder_create"
SEED_PROGRESS_ANNOTATION = f"kopf.zalando.org/{SEED_ORDER_HANDLER}"
#: cert-manager's annotations on a Kubernetes CSR: the duration and CA-ness it asks for.
REQUEST_DURATION_ANNOTATION = "experimental.cert-manager.io/request-duration"
REQUEST_IS_CA_ANNOTATION = "experimental.cert-manager.io/request-is-ca"


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
    def handler_args(self) -> tuple[str, str, str]:
        """(group, version, plural): how kopf's handler decorators name the resource."""
        return self.group, self.version, self.plural

    @property
    def kopf_name(self) -> str:
        """The ``plural.group`` spelling kopf accepts in handler decorators."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def permission(self, verb: str, subresource: str = "") -> str:
        """The RBAC rule a call needs, for messages: ``patch`` on ``certificaterequests/status`` in API
        group "cert-manager.io"."""
        resource = f"{self.plural}/{subresource}" if subresource else self.plural
        return f'{verb} on {resource} in API group "{self.group}"'

    def __str__(self) -> str:
        return self.kopf_name


NAMESPACES = Resource("", "v1", "namespaces", "Namespace", False)
SECRETS = Resource("", "v1", "secrets", "Secret", True)
EVENTS = Resource("", "v1", "events", "Event", True)
CSRS = Resource(CSR_GROUP, "v1", "certificatesigningrequests", "CertificateSigningRequest", False)
CRDS = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease", True)
SUBJECT_ACCESS_REVIEWS = Resource(
    "authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", False
)

TCS_ISSUERS = Resource(TCS_GROUP, "v1alpha1", "tcsissuers", "TCSIssuer", True)
TCS_CLUSTER_ISSUERS = Resource(TCS_GROUP, "v1alpha1", "tcsclusterissuers", "TCSClusterIssuer", False)
QUOTE_ATTESTATIONS = Resource(TCS_GROUP, "v1alpha2", "quoteattestations", "QuoteAttestation", True)

EST_ISSUERS = Resource(EST_GROUP, "v1alpha1", "estissuers", "EstIssuer", True)
EST_CLUSTER_ISSUERS = Resource(EST_GROUP, "v1alpha1", "estclusterissuers", "EstClusterIssuer", False)
EST_ORDERS = Resource(EST_GROUP, "v1alpha1", "estorders", "EstOrder", True)

CERTIFICATES = Resource(CM_GROUP, "v1", "certificates", "Certificate", True)
CERTIFICATE_REQUESTS = Resource(CM_GROUP, "v1", "certificaterequests", "CertificateRequest", True)
