"""The CustomResourceDefinitions, checked offline the way an API server would treat them.

Three layers: (1) every CRD is a well-formed apiextensions.k8s.io/v1 object (kubernetes-validate) whose
schemas are *structural* (Kubernetes' rules, checked here); (2) the objects in tests/data/crd-cases are
accepted or refused as their first line says, after the pruning and defaulting the API server does;
(3) every manifest in examples/ is valid against its CRD, or against Kubernetes' own schema for core kinds.

Objects are validated with jsonschema against a translation of each openAPIV3Schema. CEL rules
(x-kubernetes-validations) are not evaluated here; keyward re-checks what they say.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keyward.errors import UserError
from keyward.kube import crds, resources

REPO = Path(__file__).resolve().parents[3]
CASES_DIR = REPO / "tests" / "data" / "crd-cases"
EXAMPLES_DIR = REPO / "examples"
K8S_VERSION = kubernetes_validate.latest_version()

Schema = dict[str, Any]
Obj = dict[str, Any]


# --- the CRDs ---------------------------------------------------------------------------------------


def _keyward_crds() -> list[Obj]:
    return crds.load_crds()


def _all_crds() -> list[Obj]:
    return crds.load_crds() + crds.load_cert_manager_crds()


def _crd_id(crd: Obj) -> str:
    return str(crd["metadata"]["name"])


ALL_CRDS = _all_crds()
CRDS_BY_NAME = {_crd_id(crd): crd for crd in ALL_CRDS}


def _schema_for(api_version: str, kind: str) -> Schema:
    group, _, version = api_version.rpartition("/")
    for crd in ALL_CRDS:
        if crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind:
            for served in crd["spec"]["versions"]:
                if served["name"] == version and served["served"]:
                    return served["schema"]["openAPIV3Schema"]
    raise LookupError(f"no CRD serves {kind} in {api_version}")


def _is_custom(doc: Obj) -> bool:
    group = doc["apiVersion"].rpartition("/")[0]
    return any(crd["spec"]["group"] == group for crd in ALL_CRDS)


# --- structural schema rules (https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/
#     custom-resource-definitions/#specifying-a-structural-schema, plus apiextensions v1 validation) ---

TYPES = {"array", "boolean", "integer", "number", "object", "string"}
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
FORBIDDEN = ("$ref", "$schema", "definitions", "dependencies", "id", "patternProperties", "additionalItems")
NOT_IN_JUNCTORS = ("description", "type", "default", "additionalProperties", "nullable")
SCALARS = {"string", "integer", "number", "boolean"}


def structural_violations(schema: Schema) -> list[str]:
    """Every way ``schema`` (an openAPIV3Schema) breaks the structural-schema rules; empty when it is fine."""
    problems: list[str] = []
    if schema.get("type") != "object":
        problems.append("openAPIV3Schema: the root must have type object")
    _check_metadata(schema.get("properties", {}).get("metadata"), problems)
    _check_node(schema, "openAPIV3Schema", problems, in_junctor=False)
    return problems


def _check_metadata(metadata: Schema | None, problems: list[str]) -> None:
    if metadata is None:
        return
    other_keywords = set(metadata) - {"type", "description", "properties"}
    other_fields = set(metadata.get("properties", {})) - {"name", "generateName"}
    if other_keywords or other_fields:
        problems.append("metadata: only restrictions on metadata.name and metadata.generateName are allowed")


def _check_node(node: Any, path: str, problems: list[str], *, in_junctor: bool) -> None:
    if not isinstance(node, dict):
        problems.append(f"{path}: a schema must be an object, not {node!r}")
        return
    problems.extend(f"{path}: {key} is not allowed in a CRD schema" for key in FORBIDDEN if key in node)
    if node.get("uniqueItems") is True:
        problems.append(f"{path}: uniqueItems cannot be true")
    if node.get("x-kubernetes-preserve-unknown-fields") is False:
        problems.append(f"{path}: x-kubernetes-preserve-unknown-fields must be true or absent")
    if node.get("additionalProperties") is False:
        problems.append(f"{path}: additionalProperties cannot be false (unknown fields are pruned instead)")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties are mutually exclusive")
    type_ = node.get("type")
    if in_junctor:
        problems.extend(
            f"{path}: {key} is not allowed inside {'/'.join(JUNCTORS)}"
            for key in NOT_IN_JUNCTORS
            if key in node
        )
    elif node.get("x-kubernetes-int-or-string") is True:
        if type_ is not None:
            problems.append(f"{path}: x-kubernetes-int-or-string excludes a type")
    elif type_ is None and node.get("x-kubernetes-preserve-unknown-fields") is not True:
        problems.append(f"{path}: has no type")
    if type_ is not None and type_ not in TYPES:
        problems.append(f"{path}: unknown type {type_!r}")
    if not in_junctor and type_ == "array" and "items" not in node:
        problems.append(f"{path}: an array must specify items")
    has_fields = "properties" in node or isinstance(node.get("additionalProperties"), dict)
    if has_fields and type_ not in (None, "object"):
        problems.append(f"{path}: properties on a {type_}")
    if "items" in node and type_ not in (None, "array"):
        problems.append(f"{path}: items on a {type_}")
    _check_list_type(node, path, problems)
    _check_values(node, path, problems)
    _check_junctors(node, path, problems)
    for name, child in node.get("properties", {}).items():
        _check_node(child, f"{path}.{name}", problems, in_junctor=in_junctor)
    if isinstance(node.get("additionalProperties"), dict):
        _check_node(node["additionalProperties"], f"{path}[*]", problems, in_junctor=in_junctor)
    if "items" in node:
        _check_node(node["items"], f"{path}[]", problems, in_junctor=in_junctor)


def _check_list_type(node: Schema, path: str, problems: list[str]) -> None:
    list_type = node.get("x-kubernetes-list-type")
    keys = node.get("x-kubernetes-list-map-keys")
    if keys is not None and list_type != "map":
        problems.append(f"{path}: x-kubernetes-list-map-keys needs x-kubernetes-list-type map")
    if list_type is None:
        return
    if list_type not in ("atomic", "set", "map"):
        problems.append(f"{path}: unknown x-kubernetes-list-type {list_type!r}")
    if list_type != "map":
        return
    items = node.get("items", {})
    if not keys or items.get("type") != "object":
        problems.append(f"{path}: a map list needs x-kubernetes-list-map-keys and object items")
        return
    for key in keys:
        prop = items.get("properties", {}).get(key)
        if prop is None or prop.get("type") not in SCALARS:
            problems.append(f"{path}: map key {key} must be a scalar property of the items")
        elif key not in items.get("required", []) and "default" not in prop:
            problems.append(f"{path}: map key {key} must be required or have a default")


def _check_values(node: Schema, path: str, problems: list[str]) -> None:
    """Defaults and enum values must themselves be valid (the API server refuses the CRD otherwise)."""
    validator = jsonschema.Draft202012Validator(to_json_schema(node), format_checker=FORMATS)
    if "default" in node:
        default = copy.deepcopy(node["default"])
        apply_defaults(default, node)
        if pruned(default, node) != default:
            problems.append(f"{path}: the default carries fields the schema would prune")
        problems.extend(
            f"{path}: invalid default: {error.message}" for error in validator.iter_errors(default)
        )
    for value in node.get("enum", []):
        if not validator.is_valid(value):
            problems.append(f"{path}: enum value {value!r} does not match the schema")


def _check_junctors(node: Schema, path: str, problems: list[str]) -> None:
    for junctor in JUNCTORS:
        if junctor not in node:
            continue
        branches = [node[junctor]] if junctor == "not" else node[junctor]
        for index, branch in enumerate(branches):
            where = f"{path}.{junctor}[{index}]"
            _check_node(branch, where, problems, in_junctor=True)
            for name in branch.get("properties", {}) if isinstance(branch, dict) else ():
                if name not in node.get("properties", {}):
                    problems.append(f"{where}: property {name} must also be specified outside {junctor}")
            if isinstance(branch, dict) and "items" in branch and "items" not in node:
                problems.append(f"{where}: items must also be specified outside {junctor}")


# --- what the API server does with an object: prune, default, validate ------------------------------

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or _RFC3339.fullmatch(value) is not None


@FORMATS.checks("cidr", raises=ValueError)
def _is_cidr(value: object) -> bool:
    """Go's net.ParseCIDR, as kube-apiserver checks format: cidr (host bits may be set)."""
    return not isinstance(value, str) or ("/" in value and bool(ipaddress.ip_network(value, strict=False)))


