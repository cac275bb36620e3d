"""Key provisioning (spec.selfSign false) end to end: the operator asks through a QuoteAttestation, a key
manager answers (keyward provision-key, or a test acting as one), and the CA key lands in the token."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keyward.kube.client import Kube
from keyward.kube.resources import CSRS, QUOTE_ATTESTATIONS, SECRETS, TCS_ISSUERS
from keyward.pki.keywrap import wrap_private_key
from keyward.sandbox.operator_process import OperatorProcess
from keyward.sandbox.runner import Sandbox
from tests.integration.conftest import OperatorRunner
from tests.integration.helpers import (
    create_issuer,
    openssl_verify,
    ready_condition,
    token_objects,
    wait_ready,
)
from tests.integration.provisioning_helpers import (
    answer,
    answer_with,
    gone,
    make_ca,
    wait_quote_attestation,
    wrapped_secret,
    wrapping_key,
    write_ca,
)
from tests.integration.requests_helpers import approve_csr, create_csr, make_csr, wait_csr_certificate
from tests.support.tools import keyward_async, kubectl, object_blocks
from tests.support.waiting import wait_for
from tests.unit.keystore.helpers import openssl_wrap

RENEW = "keyward.io/renew-key-provisioning"


async def test_an_issuer_without_self_signing_gets_an_external_ca_through_provision_key(
    kube: Kube, operator: object, namespace: str, sandbox: Sandbox, tmp_path: Path
) -> None:
    await create_issuer(kube, "external-ca", namespace, {"secretName": "external-ca-cert", "selfSign": False})
    qa = await wait_quote_attestation(kube, "external-ca", namespace)
    issuer = await wait_ready(kube, "external-ca", namespace, status="False", reason="Pending")
    assert ready_condition(issuer)["message"].startswith(
        (f"Initiated key provisioning using QuoteAttestation {namespace}/external-ca", "Waiting for key")
    )
    label = f"tcsissuer.tcs.intel.com/{namespace}.external-ca"
    spec = qa["spec"]
    assert (spec["type"], spec["signerName"], spec["secretName"]) == ("KeyProvisioning", label, "external-ca")
    public_key = serialization.load_pem_public_key(base64.b64decode(spec["publicKey"]))
    assert isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size == 3072
    assert (spec["quote"], spec["quoteVersion"]) == ("", "none"), "SoftHSM2 has no attestation"
    assert "confidentiality only" in qa["metadata"]["annotations"]["keyward.io/attestation"]
    nonce = base64.b64decode(spec["nonce"])
    (stamp,) = struct.unpack("<I", nonce[28:])
    assert len(nonce) == 32 and abs(stamp - time.time()) < 120, "28 random bytes and a timestamp (KMRA)"
    assert qa["metadata"]["ownerReferences"][0]["kind"] == "TCSIssuer"
    assert qa["status"]["conditions"][0]["type"] == "Init"
    assert sandbox.hsm is not None
    listing = await token_objects(sandbox.hsm)
    assert object_blocks(listing, label) == [], "no CA key before the key manager answered"
    wrapping = [b for b in object_blocks(listing, f"{label}#wrapping") if b.startswith("Private Key")]
    assert len(wrapping) == 1 and "never extractable" in wrapping[0]

    key_path, ca_path = write_ca(tmp_path, *make_ca(name="Example External Root"))
    args = ("provision-key", "external-ca", "-n", namespace, "--ca-key", str(key_path))
    args += ("--ca-cert", str(ca_path))
    refused = await keyward_async(*args)
    assert refused.returncode == 2 and "--accept-unattested" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    done = await keyward_async(*args, "--accept-unattested")
    assert done.returncode == 0, done.stderr
    assert f"QuoteAttestation {namespace}/external-ca answered" in done.stdout

    issuer = await wait_ready(kube, "external-ca", namespace)
    secret = await kube.get(SECRETS, "external-ca-cert", namespace)
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    assert ca == x509.load_pem_x509_certificate(ca_path.read_bytes()), "the issuer's CA is the external one"
    assert secret["data"]["tls.key"] == ""
    listing = await token_objects(sandbox.hsm)
    (private,) = [b for b in object_blocks(listing, label) if b.startswith("Private Key")]
    access = next(line for line in private.splitlines() if "Access:" in line)
    # Sensitive and not extractable (it was outside the token before, so not "never extractable").
    assert [word.strip() for word in access.split(":", 1)[1].split(",")] == ["sensitive"], access
    assert object_blocks(listing, f"{label}#wrapping") == [], "the wrapping key is deleted"
    await wait_for(lambda: gone(kube, QUOTE_ATTESTATIONS, "external-ca", namespace), what="QA deleted")
    assert await kube.find(SECRETS, "external-ca", namespace) is None, "the answering Secret is deleted"

    await create_csr(kube, f"{namespace}-leaf", make_csr("leaf.example"), label)
    await approve_csr(kube, f"{namespace}-leaf")
    (leaf,) = await wait_csr_certificate(kube, f"{namespace}-leaf")
    verdict = openssl_verify(tmp_path, ca, leaf.public_bytes(serialization.Encoding.PEM))
    assert verdict.endswith(": OK"), verdict
    out = (await kubectl("get", "tcsissuers", "-n", namespace)).stdout.splitlines()
    assert out[1].split()[2:] == ["True", "Reconcile", "Success"]
    await kube.delete(TCS_ISSUERS, "external-ca", namespace)


def _text(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def _waiting_issuer(kube: Kube, namespace: str, name: str = "ext") -> dict[str, Any]:
    await create_issuer(kube, name, namespace, {"secretName": f"{name}-cert", "selfSign": False})
    return await wait_quote_attestation(kube, name, namespace)


async def _not_ready(kube: Kube, namespace: str, reason: str, name: str = "ext") -> str:
    """The issuer's Ready message once it is False for ``reason``."""
    issuer = await wait_ready(kube, name, namespace, status="False", reason=reason)
    return str(ready_condition(issuer)["message"])


