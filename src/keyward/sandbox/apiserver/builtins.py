"""The built-in resources the sandbox serves, and the events.k8s.io/v1 <-> core/v1 Event conversion."""

from __future__ import annotations

from keyward.sandbox.apiserver.crds import CrdStrategy
from keyward.sandbox.apiserver.csr import CsrStrategy
from keyward.sandbox.apiserver.kinds import (
    BindingStrategy,
    DeploymentStrategy,
    DisruptionBudgetStrategy,
    RoleStrategy,
    ServiceStrategy,
)
from keyward.sandbox.apiserver.objects import Obj
from keyward.sandbox.apiserver.resources import ALL_VERBS, COMMON_FIELDS, Codec, ResourceType, VersionSpec
from keyward.sandbox.apiserver.selectors import FieldPath
from keyward.sandbox.apiserver.strategies import KeyedDataStrategy, NamespaceStrategy, Strategy

# core/v1 Event field -> events.k8s.io/v1 Event field
_EVENT_FIELDS = {
    "involvedObject": "regarding",
    "message": "note",
    "reason": "reason",
    "related": "related",
    "type": "type",
    "eventTime": "eventTime",
    "series": "series",
    "action": "action",
    "reportingComponent": "reportingController",
    "reportingInstance": "reportingInstance",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
    "source": "deprecatedSource",
}
_EVENT_FIELDS_BACK = {new: old for old, new in _EVENT_FIELDS.items()}
_OBJECT_REFERENCE = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")


def _event_to_v1(obj: Obj) -> Obj:
    out: Obj = {"kind": "Event", "apiVersion": "events.k8s.io/v1", "metadata": obj.get("metadata", {})}
    for old, new in _EVENT_FIELDS.items():
        if old in obj:
            out[new] = obj[old]
    return out


def _event_to_core(obj: Obj) -> Obj:
    out: Obj = {"kind": "Event", "apiVersion": "v1", "metadata": obj.get("metadata", {})}
    for new, old in _EVENT_FIELDS_BACK.items():
        if new in obj:
            out[old] = obj[new]
    return out


def _fields(**extra: FieldPath) -> dict[str, FieldPath]:
    return {**COMMON_FIELDS, **{label.replace("__", "."): path for label, path in extra.items()}}


def _event_fields(reference: str, reporter: str) -> dict[str, FieldPath]:
    labels = dict(COMMON_FIELDS)
    labels.update({f"{reference}.{f}": (reference, f) for f in _OBJECT_REFERENCE})
    labels.update({"reason": ("reason",), "type": ("type",), reporter: (reporter,)})
    return labels


def _simple(
    group: str,
    plural: str,
    kind: str,
    namespaced: bool,
    strategy: Strategy,
    *,
    subresources: tuple[str, ...] = (),
    short_names: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    virtual: bool = False,
) -> ResourceType:
    """A resource served in one version, v1, with the default table."""
    return ResourceType(
        group,
        plural,
        kind.lower(),
        kind,
        namespaced,
        {"v1": VersionSpec("v1", subresources=frozenset(subresources))},
        "v1",
        strategy,
        short_names=short_names,
        categories=categories,
        verbs=("create",) if virtual else ALL_VERBS,
        virtual=virtual,
    )