@FORMATS.checks("byte", raises=(binascii.Error, ValueError))
def _is_base64(value: object) -> bool:
    if isinstance(value, str):
        base64.b64decode(value, validate=True)
    return True


_PASSED_THROUGH = (
    "enum",
    "required",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
)


def to_json_schema(node: Schema, *, strict: bool = False) -> Schema:
    """The JSON Schema (draft 2020-12) equivalent of an OpenAPI v3 CRD schema node.

    ``strict`` also refuses unknown fields where the API server would prune them: what kubectl's default
    strict field validation reports.
    """
    out: Schema = {key: copy.deepcopy(node[key]) for key in _PASSED_THROUGH if key in node}
    nullable = node.get("nullable") is True
    if node.get("x-kubernetes-int-or-string") is True:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    elif "type" in node:
        out["type"] = [node["type"], "null"] if nullable else node["type"]
    if nullable and "enum" in out:
        out["enum"].append(None)
    for bound in ("Minimum", "Maximum"):
        if node.get(f"exclusive{bound}") is True and bound.lower() in out:
            out[f"exclusive{bound}"] = out.pop(bound.lower())
    if "properties" in node:
        out["properties"] = {
            name: to_json_schema(child, strict=strict) for name, child in node["properties"].items()
        }
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"], strict=strict)
    elif strict and "properties" in node and node.get("x-kubernetes-preserve-unknown-fields") is not True:
        out["additionalProperties"] = False
    if "items" in node:
        out["items"] = to_json_schema(node["items"], strict=strict)
    for junctor in ("allOf", "anyOf", "oneOf"):
        if junctor in node:
            out.setdefault("allOf", []).append(
                {junctor: [to_json_schema(b, strict=strict) for b in node[junctor]]}
            )
    if "not" in node:
        out["not"] = to_json_schema(node["not"], strict=strict)
    return out


