"""CertificateSigningRequest rules (certificates.k8s.io/v1), after kube's registry/certificates.

pkg/registry/certificates/certificates/strategy.go and pkg/apis/certificates/validation/validation.go:

- create: the requester (username, uid, groups, extra) is the authenticated user, status is cleared;
  request must be a PEM CERTIFICATE REQUEST whose signature verifies, usages known, not repeated and
  not empty, signerName qualified, expirationSeconds >= 600;
- object writes keep spec and status; ``/approval`` changes only conditions; ``/status`` keeps spec and
  the Approved/Denied conditions in place, and adding or removing one there is 422;
- Approved, Denied and Failed are only ``True``, never removed, no condition type twice, Approved and
  Denied exclusive; ``status.certificate`` only through ``/status``, once, PEM CERTIFICATE blocks only.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from cryptography import x509

from keyward.kube.objects import decode_bytes
from keyward.sandbox.apiserver.admission import signature_problem
from keyward.sandbox.apiserver.auth import ADMIN, UserInfo
from keyward.sandbox.apiserver.errors import FieldError
from keyward.sandbox.apiserver.objects import Obj, clone, is_dns_subdomain, now_rfc3339
from keyward.sandbox.apiserver.strategies import Strategy
from keyward.sandbox.usages import ALL_USAGES

if TYPE_CHECKING:
    from keyward.sandbox.apiserver.resources import View

SANDBOX_USER = ADMIN.name
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
APPROVAL_TYPES = ("Approved", "Denied")
_ONCE_TYPES = ("Approved", "Denied", "Failed")
KEY_USAGES = ALL_USAGES


class CsrStrategy(Strategy):
    name_rule = "path"  # ValidateCertificateRequestName accepts any name a URL path segment can hold

    def prepare_create(self, obj: Obj, view: View) -> None:
        obj.pop("status", None)
        self.set_requester(obj, ADMIN)

    def set_requester(self, obj: Obj, user: UserInfo) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        for key in ("username", "uid", "groups", "extra"):
            spec.pop(key, None)
        spec["username"] = user.name
        if user.uid:
            spec["uid"] = user.uid
        if user.groups:
            spec["groups"] = list(user.groups)
        if user.extra:
            spec["extra"] = user.extra_map

    def validate_create(self, obj: Obj, view: View) -> list[FieldError]:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [FieldError("spec", "Required")]
        errors: list[FieldError] = []
        request = spec.get("request")
        if not request:
            errors.append(FieldError("spec.request", "Required"))
        else:
            problem = _request_problem(request)
            if problem:
                errors.append(FieldError("spec.request", "Invalid", value=request, detail=problem))
        errors.extend(_usage_errors(spec.get("usages")))
        errors.extend(_signer_name_errors(spec.get("signerName")))
        seconds = spec.get("expirationSeconds")
        if seconds is not None and (not isinstance(seconds, int) or seconds < 600):
            errors.append(
                FieldError(
                    "spec.expirationSeconds",
                    "Invalid",
                    value=seconds,
                    detail="may not specify a duration less than 600 seconds (10 minutes)",
                )
            )
        return errors

    def prepare_update(self, new: Obj, old: Obj, subresource: str, view: View) -> Obj:
        old_status: dict[str, Any] = old.get("status") or {}
        if subresource == "":
            result = clone(new)
            result["spec"] = clone(old.get("spec"))
            if old_status:
                result["status"] = clone(old_status)
            else:
                result.pop("status", None)
            return result
        written = new.get("status")
        status: dict[str, Any] = dict(written) if isinstance(written, dict) else {}
        if isinstance(status.get("conditions"), list):
            status["conditions"] = [clone(c) for c in status["conditions"]]
        result = clone(old)
        if subresource == "approval":
            _populate_timestamps(status, old_status)
            conditions = status.get("conditions")
            result["status"] = {**old_status, "conditions": conditions}
        else:
            for kind in APPROVAL_TYPES:
                _preserve_conditions(status, old_status, kind)
            _populate_timestamps(status, old_status)
            result["status"] = status
        result["status"] = {k: v for k, v in result["status"].items() if v is not None}
        if not result["status"]:
            result.pop("status")
        return result

    def validate_update(self, new: Obj, old: Obj, subresource: str, view: View) -> list[FieldError]:
        status = new.get("status") or {}
        old_status = old.get("status") or {}
        errors = _condition_errors(status.get("conditions") or [], old_status.get("conditions") or [])
        for kind in _ONCE_TYPES:
            if _count(status, kind) < _count(old_status, kind):
                errors.append(
                    FieldError(
                        "status.conditions",
                        "Forbidden",
                        detail=f'updates may not remove a condition of type "{kind}"',
                    )
                )
        if subresource != "approval":
            for kind in APPROVAL_TYPES:
                before = [
                    c
                    for c in old_status.get("conditions") or []
                    if isinstance(c, dict) and c.get("type") == kind
                ]
                after = [
                    c for c in status.get("conditions") or [] if isinstance(c, dict) and c.get("type") == kind
                ]
                if len(after) > len(before):
                    errors.append(
                        FieldError(
                            "status.conditions",
                            "Forbidden",
                            detail=f'updates may not add a condition of type "{kind}"',
                        )
                    )
                elif len(after) == len(before) and after != before:
                    errors.append(
                        FieldError(
                            "status.conditions",
                            "Forbidden",
                            detail=f'updates may not modify a condition of type "{kind}"',
                        )
                    )
        certificate, old_certificate = status.get("certificate"), old_status.get("certificate")
        if certificate != old_certificate:
            if subresource != "status":
                errors.append(
                    FieldError(
                        "status.certificate", "Forbidden", detail="updates may not set certificate content"
                    )
                )
            elif old_certificate:
                errors.append(
                    FieldError(
                        "status.certificate",
                        "Forbidden",
                        detail="updates may not modify existing certificate content",
                    )
                )
            else:
                problem = _certificate_problem(certificate) if certificate else None
                if problem:
                    errors.append(
                        FieldError(
                            "status.certificate", "Invalid", value="<certificate data>", detail=problem
                        )
                    )
        return errors


def _request_problem(request: Any) -> str | None:
    data = decode_bytes(request)
    if data is None:
        return "must be base64-encoded PEM"
    match = _PEM_BLOCK.search(data)
    if not match or match.group(1) != b"CERTIFICATE REQUEST":
        return "PEM block type must be CERTIFICATE REQUEST"
    try:
        csr = x509.load_pem_x509_csr(match.group(0))
    except (ValueError, x509.InvalidVersion) as exc:
        return f"x509: malformed certificate request ({exc})"
    return signature_problem(csr)


def _signer_name_errors(name: Any) -> list[FieldError]:
    path = "spec.signerName"
    if not name:
        return [FieldError(path, "Required")]
    if not isinstance(name, str) or "/" not in name:
        return [
            FieldError(
                path,
                "Invalid",
                value=name,
                detail="must be a fully qualified domain and path of the form 'example.com/signer-name'",
            )
        ]
    domain, _, rest = name.partition("/")
    if not is_dns_subdomain(domain) or "." not in domain:
        return [
            FieldError(
                path,
                "Invalid",
                value=name,
                detail="the domain portion of the signerName must be a fully qualified domain name",
            )
        ]
    if not rest or any(c.isspace() for c in rest):
        return [
            FieldError(
                path,
                "Invalid",
                value=name,
                detail="the path portion of the signerName must be non-empty and contain no whitespace",
            )
        ]
    return []


def _usage_errors(usages: Any) -> list[FieldError]:
    if not usages:
        return [FieldError("spec.usages", "Required")]
    if not isinstance(usages, list):
        return [FieldError("spec.usages", "Invalid", value=usages, detail="must be a list")]
    errors: list[FieldError] = []
    seen: set[str] = set()
    for index, usage in enumerate(usages):
        path = f"spec.usages[{index}]"
        if usage not in KEY_USAGES:
            errors.append(FieldError(path, "Unsupported", value=usage, supported=tuple(sorted(KEY_USAGES))))
        elif usage in seen:
            errors.append(FieldError(path, "Duplicate", value=usage))
        seen.add(str(usage))
    return errors


def _count(status: dict[str, Any], kind: str) -> int:
    return sum(1 for c in status.get("conditions") or [] if isinstance(c, dict) and c.get("type") == kind)


def _preserve_conditions(status: dict[str, Any], old_status: dict[str, Any], kind: str) -> bool:
    """Restore old conditions of ``kind`` in place; False if the write added or removed some."""
    new_conditions = status.get("conditions") or []
    old_conditions = old_status.get("conditions") or []
    new_index = [i for i, c in enumerate(new_conditions) if isinstance(c, dict) and c.get("type") == kind]
    old_index = [i for i, c in enumerate(old_conditions) if isinstance(c, dict) and c.get("type") == kind]
    if len(new_index) != len(old_index):
        return False
    if new_index:
        status["conditions"] = new_conditions = list(new_conditions)
        for n, o in zip(new_index, old_index, strict=True):
            new_conditions[n] = clone(old_conditions[o])
    return True


def _populate_timestamps(status: dict[str, Any], old_status: dict[str, Any]) -> None:
    now = now_rfc3339()
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        return
    for condition in conditions:
        if not isinstance(condition, dict):
            continue
        if not condition.get("lastUpdateTime"):
            condition["lastUpdateTime"] = now
        if not condition.get("lastTransitionTime"):
            previous = [
                c.get("lastTransitionTime")
                for c in old_status.get("conditions") or []
                if isinstance(c, dict)
                and c.get("type") == condition.get("type")
                and c.get("status") == condition.get("status")
                and c.get("lastTransitionTime")
            ]
            condition["lastTransitionTime"] = previous[0] if previous else now


def _condition_errors(conditions: Any, old_conditions: list[Any]) -> list[FieldError]:
    """``validateConditions``, with the compatibility the real server grants to stored problems."""
    if not isinstance(conditions, list):
        return [FieldError("status.conditions", "Invalid", value=conditions, detail="must be a list")]
    old_types = [c.get("type") for c in old_conditions if isinstance(c, dict)]
    allow_both = "Approved" in old_types and "Denied" in old_types
    allow_duplicates = len(old_types) != len(set(old_types))
    allow_empty_type = any(not t for t in old_types)
    errors: list[FieldError] = []
    seen: set[str] = set()
    approved = denied = False
    for index, condition in enumerate(conditions):
        path = f"status.conditions[{index}]"
        if not isinstance(condition, dict):
            errors.append(FieldError(path, "Invalid", value=condition, detail="must be an object"))
            continue
        kind, status = str(condition.get("type") or ""), condition.get("status")
        if not kind and not allow_empty_type:
            errors.append(FieldError(f"{path}.type", "Required"))
        allowed = ("True",) if kind in _ONCE_TYPES else ("False", "True", "Unknown")
        if not status:
            errors.append(FieldError(f"{path}.status", "Required"))
        elif status not in allowed:
            errors.append(FieldError(f"{path}.status", "Unsupported", value=status, supported=allowed))
        if not allow_both and kind in APPROVAL_TYPES:
            approved, denied = approved or kind == "Approved", denied or kind == "Denied"
            if approved and denied:
                errors.append(
                    FieldError(
                        f"{path}.type",
                        "Invalid",
                        value=kind,
                        detail="Approved and Denied conditions are mutually exclusive",
                    )
                )
        if not allow_duplicates:
            if kind in seen:
                errors.append(FieldError(f"{path}.type", "Duplicate", value=kind))
            seen.add(kind)
    return errors


def _certificate_problem(certificate: Any) -> str | None:
    """``validateCertificate``: one or more CERTIFICATE PEM blocks, without headers, that parse."""
    data = decode_bytes(certificate)
    if data is None:
        return "must be base64-encoded PEM"
    blocks = 0
    for match in _PEM_BLOCK.finditer(data):
        kind = match.group(1).decode()
        if kind != "CERTIFICATE":
            return f'only CERTIFICATE PEM blocks are allowed, found "{kind}"'
        body = match.group(2)
        if b":" in body.split(b"\n\n")[0] and b"\n\n" in body:
            return "no PEM block headers are permitted"
        blocks += 1
        try:
            x509.load_pem_x509_certificate(match.group(0))
        except ValueError as exc:
            return f"x509: malformed certificate ({exc})"
    if blocks == 0:
        return "must contain at least one CERTIFICATE PEM block"
    return None
