"""The EST controllers' settings: seconds or Go durations, and a clear error for anything else."""

from __future__ import annotations

import pytest

from keyward.errors import UserError
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