def pruned(value: Any, schema: Schema, *, root: bool = False) -> Any:
    """``value`` without undeclared fields, except where x-kubernetes-preserve-unknown-fields keeps them."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") is True or extra is True
        out = {}
        for key, item in value.items():
            if root and key in ("apiVersion", "kind", "metadata"):
                out[key] = item
            elif key in properties:
                out[key] = pruned(item, properties[key])
            elif isinstance(extra, dict):
                out[key] = pruned(item, extra)
            elif keep_unknown:
                out[key] = item
        return out
    if isinstance(value, list) and "items" in schema:
        return [pruned(item, schema["items"]) for item in value]
    return value


def apply_defaults(value: Any, schema: Schema) -> None:
    """Fill in defaults in place, as the API server does: absent (or null, non-nullable) fields get them."""
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, child in properties.items():
            if key in value and value[key] is None and not child.get("nullable"):
                del value[key]
            if key not in value and "default" in child:
                value[key] = copy.deepcopy(child["default"])
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            child = properties.get(key, extra if isinstance(extra, dict) else None)
            if child is not None:
                apply_defaults(item, child)
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            apply_defaults(item, schema["items"])


def field_path(error: jsonschema.ValidationError) -> str:
    """The failing field as the API server names it, e.g. ``spec.port`` or ``spec.usages[1]``."""
    parts = list(error.absolute_path)
    if error.validator == "required":
        parts.append(next(name for name in error.validator_value if name not in error.instance))
    elif error.validator == "additionalProperties":
        parts.append(min(set(error.instance) - set(error.schema.get("properties", {}))))
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path.lstrip(".")


def admit(obj: Obj, *, strict: bool = False) -> tuple[Obj, list[str]]:
    """What the API server stores for a create of ``obj``, and the fields it refuses (empty: accepted).

    ``strict`` is kubectl's default field validation: unknown fields are refused rather than pruned.
    """
    schema = _schema_for(obj["apiVersion"], obj["kind"])
    stored = copy.deepcopy(obj) if strict else pruned(copy.deepcopy(obj), schema, root=True)
    apply_defaults(stored, schema)
    validator = jsonschema.Draft202012Validator(to_json_schema(schema, strict=strict), format_checker=FORMATS)
    return stored, sorted({field_path(error) for error in validator.iter_errors(stored)})


# --- printer columns: the subset of kubectl's JSONPath the CRDs use ---------------------------------

_JSONPATH_STEP = re.compile(r'\.([A-Za-z0-9_]+)|\[\?\(@\.([A-Za-z0-9_]+)=="([^"]*)"\)\]')


def _steps(path: str) -> Iterator[tuple[str, str | None, str | None]]:
    position = 0
    while position < len(path):
        match = _JSONPATH_STEP.match(path, position)
        assert match, f'{path!r} uses JSONPath beyond .field and [?(@.key=="value")]'
        yield match.group(1) or match.group(2), match.group(2) and match.group(3), match.group(1)
        position = match.end()


def json_path(obj: Obj, path: str) -> str:
    """What kubectl prints in a column for ``path``: the first match, or nothing."""
    nodes: list[Any] = [obj]
    for name, wanted, field in _steps(path):
        if field is not None:
            nodes = [node[name] for node in nodes if isinstance(node, dict) and name in node]
        else:
            nodes = [
                item
                for node in nodes
                if isinstance(node, list)
                for item in node
                if isinstance(item, dict) and item.get(name) == wanted
            ]
    return str(nodes[0]) if nodes else ""


def schema_at(schema: Schema, path: str) -> Schema:
    """The schema node a printer column's JSONPath reads."""
    node = schema
    for name, _wanted, field in _steps(path):
        if field is not None:
            node = node["properties"][name]
        else:
            node = node["items"]
            assert name in node["properties"], f"{path}: filter on undeclared {name}"
    return node


