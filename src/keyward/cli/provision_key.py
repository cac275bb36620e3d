"""``keyward provision-key``: a key manager for tokens without SGX (tcs.md, key provisioning).

The counterpart of Intel KMRA's ``km-attest`` + ``km-wrap`` + the ``kubectl`` status patch of the seed's
manual flow, in one command: read the QuoteAttestation (type KeyProvisioning) an issuer published, check
its evidence, wrap the CA key (PEM file) for its public key, write the Secret it names (``tls.key`` = the
base64 text of ``WSWK || WKEY``, ``tls.crt`` = the base64 text of the PEM certificate, as km-wrap and
``kubectl create secret generic --from-literal`` make them) and set its Ready condition.

Evidence: keyward cannot verify an SGX quote itself (that takes Intel's DCAP quote verification, which
``km-attest`` runs); for a QuoteAttestation that carries one it wraps only after ``--quote-verified`` says
that was done. A token without attestation publishes no evidence at all: the key would go to whoever made
the public key, so it wraps only with ``--accept-unattested``, after the user checked out of band that
the QuoteAttestation is keyward's (RBAC keeps everyone else from creating or changing one).
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from keyward.errors import UserError
from keyward.issuers.errors import IssuerNotReady
from keyward.issuers.objects import QuoteAttestationView
from keyward.issuers.tcs import attestation
from keyward.issuers.tcs.ca import TcsIssuerSpec
from keyward.issuers.tcs.provisioning import check_certificate
from keyward.keystore.evidence import NO_EVIDENCE
from keyward.kube.client import ApiError, Kube
from keyward.kube.objects import owner_reference
from keyward.kube.resources import QUOTE_ATTESTATIONS
from keyward.operator.tcs.secrets import put_secret
from keyward.pki.issue import certificate_matches_key
from keyward.pki.keywrap import (
    DEFAULT_WRAP_MECHANISM,
    WRAP_MECHANISMS,
    WrapMechanism,
    wrap_mechanism,
    wrap_private_key,
)
from keyward.pki.pem import load_pem_chain

CaKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Provisioned:
    secret: str
    quote_attestation: str
    subject: str


def load_ca(key_path: Path, certificate_path: Path) -> tuple[CaKey, x509.Certificate]:
    """The CA key and certificate from PEM files, checked to belong together and to be a CA now."""
    key_pem = _read(key_path, "--ca-key")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise UserError(
            f"the CA key in {key_path} is encrypted",
            "give it unencrypted (openssl pkey -in KEY -out PLAIN), on a disk only you can read",
        ) from None
    except ValueError:
        raise UserError(f"{key_path} is not a PEM private key", "pass the CA's private key as PEM") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise UserError(f"the CA key in {key_path} is a {type(key).__name__}", "use an RSA or ECDSA CA key")
    try:
        certificate = load_pem_chain(_read(certificate_path, "--ca-cert"))[0]
    except ValueError:
        raise UserError(
            f"{certificate_path} is not a PEM certificate", "pass the CA's certificate as PEM"
        ) from None
    if not certificate_matches_key(certificate, key.public_key()):
        raise UserError(
            f"the certificate in {certificate_path} is not for the key in {key_path}",
            "pass the CA key and the certificate of that very key",
        )
    try:
        check_certificate(certificate, str(certificate_path), TcsIssuerSpec(name="provision-key"))
    except IssuerNotReady as exc:
        raise UserError(exc.message) from None
    return key, certificate


def check_evidence(qa: QuoteAttestationView, *, accept_unattested: bool, quote_verified: bool) -> str:
    """What evidence the QuoteAttestation carries, if the user's flags allow wrapping for it."""
    where = f"QuoteAttestation {qa.meta.namespace}/{qa.meta.name}"
    version = qa.quote_version
    if not qa.quote or version == NO_EVIDENCE:
        if not accept_unattested:
            raise UserError(
                f"{where} carries no attestation evidence (its token has none): the key would go to "
                "whoever made its public key",
                "check that it is the one keyward made for the issuer (kubectl get quoteattestation -o "
                "yaml: owner, signerName, publicKey), then pass --accept-unattested",
            )
        return "no attestation evidence (accepted with --accept-unattested): confidentiality only"
    if not quote_verified:
        raise UserError(
            f"{where} carries an SGX quote ({version or 'no quoteVersion'}), which keyward cannot verify "
            "itself",
            "verify it with Intel's tools (km-attest --pubkey ... --quote ...), then pass --quote-verified",
        )
    return f"an SGX quote ({version}), verified beforehand (--quote-verified)"