async def _asked_again_and_answered(kube: Kube, namespace: str, qa: dict[str, Any]) -> x509.Certificate:
    """A new QuoteAttestation replaces ``qa`` (the same wrapping key, a new nonce), the issuer says it
    waits for it, and an answer to it makes the issuer Ready."""
    again = await wait_quote_attestation(kube, "ext", namespace, other_than=qa["metadata"]["uid"])
    assert again["spec"]["publicKey"] == qa["spec"]["publicKey"], "the same wrapping key, asked anew"
    assert again["spec"]["nonce"] != qa["spec"]["nonce"]
    assert f"QuoteAttestation {namespace}/ext" in await _not_ready(kube, namespace, "Pending")
    key, ca = make_ca()
    await answer(kube, again, key, ca)
    await wait_ready(kube, "ext", namespace)
    return ca


async def _no_ca_in_the_token(sandbox: Sandbox, label: str) -> None:
    assert sandbox.hsm is not None
    listing = await token_objects(sandbox.hsm)
    assert object_blocks(listing, label) == [], "nothing of the CA entered the token"
    assert object_blocks(listing, f"{label}#wrapping"), "the wrapping key stays for a corrected answer"


BadAnswer = Callable[[Kube, dict[str, Any], str], Awaitable[dict[str, Any]]]


async def _secret_of(qa: dict[str, Any], wrapped: bytes, certificate: x509.Certificate) -> dict[str, Any]:
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    return wrapped_secret(qa["spec"]["secretName"], qa["metadata"]["namespace"], wrapped, pem)


async def _truncated(kube: Kube, qa: dict[str, Any], namespace: str) -> dict[str, Any]:
    key, ca = make_ca()
    return await _secret_of(qa, wrap_private_key(key, wrapping_key(qa))[:-16], ca)


async def _too_short(kube: Kube, qa: dict[str, Any], namespace: str) -> dict[str, Any]:
    key, ca = make_ca()
    return await _secret_of(qa, wrap_private_key(key, wrapping_key(qa))[:300], ca)


async def _oversized(kube: Kube, qa: dict[str, Any], namespace: str) -> dict[str, Any]:
    key, ca = make_ca()
    return await _secret_of(qa, wrap_private_key(key, wrapping_key(qa)) + os.urandom(8192), ca)


async def _not_base64(kube: Kube, qa: dict[str, Any], namespace: str) -> dict[str, Any]:
    _, ca = make_ca()
    secret = await _secret_of(qa, b"", ca)
    secret["data"]["tls.key"] = _text(b"this is not base64 !!")
    return secret


async def _wrong_mechanism(kube: Kube, qa: dict[str, Any], namespace: str) -> dict[str, Any]:
    key, ca = make_ca()
    return await _secret_of(qa, wrap_private_key(key, wrapping_key(qa), "aes_gcm"), ca)


async def _another_keys_certificate(kube: Kube, qa: dict[str, Any], namespace: str) -> dict[str, Any]:
    key, _ = make_ca()
    _, other = make_ca(name="Someone Else's CA")
    return await _secret_of(qa, wrap_private_key(key, wrapping_key(qa)), other)


async def _not_a_ca(kube: Kube, qa: dict[str, Any], namespace: str) -> dict[str, Any]:
    key, leaf = make_ca(name="leaf.example", ca=False)
    return await _secret_of(qa, wrap_private_key(key, wrapping_key(qa)), leaf)


