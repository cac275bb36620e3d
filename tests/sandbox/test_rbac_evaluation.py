"""RBAC evaluation, ported from kube-apiserver's own tests.

The cases of plugin/pkg/auth/authorizer/rbac/rbac_test.go (``TestAuthorizer``, ``TestRuleMatches``),
pkg/registry/rbac/validation/rule_test.go (``TestAppliesTo``, ``TestDefaultRuleResolver``) and
component-helpers/auth/rbac/validation/policy_comparator_test.go (``Covers``), run against the
sandbox's authorizer over roles and bindings held in memory.
"""

from __future__ import annotations

from typing import Any

import pytest

from keyward.sandbox.apiserver.auth import UserInfo
from keyward.sandbox.apiserver.rbac import (
    CLUSTER_ROLE_BINDINGS,
    CLUSTER_ROLES,
    ROLE_BINDINGS,
    ROLES,
    Attributes,
    Authorizer,
    RuleResolver,
    applies_to,
    rule_allows,
    uncovered,
)


def rule(
    verbs: str, groups: str = "", resources: str = "", urls: str = "", names: str = ""
) -> dict[str, Any]:
    """kube's test helper ``newRule``: comma-separated lists, an empty string for none."""
    built: dict[str, Any] = {"verbs": verbs.split(",")}
    for key, value in (("apiGroups", groups), ("resources", resources), ("nonResourceURLs", urls)):
        if value or (key == "apiGroups" and resources):
            built[key] = value.split(",")
    if names:
        built["resourceNames"] = names.split(",")
    return built


def subjects(*specs: str) -> list[dict[str, str]]:
    out = []
    for spec in specs:
        kind, _, name = spec.partition(":")
        if kind == "ServiceAccount":
            namespace, _, name = name.partition("/")
            out.append({"kind": kind, "name": name, **({"namespace": namespace} if namespace else {})})
        else:
            out.append({"kind": kind, "name": name, "apiGroup": "rbac.authorization.k8s.io"})
    return out


