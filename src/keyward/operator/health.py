"""Probes and metrics over HTTP: ``/healthz`` and ``/readyz`` on the health port, ``/metrics`` on the
metrics port (one server when both are the same address).

``/healthz`` answers when the process and its event loop are alive (a blocked loop cannot answer).
``/readyz`` answers 200 once the operator can do its work — its watches are established, its token is
open, and it knows whether it leads or stands by — and 503 naming what is missing otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from keyward.errors import UserError
from keyward.host import ListenAddress
from keyward.operator.metrics import REGISTRY

log = logging.getLogger("keyward.health")
#: What readiness still waits for (empty: ready).
Readiness = Callable[[], list[str]]


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def _metrics(_: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(REGISTRY))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


class ProbeServer:
    """The health endpoints and the metrics endpoint."""

    def __init__(
        self,
        health: ListenAddress,
        metrics: ListenAddress,
        readiness: Readiness,
        *,
        health_path: str = "/healthz",
    ) -> None:
        self._health = health
        self._health_path = health_path
        self._metrics = metrics
        self._readiness = readiness
        self._runners: list[web.AppRunner] = []

    async def _readyz(self, _: web.Request) -> web.Response:
        missing = self._readiness()
        if missing:
            return web.Response(status=503, text="not ready: " + "; ".join(missing) + "\n")
        return web.Response(text="ok\n")

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        return _metrics(request)

    async def start(self) -> None:
        routes: dict[ListenAddress, list[web.RouteDef]] = {}
        if self._health.port:
            routes.setdefault(self._health, []).extend(
                [web.get(path, _healthz) for path in {"/healthz", self._health_path}]
                + [web.get("/readyz", self._readyz)]
            )
        if self._metrics.port:
            routes.setdefault(self._metrics, []).append(web.get("/metrics", self._metrics_handler))
        for address, table in routes.items():
            app = web.Application()
            app.add_routes(table)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            try:
                await web.TCPSite(runner, address.host, address.port).start()
            except OSError as exc:
                await runner.cleanup()
                await self.stop()
                reason = "the address is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                raise UserError(
                    f"cannot serve probes/metrics on {address} ({reason or exc})",
                    "free the port or change --health-listen / --metrics-listen",
                ) from None
            self._runners.append(runner)
            log.info("serving %s on %s", ", ".join(str(route.path) for route in table), address)

    async def stop(self) -> None:
        runners, self._runners = self._runners, []
        for runner in runners:
            with contextlib.suppress(Exception):
                await runner.cleanup()
