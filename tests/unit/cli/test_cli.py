"""The keyward command as a user runs it: a real subprocess, one clear line per mistake."""

import json
from pathlib import Path

import pytest

from keyward import __version__
from tests.support.tools import keyward, one_error_line


def test_help_lists_the_subcommands() -> None:
    result = keyward("--help")
    assert result.returncode == 0
    for command in ("operator", "version", "sandbox"):
        assert command in result.stdout


def test_version() -> None:
    assert keyward("version").stdout.strip() == f"keyward {__version__}"
    assert keyward("--version").stdout.strip() == f"keyward {__version__}"


def test_unknown_flag_is_one_line() -> None:
    line = one_error_line(keyward("operator", "--no-such-flag"))
    assert "--no-such-flag" in line and "--help" in line


def test_est_server_hostname_that_is_no_host_name_is_one_line(tmp_path: Path) -> None:
    line = one_error_line(
        keyward("est-server", "--state-dir", str(tmp_path / "state"), "--hostname", "bad_host")
    )
    assert "--hostname" in line and '"bad_host" is neither an IP address nor a DNS name' in line
    assert not (tmp_path / "state").exists(), "refused before any token is made"


def test_operator_without_kubeconfig(tmp_path: Path) -> None:
    env = {"KUBECONFIG": "", "HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": ""}
    line = one_error_line(keyward("operator", env=env))
    assert "no Kubernetes credentials" in line and "KUBECONFIG" in line


def test_operator_with_missing_kubeconfig_file(tmp_path: Path) -> None:
    line = one_error_line(keyward("operator", "--kubeconfig", str(tmp_path / "missing.yaml")))
    assert "missing.yaml" in line and "does not exist" in line


def _unreachable_kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "x",
                "clusters": [{"name": "x", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "x", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
            }
        )
    )
    return path


def test_operator_with_unreachable_api(tmp_path: Path) -> None:
    line = one_error_line(keyward("operator", "--kubeconfig", str(_unreachable_kubeconfig(tmp_path))))
    assert "cannot reach the Kubernetes API" in line


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    result = keyward("operator", "--verbose", "--kubeconfig", str(tmp_path / "missing.yaml"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "does not exist" in result.stderr


@pytest.mark.parametrize("content", ["{broken", None])
def test_operator_with_bad_hsm_config_file(tmp_path: Path, content: str | None) -> None:
    hsm = tmp_path / "hsm.json"
    if content is not None:
        hsm.write_text(content)
    line = one_error_line(
        keyward(
            "operator", "--kubeconfig", str(_unreachable_kubeconfig(tmp_path)), "--hsm-config-file", str(hsm)
        )
    )
    assert "hsm.json" in line
