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
from keyward.host import ListenAddress
from keyward.issuers.signer_names import IssuerRef
from keyward.issuers.tcs.est_ca import TcsEstCa
from keyward.kube.resources import TCS_GROUP
from keyward.operator.est_server.catalog import DEFAULT_KEY, EstCatalog
from keyward.operator.est_server.claims import EstClaims
from keyward.operator.est_server.service import EstService, event_message
from keyward.operator.est_server.tls_sources import SecretTls
from keyward.operator.secrets import SecretStore
from keyward.operator.settings import Settings
from keyward.operator.status import Events
from keyward.operator.tcs.cas import ReadyCa, ReadyCas
from keyward.operator.tcs.token import TokenProvider
from keyward.pki.pem import pem_chain
from keyward.pki.profile import IssuerPolicy
from tests.support.pki import memory_ca
from tests.unit.operator.test_secrets import Follows


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


def issuer_body(ready: ReadyCa, created: str) -> dict[str, Any]:
    """The issuer object behind ``ready``, created at ``created``."""
    ref = ready.ref
    meta = {
        "name": ref.name,
        "namespace": ref.namespace,
        "creationTimestamp": created,
        "uid": ref.signer_name,
    }
    spec = {"est": ready.est} if ready.est is not None else {}
    return {"kind": ref.kind, "metadata": {k: v for k, v in meta.items() if v}, "spec": spec}


def catalog_of(*cas: ReadyCa) -> tuple[ReadyCas, SecretStore, EstCatalog]:
    """A catalog of ready issuers, created in this order one second apart."""
    ready_cas, claims = ReadyCas(), EstClaims(operator_namespace="keyward-system")
    for second, ca in enumerate(cas):
        ready_cas.ready(ca)
        claims.observe("ADDED", issuer_body(ca, f"2030-01-01T00:00:{second:02d}Z"))
    secrets = SecretStore(follow=Follows({}))
    catalog = EstCatalog(ready_cas, TokenProvider(Settings()), secrets, "keyward-system", claims)
    return ready_cas, secrets, catalog


def served(catalog: EstCatalog, label: str) -> TcsEstCa:
    ca = catalog.cas()[label]
    assert isinstance(ca, TcsEstCa)
    return ca


async def test_issuers_with_spec_est_are_served_under_their_label() -> None:
    _, _, catalog = catalog_of(
        ready("plain"),
        ready("named", est={}),
        ready("labelled", est={"label": "devices/v1"}),
        ready("cluster-ca", None, est={"default": True}),
    )
    assert set(catalog.cas()) == {"named", "devices/v1", "cluster-ca", DEFAULT_KEY}
    assert catalog.cas()[DEFAULT_KEY] is catalog.cas()["cluster-ca"]
    assert served(catalog, "devices/v1").ca_certificates()[0].subject.rfc4514_string() == "CN=labelled"


async def test_a_label_stays_with_its_first_claimant_and_the_default_with_an_allowed_one() -> None:
    first, intruder = ready("first", "a", est={"label": "same"}), ready("late", "b", est={"label": "same"})
    greedy = ready("greedy", "c", est={"default": True})
    _, _, catalog = catalog_of(first, intruder, greedy, ready("global", None, est={"default": True}))
    assert set(catalog.cas()) == {"same", "greedy", "global", DEFAULT_KEY}
    assert catalog.issuer_for("same").ready is first  # type: ignore[union-attr]
    assert catalog.issuer_for(DEFAULT_KEY).ready.ref.name == "global"  # type: ignore[union-attr]


async def test_the_holder_keeps_its_label_while_it_is_not_ready() -> None:
    first, intruder = ready("first", "a", est={"label": "same"}), ready("late", "b", est={"label": "same"})
    cas, _, catalog = catalog_of(first, intruder)
    assert catalog.issuer_for("same").ready is first  # type: ignore[union-attr]
    cas.discard(first.ref.signer_name)  # a token fault, say
    assert catalog.cas() == {}, "nobody else is served under the label meanwhile"
    cas.ready(first)
    assert catalog.issuer_for("same").ready is first  # type: ignore[union-attr]


