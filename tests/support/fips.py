"""The FIPS provider `make fips` built (build/fips), as the environment a FIPS-mode process runs with."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_DIR = Path(os.environ.get("KEYWARD_FIPS_PROVIDER_DIR", ROOT / "build" / "fips"))
OPENSSL_VARIABLES = ("OPENSSL_CONF", "OPENSSL_MODULES", "OPENSSL_FIPS", "KEYWARD_FIPS")


def provider_version() -> str:
    """The OpenSSL release the provider was built from, e.g. "3.0.22" (from build/fips/VERSION)."""
    return (PROVIDER_DIR / "VERSION").read_text().split()[0].removeprefix("openssl-")


def fips_environment(**extra: str) -> dict[str, str]:
    """This process's environment plus OpenSSL's FIPS configuration and KEYWARD_FIPS=1 (for subprocesses;
    the test process itself never runs in FIPS mode)."""
    config = PROVIDER_DIR / "openssl.cnf"
    assert config.is_file(), f"no FIPS provider in {PROVIDER_DIR}: run `make fips` (make test does)"
    return {
        **os.environ,
        "OPENSSL_CONF": str(config),
        "OPENSSL_MODULES": str(PROVIDER_DIR),
        "KEYWARD_FIPS": "1",
        **extra,
    }


def plain_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any FIPS or OpenSSL configuration."""
    return {**{k: v for k, v in os.environ.items() if k not in OPENSSL_VARIABLES}, **extra}
