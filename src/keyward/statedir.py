"""State directories only the running user controls, and files written in them without following links.

``keyward est-server`` and ``keyward sandbox`` keep a token, its PINs, passwords and kubeconfigs in a
state directory. One that another local user prepared could hand them a password of that user's choosing,
or a link that makes keyward truncate or write a file elsewhere (with root's rights, when root runs it).
So a state directory is used only when the running user owns it and everything in it, nobody else can
write any of it, no link is in it, and no directory above it lets another user swap it: the checks
OpenSSH applies to ``~/.ssh``. Files are then created with ``O_EXCL | O_NOFOLLOW`` and renamed into place,
so even a link planted later is replaced, never followed.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from keyward.errors import UserError

__all__ = [
    "open_private_append",
    "prepare_private_directory",
    "private_subdirectory",
    "read_private_file",
    "write_private_file",
]


def prepare_private_directory(path: Path, *, option: str = "--state-dir") -> Path:
    """``path`` resolved, created with mode 0700 when missing, and checked (see the module); one-line
    ``UserError`` naming the offending path and the fix otherwise."""
    directory = Path(path).expanduser().resolve()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the state directory {directory} ({exc.strerror or exc})",
            f"choose a directory you can write with {option}",
        ) from None
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise UserError(
            f"the state directory {directory} is not a writable directory",
            f"choose a directory you can write with {option}",
        )
    for ancestor in directory.parents:
        _check_ancestor(ancestor, option)
    _check_owned(directory, os.lstat(directory), "the state directory", option)
    for entry, info in _entries(directory):
        _check_entry(entry, info, option)
    return directory


def private_subdirectory(path: Path, *, mode: int = 0o700) -> Path:
    """``path`` as a directory of its own (created with ``mode``); ``UserError`` if it is a link or
    anything else than a directory of the running user."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=mode)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        _check_entry(path, info, "--state-dir")
        raise UserError(f"{path} is not a directory", "remove it, or use another --state-dir")
    _check_owned(path, info, "the directory", "--state-dir")
    return path


def write_private_file(path: Path, content: bytes, *, mode: int) -> None:
    """Write ``path`` through a new file created with ``mode`` (never through a link, never a briefly
    world-readable file), renamed into place: readers see the old content or the new, and a link at
    ``path`` is replaced, not followed."""
    pending = path.with_name(f".{path.name}.new")
    with contextlib.suppress(FileNotFoundError):
        pending.unlink()  # a leftover of an interrupted write (unlink never follows a link)
    descriptor = os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(descriptor, mode)  # the umask may have taken bits away; never adds any
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    pending.replace(path)


def read_private_file(path: Path) -> bytes:
    """The content of ``path``, refusing to follow a link (``OSError`` ELOOP) or to read a file another
    user owns or can write (``UserError``)."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(descriptor, "rb") as file:
        _check_owned(path, os.fstat(file.fileno()), "the file", "--state-dir", inside=True)
        return file.read()


def open_private_append(path: Path, mode: int = 0o600) -> BinaryIO:
    """``path`` opened for appending (created with ``mode``), never through a link."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, mode)
    return os.fdopen(descriptor, "ab")


# ---- the checks ------------------------------------------------------------------------------------------


def _entries(directory: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Everything below ``directory``, without following links, depth first."""
    with os.scandir(directory) as scan:
        entries = list(scan)
    for entry in entries:
        info = entry.stat(follow_symlinks=False)
        yield Path(entry.path), info
        if stat.S_ISDIR(info.st_mode):
            yield from _entries(Path(entry.path))


def _check_entry(path: Path, info: os.stat_result, option: str) -> None:
    if stat.S_ISLNK(info.st_mode):
        try:
            target = f" to {os.readlink(path)}"
        except OSError:
            target = ""
        raise UserError(
            f"{path} in the state directory is a symbolic link{target}",
            f"remove it (keyward never follows links in its state directory), or use another {option}",
        )
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise UserError(
            f"{path} in the state directory is neither a file nor a directory",
            f"remove it, or use another {option}",
        )
    what = "the directory" if stat.S_ISDIR(info.st_mode) else "the file"
    _check_owned(path, info, what, option, inside=True)


def _check_owned(path: Path, info: os.stat_result, what: str, option: str, *, inside: bool = False) -> None:
    user = os.geteuid()
    fix = f"remove it, or use another {option}" if inside else f"use a directory of your own with {option}"
    if info.st_uid != user:
        raise UserError(f"{what} {path} belongs to uid {info.st_uid}, not to you (uid {user})", fix)
    writable = _writable_by(info.st_mode)
    if writable:
        raise UserError(
            f"{what} {path} is writable by {writable} (mode {stat.S_IMODE(info.st_mode):04o})",
            f"run `chmod go-w {path}`, or use another {option}",
        )


def _check_ancestor(path: Path, option: str) -> None:
    """A directory above the state directory: owned by root or the user, and writable by nobody else
    unless sticky (then others cannot rename what is not theirs)."""
    info = os.stat(path)
    user = os.geteuid()
    if info.st_uid not in (0, user):
        raise UserError(
            f"the state directory is inside {path}, which belongs to uid {info.st_uid} (who could swap it)",
            f"use a directory of your own with {option}",
        )
    writable = _writable_by(info.st_mode)
    if writable and not info.st_mode & stat.S_ISVTX:
        raise UserError(
            f"the state directory is inside {path}, which is writable by {writable} "
            f"(mode {stat.S_IMODE(info.st_mode):04o}; anyone there could swap it)",
            f"run `chmod go-w {path}`, or use a directory of your own with {option}",
        )


def _writable_by(mode: int) -> str:
    group, others = bool(mode & stat.S_IWGRP), bool(mode & stat.S_IWOTH)
    return " and ".join(who for who, yes in (("group", group), ("others", others)) if yes)
