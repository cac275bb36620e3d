"""What a request asks to do, in authorization terms: kube-apiserver's ``RequestInfoFactory``.

Reproduces staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go: ``/api/v1/...`` and
``/apis/GROUP/VERSION/...`` are resource requests whose verb comes from the HTTP method (POST create,
GET/HEAD get, PUT update, PATCH patch, DELETE delete), turned into list/watch (``?watch=`` not
``false``/``0``) or deletecollection when no name is on the path; ``/watch/`` and ``/proxy/`` path
prefixes set the verb; ``namespaces/NS/status|finalize`` is a subresource of the namespace, any other
``namespaces/NS/X`` a namespaced resource. A list or watch whose fieldSelector requires
``metadata.name=N`` is authorized as that name. Every other path is a non-resource request whose verb
is the lower-cased HTTP method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

SPECIAL_VERBS = ("proxy", "watch")
NAMESPACE_SUBRESOURCES = ("status", "finalize")
_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


@dataclass(frozen=True)
class RequestInfo:
    resource_request: bool
    path: str
    verb: str
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


def _exact_name(field_selector: str) -> str:
    """The value a field selector requires of metadata.name (``fields.RequiresExactMatch``)."""
    for term in field_selector.split(","):
        if "!=" in term:
            continue
        key, separator, value = term.partition("==") if "==" in term else term.partition("=")
        if separator and key.strip() == "metadata.name":
            value = value.strip()
            if value not in (".", "..") and "/" not in value and "%" not in value:
                return value
    return ""


def request_info(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    verb = method.lower()
    parts = [p for p in path.strip("/").split("/") if p] if path.strip("/") else []
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return RequestInfo(False, path, verb)
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(parts) < 3:
            return RequestInfo(False, path, verb)
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]
    if parts[0] in SPECIAL_VERBS:
        if len(parts) < 2:
            return RequestInfo(True, path, parts[0], group, version)
        verb, parts = parts[0], parts[1:]
    else:
        verb = _METHOD_VERBS.get(method.upper(), "")
    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in NAMESPACE_SUBRESOURCES:
            parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and verb != "proxy" else ""
    if not name and verb == "get":
        watch = query.get("watch")
        verb = "watch" if watch is not None and watch.lower() not in ("false", "0") else "list"
        name = _exact_name(query.get("fieldSelector", ""))
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(True, path, verb, group, version, namespace, resource, subresource, name)
