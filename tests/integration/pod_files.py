"""Run a process with files at the absolute paths a pod would see (a mounted Secret, the service account's
namespace file), visible to that process alone.

The process starts in a private mount namespace (``unshare -m``, which needs root, as the Debian machines
``make test`` sets up run it) in which an overlay lies over each top-level directory holding such a file:
the host's directory stays as it is, and nothing else on the machine sees the files.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path


def _resolved(path: str) -> Path:
    """``path`` with its existing part resolved (``/var/run/secrets/...`` is ``/run/secrets/...``)."""
    absolute = Path(path)
    existing = absolute
    while not existing.exists():
        existing = existing.parent
    return Path(os.path.realpath(existing)) / absolute.relative_to(existing)


def in_pod(command: Sequence[str], files: Mapping[str, bytes], scratch: Path) -> list[str]:
    """``command`` wrapped so that it sees ``files`` (absolute path → content), and only it does."""
    mounts: list[str] = []
    tops: dict[str, Path] = {}
    for path, content in files.items():
        target = _resolved(path)
        top = target.parts[1]
        if top not in tops:
            tops[top] = scratch / top
            for part in ("upper", "work"):
                (tops[top] / part).mkdir(parents=True, exist_ok=True)
        written = tops[top] / "upper" / target.relative_to(Path("/") / top)
        written.parent.mkdir(parents=True, exist_ok=True)
        written.write_bytes(content)
    for top, place in tops.items():
        options = f"lowerdir=/{top},upperdir={place / 'upper'},workdir={place / 'work'}"
        mounts.append(f"mount -t overlay overlay -o {shlex.quote(options)} /{top}")
    script = " && ".join([*mounts, 'exec "$@"'])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "in-pod", *command]
