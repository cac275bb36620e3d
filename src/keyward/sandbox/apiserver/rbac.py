"""Authorization: kube-apiserver's privileged-group authorizer, then its RBAC authorizer.

Sources reproduced (kubernetes/kubernetes):
- ``system:masters`` is allowed everything before RBAC is asked
  (staging/src/k8s.io/apiserver/pkg/authorization/authorizerfactory/builtin.go, privilegedGroupAuthorizer).
- rule matching: pkg/apis/rbac/v1/evaluation_helpers.go (``VerbMatches``, ``APIGroupMatches``,
  ``ResourceMatches`` with ``resource/subresource`` and ``*/subresource``, ``ResourceNameMatches`` (a
  rule with resourceNames never matches a request without a name: list, watch without a
  metadata.name field selector, create, deletecollection), ``NonResourceURLMatches`` with a trailing
  ``*`` prefix) and plugin/pkg/auth/authorizer/rbac/rbac.go (``RuleAllows``: the combined
  ``resource/subresource`` is matched).
- which rules apply: pkg/registry/rbac/validation/rule.go (``VisitRulesFor``: every
  ClusterRoleBinding, then the RoleBindings of the request's namespace only; a RoleBinding to a
  ClusterRole grants its rules in that namespace only; ``appliesTo``: User by name, Group by
  membership, ServiceAccount by ``system:serviceaccount:NS:NAME`` with the binding's namespace as the
  default; a missing role is a resolution error that never allows anything).
- escalation prevention: component-helpers/auth/rbac/validation/policy_comparator.go (``Covers``) and
  pkg/registry/rbac/{role,clusterrole,rolebinding,clusterrolebinding}/policybased/storage.go with
  pkg/registry/rbac/escalation_check.go (``escalate`` on the role, ``bind`` on the referenced role).
- denial text: staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go
  (``forbiddenMessage``) wrapped by apimachinery's ``NewForbidden``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from keyward.sandbox.apiserver.auth import UserInfo, split_service_account_username
from keyward.sandbox.apiserver.errors import ApiError
from keyward.sandbox.apiserver.objects import Obj

RBAC_GROUP = "rbac.authorization.k8s.io"
ROLES = (RBAC_GROUP, "roles")
CLUSTER_ROLES = (RBAC_GROUP, "clusterroles")
ROLE_BINDINGS = (RBAC_GROUP, "rolebindings")
CLUSTER_ROLE_BINDINGS = (RBAC_GROUP, "clusterrolebindings")
Rule = dict[str, Any]


@dataclass(frozen=True)
class Attributes:
    """``authorizer.Attributes``: who wants to do what, to which resource or path."""

    user: UserInfo
    verb: str
    resource_request: bool = True
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


def _strings(rule: Rule, key: str) -> list[str]:
    values = rule.get(key) or []
    return [str(v) for v in values] if isinstance(values, list) else []


def verb_matches(rule: Rule, verb: str) -> bool:
    return any(v in ("*", verb) for v in _strings(rule, "verbs"))


def api_group_matches(rule: Rule, group: str) -> bool:
    return any(g in ("*", group) for g in _strings(rule, "apiGroups"))


def resource_matches(rule: Rule, combined: str, subresource: str) -> bool:
    for resource in _strings(rule, "resources"):
        if resource in ("*", combined):
            return True
        if subresource and len(resource) == len(subresource) + 2 and resource == "*/" + subresource:
            return True
    return False


def resource_name_matches(rule: Rule, name: str) -> bool:
    names = _strings(rule, "resourceNames")
    return not names or name in names


def non_resource_url_matches(rule: Rule, path: str) -> bool:
    for url in _strings(rule, "nonResourceURLs"):
        if url in ("*", path):
            return True
        if url.endswith("*") and path.startswith(url.rstrip("*")):
            return True
    return False


def rule_allows(attributes: Attributes, rule: Rule) -> bool:
    if attributes.resource_request:
        combined = attributes.resource
        if attributes.subresource:
            combined = f"{attributes.resource}/{attributes.subresource}"
        return (
            verb_matches(rule, attributes.verb)
            and api_group_matches(rule, attributes.api_group)
            and resource_matches(rule, combined, attributes.subresource)
            and resource_name_matches(rule, attributes.name)
        )
    return verb_matches(rule, attributes.verb) and non_resource_url_matches(rule, attributes.path)


def applies_to_user(user: UserInfo, subject: Any, namespace: str) -> bool:
    if not isinstance(subject, dict):
        return False
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        account_namespace = subject.get("namespace") or namespace
        if not account_namespace:
            return False
        return split_service_account_username(user.name) == (account_namespace, name)
    return False


def applies_to(user: UserInfo, subjects: Any, namespace: str) -> dict[str, Any] | None:
    """The first subject of a binding that names ``user`` (rule.go ``appliesTo``)."""
    for subject in subjects if isinstance(subjects, list) else []:
        if applies_to_user(user, subject, namespace):
            return dict(subject)
    return None


def _describe_subject(subject: dict[str, Any], binding_namespace: str) -> str:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "ServiceAccount":
        return f'{kind} "{name}/{subject.get("namespace") or binding_namespace}"'
    return f'{kind} "{name}"'


class RuleResolver:
    """Roles and bindings as stored, read afresh for every decision (``DefaultRuleResolver``)."""

    def __init__(self, lookup: Callable[[tuple[str, str], str, str], Obj | None], iterate: Any) -> None:
        self._get = lookup  # (storage key, namespace, name) -> object
        self._iterate = iterate  # (storage key, namespace or None) -> objects

    def role_rules(self, role_ref: Any, binding_namespace: str) -> list[Rule]:
        """``GetRoleReferenceRules``; ApiError 404 text when the role does not exist."""
        ref = role_ref if isinstance(role_ref, dict) else {}
        kind, name = ref.get("kind"), str(ref.get("name") or "")
        if kind == "Role":
            role = self._get(ROLES, binding_namespace, name)
            if role is None:
                raise LookupError(f'role.rbac.authorization.k8s.io "{name}" not found')
        elif kind == "ClusterRole":
            role = self._get(CLUSTER_ROLES, "", name)
            if role is None:
                raise LookupError(f'clusterrole.rbac.authorization.k8s.io "{name}" not found')
        else:
            raise LookupError(f'unsupported role reference kind: "{kind}"')
        rules = role.get("rules") or []
        return [r for r in rules if isinstance(r, dict)]

    def visit(self, user: UserInfo, namespace: str) -> Iterator[tuple[str, Rule | None, str]]:
        """(source, rule, error) for every rule that applies to ``user`` in ``namespace``."""
        for binding in self._iterate(CLUSTER_ROLE_BINDINGS, None):
            subject = applies_to(user, binding.get("subjects"), "")
            if subject is None:
                continue
            ref = binding.get("roleRef") or {}
            try:
                rules = self.role_rules(ref, "")
            except LookupError as exc:
                yield "", None, str(exc)
                continue
            source = (
                f'ClusterRoleBinding "{binding["metadata"]["name"]}" of {ref.get("kind")} '
                f'"{ref.get("name")}" to {_describe_subject(subject, "")}'
            )
            for rule in rules:
                yield source, rule, ""
        if not namespace:
            return
        for binding in self._iterate(ROLE_BINDINGS, namespace):
            subject = applies_to(user, binding.get("subjects"), namespace)
            if subject is None:
                continue
            ref = binding.get("roleRef") or {}
            try:
                rules = self.role_rules(ref, namespace)
            except LookupError as exc:
                yield "", None, str(exc)
                continue
            source = (
                f'RoleBinding "{binding["metadata"]["name"]}/{namespace}" of {ref.get("kind")} '
                f'"{ref.get("name")}" to {_describe_subject(subject, namespace)}'
            )
            for rule in rules:
                yield source, rule, ""

    def rules_for(self, user: UserInfo, namespace: str) -> tuple[list[Rule], list[str]]:
        rules: list[Rule] = []
        errors: list[str] = []
        for _, rule, error in self.visit(user, namespace):
            if rule is not None:
                rules.append(rule)
            if error:
                errors.append(error)
        return rules, errors


def aggregate(errors: Sequence[str]) -> str:
    """apimachinery's ``utilerrors.NewAggregate(...).Error()``."""
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


