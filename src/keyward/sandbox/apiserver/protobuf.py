"""Decoding the Kubernetes protobuf request bodies that kubectl's typed clients send.

kubectl encodes built-in objects as protobuf (``application/vnd.kubernetes.protobuf``) in commands
such as ``create namespace|secret|configmap`` and ``certificate approve|deny``; it does not fall back
to JSON. The envelope is the magic ``k8s\\0`` plus a ``runtime.Unknown`` holding apiVersion, kind and
the object's bytes. Only the kinds kubectl writes to the sandbox are described below (field numbers
from k8s.io/api and k8s.io/apimachinery ``generated.proto``); responses are always JSON, which every
client accepts.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keyward.sandbox.apiserver.errors import ApiError, unsupported_media_type

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"


@dataclass(frozen=True)
class F:
    """One protobuf field: JSON name, wire decoding (``str bytes int bool time map bytesmap msg``)."""

    name: str
    kind: str
    repeated: bool = False
    message: str = ""  # for kind "msg" (and "map" of messages): the message name in MESSAGES


MESSAGES: dict[str, dict[int, F]] = {
    "TypeMeta": {1: F("apiVersion", "str"), 2: F("kind", "str")},
    "Unknown": {
        1: F("typeMeta", "msg", message="TypeMeta"),
        2: F("raw", "rawbytes"),
        3: F("contentEncoding", "str"),
        4: F("contentType", "str"),
    },
    "ObjectMeta": {
        1: F("name", "str"),
        2: F("generateName", "str"),
        3: F("namespace", "str"),
        4: F("selfLink", "str"),
        5: F("uid", "str"),
        6: F("resourceVersion", "str"),
        7: F("generation", "int"),
        8: F("creationTimestamp", "time"),
        9: F("deletionTimestamp", "time"),
        10: F("deletionGracePeriodSeconds", "int"),
        11: F("labels", "map"),
        12: F("annotations", "map"),
        13: F("ownerReferences", "msg", True, "OwnerReference"),
        14: F("finalizers", "str", True),
    },
    "OwnerReference": {
        1: F("kind", "str"),
        3: F("name", "str"),
        4: F("uid", "str"),
        5: F("apiVersion", "str"),
        6: F("controller", "bool"),
        7: F("blockOwnerDeletion", "bool"),
    },
    "Namespace": {
        1: F("metadata", "msg", message="ObjectMeta"),
        2: F("spec", "msg", message="NamespaceSpec"),
        3: F("status", "msg", message="NamespaceStatus"),
    },
    "NamespaceSpec": {1: F("finalizers", "str", True)},
    "NamespaceStatus": {1: F("phase", "str")},
    "Secret": {
        1: F("metadata", "msg", message="ObjectMeta"),
        2: F("data", "bytesmap"),
        3: F("type", "str"),
        4: F("stringData", "map"),
        5: F("immutable", "bool"),
    },
    "ConfigMap": {
        1: F("metadata", "msg", message="ObjectMeta"),
        2: F("data", "map"),
        3: F("binaryData", "bytesmap"),
        4: F("immutable", "bool"),
    },
    "CertificateSigningRequest": {
        1: F("metadata", "msg", message="ObjectMeta"),
        2: F("spec", "msg", message="CertificateSigningRequestSpec"),
        3: F("status", "msg", message="CertificateSigningRequestStatus"),
    },
    "CertificateSigningRequestSpec": {
        1: F("request", "bytes"),
        2: F("username", "str"),
        3: F("uid", "str"),
        4: F("groups", "str", True),
        5: F("usages", "str", True),
        6: F("extra", "msgmap", message="ExtraValue"),
        7: F("signerName", "str"),
        8: F("expirationSeconds", "int"),
    },
    "ExtraValue": {1: F("items", "str", True)},
    "CertificateSigningRequestStatus": {
        1: F("conditions", "msg", True, "CertificateSigningRequestCondition"),
        2: F("certificate", "bytes"),
    },
    "CertificateSigningRequestCondition": {
        1: F("type", "str"),
        2: F("reason", "str"),
        3: F("message", "str"),
        4: F("lastUpdateTime", "time"),
        5: F("lastTransitionTime", "time"),
        6: F("status", "str"),
    },
    "Time": {1: F("seconds", "int"), 2: F("nanos", "int")},
    "DeleteOptions": {
        1: F("gracePeriodSeconds", "int"),
        2: F("preconditions", "msg", message="Preconditions"),
        3: F("orphanDependents", "bool"),
        4: F("propagationPolicy", "str"),
        5: F("dryRun", "str", True),
    },
    "Preconditions": {1: F("uid", "str"), 2: F("resourceVersion", "str")},
    # core/v1 ServiceAccount, authentication/v1 and authorization/v1 (kubectl create sa|token, auth can-i)
    "ServiceAccount": {
        1: F("metadata", "msg", message="ObjectMeta"),
        2: F("secrets", "msg", True, "ObjectReference"),
        3: F("imagePullSecrets", "msg", True, "LocalObjectReference"),
        4: F("automountServiceAccountToken", "bool"),
    },
    "ObjectReference": {
        1: F("kind", "str"),
        2: F("namespace", "str"),
        3: F("name", "str"),
        4: F("uid", "str"),
        5: F("apiVersion", "str"),
        6: F("resourceVersion", "str"),
        7: F("fieldPath", "str"),
    },
    "LocalObjectReference": {1: F("name", "str")},
    "TokenRequest": {
        1: F("metadata", "msg", message="ObjectMeta"),
        2: F("spec", "msg", message="TokenRequestSpec"),
    },
    "TokenRequestSpec": {
        1: F("audiences", "str", True),
        3: F("boundObjectRef", "msg", message="BoundObjectReference"),
        4: F("expirationSeconds", "int"),
    },
    "BoundObjectReference": {
        1: F("kind", "str"),
        2: F("apiVersion", "str"),
        3: F("name", "str"),
        4: F("uid", "str"),
    },
    "TokenReview": {
        1: F("metadata", "msg", message="ObjectMeta"),
        2: F("spec", "msg", message="TokenReviewSpec"),
    },
    "TokenReviewSpec": {1: F("token", "str"), 2: F("audiences", "str", True)},
    "SelfSubjectAccessReview": {
        1: F("metadata", "msg", message="ObjectMeta"),
        2: F("spec", "msg", message="SubjectAccessReviewSpec"),
    },
    "SubjectAccessReview": {
        1: F("metadata", "msg", message="ObjectMeta"),
        2: F("spec", "msg", message="SubjectAccessReviewSpec"),
    },
    "LocalSubjectAccessReview": {
        1: F("metadata", "msg", message="ObjectMeta"),
        2: F("spec", "msg", message="SubjectAccessReviewSpec"),
    },
    "SubjectAccessReviewSpec": {  # SelfSubjectAccessReviewSpec is its fields 1 and 2
        1: F("resourceAttributes", "msg", message="ResourceAttributes"),
        2: F("nonResourceAttributes", "msg", message="NonResourceAttributes"),
        3: F("user", "str"),
        4: F("groups", "str", True),
        5: F("extra", "msgmap", message="ExtraValue"),
        6: F("uid", "str"),
    },
    "ResourceAttributes": {
        1: F("namespace", "str"),
        2: F("verb", "str"),
        3: F("group", "str"),
        4: F("version", "str"),
        5: F("resource", "str"),
        6: F("subresource", "str"),
        7: F("name", "str"),
    },
    "NonResourceAttributes": {1: F("path", "str"), 2: F("verb", "str")},
    "SelfSubjectRulesReview": {
        1: F("metadata", "msg", message="ObjectMeta"),
        2: F("spec", "msg", message="SelfSubjectRulesReviewSpec"),
    },
    "SelfSubjectRulesReviewSpec": {1: F("namespace", "str")},
    # rbac.authorization.k8s.io/v1 (kubectl create role|clusterrole|rolebinding|clusterrolebinding)
    "PolicyRule": {
        1: F("verbs", "str", True),
        2: F("apiGroups", "str", True),
        3: F("resources", "str", True),
        4: F("resourceNames", "str", True),
        5: F("nonResourceURLs", "str", True),
    },
    "Role": {1: F("metadata", "msg", message="ObjectMeta"), 2: F("rules", "msg", True, "PolicyRule")},
    "ClusterRole": {1: F("metadata", "msg", message="ObjectMeta"), 2: F("rules", "msg", True, "PolicyRule")},
    "RoleBinding": {
        1: F("metadata", "msg", message="ObjectMeta"),
        2: F("subjects", "msg", True, "Subject"),
        3: F("roleRef", "msg", message="RoleRef"),
    },
    "ClusterRoleBinding": {
        1: F("metadata", "msg", message="ObjectMeta"),
        2: F("subjects", "msg", True, "Subject"),
        3: F("roleRef", "msg", message="RoleRef"),
    },
    "Subject": {1: F("kind", "str"), 2: F("apiGroup", "str"), 3: F("name", "str"), 4: F("namespace", "str")},
    "RoleRef": {1: F("apiGroup", "str"), 2: F("kind", "str"), 3: F("name", "str")},
}
KINDS = {
    "Namespace",
    "Secret",
    "ConfigMap",
    "CertificateSigningRequest",
    "DeleteOptions",
    "ServiceAccount",
    "TokenRequest",
    "TokenReview",
    "SelfSubjectAccessReview",
    "SubjectAccessReview",
    "LocalSubjectAccessReview",
    "SelfSubjectRulesReview",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
}


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) triples; length-delimited values are bytes, varints ints."""
    position = 0
    while position < len(data):
        value: Any
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, position = _varint(data, position)
        elif wire == 2:
            length, position = _varint(data, position)
            value, position = data[position : position + length], position + length
        elif wire == 1:
            value, position = int.from_bytes(data[position : position + 8], "little"), position + 8
        elif wire == 5:
            value, position = int.from_bytes(data[position : position + 4], "little"), position + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_message(name: str, data: bytes) -> dict[str, Any]:
    schema = MESSAGES[name]
    out: dict[str, Any] = {}
    for number, _, raw in fields(data):
        spec = schema.get(number)
        if spec is None:
            continue  # a field the sandbox does not need (e.g. managedFields)
        value = _decode_value(spec, raw)
        empty = value in (None, "", 0, False) and spec.kind not in ("rawbytes", "map", "bytesmap", "msgmap")
        if empty and not spec.repeated:
            continue  # Go writes zero values that JSON would omit
        if spec.kind in ("map", "bytesmap", "msgmap"):
            out.setdefault(spec.name, {}).update(value)
        elif spec.repeated:
            out.setdefault(spec.name, []).append(value)
        else:
            out[spec.name] = value
    return out


