"""`keyward est-server` and `keyward sandbox` refuse a state directory another local user could have
prepared, in one line naming the path and the fix, and touch nothing through it: no file truncated or
written through a link, no password or PIN of someone else's choosing accepted.

Files owned by another user are made with ``os.chown``, which needs root (the test suite's user here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keyward.statedir import open_private_append, prepare_private_directory, write_private_file

ANOTHER_USER = 4242
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")


def refusal(command: str, state: Path, *args: str) -> str:
    """The one line ``keyward COMMAND --state-dir STATE`` ends with (exit status 2)."""
    done = subprocess.run(
        [sys.executable, "-m", "keyward", command, "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode != 0 and len(output) == 1 and "Traceback" not in done.stderr, output
    return output[0]


def est_server_refusal(state: Path) -> str:
    return refusal("est-server", state, "--listen", "127.0.0.1:0", "--workers", "0")


def sandbox_refusal(state: Path) -> str:
    return refusal("sandbox", state, "--no-operator")


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of someone else's that a link in a prepared state directory points at."""
    target = tmp_path / "victim"
    target.write_text("precious\n")
    return target


@pytest.mark.parametrize("entry", ["est-password", ".hsm.json.new", "ca.pem", "tls.key"])
def test_est_server_refuses_a_state_dir_with_a_link_and_writes_nothing_through_it(
    tmp_path: Path, victim: Path, entry: str
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / entry).symlink_to(victim)
    line = est_server_refusal(state)
    assert line == (
        f"keyward: error: {state / entry} in the state directory is a symbolic link to {victim}: remove it "
        "(keyward never follows links in its state directory), or use another --state-dir"
    )
    assert victim.read_text() == "precious\n", "nothing was truncated or written through the link"
    assert sorted(p.name for p in state.iterdir()) == [entry], "no token, no PINs, nothing written"


def test_sandbox_refuses_a_link_where_it_writes_the_admin_kubeconfig(tmp_path: Path, victim: Path) -> None:
    state = tmp_path / "sandbox"
    state.mkdir(mode=0o700)
    (state / "kubeconfig").symlink_to(victim)
    line = sandbox_refusal(state)
    assert f"{state / 'kubeconfig'} in the state directory is a symbolic link" in line
    assert victim.read_text() == "precious\n"


@pytest.mark.parametrize(("mode", "who"), [(0o775, "group"), (0o757, "others"), (0o777, "group and others")])
def test_a_state_dir_others_can_write_is_refused(tmp_path: Path, mode: int, who: str) -> None:
    state = tmp_path / "shared"
    state.mkdir()
    state.chmod(mode)
    for line in (est_server_refusal(state), sandbox_refusal(state)):
        assert line == (
            f"keyward: error: the state directory {state} is writable by {who} (mode {mode:04o}): "
            f"run `chmod go-w {state}`, or use another --state-dir"
        )
    assert list(state.iterdir()) == []


def test_a_group_writable_file_in_the_state_dir_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    password = state / "est-password"
    password.write_text("chosen-by-someone-else\n")
    password.chmod(0o660)
    assert est_server_refusal(state) == (
        f"keyward: error: the file {password} is writable by group (mode 0660): "
        f"run `chmod go-w {password}`, or use another --state-dir"
    )


@needs_root
def test_a_password_file_owned_by_another_user_is_refused_not_accepted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    password = state / "est-password"
    password.write_text("chosen-by-someone-else\n")
    password.chmod(0o600)
    os.chown(password, ANOTHER_USER, ANOTHER_USER)
    assert est_server_refusal(state) == (
        f"keyward: error: the file {password} belongs to uid {ANOTHER_USER}, not to you (uid 0): "
        "remove it, or use another --state-dir"
    )


@needs_root
def test_a_state_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "theirs"
    state.mkdir(mode=0o700)
    os.chown(state, ANOTHER_USER, ANOTHER_USER)
    expected = (
        f"keyward: error: the state directory {state} belongs to uid {ANOTHER_USER}, not to you (uid 0): "
        "use a directory of your own with --state-dir"
    )
    assert est_server_refusal(state) == expected
    assert sandbox_refusal(state) == expected


@needs_root
def test_a_state_dir_inside_a_directory_another_user_controls_is_refused(tmp_path: Path) -> None:
    """They could rename the state directory away and put one of theirs (or a link) in its place."""
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, ANOTHER_USER, ANOTHER_USER)
    state = theirs / "state"
    state.mkdir(mode=0o700)
    assert est_server_refusal(state) == (
        f"keyward: error: the state directory is inside {theirs}, which belongs to uid {ANOTHER_USER} "
        "(who could swap it): use a directory of your own with --state-dir"
    )


def test_a_sticky_world_writable_parent_like_tmp_is_fine(tmp_path: Path) -> None:
    parent = tmp_path / "tmp-like"
    parent.mkdir()
    parent.chmod(0o1777)
    state = prepare_private_directory(parent / "state")
    assert state.is_dir() and (state.stat().st_mode & 0o777) == 0o700


def test_writes_replace_a_link_planted_later_instead_of_following_it(tmp_path: Path, victim: Path) -> None:
    """Past the directory check, a link appearing at a file's place (or at its temporary name) is
    replaced or refused, never followed."""
    state = prepare_private_directory(tmp_path / "state")
    secret = state / "est-password"
    secret.symlink_to(victim)
    write_private_file(secret, b"ours\n", mode=0o600)
    assert victim.read_text() == "precious\n"
    assert not secret.is_symlink() and secret.read_bytes() == b"ours\n"
    assert (secret.stat().st_mode & 0o777) == 0o600

    log = state / "operator.log"
    log.symlink_to(victim)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        open_private_append(log)
    assert victim.read_text() == "precious\n"
