"""Authentication, authorization and the access reviews over HTTP, as kube-apiserver answers them.

Each test makes its own ServiceAccount (TokenRequest tokens) with the RBAC it needs; the admin client
of the session is ``system:masters``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyward.sandbox.apiserver import ApiServer
from keyward.sandbox.apiserver.rbac import Attributes

from .helpers import CSRS, Pki, http_client, unique

RBAC = "/apis/rbac.authorization.k8s.io/v1"
REVIEWS = "/apis/authorization.k8s.io/v1"


def secrets_url(namespace: str, name: str = "") -> str:
    return f"/api/v1/namespaces/{namespace}/secrets" + (f"/{name}" if name else "")


@pytest.fixture
async def bot(api_server: ApiServer, namespace: str) -> AsyncIterator[Any]:
    """Make ServiceAccounts in the test's namespace and clients authenticated as them."""
    clients: list[httpx.AsyncClient] = []

    def make(name: str = "bot", **grant: Any) -> httpx.AsyncClient:
        token = api_server.service_account_token(namespace, name, **grant)
        client = http_client(api_server, token, timeout=10)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def sa(namespace: str, name: str = "bot") -> str:
    return f"system:serviceaccount:{namespace}:{name}"


# -- authentication ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", [None, "Bearer not-a-token", "Basic YWRtaW46YWRtaW4=", "Bearer", b"Bearer t\xf6k\xe9n"]
)
async def test_requests_without_a_valid_token_are_401_unauthorized(
    api_server: ApiServer, header: str | bytes | None
) -> None:
    headers = {"Authorization": header} if header else {}
    async with httpx.AsyncClient(base_url=api_server.url, verify=api_server.client_ssl_context()) as client:
        for path in ("/api/v1/namespaces", "/version", "/healthz"):
            response = await client.get(path, headers=headers)
            assert response.status_code == 401
            assert response.json() == {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "Unauthorized",
                "reason": "Unauthorized",
                "code": 401,
            }


async def test_with_anonymous_auth_a_request_without_token_is_system_anonymous_judged_by_rbac() -> None:
    async with (
        ApiServer(anonymous=True) as server,
        httpx.AsyncClient(base_url=server.url, verify=server.client_ssl_context()) as client,
    ):
        assert (await client.get("/version")).status_code == 200  # system:public-info-viewer
        response = await client.get("/api/v1/namespaces")
        assert response.status_code == 403
        assert response.json()["message"] == (
            'namespaces is forbidden: User "system:anonymous" cannot list resource "namespaces" in API '
            'group "" at the cluster scope'
        )


async def test_token_request_gives_a_token_that_authenticates_as_the_service_account(
    client: httpx.AsyncClient, api_server: ApiServer, namespace: str
) -> None:
    created = await client.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts", json={"metadata": {"name": "app"}}
    )
    assert created.status_code == 201
    uid = created.json()["metadata"]["uid"]
    response = await client.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/app/token",
        json={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 900},
        },
    )
    assert response.status_code == 201
    issued = response.json()
    assert issued["kind"] == "TokenRequest" and issued["spec"]["expirationSeconds"] == 900
    assert issued["spec"]["audiences"] == ["https://kubernetes.default.svc.cluster.local"]
    review = await client.post(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        json={
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "spec": {"token": issued["status"]["token"]},
        },
    )
    user = review.json()["status"]["user"]
    assert review.json()["status"]["authenticated"] is True
    assert user["username"] == sa(namespace, "app") and user["uid"] == uid
    assert user["groups"] == [
        "system:serviceaccounts",
        f"system:serviceaccounts:{namespace}",
        "system:authenticated",
    ]
    assert user["extra"]["authentication.kubernetes.io/credential-id"][0].startswith("JTI=")


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        (599, "spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 10 minutes"),
        ((1 << 32) + 1, "may not specify a duration larger than 2^32 seconds"),
    ],
)
async def test_token_request_refuses_lifetimes_out_of_bounds(
    client: httpx.AsyncClient, namespace: str, seconds: int, message: str
) -> None:
    await client.post(f"/api/v1/namespaces/{namespace}/serviceaccounts", json={"metadata": {"name": "app"}})
    response = await client.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/app/token",
        json={"spec": {"expirationSeconds": seconds}},
    )
    assert response.status_code == 422
    assert message in response.json()["message"]


