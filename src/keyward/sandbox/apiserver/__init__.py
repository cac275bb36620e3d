"""A sandbox Kubernetes API server: kube-apiserver's REST API, in memory, on aiohttp.

kube-apiserver cannot be installed in this project's environments, so ``ApiServer`` emulates the
parts keyward, kopf, kr8s and kubectl rely on: CRUD with resourceVersion preconditions, merge/JSON/
strategic patches, status and CSR approval subresources, CustomResourceDefinitions with schema
validation, defaulting and pruning, Table output, finalizers and garbage collection, list/watch
with selectors, replay and bookmarks, and discovery. ``docs/SANDBOX-API.md`` lists where it is
knowingly narrower than the real server.

It is a development and test tool. It has NO authentication and NO authorization: every client
may do everything (all requests act as ``kubernetes-admin``). It therefore speaks plain HTTP and
refuses to bind anything but a loopback address. Do not expose it.
"""

from keyward.sandbox.apiserver.server import ApiServer

__all__ = ["ApiServer"]
