"""Who may have a Kubernetes CSR signed by a namespaced issuer: the reference check.

Anyone allowed to create CertificateSigningRequests may name any signer, and approval (a person, or an
approver) judges the request, not whose issuer it names. A TCSIssuer or EstIssuer belongs to its
namespace, so — as cert-manager's own CSR controllers do for namespaced Issuers — a CSR naming one is
signed only if its requester may ``reference`` that issuer: verb ``reference`` on the resource
``signers`` of the issuer's API group (``tcs.intel.com``, ``est.mitre.org``), in the issuer's
namespace, with the issuer's name or ``*`` (every issuer of the namespace) as resource name. The
requester is who the API server recorded in the CSR (``spec.username``, ``uid``, ``groups``,
``extra``), so the answer is the cluster's RBAC (or other authorizer), asked with SubjectAccessReviews.
Every spelling of a signer name (singular or plural kind) names the same issuer and gets the same
check. Cluster issuers belong to no namespace: their CSRs are governed by approval alone.

This module says what to ask; the operator asks (``keyward.operator.references``).
"""

from __future__ import annotations

from typing import Any

from keyward.issuers.objects import RequestObject
from keyward.issuers.signer_names import IssuerRef

__all__ = ["REFERENCE_VERB", "SIGNERS_RESOURCE", "denied_reference", "reference_reviews"]

REFERENCE_VERB = "reference"
SIGNERS_RESOURCE = "signers"
#: Names that the reviews ask about, in order: the issuer's own, then every issuer of its namespace.
_ALL_ISSUERS = "*"


def reference_reviews(csr: RequestObject, ref: IssuerRef) -> list[dict[str, Any]] | None:
    """The SubjectAccessReview bodies that decide whether the requester of ``csr`` may reference ``ref``,
    in the order to ask them: the first that allows decides, none allowing denies. None for a cluster
    issuer (no check); empty for a CSR that names no requester (nobody to ask about: denied)."""
    if ref.namespace is None:
        return None
    requester = csr.requester
    if not (requester.username or requester.groups):
        return []
    subject: dict[str, Any] = {"user": requester.username, "groups": list(requester.groups)}
    if requester.uid:
        subject["uid"] = requester.uid
    if requester.extra:
        subject["extra"] = {key: list(values) for key, values in requester.extra.items()}
    return [
        {
            "spec": {
                **subject,
                "resourceAttributes": {
                    "group": ref.group,
                    "version": "*",
                    "resource": SIGNERS_RESOURCE,
                    "verb": REFERENCE_VERB,
                    "namespace": ref.namespace,
                    "name": name,
                },
            }
        }
        for name in (ref.name, _ALL_ISSUERS)
    ]


def denied_reference(csr: RequestObject, ref: IssuerRef) -> str:
    """Why the CSR fails: who may not reference which issuer, and how a cluster admin allows it."""
    requester = csr.requester.username or "a requester the API server did not record"
    return (
        f"{requester} may not reference {ref} (verb {REFERENCE_VERB} on {SIGNERS_RESOURCE}.{ref.group} "
        f"named {ref.name} or {_ALL_ISSUERS} in namespace {ref.namespace}); not signed: a cluster admin "
        "grants it with a Role and RoleBinding in that namespace"
    )