async def test_token_request_for_a_missing_service_account_is_404(
    client: httpx.AsyncClient, namespace: str
) -> None:
    response = await client.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/ghost/token", json={"spec": {}}
    )
    assert response.status_code == 404
    assert response.json()["message"] == 'serviceaccounts "ghost" not found'


async def test_tokens_of_a_deleted_service_account_stop_working_even_if_it_is_recreated(
    client: httpx.AsyncClient, bot: Any, namespace: str
) -> None:
    account = bot(rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}])
    assert (await account.get(secrets_url(namespace))).status_code == 200
    deleted = await client.delete(f"/api/v1/namespaces/{namespace}/serviceaccounts/bot")
    assert deleted.status_code == 200
    assert (await account.get(secrets_url(namespace))).status_code == 401
    await client.post(f"/api/v1/namespaces/{namespace}/serviceaccounts", json={"metadata": {"name": "bot"}})
    assert (await account.get(secrets_url(namespace))).status_code == 401, "a new account, a new uid"


# -- authorization -------------------------------------------------------------------------------------


async def test_denials_name_user_verb_resource_group_and_scope_like_kube_apiserver(
    bot: Any, namespace: str
) -> None:
    account = bot()
    user = sa(namespace)
    cases = [
        (
            account.get(secrets_url(namespace, "x")),
            f'secrets "x" is forbidden: User "{user}" cannot get resource '
            f'"secrets" in API group "" in the namespace "{namespace}"',
        ),
        (
            account.get(secrets_url(namespace)),
            f'secrets is forbidden: User "{user}" cannot list resource "secrets" '
            f'in API group "" in the namespace "{namespace}"',
        ),
        (
            account.get("/api/v1/namespaces"),
            f'namespaces is forbidden: User "{user}" cannot list resource '
            '"namespaces" in API group "" at the cluster scope',
        ),
        (
            account.patch(
                f"{CSRS}/c/status", json={}, headers={"Content-Type": "application/merge-patch+json"}
            ),
            f'certificatesigningrequests.certificates.k8s.io "c" is forbidden: User "{user}" cannot patch '
            "resource "
            '"certificatesigningrequests/status" in API group "certificates.k8s.io" at the cluster scope',
        ),
        (account.get("/metrics"), f'forbidden: User "{user}" cannot get path "/metrics"'),
    ]
    for call, message in cases:
        response = await call
        assert response.status_code == 403
        body = response.json()
        assert body["reason"] == "Forbidden" and body["message"] == message


async def test_discovery_health_version_and_can_i_are_open_to_every_authenticated_user(bot: Any) -> None:
    account = bot()
    for path in (
        "/api",
        "/apis",
        "/api/v1",
        "/apis/certificates.k8s.io/v1",
        "/version",
        "/healthz",
        "/openapi/v3",
    ):
        assert (await account.get(path)).status_code == 200, path


