"""FIPS mode at start: the provider proven in both OpenSSL libraries, or a refusal in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fips import PROVIDER_DIR, fips_environment, plain_environment, provider_version
from tests.support.tools import keyward


def test_fips_check_names_the_provider_both_libraries_run() -> None:
    checked = keyward("fips-check", base_env=fips_environment())
    assert checked.returncode == 0, checked.stderr
    line = checked.stdout.strip()
    assert line.startswith(f"FIPS mode: OpenSSL FIPS Provider {provider_version()} ")
    assert "default properties fips=yes in cryptography's OpenSSL" in line
    assert "Python ssl's OpenSSL" in line
    assert line.endswith("random numbers from its CTR-DRBG")


def test_both_libraries_run_their_own_instance_of_the_provider_module() -> None:
    # One fips.so serving both OpenSSL libraries stops working in the one that uses it second: keyward
    # gives cryptography's library its own copy. Each library is used once here, in both orders.
    probe = (
        "import keyward, ssl, sys\n"
        "from cryptography.hazmat.primitives import hashes\n"
        "from cryptography.hazmat.primitives.asymmetric import ec\n"
        "def crypto(): ec.generate_private_key(ec.SECP384R1()).sign(b'x', ec.ECDSA(hashes.SHA384()))\n"
        "def system(): ssl.RAND_bytes(32); ssl.create_default_context()\n"
        "steps = [crypto, system] if sys.argv[1] == 'crypto-first' else [system, crypto]\n"
        "for step in steps * 2: step()\n"
        "print('both work')\n"
    )
    for order in ("crypto-first", "system-first"):
        ran = subprocess.run(
            [sys.executable, "-c", probe, order], env=fips_environment(), capture_output=True, text=True
        )
        assert (ran.returncode, ran.stdout.strip()) == (0, "both work"), ran.stderr[-2000:]


@pytest.mark.parametrize(
    ("command", "switch"),
    [
        (["operator", "--fips", "--kubeconfig", "/nonexistent"], {}),
        (["operator", "--kubeconfig", "/nonexistent"], {"OPENSSL_FIPS": "1"}),
        (["est-server", "--state-dir", "{tmp}/state", "--fips"], {}),
        (["est-server", "--state-dir", "{tmp}/state"], {"KEYWARD_FIPS": "1"}),
    ],
    ids=["operator-flag", "operator-OPENSSL_FIPS", "est-server-flag", "est-server-KEYWARD_FIPS"],
)
def test_start_without_the_provider_is_refused_in_one_line(
    tmp_path: Path, command: list[str], switch: dict[str, str]
) -> None:
    args = [arg.format(tmp=tmp_path) for arg in command]
    refused = keyward(*args, base_env=plain_environment(**switch))
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("keyward: error: FIPS mode: cryptography's OpenSSL")
    assert "does not run with FIPS default properties (fips=yes)" in lines[0]
    assert "make fips" in lines[0] and "OPENSSL_CONF" in lines[0]
    assert not (tmp_path / "state").exists(), "nothing may start before the check"


def test_a_configuration_without_fips_default_properties_is_refused(tmp_path: Path) -> None:
    # The provider is active, but nothing keeps OpenSSL from choosing the default provider's algorithms.
    config = tmp_path / "openssl.cnf"
    text = (PROVIDER_DIR / "openssl.cnf").read_text()
    config.write_text(text.replace("default_properties = fips=yes", "default_properties = "))
    config.write_text(config.read_text().replace("base = base_sect", "base = base_sect\ndefault = base_sect"))
    refused = keyward("fips-check", base_env=fips_environment(OPENSSL_CONF=str(config)))
    assert refused.returncode == 2
    assert "does not run with FIPS default properties (fips=yes)" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_a_missing_provider_module_is_refused(tmp_path: Path) -> None:
    refused = keyward("fips-check", base_env=fips_environment(OPENSSL_MODULES=str(tmp_path)))
    assert refused.returncode == 2
    line = refused.stderr.strip()
    assert line.startswith("keyward: error: FIPS mode:"), line
    assert "FIPS" in line and "make fips" in line