async def test_the_catalog_follows_issuers_coming_and_going() -> None:
    cas, _, catalog = catalog_of(ready("one", est={}))
    first = catalog.cas()["one"]
    assert catalog.cas()["one"] is first, "unchanged issuers keep their CA object"
    replacement = ready("one", est={"label": "renamed"})
    cas.ready(replacement)
    assert catalog.cas() == {}, "served again once its claim (the issuer's event) names the new label"
    catalog._claims.observe("MODIFIED", issuer_body(replacement, "2030-01-01T00:00:00Z"))
    assert set(catalog.cas()) == {"renamed"}
    cas.discard(replacement.ref.signer_name)
    assert catalog.cas() == {}


async def test_basic_credentials_come_from_the_watched_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    _, secrets, catalog = catalog_of(ready("ca", est={"basicAuthSecretRef": {"name": "est-users"}}))
    await catalog.load_secrets()
    ca = served(catalog, "ca")
    assert not ca.check_basic("est", "pw1")
    assert any(
        "Secret team/est-users (spec.est.basicAuthSecretRef) does not exist" in m for m in caplog.messages
    )

    await secrets.apply("ADDED", basic_auth("est-users", "team", "pw1"))
    assert ca.check_basic("est", "pw1") and not ca.check_basic("est", "pw2")
    await secrets.apply("MODIFIED", basic_auth("est-users", "team", "pw2"))
    assert ca.check_basic("est", "pw2") and not ca.check_basic("est", "pw1")
    await secrets.apply("ADDED", basic_auth("est-users", "elsewhere", "pw3"))
    assert not ca.check_basic("est", "pw3"), "a namespaced issuer reads Secrets in its own namespace"

    await secrets.apply("MODIFIED", secret("est-users", "team", {"username": b"est", "password": b"pw2"}))
    assert not ca.check_basic("est", "pw2"), "only kubernetes.io/basic-auth Secrets hold credentials"
    assert any("must be of type kubernetes.io/basic-auth" in m for m in caplog.messages)
    await secrets.apply("DELETED", basic_auth("est-users", "team", "pw2"))
    assert not ca.check_basic("est", "pw2")
    assert all("pw1" not in m and "pw2" not in m for m in caplog.messages)
    await secrets.close()


async def test_cluster_issuers_read_secrets_in_the_operator_namespace() -> None:
    _, secrets, catalog = catalog_of(ready("global", None, est={"basicAuthSecretRef": {"name": "est-users"}}))
    await catalog.load_secrets()
    await secrets.apply("ADDED", basic_auth("est-users", "keyward-system", "pw"))
    assert served(catalog, "global").check_basic("est", "pw")
    await secrets.close()


async def test_client_ca_trust_inline_and_from_a_secret_key() -> None:
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
    await catalog.load_secrets()
    await secrets.apply("ADDED", body)
    assert list(served(catalog, "b").client_ca_trust()) == [from_secret.certificate]
    assert "tls.key" not in repr(served(catalog, "b").client_ca_trust())
    await secrets.close()


async def test_a_token_fault_takes_the_issuer_out_until_it_is_rechecked() -> None:
    cas, _, catalog = catalog_of(ready("ca", est={}))
    ca = served(catalog, "ca")
    assert ca._on_token_fault is not None
    ca._on_token_fault(RuntimeError("token gone"))
    assert list(cas) == [] and catalog.cas() == {}


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


async def test_only_secrets_the_est_server_reads_wake_it() -> None:
    issuers = [
        ready("a", est={"basicAuthSecretRef": {"name": "users"}}),
        ready("b", None, est={"clientCATrust": {"secretRef": {"name": "client-ca", "key": "ca.crt"}}}),
        ready("plain"),
    ]
    cas, secrets, catalog = catalog_of(*issuers)
    service = EstService(
        cas=cas,
        tokens=TokenProvider(Settings()),
        secrets=secrets,
        events=Events(None),  # type: ignore[arg-type]
        source=SecretTls(secrets, "keyward-system/est-tls"),
        listen=ListenAddress("127.0.0.1", 0),
        operator_namespace="keyward-system",
        claims=catalog._claims,
    )
    assert service.catalog.referenced_secrets() == {("team", "users"), ("keyward-system", "client-ca")}
    for namespace, name in [
        ("team", "users"),
        ("keyward-system", "client-ca"),
        ("keyward-system", "est-tls"),
    ]:
        service._wake.clear()
        service._on_secret(namespace, name, None)
        assert service._wake.is_set(), name
        await service.stop()
    for namespace, name in [("team", "client-ca"), ("other", "users"), ("team", "unrelated")]:
        service._wake.clear()
        service._on_secret(namespace, name, None)
        assert not service._wake.is_set(), name
    await service.stop()
    await secrets.close()
