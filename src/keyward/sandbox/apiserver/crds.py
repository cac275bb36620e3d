"""CustomResourceDefinitions: validation, server-set status, and turning one into a served resource.

Creating or updating a CRD (re)registers its resource right away (real clusters take a moment to
set Established; the sandbox is Established at once). Deleting it drops all its objects, emitting
DELETED events, and ends the watches on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keyward.sandbox.apiserver.errors import FieldError
from keyward.sandbox.apiserver.jsonpath import JsonPathError, compile_path
from keyward.sandbox.apiserver.objects import Obj, clone, dig, now_rfc3339
from keyward.sandbox.apiserver.resources import (
    COMMON_FIELDS,
    PrinterColumn,
    ResourceType,
    VersionSpec,
    version_priority,
)
from keyward.sandbox.apiserver.strategies import Strategy

if TYPE_CHECKING:
    from keyward.sandbox.apiserver.operations import Cluster
    from keyward.sandbox.apiserver.resources import View

CUSTOM_RESOURCE_STRATEGY = Strategy()
AGE_COLUMN = PrinterColumn(
    "Age", "date", ".metadata.creationTimestamp", steps=compile_path(".metadata.creationTimestamp")
)


class CrdStrategy(Strategy):
    def prepare_create(self, obj: Obj, view: View) -> None:
        _default_names(obj)
        obj["status"] = _status(obj, None)

    def prepare_update(self, new: Obj, old: Obj, subresource: str, view: View) -> Obj:
        result = super().prepare_update(new, old, subresource, view)
        _default_names(result)
        result["status"] = _status(result, old)
        return result

    def validate_create(self, obj: Obj, view: View) -> list[FieldError]:
        return crd_errors(obj)

    def validate_update(self, new: Obj, old: Obj, subresource: str, view: View) -> list[FieldError]:
        errors = crd_errors(new)
        for path in (("spec", "group"), ("spec", "names", "plural")):
            if dig(new, *path) != dig(old, *path):
                errors.append(
                    FieldError(".".join(path), "Invalid", value=dig(new, *path), detail="field is immutable")
                )
        return errors

    def on_stored(self, cluster: Cluster, obj: Obj, old: Obj | None) -> None:
        cluster.install(resource_from_crd(obj))

    def on_removed(self, cluster: Cluster, obj: Obj) -> None:
        cluster.uninstall(obj["spec"]["group"], obj["spec"]["names"]["plural"])


def _default_names(obj: Obj) -> None:
    names = dig(obj, "spec", "names")
    if isinstance(names, dict) and isinstance(names.get("kind"), str):
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
    spec = obj.get("spec")
    if isinstance(spec, dict):
        spec.setdefault("conversion", {"strategy": "None"})


def _status(obj: Obj, old: Obj | None) -> dict[str, Any]:
    now = now_rfc3339()
    old_conditions = {c.get("type"): c for c in dig(old or {}, "status", "conditions") or []}
    stored = list(dig(old or {}, "status", "storedVersions") or [])
    for version in dig(obj, "spec", "versions") or []:
        if isinstance(version, dict) and version.get("storage") and version.get("name") not in stored:
            stored.append(version["name"])
    conditions = []
    for kind, reason, message in (
        ("NamesAccepted", "NoConflicts", "no conflicts found"),
        ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
    ):
        since = (old_conditions.get(kind) or {}).get("lastTransitionTime", now)
        conditions.append(
            {
                "type": kind,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastTransitionTime": since,
            }
        )
    names = clone(dig(obj, "spec", "names") or {})
    return {"conditions": conditions, "acceptedNames": names, "storedVersions": stored}


def crd_errors(obj: Obj) -> list[FieldError]:
    """What makes a CRD unusable, in kube-apiserver's terms."""
    errors: list[FieldError] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [FieldError("spec", "Required")]
    group = spec.get("group")
    names: dict[str, Any] = spec["names"] if isinstance(spec.get("names"), dict) else {}
    if not group:
        errors.append(FieldError("spec.group", "Required"))
    elif "." not in str(group):
        errors.append(
            FieldError(
                "spec.group", "Invalid", value=group, detail="should be a domain with at least one dot"
            )
        )
    for key in ("plural", "kind"):
        if not names.get(key):
            errors.append(FieldError(f"spec.names.{key}", "Required"))
    if group and names.get("plural") and obj["metadata"].get("name") != f"{names['plural']}.{group}":
        errors.append(
            FieldError(
                "metadata.name",
                "Invalid",
                value=obj["metadata"].get("name"),
                detail='must be spec.names.plural+"."+spec.group',
            )
        )
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        errors.append(
            FieldError(
                "spec.scope", "Unsupported", value=spec.get("scope"), supported=("Cluster", "Namespaced")
            )
        )
    errors.extend(_version_errors(spec.get("versions")))
    return errors


def _version_errors(versions: Any) -> list[FieldError]:
    if not isinstance(versions, list) or not versions:
        return [FieldError("spec.versions", "Required")]
    errors: list[FieldError] = []
    storage = [v for v in versions if isinstance(v, dict) and v.get("storage")]
    if len(storage) != 1:
        errors.append(
            FieldError(
                "spec.versions",
                "Invalid",
                value=[v.get("name") for v in storage],
                detail="must have exactly one version marked as storage version",
            )
        )
    for index, version in enumerate(versions):
        path = f"spec.versions[{index}]"
        if not isinstance(version, dict) or not version.get("name"):
            errors.append(FieldError(f"{path}.name", "Required"))
            continue
        if not isinstance(dig(version, "schema", "openAPIV3Schema"), dict):
            errors.append(
                FieldError(f"{path}.schema.openAPIV3Schema", "Required", detail="schemas are required")
            )
        for number, column in enumerate(version.get("additionalPrinterColumns") or []):
            try:
                compile_path(str(column.get("jsonPath", "")))
            except JsonPathError as exc:
                errors.append(
                    FieldError(
                        f"{path}.additionalPrinterColumns[{number}].jsonPath",
                        "Invalid",
                        value=column.get("jsonPath"),
                        detail=str(exc),
                    )
                )
    return errors


def resource_from_crd(crd: Obj) -> ResourceType:
    spec = crd["spec"]
    names = spec["names"]
    served = [v for v in spec["versions"] if v.get("served")]
    versions: dict[str, VersionSpec] = {}
    for version in sorted(served, key=lambda v: version_priority(v["name"])):
        columns = version.get("additionalPrinterColumns")
        labels = dict(COMMON_FIELDS)
        for selectable in version.get("selectableFields") or []:
            path = str(selectable.get("jsonPath", "")).lstrip(".")
            labels[path] = tuple(path.split("."))
        versions[version["name"]] = VersionSpec(
            name=version["name"],
            schema=dig(version, "schema", "openAPIV3Schema"),
            subresources=frozenset(k for k in ("status",) if k in (version.get("subresources") or {})),
            printer_columns=(tuple(PrinterColumn.from_crd(c) for c in columns) if columns else (AGE_COLUMN,)),
            field_labels=labels,
        )
    storage = next(v["name"] for v in spec["versions"] if v.get("storage"))
    return ResourceType(
        group=spec["group"],
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        kind=names["kind"],
        namespaced=spec["scope"] == "Namespaced",
        versions=versions,
        storage_version=storage,
        strategy=CUSTOM_RESOURCE_STRATEGY,
        short_names=tuple(names.get("shortNames") or ()),
        categories=tuple(names.get("categories") or ()),
        is_custom=True,
    )
