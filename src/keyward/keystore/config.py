"""Where the PKCS#11 token is and how to log in: the TCS JSON config file or the environment.

The TCS format is ``{"tokenLabel": ..., "userPin": ..., "soPin": ...}``; keyward also reads an
optional ``"module"`` (path of the PKCS#11 library). Environment variables ``KEYWARD_PKCS11_MODULE``,
``KEYWARD_TOKEN_LABEL``, ``KEYWARD_USER_PIN`` and ``KEYWARD_SO_PIN`` override the file; the TCS
seed's deprecated ``--token-label``, ``--user-pin`` and ``--so-pin`` (``HsmFallback``) fill in only
what the file leaves out, as in the seed. With no module configured, the first module present among
``MODULE_CANDIDATES`` is used (the seed's SGX toolkit, then SoftHSM2), and the config says which and why.
PINs are kept out of ``repr()`` so they cannot reach a log line by accident.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from keyward.errors import UserError

SOFTHSM2_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
#: The TCS seed's PKCS#11 module: Intel's Crypto API Toolkit for SGX enclaves.
SGX_TOOLKIT_MODULE = "/usr/local/lib/libp11sgx.so"
#: Modules looked for, in order, when the HSM config names none: (what it is, path).
MODULE_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("Intel's SGX toolkit", SGX_TOOLKIT_MODULE),
    ("SoftHSM2", SOFTHSM2_MODULE),
)
DEFAULT_TOKEN_LABEL = "SgxOperator"  # noqa: S105 - a token label, not a secret

ENV_MODULE = "KEYWARD_PKCS11_MODULE"
ENV_TOKEN_LABEL = "KEYWARD_TOKEN_LABEL"  # noqa: S105 - a variable name
ENV_USER_PIN = "KEYWARD_USER_PIN"
ENV_SO_PIN = "KEYWARD_SO_PIN"


@dataclass(frozen=True)
class HsmConfig:
    """A PKCS#11 module, the label of the token in it, and the PINs to use it."""

    module: str = SOFTHSM2_MODULE
    token_label: str = DEFAULT_TOKEN_LABEL
    user_pin: str = field(default="", repr=False)
    so_pin: str = field(default="", repr=False)
    #: SOFTHSM2_CONF for the module, when the token lives in a private SoftHSM2 store.
    softhsm2_conf: str | None = None
    #: How the module was chosen, for the log (e.g. "no module configured: Intel's SGX toolkit ...").
    module_source: str = field(default="", compare=False)

    def with_overrides(self, env: Mapping[str, str]) -> HsmConfig:
        module = env.get(ENV_MODULE)
        return replace(
            self,
            module=module or self.module,
            module_source=f"from {ENV_MODULE}" if module else self.module_source,
            token_label=env.get(ENV_TOKEN_LABEL) or self.token_label,
            user_pin=env.get(ENV_USER_PIN) or self.user_pin,
            so_pin=env.get(ENV_SO_PIN) or self.so_pin,
        )

    def to_json(self) -> str:
        data = {
            "tokenLabel": self.token_label,
            "userPin": self.user_pin,
            "soPin": self.so_pin,
            "module": self.module,
        }
        if self.softhsm2_conf:
            data["softhsm2Conf"] = self.softhsm2_conf
        return json.dumps(data, indent=2) + "\n"


@dataclass(frozen=True)
class HsmFallback:
    """The TCS seed's deprecated ``--token-label``, ``--user-pin``, ``--so-pin``: used only where the HSM
    config file (and the environment) say nothing, as the seed did."""

    token_label: str | None = None
    user_pin: str | None = field(default=None, repr=False)
    so_pin: str | None = field(default=None, repr=False)


def detect_module(candidates: Sequence[tuple[str, str]] = MODULE_CANDIDATES) -> tuple[str, str]:
    """(path, why) of the first PKCS#11 module present among ``candidates``; the last one if none is."""
    for what, path in candidates:
        if Path(path).is_file():
            return path, f"no module configured: {what} ({path}) is the first one present"
    what, path = candidates[-1]
    return path, f"no module configured and none present: expecting {what} at {path}"


def load_hsm_config(
    path: str | Path | None,
    env: Mapping[str, str] | None = None,
    *,
    fallback: HsmFallback | None = None,
    candidates: Sequence[tuple[str, str]] = MODULE_CANDIDATES,
) -> HsmConfig:
    """Read the TCS-format JSON file (if any), fill the gaps from ``fallback`` and the module from
    ``candidates``, and apply environment overrides."""
    env = os.environ if env is None else env
    raw: dict[str, object] = _read_config_file(path) if path is not None else {}
    fallback = fallback or HsmFallback()
    module = str(raw.get("module") or "")
    source = f"from {path}"
    if not module and not env.get(ENV_MODULE):
        module, source = detect_module(candidates)
    conf = raw.get("softhsm2Conf")
    config = HsmConfig(
        module=module or SOFTHSM2_MODULE,
        token_label=str(raw.get("tokenLabel") or fallback.token_label or DEFAULT_TOKEN_LABEL),
        user_pin=str(raw.get("userPin") or _flag_pin("--user-pin", fallback.user_pin, env)),
        so_pin=str(raw.get("soPin") or _flag_pin("--so-pin", fallback.so_pin, env)),
        softhsm2_conf=str(conf) if conf else None,
        module_source=source,
    )
    return config.with_overrides(env)


_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def _flag_pin(flag: str, value: str | None, env: Mapping[str, str]) -> str:
    """A PIN given by a deprecated flag, needed because the config file has none. Kubernetes expands only
    ``$(VAR)`` in container arguments, so the TCS seed's manifests pass ``--user-pin=$USER_PIN``
    literally: such a value is read from that variable (a PIN is never meant to be "$USER_PIN")."""
    if not value:
        return ""
    match = _VARIABLE.fullmatch(value)
    if match is None:
        return value
    name = match.group(1) or match.group(2)
    if not env.get(name):
        raise UserError(
            f"{flag} is ${name}, the variable {name} is not set and the HSM config file has no PIN",
            f"set {name} in the container's environment, or put the PINs in the HSM config file",
        )
    return env[name]


def _read_config_file(path: str | Path) -> dict[str, object]:
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(
            f"HSM config file {path} does not exist",
            "pass --hsm-config-file with the path of the TCS JSON config",
        ) from None
    except PermissionError:
        raise UserError(
            f"HSM config file {path} is not readable", "give the operator's user read permission on it"
        ) from None
    except (OSError, ValueError) as exc:
        raise UserError(
            f"HSM config file {path} is not valid JSON ({type(exc).__name__})",
            'write it as {"tokenLabel": ..., "userPin": ..., "soPin": ...}',
        ) from None
    if not isinstance(raw, dict):
        raise UserError(
            f"HSM config file {path} must hold a JSON object",
            'write it as {"tokenLabel": ..., "userPin": ..., "soPin": ...}',
        )
    return raw
