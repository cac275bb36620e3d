"""One private SoftHSM2 store per test session (SOFTHSM2_CONF is process-wide), unique labels per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyward.keystore import (
    HsmConfig,
    KeySpec,
    TokenECPrivateKey,
    TokenKeyStore,
    TokenRSAPrivateKey,
    create_softhsm_store,
)


@pytest.fixture(scope="session")
def hsm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("softhsm")


@pytest.fixture(scope="session")
def hsm_config(hsm_dir: Path) -> HsmConfig:
    return create_softhsm_store(hsm_dir)


@pytest.fixture(scope="session")
def store(hsm_config: HsmConfig) -> Iterator[TokenKeyStore]:
    # Loading SoftHSM2 sets SOFTHSM2_CONF for the process (the module reads it then); set back when the
    # store closes.
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("SOFTHSM2_CONF", str(hsm_config.softhsm2_conf))
        with TokenKeyStore.open(hsm_config) as opened:
            yield opened


@pytest.fixture
def label(request: pytest.FixtureRequest) -> str:
    """A CKA_LABEL no other test uses, shaped like a signer name."""
    return f"tcsissuer.tcs.intel.com/test.{request.node.originalname}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def rsa_key(store: TokenKeyStore) -> TokenRSAPrivateKey:
    key = store.generate_key(f"shared-rsa-{uuid.uuid4().hex[:8]}", KeySpec("RSA", 2048))
    assert isinstance(key, TokenRSAPrivateKey)
    return key


@pytest.fixture(scope="session")
def ec_key(store: TokenKeyStore) -> TokenECPrivateKey:
    key = store.generate_key(f"shared-ec-{uuid.uuid4().hex[:8]}", KeySpec("ECDSA", 256))
    assert isinstance(key, TokenECPrivateKey)
    return key
