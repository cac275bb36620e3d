"""The seeds' command lines and configuration, read by ``keyward operator`` as the seeds read them.

The TCS seed's Deployment passes Go-style flags (its main.go and controller-runtime's zap flags), an HSM
config file without a module, and relies on its pod's namespace; the EST seed's users pass kopf's run
options. Each test parses a real command line with the operator's own click command.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from keyward.cli import goflags
from keyward.cli.main import operator
from keyward.errors import UserError
from keyward.host import ListenAddress
from keyward.keystore.config import SOFTHSM2_MODULE, load_hsm_config
from keyward.operator.settings import Settings, load_settings
from tests.support.tools import keyward, one_error_line

ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - what the seed's ":8082" means
UPSTREAM = Path(__file__).resolve().parents[2] / "data" / "upstream"
TCS_MANIFEST = UPSTREAM / "tcs" / "deployment" / "tcs_issuer.yaml"


def tcs_documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(TCS_MANIFEST.read_text()) if d]


def deployment_args() -> list[str]:
    """The container arguments of the TCS seed's Deployment, exactly."""
    deployment = next(d for d in tcs_documents() if d["kind"] == "Deployment")
    return list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])


def seed_hsm_config() -> bytes:
    """config.json of the seed's Secret tcs-issuer-pkcs11-conf (what the Deployment mounts at /etc/hsm)."""
    secret = next(d for d in tcs_documents() if d["kind"] == "Secret")
    return base64.b64decode("".join(secret["data"]["config.json"].split()))


def settings_for(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    tmp_path: Path,
    config: Path | None = None,
) -> Settings:
    """What ``keyward operator ARGS`` would run with; ``config`` stands in for /etc/hsm/config.json."""
    rewritten = [a.replace("/etc/hsm/config.json", str(config)) if config else a for a in args]
    context = operator.make_context("operator", goflags.to_click(rewritten))
    flags = {k: v for k, v in context.params.items() if k not in ("kubeconfig", "wait_for_token")}
    return load_settings(
        flags,
        env or {},
        namespace_file=tmp_path / "no-namespace-file",
        default_hsm_config_file=tmp_path / "no-default-config",
    )


def test_the_tcs_deployments_arguments_are_read_as_the_seed_reads_them(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_bytes(seed_hsm_config())
    settings = settings_for(deployment_args(), tmp_path=tmp_path, config=config)
    assert settings.leader_elect is True
    assert settings.metrics_listen == ListenAddress(ALL_INTERFACES, 8082)
    assert settings.health_listen == ListenAddress(ALL_INTERFACES, 8083)
    assert settings.health_path == "/healthz"
    assert settings.use_random_nonce is True
    assert settings.key_wrap_mechanism == "aes_key_wrap_pad"
    assert settings.cert_manager_issuer is True
    assert settings.log_level == "DEBUG", "--zap-devel and --zap-log-level=5 are debug logging"
    assert settings.log_format == "full", "--zap-devel logs text (zap's console encoder)"
    assert settings.hsm_config_file == config
    seed = json.loads(seed_hsm_config())
    # The config file's PINs win over the literal $USER_PIN / $SO_PIN the manifest passes.
    assert (settings.hsm.token_label, settings.hsm.user_pin, settings.hsm.so_pin) == (
        "SgxOperator",
        seed["userPin"],
        seed["soPin"],
    )
    assert "$" not in settings.hsm.user_pin + settings.hsm.so_pin


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-leader-elect"], ["--leader-elect"]),
        (["--leader-elect=false"], ["--no-leader-elect"]),
        (["-leader-elect=T"], ["--leader-elect"]),
        (["-csr-full-cert-chain=0"], ["--no-csr-full-cert-chain"]),
        (["-zap-log-level", "5"], ["--zap-log-level", "5"]),
        (["-zap-log-level=debug"], ["--zap-log-level=debug"]),
        (["--hsm-config-file", "/x"], ["--hsm-config-file", "/x"]),
        (["-user-pin", "-looks-like-a-flag"], ["--user-pin", "-looks-like-a-flag"]),
        (["-n", "ns", "--standalone", "-v"], ["-n", "ns", "--standalone", "-v"]),
        (["--", "-leader-elect"], ["--", "-leader-elect"]),
        (["---leader-elect"], ["---leader-elect"]),
    ],
)
def test_go_flag_spellings_become_clicks(args: list[str], expected: list[str]) -> None:
    assert goflags.to_click(args) == expected


def test_every_spelling_of_a_seed_flag_means_the_same(tmp_path: Path) -> None:
    spellings = [
        ["-metrics-bind-address=:9090", "-leader-elect", "-cert-manager-issuer=false"],
        ["--metrics-bind-address", ":9090", "--leader-elect=true", "--cert-manager-issuer=False"],
        ["-metrics-bind-address", ":9090", "--leader-elect", "-cert-manager-issuer=0"],
    ]
    seen = {
        (s.metrics_listen, s.leader_elect, s.cert_manager_issuer)
        for s in (settings_for(args, tmp_path=tmp_path) for args in spellings)
    }
    assert seen == {(ListenAddress(ALL_INTERFACES, 9090), True, False)}


