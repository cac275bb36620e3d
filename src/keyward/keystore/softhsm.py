"""A private SoftHSM2 store in a directory: its config, its token and the PINs, created once.

The sandbox, the cluster-free EST server and the tests need a token without touching the system-wide
SoftHSM2 store. The token is initialized in a child process, because SoftHSM2 reads SOFTHSM2_CONF only
when a process first loads it: the calling process may already use another store, and a child keeps the
SO PIN off the command line (it reads ``hsm.json``, mode 0600).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from keyward.errors import UserError
from keyward.keystore.config import SOFTHSM2_MODULE, HsmConfig, load_hsm_config
from keyward.keystore.errors import KeystoreError
from keyward.keystore.module import SOFTHSM2_CONF_ENV
from keyward.statedir import private_subdirectory, write_private_file

CONFIG_FILE = "hsm.json"
SOFTHSM2_CONF_FILE = "softhsm2.conf"
TOKENS_DIR = "tokens"
_INIT_TIMEOUT_SECONDS = 60
_INITIALIZE_IN_CHILD = (
    "import sys\nfrom keyward.keystore.softhsm import initialize_token_from_file\n"
    "sys.exit(initialize_token_from_file(sys.argv[1]))"
)


def create_softhsm_store(state_dir: Path, token_label: str = "keyward") -> HsmConfig:  # noqa: S107 (a label)
    """Create ``<state>/softhsm2.conf``, ``<state>/tokens/``, the token and ``<state>/hsm.json`` once.

    Later calls find ``hsm.json`` and return the same config. The config carries the module and
    ``softhsm2Conf``, so :meth:`TokenKeyStore.open` points SoftHSM2 at this store.
    """
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    config_file = state / CONFIG_FILE
    with _exclusive(state):
        if config_file.exists():
            return load_hsm_config(config_file, env={})
        tokens = private_subdirectory(state / TOKENS_DIR)
        softhsm2_conf = state / SOFTHSM2_CONF_FILE
        conf = f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        write_private_file(softhsm2_conf, conf.encode(), mode=0o600)
        config = HsmConfig(
            module=SOFTHSM2_MODULE,
            token_label=token_label,
            user_pin=secrets.token_urlsafe(18),
            so_pin=secrets.token_urlsafe(18),
            softhsm2_conf=str(softhsm2_conf),
        )
        pending = state / f".{CONFIG_FILE}.new"
        write_private_file(pending, config.to_json().encode(), mode=0o600)  # it holds the PINs
        _initialize_token(pending, config)
        pending.replace(config_file)
        return config


@contextmanager
def _exclusive(state: Path) -> Iterator[None]:
    """Serialize store creation between processes sharing the state directory (the lock file is never
    truncated, nor opened through a link)."""
    descriptor = os.open(state / ".hsm.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _initialize_token(config_file: Path, config: HsmConfig) -> None:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("KEYWARD_")}
    environment[SOFTHSM2_CONF_ENV] = config.softhsm2_conf or ""
    done = subprocess.run(
        [sys.executable, "-c", _INITIALIZE_IN_CHILD, str(config_file)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=_INIT_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise KeystoreError(
            f"initializing SoftHSM2 token '{config.token_label}' in {config_file.parent} failed: {reason}",
            "check that softhsm2 is installed and the directory is writable, then retry",
        )


def initialize_token_from_file(config_file: str) -> int:
    """Child-process entry: open (and so initialize) the token described by ``config_file``."""
    from keyward.keystore.store import TokenKeyStore

    try:
        TokenKeyStore.open(load_hsm_config(config_file, env={}), workers=1).close()
    except UserError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0
