"""create_softhsm_store: a private SoftHSM2 store, created once and then reused."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from keyward.keystore import HsmConfig, TokenKeyStore, create_softhsm_store, load_hsm_config


def test_store_files_are_created_with_private_pins(hsm_dir: Path, hsm_config: HsmConfig) -> None:
    conf = (hsm_dir / "softhsm2.conf").read_text()
    assert f"directories.tokendir = {hsm_dir.resolve() / 'tokens'}" in conf
    assert "objectstore.backend = file" in conf
    assert "log.level = ERROR" in conf
    assert stat.S_IMODE((hsm_dir / "hsm.json").stat().st_mode) == 0o600
    # PINs are compared outside assert statements so that a failure report cannot print them
    same_config = load_hsm_config(hsm_dir / "hsm.json", env={}) == hsm_config
    assert same_config, "hsm.json does not hold the config create_softhsm_store returned"
    assert hsm_config.token_label == "keyward"
    assert hsm_config.softhsm2_conf == str(hsm_dir.resolve() / "softhsm2.conf")
    long_random_pins = min(len(hsm_config.user_pin), len(hsm_config.so_pin)) >= 16
    distinct_pins = hsm_config.user_pin != hsm_config.so_pin
    assert long_random_pins and distinct_pins, "PINs must be long, random and distinct"


def test_later_calls_reuse_the_store(hsm_dir: Path, hsm_config: HsmConfig, store: TokenKeyStore) -> None:
    tokens_before = sorted(p.name for p in (hsm_dir / "tokens").iterdir())
    same_config = create_softhsm_store(hsm_dir) == hsm_config
    assert same_config, "a second call returned another config"
    assert sorted(p.name for p in (hsm_dir / "tokens").iterdir()) == tokens_before


def test_the_token_is_initialized_for_other_pkcs11_tools(hsm_config: HsmConfig) -> None:
    assert hsm_config.softhsm2_conf is not None
    done = subprocess.run(
        ["pkcs11-tool", "--module", hsm_config.module, "-L"],
        env={**os.environ, "SOFTHSM2_CONF": hsm_config.softhsm2_conf},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert "token label        : keyward" in done.stdout
    assert "token initialized" in done.stdout and "PIN initialized" in done.stdout
