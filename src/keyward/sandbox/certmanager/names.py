"""Annotations, labels and fixed strings cert-manager writes, named once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CERTIFICATE_NAME = "cert-manager.io/certificate-name"
CERTIFICATE_REVISION = "cert-manager.io/certificate-revision"
PRIVATE_KEY_SECRET = "cert-manager.io/private-key-secret-name"  # noqa: S105 (a name, not a secret)
NEXT_PRIVATE_KEY_LABEL = "cert-manager.io/next-private-key"
SECRET_LABEL = "controller.cert-manager.io/fao"  # noqa: S105 (a label, not a secret)
COMMON_NAME = "cert-manager.io/common-name"
ALT_NAMES = "cert-manager.io/alt-names"
IP_SANS = "cert-manager.io/ip-sans"
URI_SANS = "cert-manager.io/uri-sans"
#: Ours, not cert-manager's: marks a failed request whose failure the Certificate already reports, so that
#: a later renew (or spec change) knows to replace it rather than report it again.
FAILURE_REPORTED = "sandbox.keyward.io/failure-reported"


APPROVER_REASON = "cert-manager.io"
APPROVER_MESSAGE = "Certificate request has been approved by cert-manager.io"
READY_MESSAGE = "Certificate is up to date and has not expired"
RENEW_REASON = "ManuallyTriggered"
RENEW_MESSAGE = "Certificate re-issuance manually triggered"


def metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj.get("metadata") or {})


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict(metadata(obj).get("annotations") or {})


def revision_of(request: Mapping[str, Any]) -> int | None:
    """The certificate revision a CertificateRequest was created for, None when unmarked."""
    try:
        return int(annotations_of(request).get(CERTIFICATE_REVISION, ""))
    except ValueError:
        return None


def owner_reference(certificate: Mapping[str, Any]) -> dict[str, Any]:
    """Makes the Certificate the controller of an object, so garbage collection removes it with it."""
    meta = metadata(certificate)
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def is_owned_by(obj: Mapping[str, Any], certificate: Mapping[str, Any]) -> bool:
    uid = metadata(certificate).get("uid")
    return any(
        ref.get("uid") == uid and ref.get("controller") for ref in metadata(obj).get("ownerReferences") or []
    )


def owning_certificate(obj: Mapping[str, Any]) -> str | None:
    """The name of the Certificate that controls ``obj`` (by owner reference, else by annotation)."""
    for ref in metadata(obj).get("ownerReferences") or []:
        if ref.get("kind") == "Certificate" and ref.get("controller"):
            return str(ref.get("name"))
    name = annotations_of(obj).get(CERTIFICATE_NAME)
    return str(name) if name else None