# --- (1) the CRDs are valid and structural -----------------------------------------------------------


@pytest.mark.parametrize("crd", ALL_CRDS, ids=_crd_id)
def test_crd_is_a_valid_apiextensions_v1_object(crd: Obj) -> None:
    assert kubernetes_validate.validate(crd, K8S_VERSION, strict=True)


@pytest.mark.parametrize("crd", ALL_CRDS, ids=_crd_id)
def test_every_version_schema_is_structural(crd: Obj) -> None:
    for version in crd["spec"]["versions"]:
        assert structural_violations(version["schema"]["openAPIV3Schema"]) == [], version["name"]


@pytest.mark.parametrize("crd", ALL_CRDS, ids=_crd_id)
def test_crd_names_versions_and_status_subresource_are_consistent(crd: Obj) -> None:
    spec = crd["spec"]
    names = spec["names"]
    assert crd["metadata"]["name"] == f"{names['plural']}.{spec['group']}"
    assert names["listKind"] == f"{names['kind']}List"
    assert names["singular"] == names["kind"].lower()
    assert sum(version["storage"] for version in spec["versions"]) == 1
    for version in spec["versions"]:
        assert version["served"]
        assert version["subresources"] == {"status": {}}
        columns = version["additionalPrinterColumns"]
        assert {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}.items() <= next(
            c for c in columns if c["name"] == "Age"
        ).items()


def test_each_keyward_crd_file_holds_one_crd_named_after_group_and_plural() -> None:
    files = sorted(crds.crd_dir().glob("*.yaml"))
    for path in files:
        documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        assert len(documents) == 1, path.name
        spec = documents[0]["spec"]
        assert path.name == f"{spec['group']}_{spec['names']['plural']}.yaml"
    assert len(files) == len(crds.load_crds()) == 6


