import json
from pathlib import Path

import pytest

from keyward.errors import UserError
from keyward.keystore.config import SOFTHSM2_MODULE, load_hsm_config
from keyward.operator.settings import load_settings


def test_defaults() -> None:
    settings = load_settings({}, env={})
    assert settings.operator_namespace == "keyward-system"
    assert settings.namespaces == ()
    assert settings.hsm.module == SOFTHSM2_MODULE
    assert settings.est_listen.port == 8443
    assert settings.est_cluster_namespace == "keyward-system"


def test_flags_override_environment_which_overrides_defaults() -> None:
    env = {
        "KEYWARD_OPERATOR_NAMESPACE": "from-env",
        "KEYWARD_NAMESPACES": "a, b",
        "CLUSTER_SCOPE_NAMESPACE": "est-ns",
    }
    assert load_settings({}, env=env).operator_namespace == "from-env"
    assert load_settings({}, env=env).namespaces == ("a", "b")
    assert load_settings({"operator_namespace": "from-flag", "namespaces": ("c",)}, env=env).namespaces == (
        "c",
    )
    assert load_settings({"operator_namespace": "from-flag"}, env=env).operator_namespace == "from-flag"
    assert load_settings({}, env=env).est_cluster_namespace == "est-ns"


def test_est_default_namespaces_come_from_the_flag_or_the_environment() -> None:
    assert load_settings({}, env={}).est_default_namespaces == ()
    env = {"KEYWARD_EST_DEFAULT_NAMESPACES": "plant-a, plant-b"}
    assert load_settings({}, env=env).est_default_namespaces == ("plant-a", "plant-b")
    flags = {"est_default_namespaces": ("ops", "lab,ops")}  # repeatable, comma-separated
    assert load_settings(flags, env=env).est_default_namespaces == ("ops", "lab")


def test_tcs_hsm_config_file_and_environment_pins(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"tokenLabel": "SgxOperator", "userPin": "1234", "soPin": "5678"}))
    config = load_hsm_config(path, env={})
    assert (config.token_label, config.user_pin, config.so_pin) == ("SgxOperator", "1234", "5678")
    assert "1234" not in repr(config) and "5678" not in repr(config)
    overridden = load_hsm_config(path, env={"KEYWARD_USER_PIN": "9999", "KEYWARD_TOKEN_LABEL": "other"})
    assert (overridden.user_pin, overridden.token_label) == ("9999", "other")


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_unreadable_hsm_config_is_a_user_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(UserError, match=r"config\.json"):
        load_hsm_config(path, env={})


def test_missing_hsm_config_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--hsm-config-file"):
        load_hsm_config(tmp_path / "nope.json", env={})


def test_bad_listen_address() -> None:
    with pytest.raises(UserError, match="HOST:PORT"):
        load_settings({"est_listen": "nowhere"}, env={})


def test_signing_processes_default_to_one_per_core_and_take_flag_over_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("keyward.host.CGROUP_ROOT", tmp_path)  # no CPU limit
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(4)))
    assert load_settings({}, {}).signing_processes == 4
    assert load_settings({}, {"KEYWARD_SIGNING_PROCESSES": "1"}).signing_processes == 1
    flagged = load_settings({"signing_processes": "0"}, {"KEYWARD_SIGNING_PROCESSES": "3"})
    assert flagged.signing_processes == 0
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert load_settings({}, {}).signing_processes == 0  # one core: threads, a process adds nothing


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, 2),  # cgroup v2, a limit of 1.5 CPUs
        ({"cpu.max": "max 100000\n"}, 8),  # no limit: the default's cap
        ({"cpu/cpu.cfs_quota_us": "300000", "cpu/cpu.cfs_period_us": "100000"}, 3),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, 8),
        ({"cpu.max": "100000 100000\n"}, 0),  # one CPU: threads
    ],
)
def test_the_default_follows_the_containers_cpu_limit_not_the_nodes_cores(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: dict[str, str], expected: int
) -> None:
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    monkeypatch.setattr("keyward.host.CGROUP_ROOT", tmp_path)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))  # a big node
    assert load_settings({}, {}).signing_processes == expected


@pytest.mark.parametrize("value", ["-1", "two", "65", "1.5"])
def test_a_bad_number_of_signing_processes_is_a_user_error(value: str) -> None:
    with pytest.raises(UserError, match=r"signing processes .* is not a number from 0 to 64"):
        load_settings({"signing_processes": value}, {})
