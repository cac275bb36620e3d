"""A sandbox Kubernetes API server: kube-apiserver's REST API, in memory, on aiohttp.

kube-apiserver cannot be installed in this project's environments, so ``ApiServer`` emulates the
parts keyward, kopf, kr8s and kubectl rely on: CRUD with resourceVersion preconditions, merge/JSON/
strategic patches, status and CSR approval subresources, CustomResourceDefinitions with schema
validation, defaulting and pruning, Table output, finalizers and garbage collection, list/watch
with selectors, replay and bookmarks, and discovery. ``docs/SANDBOX-API.md`` lists where it is
knowingly narrower than the real server.

Like kube-apiserver it authenticates every request (bearer tokens: the admin kubeconfig's, which is
cluster-admin as kind's is, and ServiceAccount tokens from the TokenRequest API), authorizes it with
RBAC and runs admission (CSR signing/approval, cert-manager's webhook). It is still a development and
test tool: plain HTTP, so it refuses to bind anything but a loopback address. Do not expose it.
"""

from keyward.sandbox.apiserver.server import ApiServer

__all__ = ["ApiServer"]
