"""The markers of the slow layers, applied by path (tests/README.md): no test needs a decorator."""

from __future__ import annotations

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker in layers_of(item.path):
            item.add_marker(marker)
