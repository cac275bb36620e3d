"""The settings of key provisioning and quote verification: the seed's defaults, environment and flags,
and one clear line for a value that cannot work."""

from __future__ import annotations

import pytest

from keyward.errors import UserError
from keyward.operator.settings import load_settings
from tests.support.tools import keyward, one_error_line


def test_defaults_are_the_seeds() -> None:
    settings = load_settings({}, env={})
    assert settings.use_random_nonce is True  # the seed's --use-random-nonce default (KMRA 2.2+)
    assert settings.key_wrap_mechanism == "aes_key_wrap_pad"
    assert settings.replica_name is None
    assert settings.quote_verification_timeout == 600.0


def test_environment_and_flags() -> None:
    env = {
        "KEYWARD_USE_RANDOM_NONCE": "false",
        "KEYWARD_KEY_WRAP_MECHANISM": "aes_gcm",
        "POD_NAME": "keyward-7d9f-x2",
        "KEYWARD_QUOTE_VERIFICATION_TIMEOUT": "90s",
    }
    settings = load_settings({}, env=env)
    assert (settings.use_random_nonce, settings.key_wrap_mechanism) == (False, "aes_gcm")
    assert (settings.replica_name, settings.quote_verification_timeout) == ("keyward-7d9f-x2", 90.0)
    assert load_settings({}, env={**env, "KEYWARD_REPLICA_NAME": "a"}).replica_name == "a"
    flagged = load_settings({"replica_name": "b", "quote_verification_timeout": "2"}, env=env)
    assert (flagged.replica_name, flagged.quote_verification_timeout) == ("b", 2.0)


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (
            {"KEYWARD_KEY_WRAP_MECHANISM": "des"},
            "is not known: use the one the key managers wrap with: aes_key_wrap_pad, aes_gcm",
        ),
        ({"KEYWARD_REPLICA_NAME": "Replica_A"}, "is not a DNS label"),
        ({"KEYWARD_QUOTE_VERIFICATION_TIMEOUT": "0"}, "is not a positive duration"),
    ],
)
def test_a_value_that_cannot_work_is_a_user_error(env: dict[str, str], said: str) -> None:
    with pytest.raises(UserError, match=said):
        load_settings({}, env=env)


def test_the_command_line_says_a_bad_replica_name_in_one_line() -> None:
    line = one_error_line(keyward("operator", "--replica-name", "not a name"))
    assert "replica name 'not a name' is not a DNS label" in line