async def test_a_role_binding_to_a_cluster_role_grants_in_its_namespace_only(
    client: httpx.AsyncClient, api_server: ApiServer, bot: Any, namespace: str
) -> None:
    reader = f"reader-{uuid.uuid4().hex[:6]}"
    await client.post(
        f"{RBAC}/clusterroles",
        json={
            "metadata": {"name": reader},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
        },
    )
    account = bot()
    await client.post(
        f"{RBAC}/namespaces/{namespace}/rolebindings",
        json={
            "metadata": {"name": "read"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": reader},
            "subjects": [{"kind": "ServiceAccount", "name": "bot"}],  # namespace defaults to the binding's
        },
    )
    assert (await account.get(secrets_url(namespace))).status_code == 200
    assert (await account.get(secrets_url("default"))).status_code == 403
    assert (await account.get("/api/v1/secrets")).status_code == 403, "all namespaces needs a cluster binding"


async def test_resource_names_allow_named_get_and_watch_but_not_list_or_create(
    client: httpx.AsyncClient, bot: Any, namespace: str
) -> None:
    await client.post(secrets_url(namespace), json={"metadata": {"name": "tls"}, "stringData": {"a": "b"}})
    account = bot(
        rules=[
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": ["tls"],
                "verbs": ["get", "list", "watch", "create"],
            }
        ]
    )
    assert (await account.get(secrets_url(namespace, "tls"))).status_code == 200
    assert (await account.get(secrets_url(namespace, "other"))).status_code == 403
    assert (await account.get(secrets_url(namespace))).status_code == 403
    named = await account.get(secrets_url(namespace), params={"fieldSelector": "metadata.name=tls"})
    assert named.status_code == 200 and [i["metadata"]["name"] for i in named.json()["items"]] == ["tls"]
    async with account.stream(
        "GET",
        secrets_url(namespace),
        params={"watch": "true", "fieldSelector": "metadata.name=tls", "timeoutSeconds": "1"},
    ) as watch:
        assert watch.status_code == 200
        first = json.loads(await anext(watch.aiter_lines()))
        assert first["type"] == "ADDED" and first["object"]["metadata"]["name"] == "tls"
    created = await account.post(secrets_url(namespace), json={"metadata": {"name": "tls2"}})
    assert created.status_code == 403


async def test_subresources_need_their_own_rules(
    client: httpx.AsyncClient, api_server: ApiServer, bot: Any, pki: Pki
) -> None:
    name = unique("csr")
    await client.post(CSRS, json=pki.csr_object(name))
    role = [
        {
            "apiGroups": ["certificates.k8s.io"],
            "resources": ["certificatesigningrequests"],
            "verbs": ["get", "patch"],
        }
    ]
    account = bot(cluster_rules=role)
    merge = {"Content-Type": "application/merge-patch+json"}
    assert (await account.get(f"{CSRS}/{name}")).status_code == 200
    assert (await account.get(f"{CSRS}/{name}/status")).status_code == 403
    assert (await account.patch(f"{CSRS}/{name}/status", json={}, headers=merge)).status_code == 403
    star = bot(
        "star",
        cluster_rules=[{"apiGroups": ["certificates.k8s.io"], "resources": ["*/status"], "verbs": ["get"]}],
    )
    assert (await star.get(f"{CSRS}/{name}/status")).status_code == 200
    assert (await star.get(f"{CSRS}/{name}")).status_code == 403


