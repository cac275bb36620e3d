"""Errors a user can run into name the problem and the fix, and never show a PIN."""

from __future__ import annotations

import traceback
import uuid
from dataclasses import replace
from pathlib import Path

import pkcs11.exceptions as p11
import pytest

from keyward.errors import UserError
from keyward.keystore import (
    HsmConfig,
    KeystoreError,
    ModuleLoadError,
    TokenECPrivateKey,
    TokenFull,
    TokenKeyStore,
    TokenNotFound,
    WrongPin,
    create_softhsm_store,
)
from keyward.keystore.errors import token_error


def everything_shown(error: BaseException) -> str:
    """What could reach a user or a log: message, repr and the formatted traceback."""
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


def test_wrong_pin_is_reported_without_the_pin(hsm_config: HsmConfig, store: TokenKeyStore) -> None:
    # A token of its own: login state is per token, and the shared token is already logged in.
    other = replace(hsm_config, token_label=f"pin-{uuid.uuid4().hex[:8]}", user_pin="right-user-pin-4711")
    TokenKeyStore.open(other, workers=1).close()  # initializes the token with the right PIN
    wrong_pin = "wrong-user-pin-0815"

    with pytest.raises(WrongPin) as raised:
        TokenKeyStore.open(replace(other, user_pin=wrong_pin), workers=1)

    assert isinstance(raised.value, UserError)
    assert f"token '{other.token_label}'" in str(raised.value)
    assert "refused the user PIN" in str(raised.value)
    assert "set userPin in the HSM config file" in str(raised.value)
    shown = everything_shown(raised.value)
    leaked = [pin for pin in (wrong_pin, other.user_pin, other.so_pin) if pin in shown]
    assert not leaked, "a PIN appears in the error, its repr or its traceback"


def test_opening_initializes_a_missing_token_in_a_free_slot(
    hsm_config: HsmConfig, store: TokenKeyStore
) -> None:
    fresh = replace(hsm_config, token_label=f"new-{uuid.uuid4().hex[:8]}")
    with TokenKeyStore.open(fresh, workers=1) as opened:
        assert opened.labels() == set()


def test_missing_token_without_pins_cannot_be_initialized(
    hsm_config: HsmConfig, store: TokenKeyStore
) -> None:
    absent = replace(hsm_config, token_label="absent-token", so_pin="")
    with pytest.raises(TokenNotFound, match=r"no token 'absent-token'.*set soPin and userPin"):
        TokenKeyStore.open(absent)


def test_missing_module_names_its_path(tmp_path: Path) -> None:
    missing = tmp_path / "libnothere.so"
    with pytest.raises(ModuleLoadError, match=f"PKCS#11 module {missing} does not exist: install it"):
        TokenKeyStore.open(HsmConfig(module=str(missing), user_pin="1234"))


def test_a_file_that_is_no_pkcs11_module_is_reported(tmp_path: Path) -> None:
    not_a_library = tmp_path / "libfake.so"
    not_a_library.write_text("not a shared library\n")
    with pytest.raises(ModuleLoadError, match=f"PKCS#11 module {not_a_library} cannot be loaded"):
        TokenKeyStore.open(HsmConfig(module=str(not_a_library), user_pin="1234"))


def test_missing_user_pin_is_reported(hsm_config: HsmConfig, store: TokenKeyStore) -> None:
    with pytest.raises(KeystoreError, match=r"no user PIN is configured.*KEYWARD_USER_PIN"):
        TokenKeyStore.open(replace(hsm_config, user_pin=""))


def test_full_token_says_so_and_how_to_make_room() -> None:
    error = token_error(p11.DeviceMemory(), "generate a RSA-3072 key labelled 'x'", "'t' (module m)")
    assert isinstance(error, TokenFull)
    assert str(error) == (
        "token 't' (module m) could not generate a RSA-3072 key labelled 'x': the token is full "
        "(CKR_DEVICE_MEMORY): delete keys and certificates of issuers that no longer exist, "
        "or use a token with more room"
    )


def test_other_token_failures_name_the_return_code() -> None:
    error = token_error(p11.GeneralError(), "sign with key 'x'", "'t' (module m)")
    assert str(error).startswith("token 't' (module m) could not sign with key 'x' (GeneralError): check")


def test_a_second_softhsm2_store_in_use_is_refused_clearly(
    tmp_path: Path, store: TokenKeyStore, ec_key: TokenECPrivateKey
) -> None:
    other_store = create_softhsm_store(tmp_path / "other")
    with pytest.raises(KeystoreError, match=r"cannot switch to .*other/softhsm2.conf.*run one process per"):
        TokenKeyStore.open(other_store)
    assert ec_key.label in store.labels()  # the open store is unaffected
