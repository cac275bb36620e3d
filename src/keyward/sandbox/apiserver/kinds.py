"""Write rules of the kinds a deployment manifest holds: RBAC, ServiceAccounts, Services, Deployments,
PodDisruptionBudgets. Stored and validated like kube-apiserver does, never run (no pods, no endpoints).

Sources: pkg/apis/rbac/validation/validation.go and pkg/apis/rbac/v1/defaults.go (rules, roleRef,
subjects, roleRef immutable), pkg/apis/apps/validation/validation.go (Deployment selector, template
labels, containers), pkg/apis/core/validation/validation.go (Service ports, container name and image),
pkg/apis/policy/validation/validation.go (PDB minAvailable xor maxUnavailable), and the v1 defaults of
those groups for the fields kubectl shows.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import TYPE_CHECKING, Any

from keyward.sandbox.apiserver.errors import FieldError
from keyward.sandbox.apiserver.objects import Obj, dig, name_problems
from keyward.sandbox.apiserver.rbac import RBAC_GROUP
from keyward.sandbox.apiserver.strategies import Strategy

if TYPE_CHECKING:
    from keyward.sandbox.apiserver.resources import View

SUBJECT_KINDS = ("ServiceAccount", "User", "Group")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def policy_rule_errors(rule: Any, namespaced: bool, path: str) -> list[FieldError]:
    """``ValidatePolicyRule``."""
    if not isinstance(rule, dict):
        return [FieldError(path, "Invalid", value=rule, detail="must be an object")]
    errors: list[FieldError] = []
    if not _list(rule.get("verbs")):
        errors.append(FieldError(f"{path}.verbs", "Required", detail="verbs must contain at least one value"))
    urls = _list(rule.get("nonResourceURLs"))
    if urls:
        if namespaced:
            errors.append(
                FieldError(
                    f"{path}.nonResourceURLs",
                    "Invalid",
                    value=urls,
                    detail="namespaced rules cannot apply to non-resource URLs",
                )
            )
        if _list(rule.get("apiGroups")) or _list(rule.get("resources")) or _list(rule.get("resourceNames")):
            errors.append(
                FieldError(
                    f"{path}.nonResourceURLs",
                    "Invalid",
                    value=urls,
                    detail="rules cannot apply to both regular resources and non-resource URLs",
                )
            )
        return errors
    if not _list(rule.get("apiGroups")):
        errors.append(
            FieldError(
                f"{path}.apiGroups", "Required", detail="resource rules must supply at least one api group"
            )
        )
    if not _list(rule.get("resources")):
        errors.append(
            FieldError(
                f"{path}.resources", "Required", detail="resource rules must supply at least one resource"
            )
        )
    return errors


class RoleStrategy(Strategy):
    """Role and ClusterRole: path-segment names, each rule validated."""

    name_rule = "path"

    def __init__(self, *, namespaced: bool) -> None:
        self.namespaced = namespaced

    def validate_create(self, obj: Obj, view: View) -> list[FieldError]:
        errors: list[FieldError] = []
        for index, rule in enumerate(_list(obj.get("rules"))):
            errors += policy_rule_errors(rule, self.namespaced, f"rules[{index}]")
        return errors

    def validate_update(self, new: Obj, old: Obj, subresource: str, view: View) -> list[FieldError]:
        return self.validate_create(new, view)


def _default_binding(obj: Obj) -> None:
    """SetDefaults_*RoleBinding and SetDefaults_Subject: the API groups a manifest may leave out."""
    ref = obj.get("roleRef")
    if isinstance(ref, dict) and not ref.get("apiGroup"):
        ref["apiGroup"] = RBAC_GROUP
    for subject in _list(obj.get("subjects")):
        if (
            isinstance(subject, dict)
            and not subject.get("apiGroup")
            and subject.get("kind") in ("User", "Group")
        ):
            subject["apiGroup"] = RBAC_GROUP


def subject_errors(subject: Any, namespaced: bool, path: str) -> list[FieldError]:
    """``ValidateRoleBindingSubject``."""
    if not isinstance(subject, dict):
        return [FieldError(path, "Invalid", value=subject, detail="must be an object")]
    errors: list[FieldError] = []
    name, kind, group = subject.get("name"), subject.get("kind"), subject.get("apiGroup") or ""
    if not name:
        errors.append(FieldError(f"{path}.name", "Required"))
    if kind == "ServiceAccount":
        for why in name_problems(str(name), "subdomain") if name else []:
            errors.append(FieldError(f"{path}.name", "Invalid", value=name, detail=why))
        if group:
            errors.append(FieldError(f"{path}.apiGroup", "Unsupported", value=group, supported=("",)))
        if not namespaced and not subject.get("namespace"):
            errors.append(FieldError(f"{path}.namespace", "Required"))
    elif kind in ("User", "Group"):
        if group != RBAC_GROUP:
            errors.append(FieldError(f"{path}.apiGroup", "Unsupported", value=group, supported=(RBAC_GROUP,)))
    else:
        errors.append(FieldError(f"{path}.kind", "Unsupported", value=kind, supported=SUBJECT_KINDS))
    return errors


class BindingStrategy(Strategy):
    """RoleBinding and ClusterRoleBinding: roleRef (immutable) and subjects."""

    name_rule = "path"

    def __init__(self, *, namespaced: bool) -> None:
        self.namespaced = namespaced

    def prepare_create(self, obj: Obj, view: View) -> None:
        super().prepare_create(obj, view)
        _default_binding(obj)

    def prepare_update(self, new: Obj, old: Obj, subresource: str, view: View) -> Obj:
        _default_binding(new)
        return super().prepare_update(new, old, subresource, view)

    def validate_create(self, obj: Obj, view: View) -> list[FieldError]:
        errors: list[FieldError] = []
        ref = obj.get("roleRef") if isinstance(obj.get("roleRef"), dict) else {}
        assert isinstance(ref, dict)
        if ref.get("apiGroup") != RBAC_GROUP:
            errors.append(
                FieldError(
                    "roleRef.apiGroup", "Unsupported", value=ref.get("apiGroup", ""), supported=(RBAC_GROUP,)
                )
            )
        kinds = ("Role", "ClusterRole") if self.namespaced else ("ClusterRole",)
        if ref.get("kind") not in kinds:
            errors.append(
                FieldError("roleRef.kind", "Unsupported", value=ref.get("kind", ""), supported=kinds)
            )
        if not ref.get("name"):
            errors.append(FieldError("roleRef.name", "Required"))
        else:
            for why in name_problems(str(ref["name"]), "path"):
                errors.append(FieldError("roleRef.name", "Invalid", value=ref["name"], detail=why))
        for index, subject in enumerate(_list(obj.get("subjects"))):
            errors += subject_errors(subject, self.namespaced, f"subjects[{index}]")
        return errors

    def validate_update(self, new: Obj, old: Obj, subresource: str, view: View) -> list[FieldError]:
        errors = self.validate_create(new, view)
        if new.get("roleRef") != old.get("roleRef"):
            errors.append(
                FieldError("roleRef", "Invalid", value=new.get("roleRef"), detail="cannot change roleRef")
            )
        return errors


class ServiceStrategy(Strategy):
    """Services: DNS-1035 names, ports, a cluster IP from 10.96.0.0/12 (no proxying: nothing runs)."""

    name_rule = "dns1035"
    _addresses = itertools.count(10)
    _NETWORK = ipaddress.ip_network("10.96.0.0/12")

    def prepare_create(self, obj: Obj, view: View) -> None:
        super().prepare_create(obj, view)
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for port in _list(spec.get("ports")):
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if "targetPort" not in port and "port" in port:
                    port["targetPort"] = port["port"]
        if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
            address = str(self._NETWORK[next(self._addresses)])
            spec["clusterIP"] = address
            spec["clusterIPs"] = [address]

    def prepare_update(self, new: Obj, old: Obj, subresource: str, view: View) -> Obj:
        result = super().prepare_update(new, old, subresource, view)
        spec, old_spec = result.get("spec"), old.get("spec") or {}
        if isinstance(spec, dict) and not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"], spec["clusterIPs"] = old_spec["clusterIP"], old_spec.get("clusterIPs")
        return result

    def validate_create(self, obj: Obj, view: View) -> list[FieldError]:
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        assert isinstance(spec, dict)
        errors: list[FieldError] = []
        ports = _list(spec.get("ports"))
        if not ports and spec.get("type") != "ExternalName" and spec.get("clusterIP") != "None":
            errors.append(FieldError("spec.ports", "Required"))
        names: set[str] = set()
        for index, port in enumerate(ports):
            path = f"spec.ports[{index}]"
            number = port.get("port") if isinstance(port, dict) else None
            if not isinstance(number, int) or not 1 <= number <= 65535:
                errors.append(
                    FieldError(
                        f"{path}.port",
                        "Invalid",
                        value=number,
                        detail="must be between 1 and 65535, inclusive",
                    )
                )
            name = port.get("name") if isinstance(port, dict) else None
            if len(ports) > 1 and not name:
                errors.append(FieldError(f"{path}.name", "Required"))
            elif name in names:
                errors.append(FieldError(f"{path}.name", "Duplicate", value=name))
            names.add(str(name))
        return errors

    def validate_update(self, new: Obj, old: Obj, subresource: str, view: View) -> list[FieldError]:
        errors = self.validate_create(new, view)
        if dig(new, "spec", "clusterIP") != dig(old, "spec", "clusterIP"):
            errors.append(
                FieldError(
                    "spec.clusterIP",
                    "Invalid",
                    value=dig(new, "spec", "clusterIP"),
                    detail="field is immutable",
                )
            )
        return errors


def _selector_matches(selector: Any, labels: Any) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a label map."""
    labels = labels if isinstance(labels, dict) else {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in _list(selector.get("matchExpressions")):
        key, operator, values = (
            expression.get("key"),
            expression.get("operator"),
            expression.get("values") or [],
        )
        present = key in labels
        if (
            (operator == "In" and labels.get(key) not in values)
            or (operator == "NotIn" and present and labels.get(key) in values)
            or (operator == "Exists" and not present)
            or (operator == "DoesNotExist" and present)
        ):
            return False
    return True


def container_errors(containers: Any, path: str) -> list[FieldError]:
    if not _list(containers):
        return [FieldError(path, "Required")]
    errors: list[FieldError] = []
    seen: set[str] = set()
    for index, container in enumerate(_list(containers)):
        item = f"{path}[{index}]"
        container = container if isinstance(container, dict) else {}
        name = container.get("name")
        if not name:
            errors.append(FieldError(f"{item}.name", "Required"))
        else:
            for why in name_problems(str(name), "label"):
                errors.append(FieldError(f"{item}.name", "Invalid", value=name, detail=why))
            if name in seen:
                errors.append(FieldError(f"{item}.name", "Duplicate", value=name))
            seen.add(str(name))
        if not container.get("image"):
            errors.append(FieldError(f"{item}.image", "Required"))
    return errors


class DeploymentStrategy(Strategy):
    """apps/v1 Deployments: selector required, immutable and matching the template; containers."""

    def prepare_create(self, obj: Obj, view: View) -> None:
        super().prepare_create(obj, view)
        spec = obj.get("spec")
        if isinstance(spec, dict):
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault(
                "strategy",
                {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            )

    def validate_create(self, obj: Obj, view: View) -> list[FieldError]:
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        assert isinstance(spec, dict)
        errors: list[FieldError] = []
        selector = spec.get("selector")
        if not isinstance(selector, dict):
            errors.append(FieldError("spec.selector", "Required"))
        elif not selector.get("matchLabels") and not selector.get("matchExpressions"):
            errors.append(
                FieldError(
                    "spec.selector",
                    "Invalid",
                    value=selector,
                    detail="empty selector is invalid for deployment",
                )
            )
        labels = dig(spec, "template", "metadata", "labels")
        selects = isinstance(selector, dict) and (
            selector.get("matchLabels") or selector.get("matchExpressions")
        )
        if selects and not _selector_matches(selector, labels):
            errors.append(
                FieldError(
                    "spec.template.metadata.labels",
                    "Invalid",
                    value=labels or {},
                    detail="`selector` does not match template `labels`",
                )
            )
        replicas = spec.get("replicas")
        if isinstance(replicas, int) and replicas < 0:
            errors.append(
                FieldError(
                    "spec.replicas", "Invalid", value=replicas, detail="must be greater than or equal to 0"
                )
            )
        errors += container_errors(
            dig(spec, "template", "spec", "containers"), "spec.template.spec.containers"
        )
        return errors

    def validate_update(self, new: Obj, old: Obj, subresource: str, view: View) -> list[FieldError]:
        errors = self.validate_create(new, view)
        if dig(new, "spec", "selector") != dig(old, "spec", "selector"):
            errors.append(
                FieldError(
                    "spec.selector",
                    "Invalid",
                    value=dig(new, "spec", "selector"),
                    detail="field is immutable",
                )
            )
        return errors


class DisruptionBudgetStrategy(Strategy):
    """policy/v1 PodDisruptionBudgets: minAvailable or maxUnavailable, not both."""

    def validate_create(self, obj: Obj, view: View) -> list[FieldError]:
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        assert isinstance(spec, dict)
        if "minAvailable" in spec and "maxUnavailable" in spec:
            return [
                FieldError(
                    "spec", "Invalid", value=spec, detail="minAvailable and maxUnavailable cannot be both set"
                )
            ]
        return []

    def validate_update(self, new: Obj, old: Obj, subresource: str, view: View) -> list[FieldError]:
        return self.validate_create(new, view)
