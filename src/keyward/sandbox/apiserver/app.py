"""The HTTP face of the sandbox API server: kube-apiserver's URL layout on aiohttp.

Every request is authenticated (bearer token) and authorized (``system:masters``, then RBAC) first,
as kube-apiserver's filter chain does, then the fault plan may answer instead; then
``/api/v1/...`` and ``/apis/<group>/<version>/...`` are parsed into (view, namespace, name,
subresource) and dispatched to the verbs in ``operations``; everything that fails becomes a
``Status`` body with the matching HTTP code.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import yaml
from aiohttp import web

from keyward.sandbox.apiserver import discovery, reviews
from keyward.sandbox.apiserver import errors as err
from keyward.sandbox.apiserver.auth import (
    ANONYMOUS,
    AUTHENTICATED,
    SERVICE_ACCOUNTS,
    SERVICE_ACCOUNTS_KEY,
    UNAUTHENTICATED,
    Tokens,
    UserInfo,
    split_service_account_username,
)
from keyward.sandbox.apiserver.faults import FaultPlan, failure
from keyward.sandbox.apiserver.operations import Cluster, WriteResult
from keyward.sandbox.apiserver.patch import APPLY, PATCH_TYPES
from keyward.sandbox.apiserver.permissions import PermissionLog
from keyward.sandbox.apiserver.protobuf import PROTOBUF, decode_body
from keyward.sandbox.apiserver.rbac import Attributes, Authorizer, denied
from keyward.sandbox.apiserver.requestinfo import request_info
from keyward.sandbox.apiserver.resources import View
from keyward.sandbox.apiserver.selectors import ObjectFilter, parse_field_selector, parse_label_selector
from keyward.sandbox.apiserver.tables import table
from keyward.sandbox.apiserver.watch import Watcher, serve_watch

logger = logging.getLogger(__name__)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: API groups whose resources are only answered, never stored (TokenReview, the access reviews): creating
#: one is a request, not a write.
ANSWERED_GROUPS = frozenset({"authentication.k8s.io", "authorization.k8s.io"})
MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's request size limit
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


USER = web.RequestKey("user", UserInfo)
CUT_AFTER = web.RequestKey("cut_after", int)


@dataclass
class ServerState:
    cluster: Cluster
    tokens: Tokens
    authorizer: Authorizer
    permissions: PermissionLog
    faults: FaultPlan
    anonymous: bool = False
    address: str = ""
    bookmark_interval: float = 5.0
    requests: int = 0
    writes: int = 0
    watchers: set[Watcher] = field(default_factory=set)

    def service_account(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cluster.store.get(SERVICE_ACCOUNTS_KEY, namespace, name)

    @property
    def reviews(self) -> reviews.ReviewContext:
        return reviews.ReviewContext(self.authorizer, self.tokens, self.service_account)

    def authenticate(self, request: web.Request) -> UserInfo:
        """The bearer token's user; 401 for a missing (unless anonymous is on) or unknown token."""
        header = request.headers.get("Authorization", "")
        if not header and self.anonymous:
            return ANONYMOUS
        scheme, _, token = header.partition(" ")
        user = None
        if scheme.lower() == "bearer" and token.strip():
            user = self.tokens.authenticate(token.strip(), self.service_account)
        if user is None:
            raise err.ApiError(401, "Unauthorized", "Unauthorized")
        return user

    def impersonate(self, request: web.Request, requestor: UserInfo) -> UserInfo:
        """The user ``Impersonate-*`` headers ask to act as, once ``impersonate`` is allowed for each
        (staging/src/k8s.io/apiserver/pkg/endpoints/filters/impersonation.go)."""
        headers = request.headers
        name = headers.get("Impersonate-User", "")
        groups_asked = headers.getall("Impersonate-Group", [])
        extras = {
            unquote(key[len("Impersonate-Extra-") :]).lower(): headers.getall(key)
            for key in {k for k in headers if k.lower().startswith("impersonate-extra-")}
        }
        uid = headers.get("Impersonate-Uid", "")
        if not name:
            if groups_asked or extras or uid:
                raise err.bad_request(
                    "requested impersonation of groups, extras or a uid without impersonating a user"
                )
            return requestor
        checks: list[Attributes] = []
        groups: list[str] = []
        account = split_service_account_username(name)
        if account is not None:
            checks.append(
                Attributes(requestor, "impersonate", True, "", "serviceaccounts", "", account[0], account[1])
            )
            if not groups_asked:
                groups = [SERVICE_ACCOUNTS, f"{SERVICE_ACCOUNTS}:{account[0]}"]
        else:
            checks.append(Attributes(requestor, "impersonate", True, "", "users", name=name))
        for group in groups_asked:
            checks.append(Attributes(requestor, "impersonate", True, "", "groups", name=group))
            groups.append(group)
        for key, values in extras.items():
            for value in values:
                checks.append(
                    Attributes(
                        requestor, "impersonate", True, "authentication.k8s.io", "userextras", key, name=value
                    )
                )
        if uid:
            checks.append(
                Attributes(requestor, "impersonate", True, "authentication.k8s.io", "uids", name=uid)
            )
        for attributes in checks:
            decision = self.authorizer.authorize(attributes)
            self.permissions.record(attributes, decision.allowed)
            if not decision.allowed:
                raise denied(attributes, decision.reason)
        if name != ANONYMOUS.name and not {AUTHENTICATED, UNAUTHENTICATED} & set(groups):
            groups.append(AUTHENTICATED)
        return UserInfo.of(name, groups, uid, extras)

    def authorize(self, request: web.Request, user: UserInfo) -> Attributes:
        """The request's attributes once the authorizer allows them; 403 (logged) otherwise."""
        info = request_info(request.method, request.path, request.query)
        attributes = Attributes(
            user,
            info.verb,
            info.resource_request,
            info.api_group,
            info.resource,
            info.subresource,
            info.namespace,
            info.name,
            info.path,
        )
        decision = self.authorizer.authorize(attributes)
        self.permissions.record(attributes, decision.allowed)
        if not decision.allowed:
            raise denied(attributes, decision.reason)
        return attributes

    async def inject(self, request: web.Request, attributes: Attributes) -> web.Response | None:
        """A fault plan's answer to this request, if a rule fires (delays and cuts fall through)."""
        rule = self.faults.pick(attributes)
        if rule is None:
            return None
        if rule.effect == "delay":
            await asyncio.sleep(rule.seconds)
            return None
        if rule.effect == "cut-watch":
            request[CUT_AFTER] = rule.count
            return None
        resource = self.cluster.registry.get(attributes.api_group, attributes.resource)
        error, headers = failure(rule, attributes, resource.kind if resource else attributes.resource)
        response = _status(error)
        response.headers.update(headers)
        return response