class Policy:
    """Roles and bindings by storage key, as the store would hand them to the resolver."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}

    def add(self, key: tuple[str, str], namespace: str, name: str, **body: Any) -> Policy:
        self.objects.setdefault(key, {})[(namespace, name)] = {
            "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
            **body,
        }
        return self

    def cluster_role(self, name: str, *rules: dict[str, Any]) -> Policy:
        return self.add(CLUSTER_ROLES, "", name, rules=list(rules))

    def role(self, namespace: str, name: str, *rules: dict[str, Any]) -> Policy:
        return self.add(ROLES, namespace, name, rules=list(rules))

    def cluster_binding(self, role: str, *who: str) -> Policy:
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}
        return self.add(
            CLUSTER_ROLE_BINDINGS, "", f"{role}-{len(self.objects)}", roleRef=ref, subjects=subjects(*who)
        )

    def binding(self, namespace: str, kind: str, role: str, *who: str) -> Policy:
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role}
        name = f"{role}-{len(self.objects.get(ROLE_BINDINGS, {}))}"
        return self.add(ROLE_BINDINGS, namespace, name, roleRef=ref, subjects=subjects(*who))

    def authorizer(self) -> Authorizer:
        def lookup(key: tuple[str, str], namespace: str, name: str) -> dict[str, Any] | None:
            return self.objects.get(key, {}).get((namespace, name))

        def iterate(key: tuple[str, str], namespace: str | None) -> list[dict[str, Any]]:
            return [
                o for (ns, _), o in self.objects.get(key, {}).items() if namespace is None or ns == namespace
            ]

        return Authorizer(RuleResolver(lookup, iterate))


def request(
    user: str,
    groups: str,
    verb: str,
    resource: str,
    subresource: str = "",
    namespace: str = "",
    group: str = "",
) -> Attributes:
    return Attributes(
        UserInfo(user, groups=tuple(g for g in groups.split(",") if g)),
        verb,
        True,
        group,
        resource,
        subresource,
        namespace,
    )


def url(verb: str, path: str, user: str = "", groups: str = "") -> Attributes:
    return Attributes(UserInfo(user, groups=tuple(g for g in groups.split(",") if g)), verb, False, path=path)


# -- TestAuthorizer ------------------------------------------------------------------------------------


def test_rolebinding_to_a_cluster_role_grants_its_rules_in_that_namespace_only() -> None:
    policy = Policy().cluster_role("admin", rule("*", "*", "*", "*"))
    authorizer = policy.binding("ns1", "ClusterRole", "admin", "User:admin", "Group:admins").authorizer()
    for allowed in (
        request("admin", "", "get", "Pods", namespace="ns1"),
        request("admin", "", "watch", "Pods", namespace="ns1"),
        request("admin", "group1", "watch", "Foobar", namespace="ns1"),
        request("joe", "admins", "watch", "Foobar", namespace="ns1"),
        request("joe", "group1,admins", "watch", "Foobar", namespace="ns1"),
    ):
        assert authorizer.authorize(allowed).allowed, allowed
    for refused in (
        request("admin", "", "GET", "Pods", namespace="ns2"),
        request("admin", "", "GET", "Nodes"),
        request("admin", "admins", "GET", "Pods", namespace="ns2"),
        request("admin", "admins", "GET", "Nodes"),
    ):
        assert not authorizer.authorize(refused).allowed, refused


def test_non_resource_urls_match_exactly_or_by_a_trailing_star() -> None:
    policy = (
        Policy()
        .cluster_role("non-resource-url-getter", rule("get", urls="/apis"))
        .cluster_role("non-resource-url", rule("*", urls="/apis"))
        .cluster_role("non-resource-url-prefix", rule("get", urls="/apis/*"))
        .cluster_binding("non-resource-url-getter", "User:foo", "Group:bar")
        .cluster_binding("non-resource-url", "User:admin", "Group:admin")
        .cluster_binding("non-resource-url-prefix", "User:prefixed", "Group:prefixed")
    )
    authorizer = policy.authorizer()
    for allowed in (
        url("get", "/apis", user="foo"),
        url("get", "/apis", groups="bar"),
        url("get", "/apis", user="admin"),
        url("get", "/apis", groups="admin"),
        url("watch", "/apis", user="admin"),
        url("watch", "/apis", groups="admin"),
        url("get", "/apis/v1", user="prefixed"),
        url("get", "/apis/v1", groups="prefixed"),
        url("get", "/apis/v1/foobar", user="prefixed"),
        url("get", "/apis/v1/foorbar", groups="prefixed"),
    ):
        assert authorizer.authorize(allowed).allowed, allowed
    for refused in (
        url("watch", "/apis", user="foo"),
        url("watch", "/apis", groups="bar"),
        url("get", "/api/v1", user="foo"),
        url("get", "/api/v1", groups="bar"),
        url("get", "/api/v1", user="admin"),
        url("get", "/api/v1", groups="admin"),
        url("get", "/api/v1", user="prefixed"),
        url("get", "/api/v1", groups="prefixed"),
    ):
        assert not authorizer.authorize(refused).allowed, refused


def test_a_resource_rule_does_not_grant_its_subresources() -> None:
    policy = Policy().cluster_role("admin", rule("*", "*", "pods", "*"))
    authorizer = policy.binding("ns1", "ClusterRole", "admin", "User:admin", "Group:admins").authorizer()
    assert authorizer.authorize(request("admin", "", "get", "pods", namespace="ns1")).allowed
    assert not authorizer.authorize(request("admin", "", "get", "pods", "status", namespace="ns1")).allowed


def test_a_subresource_rule_does_not_grant_the_resource() -> None:
    policy = Policy().cluster_role("admin", rule("*", "*", "pods/status", "*"))
    authorizer = policy.binding("ns1", "ClusterRole", "admin", "User:admin", "Group:admins").authorizer()
    assert authorizer.authorize(request("admin", "", "get", "pods", "status", namespace="ns1")).allowed
    assert not authorizer.authorize(request("admin", "", "get", "pods", namespace="ns1")).allowed


# -- TestRuleMatches -----------------------------------------------------------------------------------


def matrix(allowed_rule: dict[str, Any]) -> dict[tuple[str, str, str, str], bool]:
    return {
        (verb, group, resource, sub): rule_allows(
            Attributes(UserInfo("u"), verb, True, group, resource, sub), allowed_rule
        )
        for verb in ("verb1", "verb2")
        for group in ("group1", "group2")
        for resource in ("resource1", "resource2")
        for sub in ("", "subresource1", "subresource2")
    }


@pytest.mark.parametrize(
    ("allowed_rule", "expected"),
    [
        (rule("*", "group1", "resource1"), lambda v, g, r, s: g == "group1" and r == "resource1" and not s),
        (rule("verb1", "*", "resource1"), lambda v, g, r, s: v == "verb1" and r == "resource1" and not s),
        (rule("verb1", "group1", "*"), lambda v, g, r, s: v == "verb1" and g == "group1"),
        (rule("verb1,verb2", "group1,group2", "resource1,resource2"), lambda v, g, r, s: not s),
        (
            rule("*", "*", "resource1/subresource1"),
            lambda v, g, r, s: r == "resource1" and s == "subresource1",
        ),
        (rule("*", "*", "*/subresource1"), lambda v, g, r, s: s == "subresource1"),
    ],
    ids=["star-verb", "star-group", "star-resource", "tuple-expansion", "subresource", "star-subresource"],
)
def test_rule_matching_on_verb_group_resource_and_subresource(
    allowed_rule: dict[str, Any], expected: Any
) -> None:
    for (verb, group, resource, sub), allowed in matrix(allowed_rule).items():
        assert allowed == expected(verb, group, resource, sub), (verb, group, resource, sub)


PATHS = ("/foo", "/foo/bar", "/foo/baz", "/foo/bar/one", "/foo/baz/one", "/notfoo", "/notfoo/bar")


@pytest.mark.parametrize(
    ("allowed_rule", "allowed_urls"),
    [
        (rule("verb1", urls="*"), {*PATHS}),
        (rule("verb1", urls="/foo/*"), {"/foo/bar", "/foo/baz", "/foo/bar/one", "/foo/baz/one"}),
        (rule("*", urls="/foo,/foo/bar/one"), {"/foo", "/foo/bar/one"}),
    ],
    ids=["star", "star-subpath", "exact"],
)
def test_non_resource_rule_matching(allowed_rule: dict[str, Any], allowed_urls: set[str]) -> None:
    paths = PATHS
    for path in paths:
        assert rule_allows(url("verb1", path), allowed_rule) == (path in allowed_urls), path
    if allowed_rule["verbs"] != ["*"]:
        assert not any(rule_allows(url("verb2", path), allowed_rule) for path in paths)


def test_resource_names_limit_named_requests_and_never_match_unnamed_ones() -> None:
    named = rule("get,list,watch,create,delete,deletecollection", "", "secrets", names="app-tls")
    for verb in ("get", "watch", "delete"):
        assert rule_allows(Attributes(UserInfo("u"), verb, True, "", "secrets", name="app-tls"), named)
        assert not rule_allows(Attributes(UserInfo("u"), verb, True, "", "secrets", name="other"), named)
    for verb in ("list", "watch", "create", "deletecollection"):  # no name on the request
        assert not rule_allows(Attributes(UserInfo("u"), verb, True, "", "secrets"), named)


# -- TestAppliesTo -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "user", "groups", "namespace", "applies"),
    [
        (["User:foobar"], "foobar", "", "", True),
        (["User:barfoo", "User:foobar"], "foobar", "", "", True),
        (["User:barfoo", "User:foobar"], "zimzam", "", "", False),
        (["User:barfoo", "Group:foobar"], "zimzam", "foobar", "", True),
        (["User:barfoo", "Group:foobar"], "zimzam", "foobar", "namespace1", True),
        (
            ["User:barfoo", "Group:foobar", "ServiceAccount:kube-system/default"],
            "system:serviceaccount:kube-system:default",
            "",
            "default",
            True,
        ),
        (["User:*"], "foobar", "", "default", False),
        (
            ["Group:system:authenticated", "Group:system:unauthenticated"],
            "foobar",
            "system:authenticated",
            "default",
            True,
        ),
        (
            ["Group:system:authenticated", "Group:system:unauthenticated"],
            "system:anonymous",
            "system:unauthenticated",
            "default",
            True,
        ),
        (["ServiceAccount:/default"], "system:serviceaccount:ns1:default", "", "ns1", True),
        (["ServiceAccount:/default"], "system:serviceaccount:ns1:default", "", "", False),
    ],
    ids=[
        "single-user",
        "one-of-users",
        "none-of-users",
        "group",
        "group-ignores-namespace",
        "service-account",
        "star-user-matches-nobody",
        "authenticated-user",
        "anonymous-user",
        "service-account-in-binding-namespace",
        "service-account-without-namespace",
    ],
)
def test_which_binding_subjects_apply_to_a_user(
    who: list[str], user: str, groups: str, namespace: str, applies: bool
) -> None:
    info = UserInfo(user, groups=tuple(g for g in groups.split(",") if g))
    assert (applies_to(info, subjects(*who), namespace) is not None) == applies


# -- TestDefaultRuleResolver ---------------------------------------------------------------------------


def test_the_rules_for_a_user_come_from_cluster_bindings_and_the_namespace_bindings() -> None:
    read_pods = {"verbs": ["GET", "WATCH"], "apiGroups": ["v1"], "resources": ["pods"]}
    read_services = {"verbs": ["GET", "WATCH"], "apiGroups": ["v1"], "resources": ["services"]}
    admin = {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}
    policy = (
        Policy()
        .role("namespace1", "readthings", read_pods, read_services)
        .cluster_role("cluster-admin", admin)
        .cluster_role(
            "write-nodes", {"verbs": ["PUT", "CREATE", "UPDATE"], "apiGroups": ["v1"], "resources": ["nodes"]}
        )
        .binding("namespace1", "Role", "readthings", "User:foobar", "Group:group1")
        .cluster_binding("cluster-admin", "User:admin", "Group:admin")
    )
    resolver = policy.authorizer().resolver
    assert resolver.rules_for(UserInfo("foobar"), "namespace1") == ([read_pods, read_services], [])
    assert resolver.rules_for(UserInfo("foobar"), "namespace2") == ([], [])
    assert resolver.rules_for(UserInfo("foobar", groups=("admin",)), "") == ([admin], [])
    assert resolver.rules_for(UserInfo(""), "") == ([], [])


def test_a_binding_to_a_missing_role_allows_nothing_and_says_why() -> None:
    policy = Policy().binding("ns", "Role", "gone", "User:bob")
    decision = policy.authorizer().authorize(request("bob", "", "get", "secrets", namespace="ns"))
    assert not decision.allowed
    assert decision.reason == 'RBAC: role.rbac.authorization.k8s.io "gone" not found'


def test_system_masters_is_allowed_before_rbac_is_asked() -> None:
    decision = Policy().authorizer().authorize(request("root", "system:masters", "delete", "nodes"))
    assert decision.allowed


# -- Covers (escalation prevention) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "requested", "missing"),
    [
        ([rule("*", "*", "*")], [rule("get", "", "secrets")], []),
        ([rule("get,list", "", "secrets")], [rule("get", "", "secrets")], []),
        (
            [rule("get", "", "secrets")],
            [rule("get,list", "", "secrets")],
            ['{APIGroups:[""], Resources:["secrets"], Verbs:["list"]}'],
        ),
        ([rule("get", "", "*/status")], [rule("get", "", "pods/status")], []),
        (
            [rule("get", "", "secrets", names="a")],
            [rule("get", "", "secrets")],
            ['{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}'],
        ),
        ([rule("get", "", "secrets")], [rule("get", "", "secrets", names="a")], []),
        ([rule("get", urls="/api/*")], [rule("get", urls="/api/v1")], []),
        (
            [rule("get", urls="/api")],
            [rule("get", urls="/apis")],
            ['{NonResourceURLs:["/apis"], Verbs:["get"]}'],
        ),
    ],
    ids=[
        "star",
        "subset-verbs",
        "missing-verb",
        "star-subresource",
        "names-narrow",
        "names-within",
        "url-prefix",
        "url-other",
    ],
)
def test_a_role_is_covered_only_by_rules_that_grant_every_piece(
    owner: list[dict[str, Any]], requested: list[dict[str, Any]], missing: list[str]
) -> None:
    from keyward.sandbox.apiserver.rbac import compact

    assert [compact(piece) for piece in uncovered(owner, requested)] == missing