@pytest.mark.parametrize(
    "resource",
    [
        resources.TCS_ISSUERS,
        resources.TCS_CLUSTER_ISSUERS,
        resources.QUOTE_ATTESTATIONS,
        resources.EST_ISSUERS,
        resources.EST_CLUSTER_ISSUERS,
        resources.EST_ORDERS,
        resources.CERTIFICATES,
        resources.CERTIFICATE_REQUESTS,
    ],
    ids=str,
)
def test_every_resource_keyward_uses_is_served_as_it_expects(resource: resources.Resource) -> None:
    crd = CRDS_BY_NAME[resource.kopf_name]
    assert crd["spec"]["names"]["kind"] == resource.kind
    assert crd["spec"]["scope"] == ("Namespaced" if resource.namespaced else "Cluster")
    storage = next(v for v in crd["spec"]["versions"] if v["storage"])
    assert storage["name"] == resource.version


def test_quote_attestation_serves_v1alpha1_and_stores_v1alpha2_with_one_schema() -> None:
    versions = {v["name"]: v for v in CRDS_BY_NAME["quoteattestations.tcs.intel.com"]["spec"]["versions"]}
    assert (versions["v1alpha1"]["served"], versions["v1alpha1"]["storage"]) == (True, False)
    assert (versions["v1alpha2"]["served"], versions["v1alpha2"]["storage"]) == (True, True)
    # Conversion strategy None only rewrites apiVersion, which is honest only when the schemas agree.
    assert versions["v1alpha1"]["schema"] == versions["v1alpha2"]["schema"]


def _without_descriptions(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_descriptions(v) for k, v in value.items() if k != "description"}
    if isinstance(value, list):
        return [_without_descriptions(v) for v in value]
    return value


@pytest.mark.parametrize(
    ("namespaced", "cluster"),
    [
        ("tcsissuers.tcs.intel.com", "tcsclusterissuers.tcs.intel.com"),
        ("estissuers.est.mitre.org", "estclusterissuers.est.mitre.org"),
    ],
)
def test_cluster_issuers_take_the_same_spec_as_namespaced_issuers(namespaced: str, cluster: str) -> None:
    def versions(name: str) -> Any:
        return _without_descriptions(
            [[v["schema"], v["additionalPrinterColumns"]] for v in CRDS_BY_NAME[name]["spec"]["versions"]]
        )

    assert versions(namespaced) == versions(cluster)


@pytest.mark.parametrize(
    "bad_schema",
    [
        {"type": "object", "properties": {"spec": {"properties": {"x": {"type": "string"}}}}},
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}},
                    "additionalProperties": {"type": "string"},
                }
            },
        },
        {
            "type": "object",
            "properties": {"spec": {"type": "object", "anyOf": [{"properties": {"a": {"type": "string"}}}]}},
        },
        {
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}},
                    "anyOf": [{"type": "object"}],
                }
            },
        },
        {
            "type": "object",
            "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}},
        },
        {"type": "object", "properties": {"spec": {"type": "array"}}},
        {
            "type": "object",
            "properties": {"spec": {"type": "array", "uniqueItems": True, "items": {"type": "string"}}},
        },
        {
            "type": "object",
            "properties": {
                "spec": {"type": "array", "x-kubernetes-list-type": "map", "items": {"type": "object"}}
            },
        },
        {"type": "object", "properties": {"spec": {"type": "integer", "default": "443"}}},
        {"type": "object", "properties": {"spec": {"type": "string", "enum": ["a", 1]}}},
        {
            "type": "object",
            "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": False}},
        },
    ],
    ids=[
        "untyped",
        "props+additional",
        "junctor-only-property",
        "type-in-junctor",
        "metadata-labels",
        "array-without-items",
        "unique-items",
        "map-list-without-keys",
        "bad-default",
        "bad-enum",
        "preserve-false",
    ],
)
def test_structural_check_catches_what_the_api_server_refuses(bad_schema: Schema) -> None:
    assert structural_violations(bad_schema) != []


def test_kubernetes_validate_catches_a_misspelt_schema_keyword() -> None:
    crd = copy.deepcopy(CRDS_BY_NAME["estissuers.est.mitre.org"])
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec_schema["properties"]["port"]["maximun"] = 65535
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(crd, K8S_VERSION, strict=True)


# --- printer columns ---------------------------------------------------------------------------------

READY = {
    "type": "Ready",
    "status": "True",
    "reason": "Reconcile",
    "message": "Success",
    "lastTransitionTime": "2024-05-01T10:00:00Z",
}


