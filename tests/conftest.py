"""The markers of the slow layers, applied by path (tests/README.md): no test needs a decorator."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# marker -> the paths under tests/ whose tests carry it (a folder, or one file)
LAYERS: dict[str, tuple[str, ...]] = {
    "integration": ("integration",),
    "fips": ("integration/fips",),
    "container": ("deploy/test_image.py",),
    "sandbox": ("sandbox",),
}


def layers_of(path: Path) -> list[str]:
    """The markers of a test file, from where it lies under tests/."""
    relative = path.resolve().relative_to(TESTS).as_posix()
    return [
        marker
        for marker, prefixes in LAYERS.items()
        if any(relative == prefix or relative.startswith(prefix + "/") for prefix in prefixes)
    ]


@pytest.fixture(scope="session", autouse=True)
def environment_restored() -> Iterator[None]:
    """The process environment as the run found it, at the end of the run: keyward sets SOFTHSM2_CONF
    for the process when a test opens a SoftHSM2 token in-process, and fixtures undo what they set when
    they end; this puts back whatever is left."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker in layers_of(item.path):
            item.add_marker(marker)
