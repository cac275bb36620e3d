"""CertificateSigningRequest rules (certificates.k8s.io/v1), after kube's registry/certificates.

- create: the server fills in the requester (username ``kubernetes-admin``, groups), clears status,
  and validates request (a signed PEM CERTIFICATE REQUEST), signerName, usages, expirationSeconds >= 600;
- spec never changes after create (writes that try are silently reverted, as kube does);
- object writes keep status; ``/approval`` changes only conditions; ``/status`` changes status but keeps
  the Approved/Denied conditions as they were;
- Approved and Denied exclude each other and are never removed; ``status.certificate`` is set once and
  must be PEM CERTIFICATE blocks.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from cryptography import x509

from keyward.kube.objects import decode_bytes
from keyward.sandbox.apiserver.errors import FieldError
from keyward.sandbox.apiserver.objects import Obj, clone, is_dns_subdomain, now_rfc3339
from keyward.sandbox.apiserver.strategies import Strategy

if TYPE_CHECKING:
    from keyward.sandbox.apiserver.resources import View

SANDBOX_USER = "kubernetes-admin"
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
APPROVAL_TYPES = ("Approved", "Denied")
_ONCE_TYPES = ("Approved", "Denied", "Failed")
KEY_USAGES = (
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
)


class CsrStrategy(Strategy):
    def prepare_create(self, obj: Obj, view: View) -> None:
        obj.pop("status", None)
        spec = obj.get("spec")
        if isinstance(spec, dict):
            spec["username"] = SANDBOX_USER
            if not spec.get("groups"):
                spec["groups"] = ["system:authenticated"]
            spec.pop("uid", None)
            spec.pop("extra", None)

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
        errors.extend(_usage_errors(spec.get("usages")))
        return errors

    def prepare_update(self, new: Obj, old: Obj, subresource: str, view: View) -> Obj:
        new["spec"] = clone(old.get("spec"))
        old_status: dict[str, Any] = old.get("status") or {}
        if subresource == "":
            if old_status:
                new["status"] = clone(old_status)
            else:
                new.pop("status", None)
            return new
        result = clone(old)
        written = new.get("status")
        status: dict[str, Any] = dict(written) if isinstance(written, dict) else {}
        if subresource == "approval":
            if "certificate" in old_status:
                status["certificate"] = old_status["certificate"]
            else:
                status.pop("certificate", None)
        elif not all(_preserve_conditions(status, old_status, kind) for kind in APPROVAL_TYPES):
            status["conditions"] = clone(old_status.get("conditions"))
        _populate_timestamps(status, old_status)
        result["status"] = {k: v for k, v in status.items() if v is not None}
        return result

    def validate_update(self, new: Obj, old: Obj, subresource: str, view: View) -> list[FieldError]:
        status = new.get("status") or {}
        old_status = old.get("status") or {}
        errors = _condition_errors(status.get("conditions") or [])
        for kind in _ONCE_TYPES:
            if _count(status, kind) < _count(old_status, kind):
                errors.append(
                    FieldError(
                        "status.conditions",
                        "Forbidden",
                        detail=f'updates may not remove a condition of type "{kind}"',
                    )
                )
        certificate, old_certificate = status.get("certificate"), old_status.get("certificate")
        if certificate != old_certificate:
            if old_certificate:
                errors.append(
                    FieldError(
                        "status.certificate",
                        "Invalid",
                        value="<certificate data>",
                        detail="updates may not modify existing certificate content",
                    )
                )
            elif certificate:
                problem = _certificate_problem(certificate)
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
    if not csr.is_signature_valid:
        return "x509: ECDSA/RSA verification failure"
    return None


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


def _condition_errors(conditions: Any) -> list[FieldError]:
    if not isinstance(conditions, list):
        return [FieldError("status.conditions", "Invalid", value=conditions, detail="must be a list")]
    errors: list[FieldError] = []
    seen: set[str] = set()
    for index, condition in enumerate(conditions):
        path = f"status.conditions[{index}]"
        if not isinstance(condition, dict):
            errors.append(FieldError(path, "Invalid", value=condition, detail="must be an object"))
            continue
        kind, status = condition.get("type"), condition.get("status")
        if not kind:
            errors.append(FieldError(f"{path}.type", "Required"))
        if status not in ("True", "False", "Unknown"):
            errors.append(
                FieldError(
                    f"{path}.status", "Unsupported", value=status, supported=("False", "True", "Unknown")
                )
            )
        if kind in _ONCE_TYPES:
            if kind in seen:
                errors.append(FieldError(f"{path}.type", "Duplicate", value=kind))
            seen.add(kind)
            if kind in APPROVAL_TYPES and status != "True":
                errors.append(FieldError(f"{path}.status", "Unsupported", value=status, supported=("True",)))
            other = "Denied" if kind == "Approved" else "Approved"
            if kind in APPROVAL_TYPES and other in seen:
                errors.append(
                    FieldError(
                        f"{path}.type",
                        "Invalid",
                        value=kind,
                        detail="Approved and Denied conditions are mutually exclusive",
                    )
                )
    return errors


def _certificate_problem(certificate: Any) -> str | None:
    data = decode_bytes(certificate)
    if data is None:
        return "must be base64-encoded PEM"
    blocks = 0
    for match in _PEM_BLOCK.finditer(data):
        kind = match.group(1).decode()
        if kind != "CERTIFICATE":
            return f'only CERTIFICATE PEM blocks are allowed, found "{kind}"'
        try:
            x509.load_pem_x509_certificate(match.group(0))
        except ValueError as exc:
            return f"x509: malformed certificate ({exc})"
        blocks += 1
    if blocks == 0:
        return "must contain at least one CERTIFICATE PEM block"
    return None