async def _expired(kube: Kube, qa: dict[str, Any], namespace: str) -> dict[str, Any]:
    key, old = make_ca(valid_for=datetime.timedelta(hours=-1))
    return await _secret_of(qa, wrap_private_key(key, wrapping_key(qa)), old)


async def _replayed(kube: Kube, qa: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The answer another issuer's QuoteAttestation got, copied into this one's Secret."""
    other = await _waiting_issuer(kube, namespace, "other")
    key, ca = make_ca()
    return await _secret_of(qa, wrap_private_key(key, wrapping_key(other)), ca)


@pytest.mark.parametrize(
    ("bad", "reason", "said"),
    [
        (_truncated, "KeyProvisioningFailed", "could not unwrap the RSA-3072 CA key (WKEY)"),
        (_too_short, "SecretInvalid", "too short for WSWK || WKEY"),
        (_oversized, "SecretInvalid", "more than any wrapped CA key"),
        (_not_base64, "SecretInvalid", "is not base64 text of the wrapped key"),
        (_wrong_mechanism, "KeyProvisioningFailed", "keyward unwraps with aes_key_wrap_pad"),
        (_another_keys_certificate, "KeyProvisioningFailed", "does not belong to its certificate"),
        (_not_a_ca, "NotACA", "is not a CA certificate"),
        (_expired, "CAExpired", "expired at"),
        (_replayed, "KeyProvisioningFailed", "not wrapped for this issuer's wrapping key"),
    ],
    ids=lambda value: getattr(value, "__name__", "").strip("_") or None,
)
async def test_a_bad_answer_leaves_the_issuer_not_ready_with_the_reason_and_nothing_in_the_token(
    kube: Kube, operator: object, namespace: str, sandbox: Sandbox, bad: BadAnswer, reason: str, said: str
) -> None:
    qa = await _waiting_issuer(kube, namespace)
    await answer_with(kube, qa, await bad(kube, qa, namespace))
    message = await _not_ready(kube, namespace, reason)
    assert said in message and "keyward.io/renew-key-provisioning" in message, message
    await _no_ca_in_the_token(sandbox, f"tcsissuer.tcs.intel.com/{namespace}.ext")
    assert await kube.find(SECRETS, "ext-cert", namespace) is None, "no issuer Secret without a CA"
    assert await kube.find(QUOTE_ATTESTATIONS, "ext", namespace) is not None, "kept for inspection"


async def test_a_refusal_is_shown_and_the_issuer_asks_again_on_request(
    kube: Kube, operator: object, namespace: str, sandbox: Sandbox
) -> None:
    qa = await _waiting_issuer(kube, namespace)
    label = f"tcsissuer.tcs.intel.com/{namespace}.ext"
    await create_csr(kube, f"{namespace}-early", make_csr("early.example"), label)
    await approve_csr(kube, f"{namespace}-early")
    await answer_with(kube, qa, None, ok=False)
    assert "SGX_QL_QV_RESULT_REVOKED" in await _not_ready(kube, namespace, "KeyProvisioningRefused")
    await _no_ca_in_the_token(sandbox, label)
    assert not (await kube.get(CSRS, f"{namespace}-early")).get("status", {}).get("certificate")

    await kube.patch(TCS_ISSUERS, "ext", {"metadata": {"annotations": {RENEW: "1"}}}, namespace)
    ca = await _asked_again_and_answered(kube, namespace, qa)
    (leaf,) = await wait_csr_certificate(kube, f"{namespace}-early")  # signed once the key is in
    leaf.verify_directly_issued_by(ca)


async def test_a_quote_attestation_deleted_while_waiting_is_made_again(
    kube: Kube, operator: object, namespace: str
) -> None:
    qa = await _waiting_issuer(kube, namespace)
    await kube.delete(QUOTE_ATTESTATIONS, "ext", namespace)
    await _asked_again_and_answered(kube, namespace, qa)


async def test_ready_without_the_secret_says_so_and_takes_the_secret_when_it_comes(
    kube: Kube, operator: object, namespace: str
) -> None:
    qa = await _waiting_issuer(kube, namespace)
    await answer_with(kube, qa, None)
    message = await _not_ready(kube, namespace, "KeyProvisioningFailed")
    assert f"Secret {namespace}/ext it names does not exist" in message
    key, ca = make_ca()
    secret = await _secret_of(qa, wrap_private_key(key, wrapping_key(qa)), ca)
    await kube.create(SECRETS, secret, namespace)  # the watch of that Secret wakes the issuer
    await wait_ready(kube, "ext", namespace, timeout=20)


async def test_the_seed_manual_flow_with_openssl_kubectl_and_v1alpha1(
    kube: Kube, operator: object, namespace: str, tmp_path: Path
) -> None:
    """docs/integrate-key-server.md of the seed, with openssl in the place of km-wrap: the wrap is made by
    the openssl command line alone, and the answer is the v1alpha1 status patch (status.secrets and
    CASecretReady "true") made with kubectl."""
    await _waiting_issuer(kube, namespace, "external-ca")
    label = f"tcsissuer.tcs.intel.com/{namespace}.external-ca"
    public_key = await kubectl(
        "get", "quoteattestations.tcs.intel.com", "-n", namespace, "external-ca",
        "-o", "jsonpath={.spec.publicKey}",
    )  # fmt: skip
    (tmp_path / "public.key").write_bytes(base64.b64decode(public_key.stdout))
    key_path, ca_path = write_ca(tmp_path, *make_ca())
    wrapped = await asyncio.to_thread(openssl_wrap, tmp_path, key_path, tmp_path / "public.key")
    await kubectl(
        "create", "secret", "generic", "-n", namespace, "wrapped-key",
        f"--from-literal=tls.key={_text(wrapped)}",
        f"--from-literal=tls.crt={_text(ca_path.read_bytes())}",
    )  # fmt: skip
    patch = [
        {
            "op": "add",
            "path": "/status/secrets",
            "value": {label: {"secretName": "wrapped-key", "secretType": "KMRA"}},
        },
        {
            "op": "add",
            "path": "/status/conditions/-",
            "value": {
                "type": "CASecretReady",
                "status": "true",
                "reason": "AttestationControllerReconcile",
                "message": "Quote verification success",
            },
        },
    ]
    await kubectl(
        "patch", "quoteattestations.v1alpha1.tcs.intel.com", "external-ca", "-n", namespace,
        "--subresource=status", "--type=json", "-p", json.dumps(patch),
    )  # fmt: skip
    await wait_ready(kube, "external-ca", namespace)
    secret = await kube.get(SECRETS, "external-ca-cert", namespace)
    assert base64.b64decode(secret["data"]["tls.crt"]) == ca_path.read_bytes()
    assert await kube.find(SECRETS, "wrapped-key", namespace) is not None, "the user's Secret is the user's"


async def test_deleting_a_waiting_issuer_removes_its_wrapping_key_and_quote_attestation(
    kube: Kube, operator: object, namespace: str, sandbox: Sandbox
) -> None:
    await _waiting_issuer(kube, namespace)
    label = f"tcsissuer.tcs.intel.com/{namespace}.ext"
    assert sandbox.hsm is not None
    assert object_blocks(await token_objects(sandbox.hsm), f"{label}#wrapping")
    await kube.delete(TCS_ISSUERS, "ext", namespace)
    await wait_for(lambda: gone(kube, TCS_ISSUERS, "ext", namespace), what="the issuer's deletion")
    assert await kube.find(QUOTE_ATTESTATIONS, "ext", namespace) is None
    assert object_blocks(await token_objects(sandbox.hsm), f"{label}#wrapping") == []


async def test_provision_key_refuses_what_it_must_not_answer_in_one_line(
    kube: Kube, operator: object, namespace: str, tmp_path: Path
) -> None:
    await _waiting_issuer(kube, namespace)
    key_path, ca_path = write_ca(tmp_path, *make_ca())
    (tmp_path / "other").mkdir()
    _, other_ca_path = write_ca(tmp_path / "other", *make_ca())

    async def refused(name: str, certificate: Path, said: str, *flags: str) -> None:
        done = await keyward_async(
            "provision-key", name, "-n", namespace, "--ca-key", str(key_path), "--ca-cert", str(certificate),
            *flags,
        )  # fmt: skip
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and said in lines[0], done.stderr

    await refused(
        "missing", ca_path, f"QuoteAttestation {namespace}/missing does not exist", "--accept-unattested"
    )
    await refused("ext", other_ca_path, "is not for the key in", "--accept-unattested")
    quote = {"spec": {"quote": _text(b"an SGX quote"), "quoteVersion": "ECDSA Quote 3"}}
    await kube.patch(QUOTE_ATTESTATIONS, "ext", quote, namespace)
    await refused("ext", ca_path, "carries an SGX quote", "--accept-unattested")
    assert await kube.find(SECRETS, "ext", namespace) is None, "nothing was sent"


async def test_the_operator_went_through_all_of_the_above_without_a_crash(
    operators: OperatorRunner, operator: OperatorProcess
) -> None:
    """Run last: every bad answer above was met with a reason, none with a crash or a traceback."""
    assert operator.process is not None and operator.process.returncode is None
    assert "Traceback" not in operators.logs()