def test_a_bad_boolean_is_one_clear_line() -> None:
    line = one_error_line(keyward("tcs-issuer", "-leader-elect=maybe"))
    assert "invalid boolean value 'maybe' for --leader-elect" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--zap-log-level=loud"], "--zap-log-level 'loud' is not a log level"),
        (["--zap-log-level=0"], "--zap-log-level '0' is not a log level"),
        (["--zap-encoder=xml"], "--zap-encoder 'xml' is not known"),
        (["--zap-time-encoding=sundial"], "--zap-time-encoding 'sundial' is not known"),
        (["--zap-stacktrace-level=debug"], "--zap-stacktrace-level 'debug' is not known"),
        (["--key-wrap-mechanism=rot13"], "--key-wrap-mechanism 'rot13' is not known"),
        (["-n", "a", "--all-namespaces"], "--namespace and --all-namespaces are both given"),
        (["--liveness", "ftp://x/healthz"], "is not an http://HOST:PORT/PATH URL"),
        (["--liveness", "http://:1/h", "--health-listen", ":2"], "--liveness and --health-listen"),
        (["--priority", "high"], "--priority 'high' is not a number"),
    ],
)
def test_bad_values_are_user_errors(tmp_path: Path, args: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        settings_for(args, tmp_path=tmp_path)


def test_a_bad_zap_level_stops_the_operator_with_one_line() -> None:
    line = one_error_line(keyward("operator", "--zap-log-level=loud"))
    assert "--zap-log-level 'loud' is not a log level" in line and "debug, info, error" in line


@pytest.mark.parametrize(
    ("args", "level", "log_format"),
    [
        ([], "INFO", "full"),
        (["--zap-devel"], "DEBUG", "full"),
        (["--zap-devel", "--zap-log-level=info"], "INFO", "full"),
        (["--zap-log-level=error", "--zap-encoder=json"], "ERROR", "json"),
        (["--zap-log-level=3"], "DEBUG", "full"),
        (
            ["--zap-encoder=console", "--zap-time-encoding=rfc3339", "--zap-stacktrace-level=panic"],
            "INFO",
            "full",
        ),
        (["--quiet"], "WARNING", "full"),
        (["-q", "--log-format", "json"], "WARNING", "json"),
        (["--verbose", "--log-format=plain"], "DEBUG", "plain"),
        (["-d"], "DEBUG", "full"),
        (["--zap-log-level=error", "--debug"], "DEBUG", "full"),
    ],
)
def test_log_flags_of_both_seeds(tmp_path: Path, args: list[str], level: str, log_format: str) -> None:
    settings = settings_for(args, tmp_path=tmp_path)
    assert (settings.log_level, settings.log_format) == (level, log_format)


def test_kopf_run_options_mean_what_they_mean_to_kopf(tmp_path: Path) -> None:
    settings = settings_for(
        ["--standalone", "-n", "one", "--namespace", "two", "--liveness", "http://127.0.0.1:8080/alive"],
        tmp_path=tmp_path,
    )
    assert settings.standalone and settings.namespaces == ("one", "two")
    assert (settings.health_listen, settings.health_path) == (ListenAddress("127.0.0.1", 8080), "/alive")
    peered = settings_for(["-A", "--peering", "est-operator", "--priority", "100"], tmp_path=tmp_path)
    assert (peered.namespaces, peered.peering_name, peered.priority, peered.standalone) == (
        (),
        "est-operator",
        100,
        False,
    )


def test_seed_flags_fill_only_what_the_config_file_leaves_out(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"userPin": "from-file"}))
    args = [
        "--hsm-config-file",
        str(config),
        "--user-pin=flag-user",
        "--so-pin=flag-so",
        "--token-label=Flagged",
    ]
    settings = settings_for(args, tmp_path=tmp_path)
    assert (settings.hsm.user_pin, settings.hsm.so_pin, settings.hsm.token_label) == (
        "from-file",
        "flag-so",
        "Flagged",
    )
    env_wins = settings_for(args, {"KEYWARD_USER_PIN": "from-env"}, tmp_path=tmp_path)
    assert env_wins.hsm.user_pin == "from-env"
    assert "flag-so" not in repr(settings), "PINs stay out of repr, flags included"