def deployment_kinds() -> list[ResourceType]:
    """ServiceAccounts, RBAC, Services, Deployments, PDBs and the create-only review APIs."""
    rbac = "rbac.authorization.k8s.io"
    plain = Strategy()
    return [
        _simple(
            "", "serviceaccounts", "ServiceAccount", True, plain, subresources=("token",), short_names=("sa",)
        ),
        _simple(
            "", "services", "Service", True, ServiceStrategy(), subresources=("status",), short_names=("svc",)
        ),
        _simple(rbac, "roles", "Role", True, RoleStrategy(namespaced=True)),
        _simple(rbac, "clusterroles", "ClusterRole", False, RoleStrategy(namespaced=False)),
        _simple(rbac, "rolebindings", "RoleBinding", True, BindingStrategy(namespaced=True)),
        _simple(rbac, "clusterrolebindings", "ClusterRoleBinding", False, BindingStrategy(namespaced=False)),
        _simple(
            "apps",
            "deployments",
            "Deployment",
            True,
            DeploymentStrategy(),
            subresources=("status",),
            short_names=("deploy",),
            categories=("all",),
        ),
        _simple(
            "policy",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            True,
            DisruptionBudgetStrategy(),
            subresources=("status",),
            short_names=("pdb",),
        ),
        _simple("authentication.k8s.io", "tokenreviews", "TokenReview", False, plain, virtual=True),
        _simple(
            "authorization.k8s.io",
            "selfsubjectaccessreviews",
            "SelfSubjectAccessReview",
            False,
            plain,
            virtual=True,
        ),
        _simple(
            "authorization.k8s.io",
            "selfsubjectrulesreviews",
            "SelfSubjectRulesReview",
            False,
            plain,
            virtual=True,
        ),
        _simple(
            "authorization.k8s.io", "subjectaccessreviews", "SubjectAccessReview", False, plain, virtual=True
        ),
        _simple(
            "authorization.k8s.io",
            "localsubjectaccessreviews",
            "LocalSubjectAccessReview",
            True,
            plain,
            virtual=True,
        ),
    ]


def builtin_resources() -> list[ResourceType]:
    plain = Strategy()
    return [
        *deployment_kinds(),
        ResourceType(
            "",
            "namespaces",
            "namespace",
            "Namespace",
            False,
            {
                "v1": VersionSpec(
                    "v1",
                    subresources=frozenset({"status"}),
                    field_labels=_fields(status__phase=("status", "phase")),
                )
            },
            "v1",
            NamespaceStrategy(),
            short_names=("ns",),
            table="namespaces",
        ),
        ResourceType(
            "",
            "secrets",
            "secret",
            "Secret",
            True,
            {"v1": VersionSpec("v1", field_labels=_fields(type=("type",)))},
            "v1",
            KeyedDataStrategy(secret=True),
            table="secrets",
        ),
        ResourceType(
            "",
            "configmaps",
            "configmap",
            "ConfigMap",
            True,
            {"v1": VersionSpec("v1")},
            "v1",
            KeyedDataStrategy(secret=False),
            short_names=("cm",),
            table="configmaps",
        ),
        ResourceType(
            "",
            "events",
            "event",
            "Event",
            True,
            {
                "v1": VersionSpec(
                    "v1",
                    field_labels={
                        **_event_fields("involvedObject", "reportingComponent"),
                        "source": ("source", "component"),
                    },
                )
            },
            "v1",
            plain,
            short_names=("ev",),
            table="events",
        ),
        ResourceType(
            "events.k8s.io",
            "events",
            "event",
            "Event",
            True,
            {"v1": VersionSpec("v1", field_labels=_event_fields("regarding", "reportingController"))},
            "v1",
            plain,
            short_names=("ev",),
            storage_group="",
            table="events",
            codec=Codec(to_view=_event_to_v1, to_storage=_event_to_core),
        ),
        ResourceType(
            "coordination.k8s.io",
            "leases",
            "lease",
            "Lease",
            True,
            {"v1": VersionSpec("v1")},
            "v1",
            plain,
            table="leases",
        ),
        ResourceType(
            "certificates.k8s.io",
            "certificatesigningrequests",
            "certificatesigningrequest",
            "CertificateSigningRequest",
            False,
            {
                "v1": VersionSpec(
                    "v1",
                    subresources=frozenset({"status", "approval"}),
                    field_labels=_fields(spec__signerName=("spec", "signerName")),
                )
            },
            "v1",
            CsrStrategy(),
            short_names=("csr",),
            table="certificatesigningrequests",
        ),
        ResourceType(
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            False,
            {"v1": VersionSpec("v1", subresources=frozenset({"status"}))},
            "v1",
            CrdStrategy(),
            short_names=("crd", "crds"),
            categories=("api-extensions",),
            table="customresourcedefinitions",
        ),
    ]
