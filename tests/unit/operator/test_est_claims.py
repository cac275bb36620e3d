"""The operator's view of the EST labels TCS issuers claim: fed by issuer events, it names the issuers
whose EstServing condition is due and says what it is (no cluster)."""

from __future__ import annotations

from typing import Any

from keyward.issuers.signer_names import IssuerRef
from keyward.kube.resources import TCS_GROUP
from keyward.operator.est_server.claims import EstClaims


def body(name: str, namespace: str, created: str, **est: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": namespace, "creationTimestamp": created}
    return {"kind": "TCSIssuer", "metadata": meta, "spec": {"est": est}}


def test_the_operator_namespace_and_the_allowed_ones_may_hold_the_default() -> None:
    claims = EstClaims(operator_namespace="keyward-system", default_namespaces=("platform",))
    refs = [IssuerRef(TCS_GROUP, "TCSIssuer", "ca", ns) for ns in ("keyward-system", "platform", "team")]
    assert [claims.may_be_default(ref) for ref in refs] == [True, True, False]
    assert claims.may_be_default(IssuerRef(TCS_GROUP, "TCSClusterIssuer", "ca"))


def test_claims_follow_events_and_name_the_issuers_whose_standing_changed() -> None:
    claims = EstClaims(operator_namespace="keyward-system")
    holder = body("holder", "a", "2030-01-01T00:00:00Z", label="plant")
    late = body("late", "b", "2030-01-01T00:00:09Z", label="plant")
    late_ref = IssuerRef(TCS_GROUP, "TCSIssuer", "late", "b")
    assert claims.observe("ADDED", late) == set()
    assert claims.condition(late_ref) == (
        True,
        "Serving",
        "holds EST label 'plant' (served there while Ready)",
    )
    assert claims.observe("ADDED", holder) == {late_ref}, "the late one lost the label: its condition is due"
    assert claims.condition(late_ref)[:2] == (False, "LabelTaken")  # type: ignore[index]
    assert claims.observe("MODIFIED", holder) == set(), "an unchanged claim changes nothing"
    assert claims.observe("DELETED", holder) == {late_ref}
    assert claims.condition(late_ref)[:2] == (True, "Serving")  # type: ignore[index]
    assert claims.observe("MODIFIED", body("late", "b", "2030-01-01T00:00:09Z") | {"spec": {}}) == set()
    assert claims.condition(late_ref) is None, "no spec.est: no EstServing condition"


def test_without_a_tls_certificate_no_claimant_is_served_and_each_says_why() -> None:
    claims = EstClaims(operator_namespace="keyward-system", unserved="the EST server has no TLS certificate")
    claims.observe("ADDED", body("ca", "team", "2030-01-01T00:00:00Z"))
    ref = IssuerRef(TCS_GROUP, "TCSIssuer", "ca", "team")
    assert claims.condition(ref) == (False, "EstServerNotConfigured", "the EST server has no TLS certificate")