class Authorizer:
    """``system:masters`` first, then RBAC; no other authorizer (no Node, no webhook)."""

    def __init__(self, resolver: RuleResolver) -> None:
        self.resolver = resolver

    def authorize(self, attributes: Attributes) -> Decision:
        if attributes.user.privileged:
            return Decision(True)
        errors: list[str] = []
        for source, rule, error in self.resolver.visit(attributes.user, attributes.namespace):
            if rule is not None and rule_allows(attributes, rule):
                return Decision(True, f"RBAC: allowed by {source}")
            if error:
                errors.append(error)
        return Decision(False, f"RBAC: {aggregate(errors)}" if errors else "")


def forbidden_message(attributes: Attributes) -> str:
    user = attributes.user.name
    if not attributes.resource_request:
        return f'User "{user}" cannot {attributes.verb} path "{attributes.path}"'
    resource = attributes.resource
    if attributes.subresource:
        resource = f"{resource}/{attributes.subresource}"
    if attributes.namespace:
        return (
            f'User "{user}" cannot {attributes.verb} resource "{resource}" in API group '
            f'"{attributes.api_group}" in the namespace "{attributes.namespace}"'
        )
    return (
        f'User "{user}" cannot {attributes.verb} resource "{resource}" in API group '
        f'"{attributes.api_group}" at the cluster scope'
    )


