"""The RBAC objects kube-apiserver creates at start.

From plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go.

Only those every client needs: ``cluster-admin`` (bound to ``system:masters``), ``system:discovery``
and ``system:basic-user`` (bound to ``system:authenticated``: discovery documents, health, version and
``kubectl auth can-i`` for everyone logged in), ``system:public-info-viewer`` (also for
``system:unauthenticated``). The aggregated ``admin``/``edit``/``view`` roles are not created
(no ClusterRole aggregation in the sandbox).
"""

from __future__ import annotations

from typing import Any

from keyward.sandbox.apiserver.rbac import RBAC_GROUP

_META = {
    "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
    "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
}
_INFO_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]


def _role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": name, **_META}, "rules": rules}


def _binding(name: str, *groups: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, **_META},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": group} for group in groups],
    }


CLUSTER_ROLES = [
    _role(
        "cluster-admin",
        [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ],
    ),
    _role(
        "system:discovery",
        [
            {
                "nonResourceURLs": [
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/openapi",
                    "/openapi/*",
                    *_INFO_URLS,
                ],
                "verbs": ["get"],
            }
        ],
    ),
    _role(
        "system:basic-user",
        [
            {
                "apiGroups": ["authorization.k8s.io"],
                "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                "verbs": ["create"],
            }
        ],
    ),
    _role("system:public-info-viewer", [{"nonResourceURLs": _INFO_URLS, "verbs": ["get"]}]),
]
CLUSTER_ROLE_BINDINGS = [
    _binding("cluster-admin", "system:masters"),
    _binding("system:discovery", "system:authenticated"),
    _binding("system:basic-user", "system:authenticated"),
    _binding("system:public-info-viewer", "system:authenticated", "system:unauthenticated"),
]
