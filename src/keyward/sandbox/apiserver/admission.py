"""Admission: kube-apiserver's CSR signing and approval plugins, and cert-manager's webhook.

Runs for requests made over HTTP (the ``user`` is known); writes through ``ApiServer.cluster`` in
Python skip it, as a write straight into etcd would.

- ``CertificateSigning`` (plugin/pkg/admission/certificates/signing/admission.go): an update of
  ``certificatesigningrequests/status`` that changes status.certificate or status.conditions needs
  ``sign`` on ``signers`` (group certificates.k8s.io) named the CSR's signerName, or ``<domain>/*``
  (plugin/pkg/admission/certificates/util.go ``IsAuthorizedForSignerName``).
- ``CertificateApproval`` (plugin/pkg/admission/certificates/approval/admission.go): every update of
  ``certificatesigningrequests/approval`` needs ``approve`` on the signer likewise.
- cert-manager's ``webhook.cert-manager.io`` (failurePolicy Fail) for CertificateRequests:
  ``CertificateRequestIdentity`` (internal/plugin/admission/certificaterequest/identity) fills in
  spec.username/uid/groups/extra with the requester at create and refuses changes;
  ``ValidateCertificateRequest``/``ValidateUpdateCertificateRequest``
  (internal/apis/certmanager/validation/certificaterequest.go): issuerRef.name required (kind
  Issuer/ClusterIssuer in cert-manager's own group), spec.request a PEM CSR whose signature verifies and
  whose basicConstraints and key usages, when present, agree with spec.isCA and spec.usages
  (pkg/util/pki ``CertificateTemplateFromCSRPEM``), no cert-manager.io annotation changed, spec
  immutable, Approved/Denied only True, once, exclusive, never changed or removed;
  ``CertificateRequestApproval`` (internal/plugin/admission/certificaterequest/approval): setting
  Approved or Denied through /status needs ``approve`` on ``signers`` of group cert-manager.io named
  ``<plural>.<group>/<namespace>.<name>`` (namespaced issuer) or ``<plural>.<group>/<name>``, or
  ``<plural>.<group>/*``. A refusal is 406 NotAcceptable ``admission webhook "webhook.cert-manager.io"
  denied the request: ...`` (kube-apiserver's webhook errors.go ``ToStatusErr``).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyward.sandbox.apiserver.auth import UserInfo
from keyward.sandbox.apiserver.errors import ApiError, FieldError
from keyward.sandbox.apiserver.objects import Obj, dig
from keyward.sandbox.apiserver.permissions import PermissionLog
from keyward.sandbox.apiserver.rbac import (
    RBAC_GROUP,
    Attributes,
    Authorizer,
    EscalationCheck,
    aggregate,
    new_forbidden,
)
from keyward.sandbox.usages import basic_constraints_ca, csr_usages, expected_usages

if TYPE_CHECKING:
    from keyward.sandbox.apiserver.resources import Registry, View

CERTIFICATES_GROUP = "certificates.k8s.io"
CERT_MANAGER_GROUP = "cert-manager.io"
ACME_GROUP = "acme.cert-manager.io"
WEBHOOK = "webhook.cert-manager.io"
_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


@dataclass
class Operation:
    """One write as admission sees it (``admission.Attributes``)."""

    create: bool
    view: View
    obj: Obj
    old: Obj | None
    subresource: str
    user: UserInfo
    namespace: str = ""

    @property
    def resource(self) -> tuple[str, str]:
        return (self.view.resource.group, self.view.resource.plural)

    @property
    def name(self) -> str:
        return str(dig(self.obj, "metadata", "name") or "")


class SignerCheck:
    """``IsAuthorizedForSignerName``: the exact signer name, then ``<domain>/*``."""

    def __init__(self, authorizer: Authorizer, permissions: PermissionLog) -> None:
        self.authorizer = authorizer
        self.permissions = permissions

    def allowed(self, user: UserInfo, verb: str, group: str, signer: str) -> bool:
        exact = Attributes(user, verb, True, group, "signers", name=signer)
        if self.authorizer.authorize(exact).allowed:
            self.permissions.record(exact, True)
            return True
        wildcard = Attributes(user, verb, True, group, "signers", name=signer.split("/")[0] + "/*")
        if self.authorizer.authorize(wildcard).allowed:
            self.permissions.record(wildcard, True)
            return True
        self.permissions.record(exact, False)
        return False


def _conditions(obj: Obj | None) -> list[Any]:
    conditions = dig(obj or {}, "status", "conditions")
    return conditions if isinstance(conditions, list) else []


def _condition(obj: Obj | None, kind: str) -> dict[str, Any] | None:
    return next((c for c in _conditions(obj) if isinstance(c, dict) and c.get("type") == kind), None)


class Admission:
    """The admission chain of the sandbox: built-in plugins, then cert-manager's webhook."""

    def __init__(self, registry: Registry, signers: SignerCheck) -> None:
        self.registry = registry
        self.signers = signers
        self.certmanager_webhook = True  # as if cert-manager's ValidatingWebhookConfiguration exists

    # -- mutating ------------------------------------------------------------------------------------

    def mutate(self, op: Operation) -> None:
        if (
            op.create
            and op.resource == (CERT_MANAGER_GROUP, "certificaterequests")
            and self.certmanager_webhook
        ):
            spec = op.obj.get("spec")
            if isinstance(spec, dict):
                spec["username"] = op.user.name
                spec["uid"] = op.user.uid
                spec["groups"] = list(op.user.groups)
                spec["extra"] = op.user.extra_map
                for key in ("uid", "extra"):
                    if not spec[key]:
                        del spec[key]

    # -- validating ----------------------------------------------------------------------------------

    def validate(self, op: Operation) -> None:
        if op.resource[0] == RBAC_GROUP and not op.user.privileged:
            self._rbac_escalation(op)
        if op.resource == (CERTIFICATES_GROUP, "certificatesigningrequests") and not op.create:
            self._csr(op)
        if op.resource == (CERT_MANAGER_GROUP, "certificaterequests") and self.certmanager_webhook:
            problems = self._certificate_request(op)
            if problems:
                raise ApiError(
                    406,
                    "NotAcceptable",
                    f'admission webhook "{WEBHOOK}" denied the request: '
                    + aggregate([str(p) for p in problems]),
                )

    def _rbac_escalation(self, op: Operation) -> None:
        """pkg/registry/rbac/*/policybased: no role or binding grants what its author does not hold."""
        group, plural = op.resource
        authorizer = self.signers.authorizer
        if op.old is not None and _same_but_metadata(op.obj, op.old):
            return  # IsOnlyMutatingGCFields and friends: nothing granted changes
        if plural in ("roles", "clusterroles"):
            escalate = Attributes(
                op.user, "escalate", True, group, plural, "", op.namespace, "" if op.create else op.name
            )
            if authorizer.authorize(escalate).allowed:
                return
            rules = [r for r in op.obj.get("rules") or [] if isinstance(r, dict)]
        elif plural in ("rolebindings", "clusterrolebindings"):
            ref = op.obj.get("roleRef") if isinstance(op.obj.get("roleRef"), dict) else {}
            assert isinstance(ref, dict)
            target = {"Role": "roles", "ClusterRole": "clusterroles"}.get(str(ref.get("kind")))
            if target is not None:
                bind = Attributes(
                    op.user,
                    "bind",
                    True,
                    str(ref.get("apiGroup") or ""),
                    target,
                    "",
                    op.namespace,
                    str(ref.get("name") or ""),
                )
                if authorizer.authorize(bind).allowed:
                    return
            try:
                rules = authorizer.resolver.role_rules(ref, op.namespace)
            except LookupError as exc:
                raise new_forbidden(group, plural, op.name, str(exc)) from None
        else:
            return
        problem = EscalationCheck(authorizer).confirm_no_escalation(op.user, op.namespace, rules)
        if problem:
            raise new_forbidden(group, plural, op.name, problem)

    def _csr(self, op: Operation) -> None:
        assert op.old is not None
        signer = str(dig(op.old, "spec", "signerName") or "")
        if op.subresource == "status":
            old_status, new_status = op.old.get("status") or {}, op.obj.get("status") or {}
            if old_status.get("certificate") == new_status.get("certificate") and _conditions(
                op.old
            ) == _conditions(op.obj):
                return
            verb = "sign"
        elif op.subresource == "approval":
            verb = "approve"
        else:
            return
        if not self.signers.allowed(op.user, verb, CERTIFICATES_GROUP, signer):
            raise new_forbidden(
                CERTIFICATES_GROUP,
                "certificatesigningrequests",
                op.name,
                f'user not permitted to {verb} requests with signerName "{signer}"',
            )

    def _certificate_request(self, op: Operation) -> list[FieldError]:
        spec = op.obj.get("spec") if isinstance(op.obj.get("spec"), dict) else {}
        assert isinstance(spec, dict)
        if op.create:
            problems = _spec_problems(spec) + _approval_problems(_conditions(op.obj))
            return problems + _identity_problems(spec, op.user)
        assert op.old is not None
        problems = _annotation_problems(op.old, op.obj) + _annotation_problems(op.obj, op.old)
        problems += _approval_update_problems(op.old, op.obj)
        if op.obj.get("spec") != op.old.get("spec"):
            problems.append(FieldError("spec", "Forbidden", detail="cannot change spec after creation"))
        if op.subresource == "status" and _approval_added(op.old, op.obj):
            problems += self._approver_problems(op, spec)
        return problems

    def _approver_problems(self, op: Operation, spec: dict[str, Any]) -> list[FieldError]:
        ref = spec.get("issuerRef") if isinstance(spec.get("issuerRef"), dict) else {}
        assert isinstance(ref, dict)
        group = ref.get("group") or CERT_MANAGER_GROUP
        kind = ref.get("kind") or "Issuer"
        described = "{" + " ".join(str(ref.get(k) or "") for k in ("name", "kind", "group")) + "}"
        resource = self.registry.by_kind(group, kind)
        if resource is None:
            return [
                FieldError(
                    "spec.issuerRef",
                    "Forbidden",
                    detail=f"referenced signer resource does not exist: {described}",
                )
            ]
        scope = f"{op.namespace}.{ref.get('name')}" if resource.namespaced else str(ref.get("name"))
        signer = f"{resource.plural}.{group}/{scope}"
        if self.signers.allowed(op.user, "approve", CERT_MANAGER_GROUP, signer):
            return []
        return [
            FieldError(
                "status.conditions",
                "Forbidden",
                detail=f'user "{op.user.name}" does not have permissions to set approved/denied conditions '
                f"for issuer {described}",
            )
        ]


def _same_but_metadata(new: Obj, old: Obj) -> bool:
    return all(new.get(k) == old.get(k) for k in (set(new) | set(old)) - {"metadata", "apiVersion", "kind"})


def _approval_added(old: Obj, new: Obj) -> bool:
    """``approvalConditionsHaveChanged``: Approved or Denied appears."""
    return any(
        _condition(old, kind) is None and _condition(new, kind) is not None for kind in ("Approved", "Denied")
    )


def _approval_problems(conditions: list[Any]) -> list[FieldError]:
    """``ValidateCertificateRequestApprovalCondition``."""
    path = "status.conditions"
    problems: list[FieldError] = []
    found = {
        kind: [c for c in conditions if isinstance(c, dict) and c.get("type") == kind]
        for kind in ("Approved", "Denied")
    }
    for kind, present in found.items():
        if len(present) > 1:
            problems.append(FieldError(path, "Forbidden", detail=f'multiple "{kind}" conditions present'))
        elif present and present[0].get("status") != "True":
            problems.append(
                FieldError(
                    f"{path}.{kind}",
                    "Invalid",
                    value=present[0].get("status"),
                    detail=f'"{kind}" condition may only be set to True',
                )
            )
    if found["Approved"] and found["Denied"]:
        problems.append(
            FieldError(path, "Forbidden", detail="both 'Denied' and 'Approved' conditions cannot coexist")
        )
    return problems


def _approval_update_problems(old: Obj, new: Obj) -> list[FieldError]:
    """``ValidateUpdateCertificateRequestApprovalCondition``."""
    problems: list[FieldError] = []
    for kind in ("Approved", "Denied"):
        before = _condition(old, kind)
        if before is not None and before != _condition(new, kind):
            problems.append(
                FieldError(
                    "status.conditions",
                    "Forbidden",
                    detail=f"'{kind}' condition may not be modified once set",
                )
            )
    return problems + _approval_problems(_conditions(new))


def _annotation_problems(a: Obj, b: Obj) -> list[FieldError]:
    """``validateCertificateRequestAnnotations``: cert-manager annotations never change."""
    before = dig(a, "metadata", "annotations") or {}
    after = dig(b, "metadata", "annotations") or {}
    return [
        FieldError(
            f"metadata.annotations.{key}",
            "Forbidden",
            detail="cannot change cert-manager annotation after creation",
        )
        for key, value in before.items()
        if key.startswith((CERT_MANAGER_GROUP, ACME_GROUP)) and after.get(key) != value
    ]


def _identity_problems(spec: dict[str, Any], user: UserInfo) -> list[FieldError]:
    """``CertificateRequestIdentity`` validateCreate (after the mutation these always hold)."""
    problems: list[FieldError] = []
    if (spec.get("uid") or "") != user.uid:
        problems.append(
            FieldError("spec.uid", "Forbidden", detail="uid identity must be that of the requester")
        )
    if (spec.get("username") or "") != user.name:
        problems.append(
            FieldError("spec.username", "Forbidden", detail="username identity must be that of the requester")
        )
    if sorted(spec.get("groups") or []) != sorted(user.groups):
        problems.append(
            FieldError("spec.groups", "Forbidden", detail="groups identity must be that of the requester")
        )
    if (spec.get("extra") or {}) != user.extra_map:
        problems.append(
            FieldError("spec.extra", "Forbidden", detail="extra identity must be that of the requester")
        )
    return problems


def _spec_problems(spec: dict[str, Any]) -> list[FieldError]:
    """``ValidateCertificateRequestSpec``: issuerRef, then the request against usages and isCA."""
    problems: list[FieldError] = []
    ref = spec.get("issuerRef") if isinstance(spec.get("issuerRef"), dict) else {}
    assert isinstance(ref, dict)
    if not ref.get("name"):
        problems.append(FieldError("spec.issuerRef.name", "Required", detail="must be specified"))
    if ref.get("group") in (None, "", CERT_MANAGER_GROUP) and ref.get("kind") not in (
        None,
        "",
        "Issuer",
        "ClusterIssuer",
    ):
        problems.append(
            FieldError(
                "spec.issuerRef.kind",
                "Invalid",
                value=ref.get("kind"),
                detail="must be one of Issuer or ClusterIssuer",
            )
        )
    request = spec.get("request")
    if not request:
        return [*problems, FieldError("spec.request", "Required", detail="must be specified")]
    expected, unknown = expected_usages(spec.get("usages"), bool(spec.get("isCA")))
    if unknown:
        listed = "[" + " ".join(unknown) + "]"
        return [
            *problems,
            FieldError(
                "spec.usages", "Invalid", value=spec.get("usages"), detail=f"unknown key usages: {listed}"
            ),
        ]
    why = _request_problem(request, expected, bool(spec.get("isCA")))
    if why:
        problems.append(FieldError("spec.request", "Invalid", value="<request data>", detail=why))
    return problems


def _request_problem(request: Any, expected: Any, is_ca: bool) -> str | None:
    """``CertificateTemplateFromCSRPEM`` with the basicConstraints and key usage validators."""
    try:
        pem = base64.b64decode(str(request), validate=True)
    except (binascii.Error, ValueError):
        return "error decoding certificate request PEM block"
    block = _PEM.search(pem)
    if block is None or block.group(1) not in (b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"):
        return "error decoding certificate request PEM block"
    try:
        csr = x509.load_der_x509_csr(base64.b64decode(b"".join(block.group(2).split())))
    except (ValueError, binascii.Error, x509.InvalidVersion):
        return "x509: malformed certificate request"
    failure = signature_problem(csr)
    if failure:
        return failure
    try:
        ca = basic_constraints_ca(csr)
        encoded, _ = csr_usages(csr)
    except (ValueError, x509.DuplicateExtension) as exc:
        return f"x509: malformed extension ({exc})"
    if ca is not None and ca != is_ca:
        return f"encoded CSR error: IsCA {str(ca).lower()} does not match expected value {str(is_ca).lower()}"
    if encoded is not None:
        if encoded.bits != expected.bits:
            return (
                f"encoded CSR error: the KeyUsages {_printed(encoded.key_usage_names())} do not match the "
                f"expected KeyUsages {_printed(expected.key_usage_names())}"
            )
        if encoded.extended != expected.extended:
            return (
                f"encoded CSR error: the ExtKeyUsages {_printed(encoded.extended_names())} do not match the "
                f"expected ExtKeyUsages {_printed(expected.extended_names())}"
            )
    return None


def signature_problem(csr: x509.CertificateSigningRequest) -> str | None:
    """Go's ``CheckSignature`` error for a CSR whose signature does not verify, None when it does."""
    if csr.is_signature_valid:
        return None
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "crypto/rsa: verification error"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "x509: ECDSA verification failure"
    return "x509: signature verification failure"


def _printed(names: list[str]) -> str:
    """cert-manager's ``printKeyUsage``: ``[ 'a', 'b' ]``."""
    return "[" + ",".join(f" '{n}'" for n in names) + (" ]" if names else "]")