@pytest.mark.parametrize(
    ("crd_name", "header"),
    [
        ("tcsissuers.tcs.intel.com", ["Age", "Ready", "Reason", "Message"]),
        ("tcsclusterissuers.tcs.intel.com", ["Age", "Ready", "Reason", "Message"]),
        ("estissuers.est.mitre.org", ["Age", "Ready", "Reason", "Message"]),
        ("estclusterissuers.est.mitre.org", ["Age", "Ready", "Reason", "Message"]),
        ("estorders.est.mitre.org", ["Age", "State", "Attempts", "Last Error"]),
        ("certificates.cert-manager.io", ["Ready", "Secret", "Age"]),
        (
            "certificaterequests.cert-manager.io",
            ["Approved", "Denied", "Ready", "Issuer", "Requestor", "Age"],
        ),
        ("issuers.cert-manager.io", ["Ready", "Age"]),
    ],
)
def test_kubectl_get_prints_the_seed_columns(crd_name: str, header: list[str]) -> None:
    for version in CRDS_BY_NAME[crd_name]["spec"]["versions"]:
        columns = version["additionalPrinterColumns"]
        assert [c["name"] for c in columns if not c.get("priority")] == header


@pytest.mark.parametrize("crd", ALL_CRDS, ids=_crd_id)
def test_printer_columns_read_declared_fields_of_their_type(crd: Obj) -> None:
    expected = {
        "string": "string",
        "integer": "integer",
        "number": "number",
        "boolean": "boolean",
        "date": "string",
    }
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        for column in version["additionalPrinterColumns"]:
            if column["jsonPath"] == ".metadata.creationTimestamp":
                continue
            node = schema_at(schema, column["jsonPath"])
            assert node["type"] == expected[column["type"]], column["name"]
            if column["type"] == "date":
                assert node.get("format") == "date-time", column["name"]


def _columns(crd_name: str) -> list[Obj]:
    return CRDS_BY_NAME[crd_name]["spec"]["versions"][0]["additionalPrinterColumns"]


def test_a_ready_issuer_prints_as_in_the_seed() -> None:
    issuer = {
        "metadata": {"creationTimestamp": "2024-05-01T10:00:00Z"},
        "status": {
            "conditions": [{"type": "Other", "status": "False", "reason": "X", "message": "Y"}, READY]
        },
    }
    row = {c["name"]: json_path(issuer, c["jsonPath"]) for c in _columns("tcsissuers.tcs.intel.com")}
    assert (row["Ready"], row["Reason"], row["Message"]) == ("True", "Reconcile", "Success")


def test_a_pending_certificate_request_prints_as_in_the_seed() -> None:
    request = {
        "spec": {
            "issuerRef": {"name": "my-ca"},
            "username": "system:serviceaccount:cert-manager:cert-manager",
        },
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Pending"}]},
    }
    row = {
        c["name"]: json_path(request, c["jsonPath"]) for c in _columns("certificaterequests.cert-manager.io")
    }
    assert row == {
        "Approved": "",
        "Denied": "",
        "Ready": "False",
        "Issuer": "my-ca",
        "Requestor": "system:serviceaccount:cert-manager:cert-manager",
        "Status": "",
        "Age": "",
    }


# --- (2) the schema cases ----------------------------------------------------------------------------

_EXPECT = re.compile(r"# expect: (accepted|rejected (\S+))\n")


def _cases() -> list[Path]:
    return sorted(CASES_DIR.glob("*.yaml"))


def _expectation(path: Path) -> str | None:
    match = _EXPECT.match(path.read_text())
    assert match, f"{path.name}: the first line must be '# expect: accepted' or '# expect: rejected <field>'"
    return match.group(2)


@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.stem)
def test_schema_case(case: Path) -> None:
    obj = yaml.safe_load(case.read_text())
    rejected_field = _expectation(case)
    _stored, refused = admit(obj)
    if rejected_field is None:
        assert refused == []
    else:
        assert refused == [rejected_field]