def new_forbidden(group: str, resource: str, name: str, why: str) -> ApiError:
    """apimachinery ``errors.NewForbidden(GroupResource{group, resource}, name, err)``."""
    qualified = f"{resource}.{group}" if group else resource
    if not resource and not group:
        message = f"forbidden: {why}"
    elif name:
        message = f'{qualified} "{name}" is forbidden: {why}'
    else:
        message = f"{qualified} is forbidden: {why}"
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if resource:
        details["kind"] = resource
    return ApiError(403, "Forbidden", message, details)


def denied(attributes: Attributes, reason: str) -> ApiError:
    """The 403 the authorization filter answers (``responsewriters.Forbidden``)."""
    message = forbidden_message(attributes)
    if reason:
        message = f"{message}: {reason}"
    if not attributes.resource_request:
        return new_forbidden("", "", "", message)
    return new_forbidden(attributes.api_group, attributes.resource, attributes.name, message)


# -- escalation prevention (policy_comparator.go) ---------------------------------------------------


@dataclass(frozen=True)
class SimpleRule:
    verb: str
    api_group: str = ""
    resource: str = ""
    name: str = ""
    url: str = ""


def _breakdown(rule: Rule) -> Iterator[SimpleRule]:
    """One rule per verb x group x resource x name (or verb x URL), ``BreakdownRule``."""
    verbs = _strings(rule, "verbs")
    for group in _strings(rule, "apiGroups"):
        for resource in _strings(rule, "resources"):
            for verb in verbs:
                names = _strings(rule, "resourceNames") or [""]
                for name in names:
                    yield SimpleRule(verb, group, resource, name)
    for url in _strings(rule, "nonResourceURLs"):
        for verb in verbs:
            yield SimpleRule(verb, url=url)


def _covers_one(owner: Rule, wanted: SimpleRule) -> bool:
    verbs, groups = _strings(owner, "verbs"), _strings(owner, "apiGroups")
    if "*" not in verbs and wanted.verb not in verbs:
        return False
    if wanted.url:
        urls = _strings(owner, "nonResourceURLs")
        return any(
            u == wanted.url or (u.endswith("*") and wanted.url.startswith(u.rstrip("*"))) for u in urls
        )
    if "*" not in groups and wanted.api_group not in groups:
        return False
    resources = _strings(owner, "resources")
    if "*" not in resources and wanted.resource not in resources:
        sub = wanted.resource.partition("/")[2]
        if not sub or f"*/{sub}" not in resources:
            return False
    names = _strings(owner, "resourceNames")
    return not names or (bool(wanted.name) and wanted.name in names)


def uncovered(owner_rules: Iterable[Rule], requested: Iterable[Rule]) -> list[SimpleRule]:
    """The pieces of ``requested`` no owner rule covers (``validation.Covers``)."""
    owners = list(owner_rules)
    return [
        piece
        for rule in requested
        for piece in _breakdown(rule)
        if not any(_covers_one(o, piece) for o in owners)
    ]


def compact(piece: SimpleRule) -> str:
    """``rbacv1helpers.CompactString`` of one missing piece."""
    if piece.url:
        return f'{{NonResourceURLs:["{piece.url}"], Verbs:["{piece.verb}"]}}'
    text = f'{{APIGroups:["{piece.api_group}"], Resources:["{piece.resource}"]'
    if piece.name:
        text += f', ResourceNames:["{piece.name}"]'
    return text + f', Verbs:["{piece.verb}"]}}'


@dataclass
class EscalationCheck:
    """Who may create a role, or bind one, with rules they do not hold themselves."""

    authorizer: Authorizer
    missing: list[SimpleRule] = field(default_factory=list)

    def confirm_no_escalation(self, user: UserInfo, namespace: str, rules: list[Rule]) -> str | None:
        """None when ``user`` holds every rule, else the message kube-apiserver gives."""
        owned, errors = self.authorizer.resolver.rules_for(user, namespace)
        missing = uncovered(owned, rules)
        if not missing:
            return None
        groups = "[" + " ".join(f'"{g}"' for g in user.groups) + "]"
        lines = "\n".join(sorted({compact(m) for m in missing}))
        message = (
            f'user "{user.name}" (groups={groups}) is attempting to grant RBAC permissions '
            "not currently held:\n"
            f"{lines}"
        )
        if errors:
            message += f"; resolution errors: [{', '.join(errors)}]"
        return message
