"""Create-only APIs answered from the request: TokenRequest, TokenReview and the access reviews.

- ``serviceaccounts/NAME/token`` (pkg/registry/core/serviceaccount/storage/token.go): a token for an
  existing ServiceAccount, ``spec.expirationSeconds`` defaulted to 3600 and refused below 600 or above
  2^32 (pkg/apis/authentication/validation), audiences defaulted to the API server's.
- TokenReview (pkg/registry/authentication/tokenreview): who a token authenticates as.
- SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview
  (pkg/registry/authorization/*subjectaccessreview, validation in pkg/apis/authorization/validation):
  exactly one of resourceAttributes / nonResourceAttributes; a SubjectAccessReview names a user or
  groups; the answer is the same authorizer the server uses for requests.
- SelfSubjectRulesReview (pkg/registry/authorization/selfsubjectrulesreview): the rules RBAC gives the
  requester in a namespace (what ``kubectl auth can-i --list`` prints).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from keyward.sandbox.apiserver import errors as err
from keyward.sandbox.apiserver.auth import DEFAULT_AUDIENCES, DEFAULT_TOKEN_SECONDS, Tokens, UserInfo
from keyward.sandbox.apiserver.errors import FieldError
from keyward.sandbox.apiserver.objects import Obj
from keyward.sandbox.apiserver.rbac import Attributes, Authorizer

AUTHENTICATION = "authentication.k8s.io"
AUTHORIZATION = "authorization.k8s.io"
MAX_TOKEN_SECONDS = 1 << 32


@dataclass
class ReviewContext:
    authorizer: Authorizer
    tokens: Tokens
    service_account: Any  # (namespace, name) -> stored ServiceAccount or None


def _body(body: Any, kind: str) -> Obj:
    if not isinstance(body, dict):
        raise err.bad_request(
            f'{kind} in version "v1" cannot be handled as a {kind}: the body is not a JSON object'
        )
    return body


def _reply(api_version: str, kind: str, body: Obj, status: Obj, metadata: Obj | None = None) -> Obj:
    return {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": metadata if metadata is not None else {"creationTimestamp": None},
        "spec": body.get("spec") or {},
        "status": status,
    }


def token_request(context: ReviewContext, namespace: str, name: str, body: Any) -> Obj:
    request = _body(body, "TokenRequest")
    spec = request.get("spec") if isinstance(request.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    seconds = spec.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS
    problems: list[FieldError] = []
    if not isinstance(seconds, int) or seconds < 600:
        problems.append(
            FieldError(
                "spec.expirationSeconds",
                "Invalid",
                value=seconds,
                detail="may not specify a duration less than 10 minutes",
            )
        )
    elif seconds > MAX_TOKEN_SECONDS:
        problems.append(
            FieldError(
                "spec.expirationSeconds",
                "Invalid",
                value=seconds,
                detail="may not specify a duration larger than 2^32 seconds",
            )
        )
    if problems:
        raise err.invalid(AUTHENTICATION, "TokenRequest", name, problems)
    if spec.get("boundObjectRef"):
        raise err.bad_request(
            "the sandbox API server binds tokens to no object (it runs no pods); "
            "leave spec.boundObjectRef out"
        )
    account = context.service_account(namespace, name)
    if account is None:
        raise err.not_found("", "serviceaccounts", name)
    audiences = tuple(str(a) for a in spec.get("audiences") or DEFAULT_AUDIENCES)
    token, issued = context.tokens.issue(account, int(seconds), audiences)
    expires = datetime.fromtimestamp(issued.expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "kind": "TokenRequest",
        "apiVersion": f"{AUTHENTICATION}/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
        "spec": {"audiences": list(audiences), "expirationSeconds": int(seconds), "boundObjectRef": None},
        "status": {"token": token, "expirationTimestamp": expires},
    }


def token_review(context: ReviewContext, body: Any) -> Obj:
    review = _body(body, "TokenReview")
    token = str((review.get("spec") or {}).get("token") or "")
    user = context.tokens.authenticate(token, context.service_account) if token else None
    status: Obj = {"authenticated": user is not None, "user": {}}
    if user is not None:
        status["user"] = {"username": user.name, "groups": list(user.groups)}
        if user.uid:
            status["user"]["uid"] = user.uid
        if user.extra:
            status["user"]["extra"] = user.extra_map
        status["audiences"] = list(DEFAULT_AUDIENCES)
    return _reply(f"{AUTHENTICATION}/v1", "TokenReview", review, status)


def _attributes(user: UserInfo, spec: Obj) -> Attributes:
    """``authorizationutil.AuthorizationAttributesFrom`` (and ``NonResourceAttributesFrom``)."""
    resource = spec.get("resourceAttributes")
    if isinstance(resource, dict):
        return Attributes(
            user,
            str(resource.get("verb") or ""),
            True,
            str(resource.get("group") or ""),
            str(resource.get("resource") or ""),
            str(resource.get("subresource") or ""),
            str(resource.get("namespace") or ""),
            str(resource.get("name") or ""),
        )
    non_resource = spec.get("nonResourceAttributes") or {}
    return Attributes(
        user, str(non_resource.get("verb") or ""), False, path=str(non_resource.get("path") or "")
    )


def _spec_problems(spec: Obj, *, needs_subject: bool) -> list[FieldError]:
    """``ValidateSubjectAccessReviewSpec`` / ``ValidateSelfSubjectAccessReviewSpec``."""
    problems: list[FieldError] = []
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if resource is not None and non_resource is not None:
        problems.append(
            FieldError(
                "spec.nonResourceAttributes",
                "Invalid",
                value=non_resource,
                detail="cannot be specified in combination with resourceAttributes",
            )
        )
    if resource is None and non_resource is None:
        problems.append(
            FieldError(
                "spec.resourceAttributes",
                "Invalid",
                value=None,
                detail="exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )
        )
    if needs_subject and not spec.get("user") and not spec.get("groups"):
        problems.append(
            FieldError(
                "spec.user",
                "Invalid",
                value=spec.get("user") or "",
                detail="at least one of user or group must be specified",
            )
        )
    return problems


def _decide(context: ReviewContext, attributes: Attributes) -> Obj:
    decision = context.authorizer.authorize(attributes)
    status: Obj = {"allowed": decision.allowed}
    if decision.reason:
        status["reason"] = decision.reason
    return status


def self_subject_access_review(context: ReviewContext, user: UserInfo, body: Any) -> Obj:
    review = _body(body, "SelfSubjectAccessReview")
    spec = review.get("spec") if isinstance(review.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    problems = _spec_problems(spec, needs_subject=False)
    if problems:
        raise err.invalid(AUTHORIZATION, "SelfSubjectAccessReview", "", problems)
    return _reply(
        f"{AUTHORIZATION}/v1", "SelfSubjectAccessReview", review, _decide(context, _attributes(user, spec))
    )


def subject_access_review(context: ReviewContext, body: Any, namespace: str = "") -> Obj:
    kind = "LocalSubjectAccessReview" if namespace else "SubjectAccessReview"
    review = _body(body, kind)
    spec = review.get("spec") if isinstance(review.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    problems = _spec_problems(spec, needs_subject=True)
    resource = spec.get("resourceAttributes")
    if namespace:
        if isinstance(resource, dict) and (resource.get("namespace") or namespace) != namespace:
            problems.append(
                FieldError(
                    "spec.resourceAttributes.namespace",
                    "Invalid",
                    value=resource.get("namespace"),
                    detail="must match metadata.namespace",
                )
            )
        if spec.get("nonResourceAttributes") is not None:
            problems.append(
                FieldError(
                    "spec.nonResourceAttributes",
                    "Invalid",
                    value=spec.get("nonResourceAttributes"),
                    detail="disallowed on this kind of request",
                )
            )
        if isinstance(resource, dict):
            resource["namespace"] = namespace
    if problems:
        raise err.invalid(AUTHORIZATION, kind, "", problems)
    subject = UserInfo.of(
        spec.get("user") or "", spec.get("groups") or (), spec.get("uid") or "", spec.get("extra")
    )
    metadata = {"namespace": namespace, "creationTimestamp": None} if namespace else None
    return _reply(f"{AUTHORIZATION}/v1", kind, review, _decide(context, _attributes(subject, spec)), metadata)


def self_subject_rules_review(context: ReviewContext, user: UserInfo, body: Any) -> Obj:
    review = _body(body, "SelfSubjectRulesReview")
    namespace = str((review.get("spec") or {}).get("namespace") or "")
    if user.privileged:
        resource_rules: list[Obj] = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]
        non_resource_rules: list[Obj] = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
        errors: list[str] = []
    else:
        rules, errors = context.authorizer.resolver.rules_for(user, namespace)
        resource_rules, non_resource_rules = [], []
        for rule in rules:
            if rule.get("resources"):
                entry = {k: list(rule.get(k) or []) for k in ("verbs", "apiGroups", "resources")}
                if rule.get("resourceNames"):
                    entry["resourceNames"] = list(rule["resourceNames"])
                resource_rules.append(entry)
            if rule.get("nonResourceURLs"):
                non_resource_rules.append(
                    {"verbs": list(rule.get("verbs") or []), "nonResourceURLs": list(rule["nonResourceURLs"])}
                )
    status: Obj = {
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": False,
    }
    if errors:
        status["evaluationError"] = ", ".join(errors)
    return _reply(f"{AUTHORIZATION}/v1", "SelfSubjectRulesReview", review, status)