def test_the_seed_cases_and_keyward_kinds_are_all_covered() -> None:
    names = {path.stem for path in _cases()}
    seed = {
        "estissuer-bad-port",
        "estissuer-bad-base64",
        "estissuer-missing-required",
        "estissuer-correct",
        "estissuer-correct-min",
        "tcsissuer-bad-size",
    }
    assert seed <= names
    kinds = {yaml.safe_load(path.read_text())["kind"] for path in _cases()}
    assert {crd["spec"]["names"]["kind"] for crd in _keyward_crds()} <= kinds


def test_est_issuer_with_only_required_fields_gets_port_443_and_an_empty_label() -> None:
    stored, refused = admit(yaml.safe_load((CASES_DIR / "estissuer-correct-min.yaml").read_text()))
    assert refused == []
    assert stored["spec"]["port"] == 443
    assert stored["spec"]["label"] == ""
    # No default: keyward picks Basic when secretName is set, else ClientCertificate.
    assert "authMethod" not in stored["spec"]


def test_tcs_issuer_without_spec_gets_the_seed_defaults() -> None:
    stored, refused = admit(yaml.safe_load((CASES_DIR / "tcsissuer-correct-min.yaml").read_text()))
    assert refused == []
    assert stored["spec"] == {
        "selfSign": True,
        "labels": {},
        "privateKey": {"algorithm": "RSA"},
        "caDuration": "87600h",
        "maxDuration": "8760h",
        "allowCA": False,
        "policy": {"forbiddenSubjectOrganizations": ["system:masters"]},
    }


def test_est_issuer_keeps_unknown_spec_fields_and_still_validates_declared_ones() -> None:
    correct, refused = admit(yaml.safe_load((CASES_DIR / "estissuer-correct.yaml").read_text()), strict=True)
    assert refused == []
    assert correct["spec"]["unknownField"] == "doesntmatter"
    _stored, refused = admit(yaml.safe_load((CASES_DIR / "estissuer-bad-port.yaml").read_text()), strict=True)
    assert refused == ["spec.port"]


def _issuer(spec: Obj) -> Obj:
    return {
        "apiVersion": "tcs.intel.com/v1alpha1",
        "kind": "TCSIssuer",
        "metadata": {"name": "x"},
        "spec": spec,
    }


def test_tcs_issuer_unknown_fields_are_pruned_or_refused_under_strict_field_validation() -> None:
    stored, refused = admit(_issuer({"secretName": "s", "selfSigned": False}))
    assert refused == []
    assert "selfSigned" not in stored["spec"]
    assert stored["spec"]["selfSign"] is True
    _stored, refused = admit(_issuer({"secretName": "s", "selfSigned": False}), strict=True)
    assert refused == ["spec.selfSigned"]


@pytest.mark.parametrize(
    "trust",
    [
        {"pem": "-----BEGIN CERTIFICATE-----", "secretRef": {"name": "ca", "key": "ca.crt"}},
        {},
    ],
    ids=["both", "neither"],
)
def test_est_client_ca_trust_takes_exactly_one_source(trust: Obj) -> None:
    _stored, refused = admit(_issuer({"est": {"label": "ca", "clientCATrust": trust}}))
    assert refused == ["spec.est.clientCATrust"]


@pytest.mark.parametrize("duration", ["87600h", "1h30m", "90m", "1.5h", "300s", "500ms"])
def test_go_durations_are_accepted(duration: str) -> None:
    assert admit(_issuer({"caDuration": duration, "maxDuration": duration}))[1] == []


@pytest.mark.parametrize("duration", ["", "1y", "1 h", "-1h", "h", "1h-30m", "P1D"])
def test_non_go_durations_are_refused(duration: str) -> None:
    assert admit(_issuer({"maxDuration": duration}))[1] == ["spec.maxDuration"]


def test_status_conditions_are_validated() -> None:
    issuer = _issuer({}) | {
        "status": {"conditions": [{"type": "Ready", "status": "Yes", "lastTransitionTime": "yesterday"}]}
    }
    assert admit(issuer)[1] == ["status.conditions[0].lastTransitionTime", "status.conditions[0].status"]


# --- (3) the examples --------------------------------------------------------------------------------