async def test_group_subjects_match_service_account_groups(
    client: httpx.AsyncClient, bot: Any, namespace: str
) -> None:
    await client.post(
        f"{RBAC}/namespaces/{namespace}/roles",
        json={
            "metadata": {"name": "list"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
    )
    await client.post(
        f"{RBAC}/namespaces/{namespace}/rolebindings",
        json={
            "metadata": {"name": "everyone-here"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "list"},
            "subjects": [{"kind": "Group", "name": f"system:serviceaccounts:{namespace}"}],
        },
    )
    account = bot("anyone")
    assert (await account.get(f"/api/v1/namespaces/{namespace}/configmaps")).status_code == 200


# -- escalation prevention and impersonation ---------------------------------------------------------


async def test_a_role_granting_more_than_its_author_holds_is_forbidden_unless_escalate(
    bot: Any, namespace: str
) -> None:
    manage = {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["create"]}
    account = bot(rules=[manage, {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}])
    within = {
        "metadata": {"name": "within"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
    }
    assert (await account.post(f"{RBAC}/namespaces/{namespace}/roles", json=within)).status_code == 201
    beyond = {
        "metadata": {"name": "beyond"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
    }
    refused = await account.post(f"{RBAC}/namespaces/{namespace}/roles", json=beyond)
    assert refused.status_code == 403
    assert refused.json()["message"].startswith(
        f'roles.rbac.authorization.k8s.io "beyond" is forbidden: user "{sa(namespace)}" '
        f'(groups=["system:serviceaccounts" "system:serviceaccounts:{namespace}" "system:authenticated"]) '
        "is attempting to grant RBAC permissions not "
        'currently held:\n{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}'
    )
    escalator = bot("escalator", rules=[{**manage, "verbs": ["create", "escalate"]}])
    assert (await escalator.post(f"{RBAC}/namespaces/{namespace}/roles", json=beyond)).status_code == 201


async def test_binding_a_role_needs_bind_on_it_or_its_permissions(
    client: httpx.AsyncClient, bot: Any, namespace: str
) -> None:
    await client.post(
        f"{RBAC}/namespaces/{namespace}/roles",
        json={
            "metadata": {"name": "secrets"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
        },
    )
    binding = {
        "metadata": {"name": "give"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secrets"},
        "subjects": [{"kind": "User", "name": "someone"}],
    }
    manage = {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["create"]}
    plain = bot(rules=[manage])
    assert (await plain.post(f"{RBAC}/namespaces/{namespace}/rolebindings", json=binding)).status_code == 403
    binder = bot(
        "binder",
        rules=[
            manage,
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["roles"],
                "verbs": ["bind"],
                "resourceNames": ["secrets"],
            },
        ],
    )
    created = await binder.post(f"{RBAC}/namespaces/{namespace}/rolebindings", json=binding)
    assert created.status_code == 201, created.text
    assert created.json()["subjects"][0]["apiGroup"] == "rbac.authorization.k8s.io", "defaulted"


async def test_impersonation_needs_impersonate_on_users_groups_and_service_accounts(
    client: httpx.AsyncClient, bot: Any, namespace: str
) -> None:
    account = bot()
    as_bob = {"Impersonate-User": "bob"}
    refused = await account.get(secrets_url(namespace), headers=as_bob)
    assert refused.status_code == 403
    assert refused.json()["message"] == (
        f'users "bob" is forbidden: User "{sa(namespace)}" cannot impersonate resource "users" '
        'in API group "" at '
        "the cluster scope"
    )
    as_account = await client.get(secrets_url(namespace), headers={"Impersonate-User": sa(namespace)})
    assert as_account.status_code == 403, "the admin impersonating the account gets the account's rights"
    assert f'User "{sa(namespace)}" cannot list' in as_account.json()["message"]


# -- access reviews ------------------------------------------------------------------------------------


async def test_self_subject_access_review_answers_for_the_requester(bot: Any, namespace: str) -> None:
    account = bot(rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}])

    async def can(verb: str, resource: str, ns: str = namespace) -> dict[str, Any]:
        review = {"spec": {"resourceAttributes": {"namespace": ns, "verb": verb, "resource": resource}}}
        response = await account.post(f"{REVIEWS}/selfsubjectaccessreviews", json=review)
        assert response.status_code == 201
        return dict(response.json()["status"])

    allowed = await can("get", "secrets")
    assert allowed["allowed"] is True
    assert (
        allowed["reason"] == f'RBAC: allowed by RoleBinding "bot:bot/{namespace}" of Role "bot" '
        f'to ServiceAccount "bot/{namespace}"'
    )
    assert (await can("list", "secrets"))["allowed"] is False
    assert (await can("get", "secrets", ""))["allowed"] is False, "no namespace: all namespaces"


async def test_subject_access_review_answers_for_any_user_groups_and_resource_attributes(
    client: httpx.AsyncClient, api_server: ApiServer
) -> None:
    signer = f"reference-{uuid.uuid4().hex[:6]}"
    api_server.service_account_token(
        "keyward-review",
        signer,
        cluster_rules=[
            {
                "apiGroups": ["certificates.k8s.io"],
                "resources": ["signers"],
                "verbs": ["reference"],
                "resourceNames": ["tcsissuer.tcs.intel.com/*"],
            }
        ],
    )

    async def allowed(spec: dict[str, Any]) -> bool:
        response = await client.post(f"{REVIEWS}/subjectaccessreviews", json={"spec": spec})
        assert response.status_code == 201, response.text
        return bool(response.json()["status"]["allowed"])

    reference = {
        "group": "certificates.k8s.io",
        "resource": "signers",
        "verb": "reference",
        "name": "tcsissuer.tcs.intel.com/*",
    }
    assert await allowed({"user": sa("keyward-review", signer), "resourceAttributes": reference})
    assert not await allowed({"user": sa("keyward-review", "nobody"), "resourceAttributes": reference})
    assert await allowed({"user": "anyone", "groups": ["system:masters"], "resourceAttributes": reference})
    assert await allowed(
        {"groups": ["system:authenticated"], "nonResourceAttributes": {"path": "/version", "verb": "get"}}
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"user": "u"}, "exactly one of nonResourceAttributes or resourceAttributes must be specified"),
        ({"resourceAttributes": {"verb": "get"}}, "at least one of user or group must be specified"),
        (
            {"user": "u", "resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"path": "/"}},
            "cannot be specified in combination with resourceAttributes",
        ),
    ],
)
async def test_subject_access_review_is_validated(
    client: httpx.AsyncClient, spec: dict[str, Any], message: str
) -> None:
    response = await client.post(f"{REVIEWS}/subjectaccessreviews", json={"spec": spec})
    assert response.status_code == 422
    assert message in response.json()["message"]


async def test_local_subject_access_review_is_bound_to_its_namespace(
    client: httpx.AsyncClient, namespace: str
) -> None:
    spec = {"user": "u", "resourceAttributes": {"namespace": "elsewhere", "verb": "get", "resource": "pods"}}
    response = await client.post(
        f"{REVIEWS}/namespaces/{namespace}/localsubjectaccessreviews", json={"spec": spec}
    )
    assert response.status_code == 422
    assert "spec.resourceAttributes.namespace: Invalid value" in response.json()["message"]


async def test_reviews_are_create_only(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{REVIEWS}/subjectaccessreviews")).status_code == 405


# -- the permission log --------------------------------------------------------------------------------


async def test_permission_log_records_each_decision_once_and_compares_with_a_cluster_role(
    api_server: ApiServer, bot: Any, namespace: str, tmp_path: Path
) -> None:
    account = bot("logged", rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}])
    user = sa(namespace, "logged")
    for _ in range(3):
        await account.get(secrets_url(namespace))
    await account.get(secrets_url(namespace, "x"))
    entries = api_server.permissions.entries(user)
    listed = [e for e in entries if e.verb == "list"]
    assert (
        len(listed) == 1
        and listed[0].allowed
        and listed[0].namespace == namespace
        and listed[0].resource == "secrets"
    )
    assert [e.name for e in api_server.permissions.entries(user, allowed=False)] == ["x"]
    role = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "delete"]}]
    missing = api_server.permissions.not_granted_by(role, user)
    assert [(e.verb, e.name) for e in missing] == [("get", "x")]
    assert [(p.verb, p.resource) for p in api_server.permissions.unused_by(role, user)] == [
        ("delete", "secrets")
    ]


async def test_permission_log_file_has_one_json_line_per_distinct_decision(tmp_path: Path) -> None:
    path = tmp_path / "permissions.jsonl"
    async with ApiServer(permission_log_path=path) as server:
        token = server.service_account_token("logs", "reader")
        async with http_client(server, token) as account:
            for _ in range(2):
                await account.get("/api/v1/namespaces/logs/configmaps")
        lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {
            "user": "system:serviceaccount:logs:reader",
            "verb": "list",
            "apiGroup": "",
            "resource": "configmaps",
            "subresource": "",
            "namespace": "logs",
            "name": "",
            "path": "",
            "allowed": False,
        }
    ]
    assert isinstance(server.permissions.entries()[0].attributes, Attributes)