@dataclass(frozen=True)
class Target:
    view: View
    namespace: str
    name: str | None
    subresource: str
    watch_path: bool  # the deprecated /watch/ URL prefix


def _json(body: Any, status: int = 200, warnings: Sequence[str] = ()) -> web.Response:
    response = web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(), status=status, content_type="application/json"
    )
    for warning in warnings:
        response.headers.add("Warning", '299 - "' + warning.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return response


def _status(error: err.ApiError) -> web.Response:
    return _json(error.status(), error.code)


def _answered_only(attributes: Attributes) -> bool:
    """A create that stores nothing: a review, or a ServiceAccount token (TokenRequest)."""
    return attributes.api_group in ANSWERED_GROUPS or attributes.subresource == "token"


def build_app(state: ServerState) -> web.Application:
    @web.middleware
    async def kube_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        state.requests += 1
        try:
            user = state.impersonate(request, state.authenticate(request))
            attributes = state.authorize(request, user)
            request[USER] = user
            if request.method in WRITE_METHODS and not _answered_only(attributes):
                state.writes += 1
            if state.faults.rules:
                injected = await state.inject(request, attributes)
                if injected is not None:
                    return injected
            return await handler(request)
        except err.ApiError as error:
            return _status(error)
        except web.HTTPNotFound:
            return _status(err.path_not_found())
        except web.HTTPMethodNotAllowed:
            return _status(err.method_not_allowed(request.method))
        except web.HTTPException:
            raise
        except ConnectionResetError:
            raise
        except Exception:
            logger.exception("sandbox API server failed on %s %s", request.method, request.path)
            return _status(
                err.ApiError(
                    500, "InternalError", "an internal error occurred in the sandbox API server; see its log"
                )
            )

    app = web.Application(client_max_size=MAX_BODY, middlewares=[kube_errors])
    routes = _Routes(state)
    slash = "{_slash:/?}"  # kube-apiserver answers with or without a trailing slash; kr8s sends one
    for path in ("/healthz", "/livez", "/readyz"):
        app.router.add_get(path + slash, routes.healthy)
        app.router.add_get(path + "/{check:.+}", routes.healthy)
    app.router.add_get("/version" + slash, routes.version)
    app.router.add_get("/api" + slash, routes.api)
    app.router.add_get("/apis" + slash, routes.apis)
    app.router.add_get("/openapi/v3" + slash, routes.openapi_index)
    app.router.add_get("/openapi/v3/{path:.+}", routes.openapi_document)
    app.router.add_get("/api/{version}" + slash, routes.core_resources)
    app.router.add_route("*", "/api/{version}/{tail:.+}", routes.core_request)
    app.router.add_get("/apis/{group}" + slash, routes.group)
    app.router.add_get("/apis/{group}/{version}" + slash, routes.group_resources)
    app.router.add_route("*", "/apis/{group}/{version}/{tail:.+}", routes.group_request)
    return app


class _Routes:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.cluster = state.cluster
        self.registry = state.cluster.registry

    # -- discovery ---------------------------------------------------------------------------

    async def healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def version(self, request: web.Request) -> web.Response:
        return _json(discovery.KUBE_VERSION)

    async def api(self, request: web.Request) -> web.Response:
        return _json(discovery.api_versions(self.state.address))

    async def apis(self, request: web.Request) -> web.Response:
        return _json(discovery.api_group_list(self.registry))

    async def group(self, request: web.Request) -> web.Response:
        return _json(_found(discovery.api_group(self.registry, request.match_info["group"])))

    async def core_resources(self, request: web.Request) -> web.Response:
        return _json(_found(discovery.resource_list(self.registry, "", request.match_info["version"])))

    async def group_resources(self, request: web.Request) -> web.Response:
        info = request.match_info
        return _json(_found(discovery.resource_list(self.registry, info["group"], info["version"])))

    async def openapi_index(self, request: web.Request) -> web.Response:
        return _json(discovery.openapi_v3_index(self.registry))

    async def openapi_document(self, request: web.Request) -> web.Response:
        return _json(_found(discovery.openapi_v3_document(self.registry, request.match_info["path"])))

    # -- resources ---------------------------------------------------------------------------

    async def core_request(self, request: web.Request) -> web.StreamResponse:
        return await self._resource(request, "", request.match_info["version"], request.match_info["tail"])

    async def group_request(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        return await self._resource(request, info["group"], info["version"], info["tail"])

    def _target(self, group: str, version: str, tail: str) -> Target:
        segments = [s for s in tail.split("/") if s]
        watch_path = bool(segments) and segments[0] == "watch"
        if watch_path:
            segments = segments[1:]
        namespace = ""
        if (
            len(segments) >= 3
            and segments[0] == "namespaces"
            and self.registry.namespaced_plural(group, version, segments[2])
        ):
            namespace, segments = segments[1], segments[2:]
        if not segments or len(segments) > 3:
            raise err.path_not_found()
        view = self.registry.view(group, version, segments[0])
        if view is None:
            raise err.path_not_found()
        name = segments[1] if len(segments) > 1 else None
        subresource = segments[2] if len(segments) > 2 else ""
        if view.resource.namespaced and name is not None and not namespace:
            raise err.path_not_found()
        if subresource and subresource not in view.spec.subresources:
            raise err.path_not_found()
        return Target(view, namespace, name, subresource, watch_path)

    async def _resource(
        self, request: web.Request, group: str, version: str, tail: str
    ) -> web.StreamResponse:
        target = self._target(group, version, tail)
        method = request.method
        query = request.query
        watching = target.watch_path or query.get("watch") in ("true", "1")
        user: UserInfo = request[USER]
        if target.view.resource.virtual:
            if method == "POST" and target.name is None:
                return self._review(target, user, await _body(request))
            raise err.method_not_allowed(method)
        if target.subresource in discovery.ACTION_SUBRESOURCES:
            if method == "POST":
                assert target.name is not None
                body = reviews.token_request(
                    self.state.reviews, target.namespace, target.name, await _body(request)
                )
                return _json(body, 201)
            raise err.method_not_allowed(method)
        if target.name is None:
            if method == "GET":
                return await self._watch(request, target) if watching else self._list(request, target)
            if method == "POST" and (target.namespace or not target.view.resource.namespaced):
                return self._create(target, await _body(request), query, user)
            if method == "DELETE":
                return self._delete_collection(request, target, await _delete_options(request))
        elif method == "GET":
            return await self._watch(request, target) if watching else self._get(request, target)
        elif method == "PUT":
            return self._replace(target, await _body(request), query, user)
        elif method == "PATCH":
            return self._patch(request, target, await _body(request), user)
        elif method == "DELETE" and not target.subresource:
            return self._delete(target, await _delete_options(request))
        raise err.method_not_allowed(method)

    def _selection(self, request: web.Request, target: Target) -> ObjectFilter:
        query = request.query
        labels = parse_label_selector(query["labelSelector"]) if query.get("labelSelector") else None
        fields = query.get("fieldSelector")
        if target.name is not None:
            fields = ",".join(f for f in (fields, f"metadata.name={target.name}") if f)
        parsed = parse_field_selector(fields, target.view.spec.field_labels) if fields else None
        namespace = target.namespace if target.view.resource.namespaced and target.namespace else None
        return ObjectFilter(namespace, labels, parsed)

    def _get(self, request: web.Request, target: Target) -> web.Response:
        assert target.name is not None
        obj = target.view.from_storage(self.cluster.get(target.view, target.namespace, target.name))
        table_version = _table_version(request)
        if table_version:
            return _json(
                table(
                    target.view,
                    [obj],
                    resource_version=obj["metadata"].get("resourceVersion", ""),
                    include_object=request.query.get("includeObject", "Metadata"),
                    api_version=table_version,
                )
            )
        return _json(obj)

    def _list(self, request: web.Request, target: Target) -> web.Response:
        view = target.view
        page = self.cluster.list_page(
            view,
            self._selection(request, target),
            _int(request.query, "limit"),
            request.query.get("continue", ""),
        )
        items = [view.from_storage(obj) for obj in page.items]
        table_version = _table_version(request)
        if table_version:
            return _json(
                table(
                    view,
                    items,
                    resource_version=page.resource_version,
                    continue_token=page.continue_token,
                    include_object=request.query.get("includeObject", "Metadata"),
                    api_version=table_version,
                )
            )
        metadata: dict[str, Any] = {"resourceVersion": page.resource_version}
        if page.continue_token:
            metadata["continue"] = page.continue_token
            metadata["remainingItemCount"] = page.remaining
        return _json(
            {
                "kind": view.resource.list_kind,
                "apiVersion": view.api_version,
                "metadata": metadata,
                "items": items,
            }
        )

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        query = request.query
        rv = query.get("resourceVersion", "")
        if rv and not rv.isdigit():
            raise err.bad_request(f"resourceVersion: Invalid value: {rv!r}: must be a non-negative integer")
        timeout = _int(query, "timeoutSeconds")
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        table_version = _table_version(request)
        view = target.view
        render = None
        if table_version:

            def render(obj: dict[str, Any]) -> dict[str, Any]:
                return table(
                    view,
                    [obj],
                    resource_version=obj["metadata"].get("resourceVersion", ""),
                    api_version=table_version,
                )

        return await serve_watch(
            request,
            self.cluster,
            view,
            self._selection(request, target),
            resource_version=rv,
            send_initial=query.get("sendInitialEvents", ""),
            lifetime=float(timeout) if timeout else None,
            bookmark_interval=self.state.bookmark_interval if bookmarks else None,
            render=render,
            watchers=self.state.watchers,
            cut_after=request.get(CUT_AFTER),
        )

    def _written(self, target: Target, result: WriteResult) -> web.Response:
        return _json(target.view.from_storage(result.obj), 201 if result.created else 200, result.warnings)

    def _review(self, target: Target, user: UserInfo, body: Any) -> web.Response:
        """The create-only APIs answered from the request (reviews), 201 like kube-apiserver."""
        context, plural = self.state.reviews, target.view.resource.plural
        if plural == "selfsubjectaccessreviews":
            answer = reviews.self_subject_access_review(context, user, body)
        elif plural == "selfsubjectrulesreviews":
            answer = reviews.self_subject_rules_review(context, user, body)
        elif plural == "subjectaccessreviews":
            answer = reviews.subject_access_review(context, body)
        elif plural == "localsubjectaccessreviews":
            answer = reviews.subject_access_review(context, body, target.namespace)
        else:
            answer = reviews.token_review(context, body)
        return _json(answer, 201)

    def _create(self, target: Target, body: Any, query: Any, user: UserInfo) -> web.Response:
        return self._written(
            target,
            self.cluster.create(
                target.view,
                target.namespace,
                body,
                dry_run=_dry_run(query),
                field_validation=_validation(query),
                user=user,
            ),
        )

    def _replace(self, target: Target, body: Any, query: Any, user: UserInfo) -> web.Response:
        assert target.name is not None
        return self._written(
            target,
            self.cluster.replace(
                target.view,
                target.namespace,
                target.name,
                body,
                target.subresource,
                dry_run=_dry_run(query),
                field_validation=_validation(query),
                user=user,
            ),
        )

    def _patch(self, request: web.Request, target: Target, body: Any, user: UserInfo) -> web.Response:
        assert target.name is not None
        if request.content_type not in PATCH_TYPES:
            raise err.unsupported_media_type(request.content_type, list(PATCH_TYPES))
        return self._written(
            target,
            self.cluster.patch(
                target.view,
                target.namespace,
                target.name,
                request.content_type,
                body,
                target.subresource,
                dry_run=_dry_run(request.query),
                field_validation=_validation(request.query),
                user=user,
            ),
        )

    def _delete(self, target: Target, options: dict[str, Any]) -> web.Response:
        assert target.name is not None
        view = target.view
        obj, gone = self.cluster.delete(
            view, target.namespace, target.name, options, dry_run=options.get("dryRun") == ["All"]
        )
        if not gone:
            return _json(view.from_storage(obj))
        details = {"name": target.name, "kind": view.resource.plural, "uid": obj["metadata"]["uid"]}
        if view.resource.group:
            details["group"] = view.resource.group
        return _json(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
        )

    def _delete_collection(
        self, request: web.Request, target: Target, options: dict[str, Any]
    ) -> web.Response:
        view = target.view
        deleted = []
        for obj in list(self.cluster.matching(view, self._selection(request, target))):
            result, _ = self.cluster.delete(
                view,
                obj["metadata"].get("namespace", ""),
                obj["metadata"]["name"],
                options,
                dry_run=options.get("dryRun") == ["All"],
            )
            deleted.append(view.from_storage(result))
        return _json(
            {
                "kind": view.resource.list_kind,
                "apiVersion": view.api_version,
                "metadata": {"resourceVersion": str(self.cluster.store.rv)},
                "items": deleted,
            }
        )


def _found(body: dict[str, Any] | None) -> dict[str, Any]:
    if body is None:
        raise err.path_not_found()
    return body


def _int(query: Any, key: str) -> int:
    value = query.get(key, "")
    if not value:
        return 0
    try:
        return max(0, int(value))
    except ValueError:
        raise err.bad_request(f"{key}: Invalid value: {value!r}: must be an integer") from None


def _dry_run(query: Any) -> bool:
    return "All" in query.getall("dryRun", [])


def _validation(query: Any) -> str:
    value = query.get("fieldValidation") or "Warn"
    if value not in ("Strict", "Warn", "Ignore"):
        raise err.bad_request(
            f'fieldValidation: Unsupported value: {value!r}: supported values: "Ignore", "Strict", "Warn"'
        )
    return str(value)


def _table_version(request: web.Request) -> str | None:
    """meta.k8s.io/v1 (or v1beta1) when the client prefers a Table, as ``kubectl get`` does."""
    for part in request.headers.get("Accept", "").split(","):
        pieces = [p.strip() for p in part.split(";")]
        options = dict(p.split("=", 1) for p in pieces[1:] if "=" in p)
        if options.get("as") == "Table" and options.get("g") == "meta.k8s.io":
            return f"meta.k8s.io/{options.get('v', 'v1')}"
        if pieces[0] in ("application/json", "*/*", "application/*") and "as" not in options:
            return None
    return None


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    content_type = request.content_type
    if content_type == PROTOBUF:
        return decode_body(raw)
    if "protobuf" in content_type or "cbor" in content_type:
        raise err.unsupported_media_type(content_type, ["application/json", "application/yaml"])
    try:
        if content_type in ("application/yaml", APPLY):
            return yaml.safe_load(raw)
        return json.loads(raw or b"null")
    except (ValueError, yaml.YAMLError) as exc:
        raise err.bad_request(f"the request body could not be decoded: {exc}") from None


async def _delete_options(request: web.Request) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if request.can_read_body:
        body = await _body(request)
        if isinstance(body, dict):
            options.update(body)
    query = request.query
    if query.get("propagationPolicy"):
        options["propagationPolicy"] = query["propagationPolicy"]
    if query.get("orphanDependents"):
        options["orphanDependents"] = query["orphanDependents"] == "true"
    if "dryRun" in query:
        options["dryRun"] = query.getall("dryRun")
    return options