def _example_documents() -> list[tuple[str, Obj]]:
    documents = []
    for path in sorted(EXAMPLES_DIR.rglob("*.yaml")):
        for index, doc in enumerate(d for d in yaml.safe_load_all(path.read_text()) if d):
            documents.append((f"{path.relative_to(EXAMPLES_DIR)}#{index}", doc))
    return documents


def _csr_base64() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Foo Company"),
            x509.NameAttribute(NameOID.COMMON_NAME, "foo.bar.com"),
        ]
    )
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return base64.b64encode(csr.public_bytes(serialization.Encoding.PEM)).decode()


@pytest.mark.parametrize(
    ("name", "doc"), _example_documents(), ids=[name for name, _ in _example_documents()]
)
def test_example_is_valid(name: str, doc: Obj) -> None:
    if _is_custom(doc):
        _stored, refused = admit(doc, strict=True)
        assert refused == [], name
    else:
        text = string.Template(yaml.safe_dump(doc)).substitute(CSR_BASE64=_csr_base64())
        assert kubernetes_validate.validate(yaml.safe_load(text), K8S_VERSION, strict=True)


def test_csr_example_filled_in_as_documented_carries_the_request() -> None:
    template = (EXAMPLES_DIR / "tcs" / "csr.yaml").read_text()
    assert "${CSR_BASE64}" in template
    request = _csr_base64()
    csr = yaml.safe_load(string.Template(template).safe_substitute(CSR_BASE64=request))
    assert csr["spec"]["signerName"] == "tcsissuer.tcs.intel.com/sandbox.my-ca"
    assert csr["spec"]["usages"] == ["client auth"]
    loaded = x509.load_pem_x509_csr(base64.b64decode(csr["spec"]["request"]))
    assert loaded.subject.rfc4514_string() == "CN=foo.bar.com,O=Foo Company"


def test_examples_cover_the_seed_walkthroughs() -> None:
    found = {(doc["kind"], doc["metadata"]["name"]) for _name, doc in _example_documents()}
    assert {
        ("Namespace", "sandbox"),
        ("TCSIssuer", "my-ca"),
        ("Certificate", "my-certificate"),
        ("CertificateSigningRequest", "test-csr"),
        ("EstIssuer", "testrfc7030"),
        ("Secret", "testrfc7030-cred"),
        ("Certificate", "test-cert"),
    } <= found
    issuer = next(doc for _name, doc in _example_documents() if doc["kind"] == "TCSIssuer")
    assert issuer["metadata"] == {"name": "my-ca", "namespace": "sandbox"}
    assert issuer["spec"] == {"secretName": "my-ca-cert"}


# --- the loader --------------------------------------------------------------------------------------


def test_loader_finds_the_checkout_crds_and_cert_managers_set() -> None:
    assert crds.crd_dir() == REPO / "deploy" / "crds"
    assert {crd["spec"]["group"] for crd in crds.load_crds()} == {"tcs.intel.com", "est.mitre.org"}
    assert crds.cert_manager_crds_path().is_file()
    assert [crd["spec"]["names"]["kind"] for crd in crds.load_cert_manager_crds()] == [
        "Certificate",
        "CertificateRequest",
        "Issuer",
        "ClusterIssuer",
    ]


def test_loader_falls_back_to_packaged_crds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packaged = tmp_path / "_data" / "crds"
    packaged.mkdir(parents=True)
    source = REPO / "deploy" / "crds" / "est.mitre.org_estorders.yaml"
    (packaged / source.name).write_text(source.read_text())
    monkeypatch.setattr(crds, "_SOURCE_CRDS", tmp_path / "nowhere")
    monkeypatch.setattr(crds, "_PACKAGED_CRDS", packaged)
    assert crds.crd_dir() == packaged
    assert [crd["metadata"]["name"] for crd in crds.load_crds()] == ["estorders.est.mitre.org"]


def test_loader_names_both_places_when_the_crds_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crds, "_SOURCE_CRDS", tmp_path / "source")
    monkeypatch.setattr(crds, "_PACKAGED_CRDS", tmp_path / "packaged")
    with pytest.raises(UserError, match=r"source.*packaged.*reinstall"):
        crds.crd_dir()
