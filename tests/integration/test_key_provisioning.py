"""Key provisioning (spec.selfSign false) end to end: the operator asks through a QuoteAttestation, a key
manager answers (keyward provision-key, or a test acting as one), and the CA key lands in the token."""

from __future__ import annotations

import base64
import struct
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from keyward.kube.client import Kube
from keyward.kube.resources import QUOTE_ATTESTATIONS, SECRETS, TCS_ISSUERS
from keyward.sandbox.runner import Sandbox
from tests.integration.helpers import (
    create_issuer,
    kubectl,
    object_blocks,
    openssl_verify,
    ready_condition,
    token_objects,
    wait_for,
    wait_ready,
)
from tests.integration.provisioning_helpers import (
    gone,
    keyward_cli,
    make_ca,
    wait_quote_attestation,
    write_ca,
)
from tests.integration.requests_helpers import approve_csr, create_csr, make_csr, wait_csr_certificate


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
    refused = await keyward_cli(*args)
    assert refused.returncode == 2 and "--accept-unattested" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    done = await keyward_cli(*args, "--accept-unattested")
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
