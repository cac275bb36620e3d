"""Which TCS issuer the operator's EST server serves where, and with which credentials (no cluster)."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from keyward.est.server.audit import AuditRecord
from keyward.est.server.ca import ClientIdentity
from keyward.issuers.signer_names import TCS_GROUP, IssuerRef
from keyward.issuers.tcs.est_ca import TcsEstCa
from keyward.operator.est_server.catalog import DEFAULT_KEY, EstCatalog, SecretCache
from keyward.operator.est_server.service import EstService, event_message
from keyward.operator.services import ReadyCa, Runtime
from keyward.operator.settings import Settings
from keyward.pki.pem import pem_chain
from keyward.pki.profile import IssuerPolicy

from .memory import memory_ca


def ready(name: str, namespace: str | None = "team", est: dict[str, Any] | None = None) -> ReadyCa:
    kind = "TCSIssuer" if namespace else "TCSClusterIssuer"
    ca = memory_ca(common_name=name)
    return ReadyCa(
        IssuerRef(TCS_GROUP, kind, name, namespace), ca, IssuerPolicy(), pem_chain([ca.certificate]), est
    )


def secret(name: str, namespace: str, data: dict[str, bytes], type: str = "Opaque") -> dict[str, Any]:
    encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
    return {"metadata": {"name": name, "namespace": namespace}, "type": type, "data": encoded}


def basic_auth(name: str, namespace: str, password: str) -> dict[str, Any]:
    return secret(
        name, namespace, {"username": b"est", "password": password.encode()}, "kubernetes.io/basic-auth"
    )


def catalog_of(*cas: ReadyCa) -> tuple[Runtime, SecretCache, EstCatalog]:
    memo = Runtime(settings=Settings(operator_namespace="keyward-system"))
    memo.cas.update({ca.ref.signer_name: ca for ca in cas})
    secrets = SecretCache()
    return memo, secrets, EstCatalog(memo, secrets)


def served(catalog: EstCatalog, label: str) -> TcsEstCa:
    ca = catalog.cas()[label]
    assert isinstance(ca, TcsEstCa)
    return ca


def test_issuers_with_spec_est_are_served_under_their_label() -> None:
    _, _, catalog = catalog_of(
        ready("plain"),
        ready("named", est={}),
        ready("labelled", est={"label": "devices/v1"}),
        ready("cluster-ca", None, est={"default": True}),
    )
    assert set(catalog.cas()) == {"named", "devices/v1", "cluster-ca", DEFAULT_KEY}
    assert catalog.cas()[DEFAULT_KEY] is catalog.cas()["cluster-ca"]
    assert served(catalog, "devices/v1").ca_certificates()[0].subject.rfc4514_string() == "CN=labelled"


def test_label_and_default_conflicts_keep_the_first_issuer_and_say_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, _, catalog = catalog_of(
        ready("same", "a", est={"default": True}),
        ready("same", "b", est={"default": True}),
        ready("x", est={"label": "same"}),
    )
    caplog.set_level(logging.WARNING)
    cas = catalog.cas()
    assert set(cas) == {"same", DEFAULT_KEY}
    assert served(catalog, "same").ca_certificates()[0].subject.rfc4514_string() == "CN=same"
    assert catalog.issuer_for("same").ready.ref.namespace == "a"  # type: ignore[union-attr]
    taken = [m for m in caplog.messages if "label 'same' is taken by TCSIssuer a/same" in m]
    assert len(taken) == 2 and all("set spec.est.label to another label" in m for m in taken)


def test_the_catalog_follows_issuers_coming_and_going() -> None:
    memo, _, catalog = catalog_of(ready("one", est={}))
    first = catalog.cas()["one"]
    assert catalog.cas()["one"] is first, "unchanged issuers keep their CA object"
    replacement = ready("one", est={"label": "renamed"})
    memo.cas[replacement.ref.signer_name] = replacement
    assert set(catalog.cas()) == {"renamed"}
    memo.cas.clear()
    assert catalog.cas() == {}


def test_basic_credentials_come_from_the_watched_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    _, secrets, catalog = catalog_of(ready("ca", est={"basicAuthSecretRef": {"name": "est-users"}}))
    ca = served(catalog, "ca")
    assert not ca.check_basic("est", "pw1")
    assert any(
        "Secret team/est-users (spec.est.basicAuthSecretRef) does not exist" in m for m in caplog.messages
    )

    assert secrets.update("ADDED", basic_auth("est-users", "team", "pw1"))
    assert ca.check_basic("est", "pw1") and not ca.check_basic("est", "pw2")
    assert secrets.update("MODIFIED", basic_auth("est-users", "team", "pw2"))
    assert ca.check_basic("est", "pw2") and not ca.check_basic("est", "pw1")
    assert not secrets.update("MODIFIED", basic_auth("est-users", "team", "pw2")), "no change, no wake-up"
    secrets.update("ADDED", basic_auth("est-users", "elsewhere", "pw3"))
    assert not ca.check_basic("est", "pw3"), "a namespaced issuer reads Secrets in its own namespace"

    secrets.update("MODIFIED", secret("est-users", "team", {"username": b"est", "password": b"pw2"}))
    assert not ca.check_basic("est", "pw2"), "only kubernetes.io/basic-auth Secrets hold credentials"
    assert any("must be of type kubernetes.io/basic-auth" in m for m in caplog.messages)
    secrets.update("DELETED", basic_auth("est-users", "team", "pw2"))
    assert not ca.check_basic("est", "pw2")
    assert all("pw1" not in m and "pw2" not in m for m in caplog.messages)


def test_cluster_issuers_read_secrets_in_the_operator_namespace() -> None:
    _, secrets, catalog = catalog_of(ready("global", None, est={"basicAuthSecretRef": {"name": "est-users"}}))
    secrets.update("ADDED", basic_auth("est-users", "keyward-system", "pw"))
    assert served(catalog, "global").check_basic("est", "pw")


def test_client_ca_trust_inline_and_from_a_secret_key() -> None:
    inline, from_secret = memory_ca(common_name="inline client CA"), memory_ca(common_name="secret client CA")
    inline_pem = inline.certificate.public_bytes(serialization.Encoding.PEM).decode()
    _, secrets, catalog = catalog_of(
        ready("a", est={"clientCATrust": {"pem": inline_pem}}),
        ready("b", est={"clientCATrust": {"secretRef": {"name": "client-ca", "key": "ca.crt"}}}),
    )
    assert list(served(catalog, "a").client_ca_trust()) == [inline.certificate]
    assert list(served(catalog, "b").client_ca_trust()) == []
    key_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    body = secret("client-ca", "team", {"ca.crt": pem_chain([from_secret.certificate]), "tls.key": key_pem})
    secrets.update("ADDED", body)
    assert list(served(catalog, "b").client_ca_trust()) == [from_secret.certificate]
    entry = secrets.get("team", "client-ca")
    assert entry is not None and set(entry.certificates) == {"ca.crt"}, "private keys are never cached"


def test_a_token_fault_takes_the_issuer_out_until_it_is_rechecked() -> None:
    memo, _, catalog = catalog_of(ready("ca", est={}))
    ca = served(catalog, "ca")
    assert ca._on_token_fault is not None
    ca._on_token_fault(RuntimeError("token gone"))
    assert memo.cas == {} and catalog.cas() == {}


def test_the_enrollment_event_names_client_subject_sans_serial_and_expiry() -> None:
    record = AuditRecord(
        "ca",
        "simpleenroll",
        ClientIdentity.from_basic("est"),
        "CN=device",
        ("DNS:device.example",),
        0xABC,
        datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert event_message(record) == (
        "EST simpleenroll by basic:est: subject CN=device, SANs DNS:device.example, serial abc, "
        "not after 2030-01-02T03:04:05+00:00"
    )


def test_only_secrets_the_est_server_reads_reach_its_watch_handler() -> None:
    memo, _, _ = catalog_of(
        ready("a", est={"basicAuthSecretRef": {"name": "users"}}),
        ready("b", None, est={"clientCATrust": {"secretRef": {"name": "client-ca", "key": "ca.crt"}}}),
        ready("plain"),
    )
    memo.settings = Settings(operator_namespace="keyward-system", est_tls_secret="keyward-system/est-tls")
    service = EstService(memo)
    assert service.catalog.referenced_secrets() == {("team", "users"), ("keyward-system", "client-ca")}
    wanted = [
        ("team", "users"),
        ("keyward-system", "client-ca"),
        ("keyward-system", "est-tls"),
    ]
    for namespace, name in wanted:
        assert service.wants({"metadata": {"namespace": namespace, "name": name}}), name
    for namespace, name in [("team", "client-ca"), ("other", "users"), ("team", "unrelated")]:
        assert not service.wants({"metadata": {"namespace": namespace, "name": name}}), name
