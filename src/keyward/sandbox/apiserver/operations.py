"""The API's verbs on objects: get, list, create, update (PUT), patch, delete.

Every operation is synchronous and runs on the event loop thread, so a read-modify-write never
interleaves with another request: no locks are needed, and resourceVersion checks are exact.
Objects go in and out in storage form; the HTTP layer converts them per view.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from keyward.sandbox.apiserver import errors as err
from keyward.sandbox.apiserver.admission import Admission, Operation
from keyward.sandbox.apiserver.auth import ADMIN, UserInfo
from keyward.sandbox.apiserver.errors import FieldError
from keyward.sandbox.apiserver.gc import GarbageCollector
from keyward.sandbox.apiserver.objects import (
    Obj,
    clone,
    generated_name,
    label_value_problems,
    meta,
    name_problems,
    now_rfc3339,
    qualified_name_problems,
)
from keyward.sandbox.apiserver.patch import (
    APPLY,
    JSON_PATCH,
    STRATEGIC,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from keyward.sandbox.apiserver.resources import Registry, ResourceType, View
from keyward.sandbox.apiserver.schema import apply_defaults, prune, validate
from keyward.sandbox.apiserver.selectors import ObjectFilter
from keyward.sandbox.apiserver.store import Store

_SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
    "managedFields",
)
_KEPT_ON_UPDATE = (
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
)
NAMESPACES = ("", "namespaces")
UNDELETABLE_NAMESPACES = ("default", "kube-system", "kube-public")


@dataclass
class ListPage:
    items: list[Obj]
    resource_version: str
    continue_token: str = ""
    remaining: int | None = None


@dataclass
class WriteResult:
    obj: Obj
    warnings: list[str]
    created: bool = False


class Cluster:
    """The object API over one registry and one store."""

    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store
        self.gc = GarbageCollector(self)
        self.admission: Admission | None = None  # set by the server; writes with a user go through it

    # -- reads -------------------------------------------------------------------------------

    def get(self, view: View, namespace: str, name: str) -> Obj:
        resource = view.resource
        obj = self.store.get(resource.storage_key, namespace if resource.namespaced else "", name)
        if obj is None:
            raise err.not_found(resource.group, resource.plural, name)
        return obj

    def matching(self, view: View, selection: ObjectFilter) -> Iterator[Obj]:
        resource = view.resource
        namespace = selection.namespace if resource.namespaced else None
        for obj in self.store.iterate(resource.storage_key, namespace):
            if view_matches(view, selection, obj):
                yield obj

    def list_page(self, view: View, selection: ObjectFilter, limit: int = 0, token: str = "") -> ListPage:
        rv = str(self.store.rv)
        items = self.matching(view, selection)
        if token:
            rv, after = _decode_token(token)
            items = (o for o in items if _sort_key(o) > after)
        if limit <= 0:
            return ListPage(list(items), rv)
        page = [obj for _, obj in zip(range(limit), items, strict=False)]
        rest = sum(1 for _ in items)
        if not rest:
            return ListPage(page, rv)
        return ListPage(page, rv, _encode_token(rv, _sort_key(page[-1])), rest)

    # -- writes ------------------------------------------------------------------------------

    def create(
        self,
        view: View,
        namespace: str,
        body: Any,
        *,
        dry_run: bool = False,
        field_validation: str = "Warn",
        user: UserInfo | None = None,
    ) -> WriteResult:
        """Create an object; ``user`` (the requester) puts the write through admission."""
        resource = view.resource
        obj = _object_body(view, body)
        metadata = meta(obj)
        if resource.namespaced:
            if metadata.get("namespace") not in (None, "", namespace):
                raise err.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = generated_name(str(metadata["generateName"]))
        name = str(metadata.get("name") or "")
        if resource.namespaced:
            self._require_live_namespace(resource, namespace, name)
        for key in _SERVER_METADATA:
            metadata.pop(key, None)
        obj = view.to_storage(obj)
        obj["kind"] = resource.kind
        operation = None
        if user is not None and self.admission is not None:
            operation = Operation(True, view, obj, None, "", user, namespace)
            self.admission.mutate(operation)
        resource.strategy.prepare_create(obj, view)
        resource.strategy.set_requester(obj, user or ADMIN)
        warnings = self._apply_schema(view, obj, name, field_validation)
        problems = _metadata_errors(obj, resource) + resource.strategy.validate_create(obj, view)
        if problems:
            raise err.invalid(resource.group, resource.kind, name, problems)
        if operation is not None and self.admission is not None:
            self.admission.validate(operation)
        if self.store.get(resource.storage_key, namespace if resource.namespaced else "", name) is not None:
            raise err.already_exists(resource.group, resource.plural, name)
        metadata = obj["metadata"]
        metadata.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), generation=1)
        if dry_run:
            return WriteResult(obj, warnings, created=True)
        metadata["resourceVersion"] = str(self.store.next_rv())
        self.store.put(resource.storage_key, obj, None)
        resource.strategy.on_stored(self, obj, None)
        self.gc.check_owners(resource.storage_key, obj)
        return WriteResult(obj, warnings, created=True)

    def replace(
        self,
        view: View,
        namespace: str,
        name: str,
        body: Any,
        subresource: str = "",
        *,
        dry_run: bool = False,
        field_validation: str = "Warn",
        user: UserInfo | None = None,
    ) -> WriteResult:
        old = self.get(view, namespace, name)
        incoming = _object_body(view, body)
        metadata = meta(incoming)
        if metadata.get("name") not in (None, "", name):
            raise err.bad_request(
                f"the name of the object ({metadata['name']}) does not match the name on the URL ({name})"
            )
        if view.resource.namespaced and metadata.get("namespace") not in (None, "", namespace):
            raise err.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if view.resource.is_custom and not metadata.get("resourceVersion"):
            raise err.invalid(
                view.resource.group,
                view.resource.kind,
                name,
                [
                    FieldError(
                        "metadata.resourceVersion",
                        "Invalid",
                        value=0,
                        detail="must be specified for an update",
                    )
                ],
            )
        return self._write(view, old, incoming, subresource, dry_run, field_validation, user)

    def patch(
        self,
        view: View,
        namespace: str,
        name: str,
        patch_type: str,
        body: Any,
        subresource: str = "",
        *,
        dry_run: bool = False,
        field_validation: str = "Warn",
        user: UserInfo | None = None,
    ) -> WriteResult:
        resource = view.resource
        if patch_type == STRATEGIC and resource.is_custom:
            raise err.unsupported_media_type(patch_type, [JSON_PATCH, "application/merge-patch+json", APPLY])
        existing = self.store.get(resource.storage_key, namespace if resource.namespaced else "", name)
        if existing is None:
            if patch_type == APPLY and not subresource and isinstance(body, dict):
                body = clone(body)
                meta(body)["name"] = name
                return self.create(
                    view, namespace, body, dry_run=dry_run, field_validation=field_validation, user=user
                )
            raise err.not_found(resource.group, resource.plural, name)
        current = clone(view.from_storage(existing))
        if patch_type == JSON_PATCH:
            patched = json_patch(current, body)
        elif patch_type == STRATEGIC:
            patched = strategic_merge_patch(current, body)
        else:
            patched = merge_patch(current, body)
        if not isinstance(patched, dict):
            raise err.bad_request("the patch turned the object into something that is not an object")
        return self._write(view, existing, patched, subresource, dry_run, field_validation, user)

    def _write(
        self,
        view: View,
        old: Obj,
        incoming: Obj,
        subresource: str,
        dry_run: bool,
        field_validation: str,
        user: UserInfo | None = None,
    ) -> WriteResult:
        resource = view.resource
        old_meta = old["metadata"]
        name = old_meta["name"]
        wanted_rv = meta(incoming).get("resourceVersion")
        if wanted_rv and wanted_rv != old_meta["resourceVersion"]:
            raise err.conflict(resource.group, resource.plural, name, err.STALE)
        wanted_uid = incoming["metadata"].get("uid")
        if wanted_uid and wanted_uid != old_meta["uid"]:
            raise err.conflict(
                resource.group,
                resource.plural,
                name,
                f"Precondition failed: UID in "
                f"precondition: {wanted_uid}, UID in object meta: {old_meta['uid']}",
            )
        new = view.to_storage(incoming)
        new["kind"] = resource.kind
        new_meta = new["metadata"]
        for key in _KEPT_ON_UPDATE:
            if key in old_meta:
                new_meta[key] = old_meta[key]
            else:
                new_meta.pop(key, None)
        new_meta["resourceVersion"] = old_meta["resourceVersion"]
        new_meta.pop("managedFields", None)
        new = resource.strategy.prepare_update(new, old, subresource, view)
        warnings = self._apply_schema(view, new, name, field_validation)
        problems = (
            _metadata_errors(new, resource)
            + _finalizer_errors(new, old)
            + resource.strategy.validate_update(new, old, subresource, view)
        )
        if problems:
            raise err.invalid(resource.group, resource.kind, name, problems)
        if user is not None and self.admission is not None:
            namespace = str(old_meta.get("namespace") or "")
            self.admission.validate(Operation(False, view, new, old, subresource, user, namespace))
        if new == old:
            return WriteResult(old, warnings)
        if _spec_changed(view, new, old):
            new["metadata"]["generation"] = int(old_meta.get("generation") or 1) + 1
        if dry_run:
            return WriteResult(new, warnings)
        if self._ready_to_remove(resource, new):
            return WriteResult(self._remove(resource, old, "Background", last=new), warnings)
        new["metadata"]["resourceVersion"] = str(self.store.next_rv())
        self.store.put(resource.storage_key, new, old)
        resource.strategy.on_stored(self, new, old)
        if new["metadata"].get("ownerReferences") != old_meta.get("ownerReferences"):
            self.gc.check_owners(resource.storage_key, new)
        return WriteResult(new, warnings)

    def update_stored(self, resource: ResourceType, old: Obj, new: Obj) -> Obj:
        """A server-side write (garbage collector, namespace controller) without request checks."""
        new["metadata"]["resourceVersion"] = str(self.store.next_rv())
        self.store.put(resource.storage_key, new, old)
        return new

    # -- deletion ----------------------------------------------------------------------------

    def delete(
        self, view: View, namespace: str, name: str, options: dict[str, Any], *, dry_run: bool = False
    ) -> tuple[Obj, bool]:
        """Delete or start deleting; returns the object and whether it is gone already."""
        resource = view.resource
        old = self.get(view, namespace, name)
        preconditions = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            wanted = preconditions.get(field)
            if wanted and wanted != old["metadata"].get(field):
                label = "UID" if field == "uid" else "ResourceVersion"
                raise err.conflict(
                    resource.group,
                    resource.plural,
                    name,
                    f"Precondition failed: {label} in "
                    f"precondition: {wanted}, {label} in object meta: {old['metadata'].get(field)}",
                )
        policy = options.get("propagationPolicy") or (
            "Orphan" if options.get("orphanDependents") else "Background"
        )
        if policy not in ("Orphan", "Background", "Foreground"):
            raise err.invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                [
                    FieldError(
                        "propagationPolicy",
                        "Unsupported",
                        value=policy,
                        supported=("Background", "Foreground", "Orphan"),
                    )
                ],
            )
        if dry_run:
            return old, False
        result = self.delete_object(resource, old, policy)
        return result, self.store.by_uid(old["metadata"]["uid"]) is None

    def delete_object(self, resource: ResourceType, old: Obj, policy: str = "Background") -> Obj:
        metadata = old["metadata"]
        if resource.storage_key == NAMESPACES:
            return self._terminate_namespace(resource, old)
        if not metadata.get("finalizers"):
            return self._remove(resource, old, policy)
        if metadata.get("deletionTimestamp"):
            return old
        new = dict(old)
        new["metadata"] = {**metadata, "deletionTimestamp": now_rfc3339(), "deletionGracePeriodSeconds": 0}
        new = self.update_stored(resource, old, new)
        if policy == "Orphan":
            self.gc.orphan(metadata["uid"])
        return new

    def _ready_to_remove(self, resource: ResourceType, obj: Obj) -> bool:
        metadata = obj["metadata"]
        if not metadata.get("deletionTimestamp") or metadata.get("finalizers"):
            return False
        return resource.storage_key != NAMESPACES or self.store.population(metadata["name"]) == 0

    def _remove(self, resource: ResourceType, stored: Obj, policy: str, last: Obj | None = None) -> Obj:
        final = dict(last if last is not None else stored)
        final["metadata"] = {**final["metadata"], "resourceVersion": str(self.store.next_rv())}
        self.store.remove(resource.storage_key, final, stored)
        resource.strategy.on_removed(self, final)
        uid = stored["metadata"]["uid"]
        if policy == "Orphan":
            self.gc.orphan(uid)
        else:
            self.gc.owner_gone(uid)
        namespace = stored["metadata"].get("namespace")
        if namespace:
            self.finish_namespace(namespace)
        return final

    def _terminate_namespace(self, resource: ResourceType, old: Obj) -> Obj:
        name = old["metadata"]["name"]
        if name in UNDELETABLE_NAMESPACES:
            raise err.forbidden("", "namespaces", name, "this namespace may not be deleted")
        if old["metadata"].get("deletionTimestamp"):
            return old
        new = dict(old)
        new["metadata"] = {
            **old["metadata"],
            "deletionTimestamp": now_rfc3339(),
            "deletionGracePeriodSeconds": 0,
        }
        new["status"] = {**(old.get("status") or {}), "phase": "Terminating"}
        new = self.update_stored(resource, old, new)
        self.gc.purge_namespace(name)
        return new

    def finish_namespace(self, name: str) -> None:
        """Remove a terminating namespace once it is empty and has no finalizers left."""
        namespace = self.store.get(NAMESPACES, "", name)
        resource = self.registry.by_storage(NAMESPACES)
        if namespace is not None and resource is not None and self._ready_to_remove(resource, namespace):
            self._remove(resource, namespace, "Background")

    def _require_live_namespace(self, resource: ResourceType, namespace: str, name: str) -> None:
        found = self.store.get(NAMESPACES, "", namespace)
        if found is None:
            raise err.not_found("", "namespaces", namespace)
        if found["metadata"].get("deletionTimestamp"):
            raise err.forbidden(
                resource.group,
                resource.plural,
                name,
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )

    # -- resources ---------------------------------------------------------------------------

    def install(self, resource: ResourceType) -> None:
        """Serve a (custom) resource; watchers of versions no longer served are ended."""
        self.registry.add(resource)
        for subscriber in self.store.subscribers(resource.storage_key):
            if subscriber.version not in resource.versions:
                subscriber.close()

    def uninstall(self, group: str, plural: str) -> None:
        resource = self.registry.remove(group, plural)
        if resource is None:
            return
        self.store.drop_resource(resource.storage_key)
        for subscriber in self.store.subscribers(resource.storage_key):
            subscriber.close()

    def _apply_schema(self, view: View, obj: Obj, name: str, field_validation: str) -> list[str]:
        schema = view.spec.schema
        if schema is None:
            return []
        pruned = prune(obj, schema)
        kind = view.resource.kind
        if pruned and field_validation == "Strict":
            unknown = ", ".join(f'unknown field "{path}"' for path in pruned)
            raise err.bad_request(
                f'{kind} in version "{view.version}" cannot be handled as a {kind}: '
                f"strict decoding error: {unknown}"
            )
        apply_defaults(obj, schema)
        problems = validate(obj, schema)
        if problems:
            raise err.invalid(view.resource.group, kind, name, problems)
        return [] if field_validation == "Ignore" else [f'unknown field "{path}"' for path in pruned]


def view_matches(view: View, selection: ObjectFilter, obj: Obj) -> bool:
    if view.resource.codec is not None and selection.fields is not None:
        obj = view.from_storage(obj)
    return selection.matches(obj)


def _object_body(view: View, body: Any) -> Obj:
    resource = view.resource
    if not isinstance(body, dict):
        raise err.bad_request(
            f'{resource.kind} in version "{view.version}" cannot be handled as a '
            f"{resource.kind}: the body is not a JSON object"
        )
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if api_version not in (None, "", view.api_version):
        raise err.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({view.api_version})"
        )
    if kind not in (None, "", resource.kind):
        raise err.bad_request(
            f"the kind in the data ({kind}) does not match the expected kind ({resource.kind})"
        )
    rest = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
    return {"apiVersion": view.api_version, "kind": resource.kind, **rest}


TOTAL_ANNOTATION_SIZE = 256 * 1024  # apimachinery TotalAnnotationSizeLimitB


def _metadata_errors(obj: Obj, resource: ResourceType) -> list[FieldError]:
    """ObjectMeta validation (apimachinery pkg/api/validation/objectmeta.go): name, labels, annotations,
    finalizers and ownerReferences of every object, custom resources included."""
    metadata = obj["metadata"]
    problems: list[FieldError] = []
    name = metadata.get("name")
    if not name:
        problems.append(FieldError("metadata.name", "Required", detail="name or generateName is required"))
    else:
        for why in name_problems(str(name), resource.strategy.name_rule):
            problems.append(FieldError("metadata.name", "Invalid", value=name, detail=why))
    for field in ("labels", "annotations"):
        values = metadata.get(field)
        if values is not None and (
            not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values())
        ):
            problems.append(
                FieldError(
                    f"metadata.{field}",
                    "Invalid",
                    value=values,
                    detail="must be a map of string keys to string values",
                )
            )
    labels = metadata.get("labels")
    if isinstance(labels, dict):
        for key, value in labels.items():
            for why in qualified_name_problems(str(key)):
                problems.append(FieldError("metadata.labels", "Invalid", value=key, detail=why))
            for why in label_value_problems(str(value)):
                problems.append(FieldError("metadata.labels", "Invalid", value=value, detail=why))
    annotations = metadata.get("annotations")
    if isinstance(annotations, dict):
        for key in annotations:
            for why in qualified_name_problems(str(key).lower()):
                problems.append(FieldError("metadata.annotations", "Invalid", value=key, detail=why))
        size = sum(len(str(k)) + len(str(v)) for k, v in annotations.items())
        if size > TOTAL_ANNOTATION_SIZE:
            problems.append(
                FieldError(
                    "metadata.annotations",
                    "TooLong",
                    detail=f"may not be more than {TOTAL_ANNOTATION_SIZE} bytes",
                )
            )
    finalizers = metadata.get("finalizers")
    if finalizers is not None and (
        not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers)
    ):
        problems.append(
            FieldError("metadata.finalizers", "Invalid", value=finalizers, detail="must be a list of strings")
        )
    elif finalizers:
        for finalizer in finalizers:
            for why in qualified_name_problems(finalizer):
                problems.append(FieldError("metadata.finalizers", "Invalid", value=finalizer, detail=why))
    for index, ref in enumerate(metadata.get("ownerReferences") or []):
        for key in ("apiVersion", "kind", "name", "uid"):
            if not isinstance(ref, dict) or not ref.get(key):
                problems.append(FieldError(f"metadata.ownerReferences[{index}].{key}", "Required"))
    return problems


def _finalizer_errors(new: Obj, old: Obj) -> list[FieldError]:
    if not old["metadata"].get("deletionTimestamp"):
        return []
    before = set(old["metadata"].get("finalizers") or [])
    added = [f for f in new["metadata"].get("finalizers") or [] if f not in before]
    if not added:
        return []
    listed = ", ".join(json.dumps(f) for f in added)
    return [
        FieldError(
            "metadata.finalizers",
            "Forbidden",
            detail=f"no new finalizers can be added if the object "
            f"is being deleted, found new finalizers []string{{{listed}}}",
        )
    ]


def _spec_changed(view: View, new: Obj, old: Obj) -> bool:
    ignored = {"metadata", "apiVersion", "kind"}
    if "status" in view.spec.subresources:
        ignored.add("status")
    keys = (set(new) | set(old)) - ignored
    return any(new.get(k) != old.get(k) for k in keys)


def _sort_key(obj: Obj) -> tuple[str, str]:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def _encode_token(rv: str, after: tuple[str, str]) -> str:
    raw = json.dumps({"rv": rv, "after": list(after)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str) -> tuple[str, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(data["rv"]), (str(data["after"][0]), str(data["after"][1]))
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error):
        raise err.bad_request(f"continue key is not valid: {token!r}") from None
