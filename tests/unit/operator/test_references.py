"""The reference check in the operator: SubjectAccessReviews asked per attempt, never cached, and a CSR
whose requester may not use the issuer failed without being signed (scripted API, no cluster)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from keyward.issuers.signer_names import IssuerRef
from keyward.kube.client import ApiError
from keyward.kube.resources import SUBJECT_ACCESS_REVIEWS, TCS_GROUP, Resource
from keyward.operator.references import SignerReferences
from keyward.operator.requests import Csrs
from keyward.operator.settings import Settings
from keyward.operator.status import Events, StatusWriter
from keyward.operator.tcs.cas import ReadyCa, ReadyCas
from keyward.operator.tcs.pipeline import SigningPipeline
from keyward.operator.tcs.token import TokenProvider
from keyward.pki.pem import pem_chain
from keyward.pki.profile import IssuerPolicy
from tests.support.pki import memory_ca

from .fakes import ScriptedApi, request_attestations

REF = IssuerRef(TCS_GROUP, "TCSIssuer", "ca", "team-a")
CSR: dict[str, Any] = {
    "apiVersion": "certificates.k8s.io/v1",
    "kind": "CertificateSigningRequest",
    "metadata": {"name": "csr-1", "uid": "u-1", "resourceVersion": "7"},
    "spec": {
        "request": "",
        "signerName": "tcsissuers.tcs.intel.com/team-a.ca",
        "username": "mallory",
        "groups": ["system:authenticated"],
    },
    "status": {"conditions": [{"type": "Approved", "status": "True", "reason": "auto", "message": "ok"}]},
}


class Authorizer(ScriptedApi):
    """Answers SubjectAccessReviews: allowed for the resource names in ``allowed``."""

    def __init__(self, allowed: set[str], objects: Mapping[str, dict[str, Any]] | None = None) -> None:
        super().__init__(objects)
        self.allowed = allowed

    async def create(
        self, resource: Resource, obj: Mapping[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        created = await super().create(resource, obj, namespace)
        if resource is not SUBJECT_ACCESS_REVIEWS:
            return created
        name = obj["spec"]["resourceAttributes"]["name"]
        return {**created, "status": {"allowed": name in self.allowed}}

    def asked(self) -> list[str]:
        return [c["spec"]["resourceAttributes"]["name"] for c in self.created]


async def test_the_issuers_name_then_star_the_first_yes_decides_and_nothing_is_remembered() -> None:
    api = Authorizer({"*"})
    references = SignerReferences(api)  # type: ignore[arg-type]
    assert await references.denial(CSR, REF) is None
    assert api.asked() == ["ca", "*"]
    api.allowed = {"ca"}
    assert await references.denial(CSR, REF) is None
    assert api.asked() == ["ca", "*", "ca"], "the issuer's own name allowed: no second question"
    api.allowed = set()
    denial = await references.denial(CSR, REF)
    assert denial is not None and denial.startswith("mallory may not reference TCSIssuer team-a/ca")
    assert api.asked()[3:] == ["ca", "*"], "a permission revoked counts at once: asked again"
    cluster = IssuerRef(TCS_GROUP, "TCSClusterIssuer", "global")
    assert await references.denial(CSR, cluster) is None and len(api.asked()) == 5


def pipeline(api: ScriptedApi) -> tuple[SigningPipeline, ReadyCas]:
    cas = ReadyCas()
    ca = memory_ca(common_name="team-a CA")
    cas.ready(ReadyCa(REF, ca, IssuerPolicy(), pem_chain([ca.certificate])))
    writer = StatusWriter(api, Events(api))  # type: ignore[arg-type]
    signing = SigningPipeline(
        Csrs(TCS_GROUP),
        cas=cas,
        tokens=TokenProvider(Settings()),  # never opened: nothing here gets as far as signing
        writer=writer,
        describe=lambda ref: f"{ref} not found",
        recheck=lambda ref: None,
        attestations=request_attestations(api, writer),
        references=SignerReferences(api),  # type: ignore[arg-type]
    )
    return signing, cas


async def test_a_denied_requester_gets_the_csr_failed_and_never_signed() -> None:
    api = Authorizer(set(), {"csr-1": CSR})
    signing, _ = pipeline(api)
    await signing.on_event("ADDED", copy.deepcopy(CSR))
    (patch,) = [p for p in api.patches if p.get("status", {}).get("conditions")]
    (failed,) = [c for c in patch["status"]["conditions"] if c["type"] == "Failed"]
    assert (failed["status"], failed["reason"]) == ("True", "DeniedReference")
    assert failed["message"].startswith("mallory may not reference TCSIssuer team-a/ca (verb reference on ")
    assert "certificate" not in api.objects["csr-1"]["status"]
    assert "u-1" not in signing.waiting


async def test_an_api_server_that_cannot_answer_leaves_the_csr_waiting_undecided() -> None:
    api = Authorizer({"ca"}, {"csr-1": CSR})
    api.fail(ApiError(503, "ServiceUnavailable", "etcd is slow"))
    signing, _ = pipeline(api)
    await signing.on_event("ADDED", copy.deepcopy(CSR))
    assert "u-1" in signing.waiting, "parked, to be asked again"
    assert api.patches == [], "neither failed nor signed"
    assert api.objects["csr-1"]["status"] == CSR["status"]
