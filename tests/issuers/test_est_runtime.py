"""The EST controllers' settings and their Secret cache (fed by the watch, one GET per Secret at most)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keyward.errors import UserError
from keyward.operator.est.services import SecretCache
from keyward.operator.settings import EstClientSettings, load_settings


def test_est_delays_default_to_the_seed_and_accept_seconds_or_go_durations() -> None:
    defaults = load_settings({}, env={}).est_client
    assert (defaults.recheck_interval, defaults.auth_retry_delay) == (600.0, 600.0)
    tuned = EstClientSettings.from_env(
        {
            "KEYWARD_EST_RECHECK_INTERVAL": "2",
            "KEYWARD_EST_AUTH_RETRY_DELAY": "1.5",
            "KEYWARD_EST_BACKOFF_LIMIT": "1m",
            "KEYWARD_EST_MAX_RETRY_DURATION": "2h",
            "KEYWARD_EST_TIMEOUT": "500ms",
        }
    )
    assert tuned == EstClientSettings(2.0, 1.5, 60.0, 7200.0, 0.5)


@pytest.mark.parametrize("value", ["0", "-5", "soon", "10 minutes"])
def test_bad_est_delay_is_a_user_error_naming_the_variable(value: str) -> None:
    with pytest.raises(UserError, match="KEYWARD_EST_AUTH_RETRY_DELAY") as excinfo:
        load_settings({}, env={"KEYWARD_EST_AUTH_RETRY_DELAY": value})
    assert "10m" in str(excinfo.value)


class FakeKube:
    """``find`` returns the stored Secret after ``release`` is set; counts the calls."""

    def __init__(self, secret: dict[str, Any] | None) -> None:
        self.secret = secret
        self.calls = 0
        self.called = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    async def find(self, resource: Any, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        self.calls += 1
        self.called.set()
        await self.release.wait()
        return self.secret


def secret(password: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "creds", "namespace": "ns"},
        "type": "kubernetes.io/basic-auth",
        "data": {"username": "dQ==", "password": password},
    }


def cache(kube: FakeKube) -> SecretCache:
    return SecretCache(kube)  # type: ignore[arg-type]


async def test_a_secret_is_read_once_then_kept_current_by_watch_events() -> None:
    kube = FakeKube(secret("djE="))
    secrets = cache(kube)
    assert not secrets.tracks("ns", "creds")
    assert not secrets.update("MODIFIED", secret("x")), "Secrets nobody asked for are not kept"
    first = await secrets.get("ns", "creds")
    assert first == {"type": "kubernetes.io/basic-auth", "data": {"username": "dQ==", "password": "djE="}}
    assert await secrets.lookup("ns")("creds") == first and kube.calls == 1
    assert secrets.tracks("ns", "creds")
    assert not secrets.update(
        "MODIFIED", {**secret("djE="), "metadata": {**secret("")["metadata"], "labels": {}}}
    )
    assert secrets.update("MODIFIED", secret("djI="))
    assert (await secrets.get("ns", "creds") or {})["data"]["password"] == "djI="
    assert secrets.update("DELETED", secret("djI="))
    assert await secrets.get("ns", "creds") is None and kube.calls == 1


async def test_an_event_during_the_first_read_wins_over_the_older_read() -> None:
    kube = FakeKube(secret("b2xk"))
    kube.release.clear()
    secrets = cache(kube)
    reading = asyncio.create_task(secrets.get("ns", "creds"))
    await asyncio.wait_for(kube.called.wait(), 5)  # the GET is in flight
    assert secrets.update("MODIFIED", secret("bmV3"))
    kube.release.set()
    assert ((await reading) or {})["data"]["password"] == "bmV3"
