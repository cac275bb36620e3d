"""Key provisioning in integration tests: the key manager's side, as KMRA or a person would act."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyward.issuers.objects import QuoteAttestationView
from keyward.issuers.tcs.attestation import answered_status, published_public_key
from keyward.kube.client import Kube
from keyward.kube.resources import QUOTE_ATTESTATIONS, SECRETS
from keyward.pki.keywrap import WrapMechanism, wrap_private_key
from tests.support.pki import self_signed_ca
from tests.support.waiting import wait_for

CaKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def wrapping_key(qa: dict[str, Any]) -> rsa.RSAPublicKey:
    """The wrapping key a QuoteAttestation publishes (spec.publicKey), as a key manager reads it."""
    return published_public_key(QuoteAttestationView.from_body(qa))


def make_ca(
    key: CaKey | None = None,
    *,
    name: str = "External Root CA",
    ca: bool = True,
    valid_for: datetime.timedelta = datetime.timedelta(days=365),
) -> tuple[CaKey, x509.Certificate]:
    """A CA made outside keyward (as a company's PKI would hand it over)."""
    key = key or rsa.generate_private_key(65537, 3072)
    return key, self_signed_ca(key, name, ca=ca, valid_for=valid_for, valid_since=datetime.timedelta(days=2))


def write_ca(directory: Path, key: CaKey, certificate: x509.Certificate) -> tuple[Path, Path]:
    key_path, certificate_path = directory / "ca-key.pem", directory / "ca.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, certificate_path


async def wait_quote_attestation(
    kube: Kube, name: str, namespace: str, *, other_than: str | None = None, timeout: float = 30
) -> dict[str, Any]:
    """The QuoteAttestation once it exists with its Init status (and, with ``other_than``, a new uid)."""

    async def probe() -> dict[str, Any] | None:
        qa = await kube.find(QUOTE_ATTESTATIONS, name, namespace)
        if qa is None or not (qa.get("status") or {}).get("conditions"):
            return None
        return None if qa["metadata"]["uid"] == other_than else qa

    return await wait_for(probe, timeout=timeout, what=f"QuoteAttestation {namespace}/{name}")


async def gone(kube: Kube, resource: Any, name: str, namespace: str) -> bool:
    return await kube.find(resource, name, namespace) is None


def wrapped_secret(name: str, namespace: str, wrapped: bytes, certificate_pem: bytes) -> dict[str, Any]:
    """A key manager's answer as the seed's manual flow makes it (values are base64 text)."""

    def text(data: bytes) -> str:
        return base64.b64encode(base64.b64encode(data)).decode()

    return {
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": {"tls.key": text(wrapped), "tls.crt": text(certificate_pem)},
    }


async def answer(
    kube: Kube,
    qa: dict[str, Any],
    key: CaKey,
    certificate: x509.Certificate,
    *,
    mechanism: WrapMechanism = "aes_key_wrap_pad",
) -> None:
    """Act as the key manager: wrap ``key`` for the QuoteAttestation, write the Secret, set Ready."""
    wrapped = wrap_private_key(key, wrapping_key(qa), mechanism)
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    secret = wrapped_secret(qa["spec"]["secretName"], qa["metadata"]["namespace"], wrapped, pem)
    await answer_with(kube, qa, secret)


async def answer_with(kube: Kube, qa: dict[str, Any], secret: dict[str, Any] | None, ok: bool = True) -> None:
    """Write ``secret`` (if any), then set the QuoteAttestation's Ready condition as a key manager does."""
    meta = qa["metadata"]
    if secret is not None:
        await kube.create(SECRETS, secret, meta["namespace"])
    current = await kube.get(QUOTE_ATTESTATIONS, meta["name"], meta["namespace"])
    message = "CA key delivered" if ok else "quote verification failed: SGX_QL_QV_RESULT_REVOKED"
    await kube.patch(
        QUOTE_ATTESTATIONS,
        meta["name"],
        {"status": answered_status(QuoteAttestationView.from_body(current), ok, message)},
        meta["namespace"],
        subresource="status",
    )
