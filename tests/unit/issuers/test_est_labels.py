"""EST labels across namespaces: the first claimant keeps a label, the default is for the cluster's own
issuers only, and every claimant learns where it stands (no cluster)."""

from __future__ import annotations

from typing import Any

from keyward.issuers.signer_names import IssuerRef
from keyward.issuers.tcs.est_labels import EstClaim, assign_labels, claim_of
from keyward.kube.resources import TCS_GROUP


def body(name: str, namespace: str | None, created: str, **est: Any) -> dict[str, Any]:
    meta = {"name": name, "creationTimestamp": created, **({"namespace": namespace} if namespace else {})}
    kind = "TCSIssuer" if namespace else "TCSClusterIssuer"
    return {"kind": kind, "metadata": meta, "spec": {"est": est}}


def claim(name: str, namespace: str | None, created: str, **est: Any) -> EstClaim:
    ref = IssuerRef(TCS_GROUP, "TCSIssuer" if namespace else "TCSClusterIssuer", name, namespace)
    found = claim_of(ref, body(name, namespace, created, **est))
    assert found is not None
    return found


def cluster_only(ref: IssuerRef) -> bool:
    return ref.namespace is None


def test_the_oldest_claimant_holds_a_label_whatever_the_names_say() -> None:
    victim = claim("zz-ca", "zz-team", "2030-01-01T00:00:00Z", label="plant")
    intruder = claim("aa-ca", "aa-team", "2030-01-01T00:00:05Z", label="plant")
    for order in ([victim, intruder], [intruder, victim]):
        assignment = assign_labels(order, cluster_only, default_rule="rule")
        assert assignment.holders["plant"] is victim
        assert assignment.standing(victim.ref).holds_label  # type: ignore[union-attr]
        standing = assignment.standing(intruder.ref)
        assert standing is not None and (standing.holds_label, standing.reason) == (False, "LabelTaken")
        assert standing.message == (
            "EST label 'plant' is held by TCSIssuer zz-team/zz-ca, which claimed it first; "
            "this issuer is not served over EST: choose another spec.est.label"
        )


def test_claimants_created_in_the_same_second_are_ordered_by_signer_name() -> None:
    a = claim("ca", "team-a", "2030-01-01T00:00:00Z", label="x")
    b = claim("ca", "team-b", "2030-01-01T00:00:00Z", label="x")
    assert assign_labels([b, a], cluster_only, default_rule="rule").holders["x"] is a


def test_the_label_defaults_to_the_issuers_name() -> None:
    assert claim("devices", "team", "2030-01-01T00:00:00Z").serving.label == "devices"
    assert claim_of(IssuerRef(TCS_GROUP, "TCSIssuer", "plain", "team"), {"spec": {}}) is None


def test_the_default_is_for_allowed_issuers_and_the_first_of_them() -> None:
    greedy = claim("greedy", "team", "2030-01-01T00:00:00Z", default=True)
    first = claim("global", None, "2030-01-01T00:00:01Z", default=True)
    second = claim("global-2", None, "2030-01-01T00:00:02Z", default=True)
    assignment = assign_labels([second, greedy, first], cluster_only, default_rule="only cluster issuers")
    assert assignment.default is first
    assert assignment.standing(greedy.ref) == assignment.standings[greedy.ref.signer_name]
    (greedy_standing, second_standing) = (assignment.standing(greedy.ref), assignment.standing(second.ref))
    assert greedy_standing is not None and greedy_standing.reason == "DefaultNotAllowed"
    assert greedy_standing.holds_label and greedy_standing.message.endswith(
        "but not as the default: only cluster issuers"
    )
    assert second_standing is not None and second_standing.reason == "DefaultTaken"
    assert "the default is TCSClusterIssuer global, which claimed it first" in second_standing.message