async def provision(
    kube: Kube,
    name: str,
    namespace: str,
    key: CaKey,
    certificate: x509.Certificate,
    *,
    mechanism: WrapMechanism = DEFAULT_WRAP_MECHANISM,
    accept_unattested: bool = False,
    quote_verified: bool = False,
) -> Provisioned:
    """Answer the KeyProvisioning QuoteAttestation ``namespace/name`` with ``key`` and ``certificate``."""
    body = await kube.find(QUOTE_ATTESTATIONS, name, namespace)
    where = f"QuoteAttestation {namespace}/{name}"
    if body is None:
        raise UserError(
            f"{where} does not exist", f"list them with `kubectl get quoteattestations -n {namespace}`"
        )
    qa = QuoteAttestationView.from_body(body)
    request_type = qa.request_type
    if request_type != attestation.KEY_PROVISIONING:
        raise UserError(
            f"{where} is of type {request_type}, not {attestation.KEY_PROVISIONING}",
            "provision-key answers the QuoteAttestations that ask for a CA key",
        )
    if attestation.answer(qa, qa.signer_name).state != "pending":
        raise UserError(f"{where} is answered already", "ask for the key again from the issuer, then answer")
    said = check_evidence(qa, accept_unattested=accept_unattested, quote_verified=quote_verified)
    try:
        wrapping_key = attestation.published_public_key(qa)
    except ValueError as exc:
        raise UserError(f"{where}: {exc}", "answer only QuoteAttestations keyward made") from None
    wrapped = wrap_private_key(key, wrapping_key, mechanism)
    secret_name = qa.secret_name
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name,
            "namespace": namespace,
            "labels": {},
            "ownerReferences": [owner_reference(body, controller=False)],
        },
        "type": "Opaque",
        "data": {"tls.key": _b64(_b64(wrapped).encode()), "tls.crt": _b64(_b64(pem).encode())},
    }
    await put_secret(kube, secret)
    message = f"CA key and certificate in Secret {secret_name}, wrapped with {mechanism}; evidence: {said}"
    patch = {
        "metadata": {"resourceVersion": qa.meta.resource_version},
        "status": attestation.answered_status(qa, True, message),
    }
    await kube.patch(QUOTE_ATTESTATIONS, name, patch, namespace, subresource="status")
    subject = certificate.subject.rfc4514_string()
    return Provisioned(f"{namespace}/{secret_name}", f"{namespace}/{name}", subject)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror})", f"pass a readable file to {option}") from None


@click.command("provision-key")
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True, help="The QuoteAttestation's.")
@click.option("--kubeconfig", envvar="KUBECONFIG", help="Kubeconfig to use [env KUBECONFIG].")
@click.option(
    "--ca-key", required=True, type=click.Path(dir_okay=False, path_type=Path), help="CA private key (PEM)."
)
@click.option(
    "--ca-cert", required=True, type=click.Path(dir_okay=False, path_type=Path), help="CA certificate (PEM)."
)
@click.option(
    "--key-wrap-mechanism",
    type=click.Choice(WRAP_MECHANISMS),
    default=DEFAULT_WRAP_MECHANISM,
    show_default=True,
    help="How to wrap the CA key: the operator's --key-wrap-mechanism.",
)
@click.option(
    "--accept-unattested",
    is_flag=True,
    help="Wrap for a QuoteAttestation without attestation evidence (a token without SGX): confidentiality "
    "only, so check first that the QuoteAttestation is keyward's.",
)
@click.option(
    "--quote-verified", is_flag=True, help="The QuoteAttestation's SGX quote was verified (km-attest)."
)
def provision_key(
    name: str,
    namespace: str,
    kubeconfig: str | None,
    ca_key: Path,
    ca_cert: Path,
    key_wrap_mechanism: str,
    accept_unattested: bool,
    quote_verified: bool,
) -> None:
    """Answer a KeyProvisioning QuoteAttestation NAME with a CA key and certificate (PEM files)."""
    key, certificate = load_ca(ca_key, ca_cert)

    async def go() -> Provisioned:
        import kr8s.asyncio

        try:
            kube = Kube(await kr8s.asyncio.api(kubeconfig=kubeconfig))
        except Exception as exc:  # any way of not reaching the API is the same user problem
            raise UserError(
                f"cannot reach the Kubernetes API ({type(exc).__name__})",
                "check KUBECONFIG (or --kubeconfig)",
            ) from exc
        try:
            return await provision(
                kube,
                name,
                namespace,
                key,
                certificate,
                mechanism=wrap_mechanism(key_wrap_mechanism),
                accept_unattested=accept_unattested,
                quote_verified=quote_verified,
            )
        except ApiError as exc:
            raise UserError(
                f"the API refused: {exc}", "check that you may write Secrets and QuoteAttestations there"
            ) from None

    done = asyncio.run(go())
    click.echo(f"Secret {done.secret} holds the CA key ({done.subject}) wrapped for the token")
    click.echo(f"QuoteAttestation {done.quote_attestation} answered (Ready=True); the issuer takes the key")