def _decode_value(spec: F, raw: Any) -> Any:
    if spec.kind == "str":
        return bytes(raw).decode()
    if spec.kind == "bytes":
        return base64.b64encode(raw).decode()
    if spec.kind == "rawbytes":
        return bytes(raw)
    if spec.kind == "int":
        return _signed(raw)
    if spec.kind == "bool":
        return bool(raw)
    if spec.kind == "msg":
        return decode_message(spec.message, raw)
    if spec.kind == "time":
        seconds = decode_message("Time", raw).get("seconds", 0)
        if seconds <= 0:
            return None  # Go's zero time
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = {number: value for number, _, value in fields(raw)}
    key = bytes(entry.get(1, b"")).decode()
    value = entry.get(2, b"")
    if spec.kind == "map":
        return {key: bytes(value).decode()}
    if spec.kind == "bytesmap":
        return {key: base64.b64encode(value).decode()}
    decoded = decode_message(spec.message, value)
    if spec.message == "ExtraValue":  # JSON writes an ExtraValue as the list it wraps
        return {key: decoded.get("items", [])}
    return {key: decoded}


def decode_body(data: bytes) -> dict[str, Any]:
    """A protobuf request body as the JSON object it stands for; 415 for kinds the sandbox cannot read."""
    if not data.startswith(MAGIC):
        raise ApiError(400, "BadRequest", "protobuf body does not start with the k8s magic prefix")
    try:
        unknown = decode_message("Unknown", data[len(MAGIC) :])
        type_meta = unknown.get("typeMeta", {})
        kind = type_meta.get("kind", "")
        if kind not in KINDS:
            raise unsupported_media_type(PROTOBUF + f" ({kind or 'unknown kind'})", ["application/json"])
        obj = decode_message(kind, unknown.get("raw", b""))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "BadRequest", f"the protobuf request body could not be decoded: {exc}") from None
    return {"apiVersion": type_meta.get("apiVersion", ""), "kind": kind, **obj}
