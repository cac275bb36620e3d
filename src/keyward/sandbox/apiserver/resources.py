"""The resource registry: what the server serves, under which groups, versions and names.

A ``ResourceType`` is one stored resource (e.g. ``widgets.example.com``); each served version of it is
a ``View``. Objects are stored once, in the storage version, and a request through a view gets them
with that view's ``apiVersion`` (and, for events.k8s.io, the field conversion in ``codec``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keyward.sandbox.apiserver.jsonpath import Step, compile_path
from keyward.sandbox.apiserver.objects import Obj
from keyward.sandbox.apiserver.selectors import FieldPath

if TYPE_CHECKING:
    from keyward.sandbox.apiserver.strategies import Strategy

StorageKey = tuple[str, str]  # (group, plural)
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
COMMON_FIELDS: dict[str, FieldPath] = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
}


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: str
    json_path: str
    format: str = ""
    description: str = ""
    priority: int = 0
    steps: tuple[Step, ...] = ()

    @classmethod
    def from_crd(cls, column: dict[str, Any]) -> PrinterColumn:
        return cls(
            name=column["name"],
            type=column.get("type", "string"),
            json_path=column["jsonPath"],
            format=column.get("format", ""),
            description=column.get("description", ""),
            priority=int(column.get("priority", 0)),
            steps=compile_path(column["jsonPath"]),
        )


@dataclass(frozen=True)
class Codec:
    """Field conversion between the stored form and a view's form (identity for most resources)."""

    to_view: Callable[[Obj], Obj]
    to_storage: Callable[[Obj], Obj]


@dataclass
class VersionSpec:
    name: str
    schema: dict[str, Any] | None = None
    subresources: frozenset[str] = frozenset()
    printer_columns: tuple[PrinterColumn, ...] | None = None  # None: the built-in or default table
    field_labels: dict[str, FieldPath] = field(default_factory=lambda: dict(COMMON_FIELDS))


@dataclass
class ResourceType:
    group: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    versions: dict[str, VersionSpec]  # served versions, most preferred first
    storage_version: str
    strategy: Strategy
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    storage_group: str | None = None  # events.k8s.io events live in core's storage
    codec: Codec | None = None
    table: str = ""  # name of a built-in table layout, "" for printer columns / the default one
    is_custom: bool = False
    verbs: tuple[str, ...] = ALL_VERBS
    virtual: bool = False  # create-only, never stored (reviews): the server answers from the request

    @property
    def storage_key(self) -> StorageKey:
        return (self.group if self.storage_group is None else self.storage_group, self.plural)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def view(self, version: str) -> View:
        return View(self, version, self.versions[version])


@dataclass(frozen=True)
class View:
    """A resource as seen through one served group/version."""

    resource: ResourceType
    version: str
    spec: VersionSpec

    @property
    def api_version(self) -> str:
        return self.resource.api_version(self.version)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.resource.group, self.version, self.resource.plural)

    def from_storage(self, obj: Obj) -> Obj:
        """The object as this view returns it (a new top-level dict; nested values are shared)."""
        if self.resource.codec is not None:
            return self.resource.codec.to_view(obj)
        out = dict(obj)
        out["apiVersion"] = self.api_version
        return out

    def to_storage(self, obj: Obj) -> Obj:
        if self.resource.codec is not None:
            return self.resource.codec.to_storage(obj)
        obj["apiVersion"] = self.resource.api_version(self.resource.storage_version)
        return obj


_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(name: str) -> tuple[int, int, int, str]:
    """kube's ordering: GA before beta before alpha, higher numbers first, others last by name."""
    match = _VERSION.match(name)
    if not match:
        return (3, 0, 0, name)
    major, stage, minor = int(match.group(1)), match.group(2), int(match.group(3) or 0)
    rank = {None: 0, "beta": 1, "alpha": 2}[stage]
    return (rank, -major, -minor, "")


class Registry:
    """All served resources, looked up by (group, version, plural), by storage key, or by group."""

    def __init__(self) -> None:
        self._types: dict[StorageKey, ResourceType] = {}  # keyed by (group, plural) as served
        self._views: dict[tuple[str, str, str], View] = {}
        self.generation = 0  # bumped on every change; discovery caches on it

    def add(self, resource: ResourceType) -> None:
        self.remove(resource.group, resource.plural)
        self._types[(resource.group, resource.plural)] = resource
        for version in resource.versions:
            view = resource.view(version)
            self._views[view.key] = view
        self.generation += 1

    def remove(self, group: str, plural: str) -> ResourceType | None:
        resource = self._types.pop((group, plural), None)
        if resource is not None:
            for version in resource.versions:
                self._views.pop((group, version, plural), None)
            self.generation += 1
        return resource

    def view(self, group: str, version: str, plural: str) -> View | None:
        return self._views.get((group, version, plural))

    def get(self, group: str, plural: str) -> ResourceType | None:
        return self._types.get((group, plural))

    def by_kind(self, group: str, kind: str) -> ResourceType | None:
        """The resource serving ``kind`` in ``group`` (what discovery tells a webhook)."""
        return next((r for r in self._types.values() if r.group == group and r.kind == kind), None)

    def by_storage(self, key: StorageKey) -> ResourceType | None:
        """The resource that owns a storage key (the one not borrowing another's storage)."""
        resource = self._types.get(key)
        return resource if resource is not None and resource.storage_group is None else None

    def resources(self) -> Iterator[ResourceType]:
        return iter(list(self._types.values()))

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions, most preferred first."""
        versions: dict[str, set[str]] = {}
        for resource in self._types.values():
            versions.setdefault(resource.group, set()).update(resource.versions)
        return {group: sorted(names, key=version_priority) for group, names in versions.items()}

    def in_group_version(self, group: str, version: str) -> list[View]:
        return [view for (g, v, _), view in self._views.items() if g == group and v == version]

    def namespaced_plural(self, group: str, version: str, plural: str) -> bool:
        view = self._views.get((group, version, plural))
        return view is not None and view.resource.namespaced