def test_an_unexpanded_pin_variable_is_read_from_the_environment(tmp_path: Path) -> None:
    """Kubernetes expands only $(VAR): the seed's Helm chart passes --user-pin=$USER_PIN literally, with
    USER_PIN set from its Secret and no config file."""
    env = {"USER_PIN": "from-secret", "SO_PIN": "so-from-secret"}
    settings = settings_for(["--user-pin=$USER_PIN", "--so-pin=${SO_PIN}"], env, tmp_path=tmp_path)
    assert (settings.hsm.user_pin, settings.hsm.so_pin) == ("from-secret", "so-from-secret")
    with pytest.raises(UserError, match=r"--user-pin is \$USER_PIN, the variable USER_PIN is not set"):
        settings_for(["--user-pin=$USER_PIN"], {}, tmp_path=tmp_path)


def test_the_seed_default_hsm_config_path_is_read_when_it_exists(tmp_path: Path) -> None:
    default = tmp_path / "etc-hsm-config.json"
    default.write_bytes(seed_hsm_config())
    settings = load_settings({}, {}, namespace_file=tmp_path / "none", default_hsm_config_file=default)
    assert settings.hsm_config_file == default and settings.hsm.token_label == "SgxOperator"
    absent = load_settings(
        {}, {}, namespace_file=tmp_path / "none", default_hsm_config_file=tmp_path / "nope"
    )
    assert absent.hsm_config_file is None


def test_a_config_without_a_module_uses_the_first_module_present_and_says_which(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_bytes(seed_hsm_config())
    sgx = tmp_path / "libp11sgx.so"
    candidates = (("Intel's SGX toolkit", str(sgx)), ("SoftHSM2", SOFTHSM2_MODULE))
    chosen = load_hsm_config(config, env={}, candidates=candidates)
    assert chosen.module == SOFTHSM2_MODULE
    assert (
        chosen.module_source == f"no module configured: SoftHSM2 ({SOFTHSM2_MODULE}) is the first one present"
    )
    sgx.write_bytes(b"\x7fELF")
    chosen = load_hsm_config(config, env={}, candidates=candidates)
    assert chosen.module == str(sgx) and "Intel's SGX toolkit" in chosen.module_source
    named = load_hsm_config(config, env={"KEYWARD_PKCS11_MODULE": "/opt/hsm.so"}, candidates=candidates)
    assert (named.module, named.module_source) == ("/opt/hsm.so", "from KEYWARD_PKCS11_MODULE")
    none_present = (("Intel's SGX toolkit", str(tmp_path / "a.so")), ("SoftHSM2", str(tmp_path / "b.so")))
    missing = load_hsm_config(config, env={}, candidates=none_present)
    assert missing.module == str(tmp_path / "b.so") and "none present" in missing.module_source


@pytest.mark.parametrize(
    ("env", "file_content", "expected", "source"),
    [
        ({}, None, "keyward-system", "the default"),
        ({}, "tcs-issuer\n", "tcs-issuer", "the pod's namespace"),
        ({"POD_NAMESPACE": "from-pod"}, "tcs-issuer", "from-pod", "POD_NAMESPACE"),
        (
            {"WATCH_NAMESPACE": "watched", "POD_NAMESPACE": "from-pod"},
            "tcs-issuer",
            "watched",
            "WATCH_NAMESPACE",
        ),
        (
            {"KEYWARD_OPERATOR_NAMESPACE": "kw", "WATCH_NAMESPACE": "w"},
            None,
            "kw",
            "KEYWARD_OPERATOR_NAMESPACE",
        ),
    ],
)
def test_the_operator_namespace_is_found_as_the_tcs_seed_finds_it(
    tmp_path: Path, env: dict[str, str], file_content: str | None, expected: str, source: str
) -> None:
    namespace_file = tmp_path / "namespace"
    if file_content is not None:
        namespace_file.write_text(file_content)
    settings = load_settings(
        {}, env, namespace_file=namespace_file, default_hsm_config_file=tmp_path / "none"
    )
    assert settings.operator_namespace == expected
    assert settings.operator_namespace_source.startswith(source)
    assert settings.est_cluster_namespace == expected, (
        "EST cluster issuers' Secrets too, unless CLUSTER_SCOPE_NAMESPACE"
    )
    flagged = load_settings(
        {"operator_namespace": "flag"},
        env,
        namespace_file=namespace_file,
        default_hsm_config_file=tmp_path / "none",
    )
    assert flagged.operator_namespace == "flag"


def test_tcs_issuer_is_the_operator_under_the_seeds_name() -> None:
    result = keyward("tcs-issuer", "--help")
    assert result.returncode == 0 and "--leader-elect" in result.stdout and "--zap-log-level" in result.stdout
    assert isinstance(operator, click.Command)


def test_every_flag_of_the_tcs_seed_is_an_option_of_the_operator() -> None:
    """main.go's flags and controller-runtime's zap flags (goflags' tables), each an option of the command."""
    spelled = {name for option in operator.params for name in (*option.opts, *option.secondary_opts)}
    for name in goflags.VALUE_FLAGS:
        assert f"--{name}" in spelled
    for name in goflags.BOOLEAN_FLAGS:
        assert {f"--{name}", f"--no-{name}"} <= spelled
