"""Which TCS issuer holds which EST label (and the default) when several claim one: first come keeps it.

EST clients choose a CA by label alone (``/.well-known/est/<label>/``, or no label for the default), and
the label space is shared by every namespace. So a label is held by the issuer that claimed it first —
the oldest by ``metadata.creationTimestamp``, then by signer name — whether it is ready or not: an issuer
created later never displaces it, not even while the holder is out of service, and the answer is the
same after a restart and on every replica. The default label is for TCSClusterIssuers and issuers in the
operator's namespace (or in namespaces the operator allows), never for any namespace: a namespace's
issuer would otherwise catch every device that names no label.

Every claimant learns where it stands (the ``EstServing`` condition the operator writes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from keyward.issuers.signer_names import IssuerRef
from keyward.issuers.tcs.est_ca import EstServing, parse_est_spec

__all__ = ["EstClaim", "EstStanding", "LabelAssignment", "assign_labels", "claim_of"]

#: Sorts after every RFC 3339 timestamp: an object without one (never from an API server) comes last.
_NO_TIMESTAMP = "~"


@dataclass(frozen=True)
class EstClaim:
    """A TCS issuer's ``spec.est``: the label (and maybe the default) it asks for, and since when."""

    ref: IssuerRef
    created: str
    serving: EstServing

    @property
    def precedence(self) -> tuple[str, str]:
        return (self.created or _NO_TIMESTAMP, self.ref.signer_name)


def claim_of(ref: IssuerRef, body: Mapping[str, Any]) -> EstClaim | None:
    """The claim of the issuer object ``body`` (None: it has no spec.est)."""
    est = (body.get("spec") or {}).get("est")
    if not isinstance(est, Mapping):
        return None
    created = str((body.get("metadata") or {}).get("creationTimestamp") or "")
    return EstClaim(ref, created, parse_est_spec(ref.name, est))


@dataclass(frozen=True)
class EstStanding:
    """Where one claimant stands: what its ``EstServing`` condition says."""

    holds_label: bool
    reason: str
    message: str


@dataclass(frozen=True)
class LabelAssignment:
    holders: Mapping[str, EstClaim]
    default: EstClaim | None
    standings: Mapping[str, EstStanding]  # by signer name

    def standing(self, ref: IssuerRef) -> EstStanding | None:
        return self.standings.get(ref.signer_name)


def assign_labels(
    claims: Iterable[EstClaim], may_be_default: Callable[[IssuerRef], bool], *, default_rule: str
) -> LabelAssignment:
    """Hand out the labels first come, first served; ``default_rule`` says who may be the default (for
    the message of an issuer that asks and may not)."""
    holders: dict[str, EstClaim] = {}
    default: EstClaim | None = None
    standings: dict[str, EstStanding] = {}
    for claim in sorted(claims, key=lambda c: c.precedence):
        label = claim.serving.label
        holder = holders.setdefault(label, claim)
        if holder is not claim:
            standings[claim.ref.signer_name] = EstStanding(
                False,
                "LabelTaken",
                f"EST label {label!r} is held by {holder.ref}, which claimed it first; this issuer is not "
                "served over EST: choose another spec.est.label",
            )
            continue
        where = f"holds EST label {label!r} (served there while Ready)"
        if not claim.serving.default:
            standings[claim.ref.signer_name] = EstStanding(True, "Serving", where)
        elif not may_be_default(claim.ref):
            standings[claim.ref.signer_name] = EstStanding(
                True, "DefaultNotAllowed", f"{where}, but not as the default: {default_rule}"
            )
        elif default is not None:
            standings[claim.ref.signer_name] = EstStanding(
                True, "DefaultTaken", f"{where}; the default is {default.ref}, which claimed it first"
            )
        else:
            default = claim
            standings[claim.ref.signer_name] = EstStanding(True, "Serving", f"{where}, and is the default")
    return LabelAssignment(holders, default, standings)
