"""Where the PKCS#11 token is and how to log in: the TCS JSON config file or the environment.

The TCS format is ``{"tokenLabel": ..., "userPin": ..., "soPin": ...}``; keyward also reads an
optional ``"module"`` (path of the PKCS#11 library). Environment variables ``KEYWARD_PKCS11_MODULE``,
``KEYWARD_TOKEN_LABEL``, ``KEYWARD_USER_PIN`` and ``KEYWARD_SO_PIN`` override the file.
PINs are kept out of ``repr()`` so they cannot reach a log line by accident.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from keyward.errors import UserError

SOFTHSM2_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
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

    def with_overrides(self, env: Mapping[str, str]) -> HsmConfig:
        return replace(
            self,
            module=env.get(ENV_MODULE) or self.module,
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


def load_hsm_config(path: str | Path | None, env: Mapping[str, str] | None = None) -> HsmConfig:
    """Read the TCS-format JSON file (if any) and apply environment overrides."""
    env = os.environ if env is None else env
    config = HsmConfig()
    if path is not None:
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
        config = HsmConfig(
            module=str(raw.get("module") or SOFTHSM2_MODULE),
            token_label=str(raw.get("tokenLabel") or DEFAULT_TOKEN_LABEL),
            user_pin=str(raw.get("userPin") or ""),
            so_pin=str(raw.get("soPin") or ""),
            softhsm2_conf=raw.get("softhsm2Conf") or None,
        )
    return config.with_overrides(env)
