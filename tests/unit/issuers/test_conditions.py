from datetime import UTC, datetime

from keyward.issuers import conditions


def test_transition_time_moves_only_when_status_changes() -> None:
    t1 = datetime(2026, 1, 1, tzinfo=UTC)
    t2 = datetime(2026, 1, 2, tzinfo=UTC)
    first = conditions.make("Ready", False, "Pending", "a", now=t1)
    same_status = conditions.make("Ready", False, "Pending", "b", previous=[first], now=t2)
    assert same_status["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    flipped = conditions.make("Ready", True, "Issued", "c", previous=[same_status], now=t2)
    assert flipped["lastTransitionTime"] == "2026-01-02T00:00:00Z"


def test_replace_keeps_other_conditions() -> None:
    approved = {"type": "Approved", "status": "True"}
    out = conditions.replace(
        [approved, {"type": "Ready", "status": "False"}],
        conditions.make("Ready", True, "Issued", "ok", generation=3),
    )
    assert out[0] == approved
    assert out[1]["status"] == "True" and out[1]["observedGeneration"] == 3
    assert conditions.is_true(out, "Approved") and conditions.is_true(out, "Ready")
