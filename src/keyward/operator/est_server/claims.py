"""The EST labels TCS issuers claim, as the operator sees them now, and who holds which
(``keyward.issuers.tcs.est_labels``).

Fed with every TCS issuer event (by the issuer checks, before they check), read by the EST server's
catalog (what to serve where) and by the issuer check (the ``EstServing`` condition). Claims are kept
whether the issuer is ready or not: a label stays with its first claimant while that one is out of
service.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from keyward.issuers.signer_names import IssuerRef, issuer_ref_of
from keyward.issuers.tcs.est_labels import EstClaim, LabelAssignment, assign_labels, claim_of
from keyward.kube.resources import TCS_GROUP

log = logging.getLogger("keyward.est.operator")

#: The EstServing condition: (holds its label, reason, message), or None for no condition (no spec.est).
Condition = tuple[bool, str, str]


class EstClaims:
    def __init__(
        self,
        *,
        operator_namespace: str,
        default_namespaces: tuple[str, ...] = (),
        unserved: str | None = None,
    ) -> None:
        """``default_namespaces``: namespaces besides the operator's whose issuers may be the default.
        ``unserved``: why no issuer is served at all (the EST server has no TLS certificate), if so."""
        self._default_namespaces = frozenset((operator_namespace, *default_namespaces))
        allowed = ", ".join(sorted(self._default_namespaces))
        self._default_rule = (
            f"only a TCSClusterIssuer or an issuer in namespace {allowed} may be the default "
            "(the operator's --est-default-namespaces lists more namespaces)"
        )
        self._unserved = unserved
        self._claims: dict[str, EstClaim] = {}
        self._assignment = self._assign()
        #: Moves whenever the assignment may have changed (the catalog rebuilds when it does).
        self.version = 0

    def may_be_default(self, ref: IssuerRef) -> bool:
        return ref.namespace is None or ref.namespace in self._default_namespaces

    def observe(self, event_type: str, body: Mapping[str, Any]) -> set[IssuerRef]:
        """An issuer event: returns the issuers whose standing changed (their condition is due)."""
        meta = body.get("metadata") or {}
        ref = issuer_ref_of(TCS_GROUP, str(body.get("kind")), str(meta.get("name")), meta.get("namespace"))
        gone = event_type == "DELETED" or bool(meta.get("deletionTimestamp"))
        claim = None if gone else claim_of(ref, body)
        if self._claims.get(ref.signer_name) == claim:
            return set()
        if claim is None:
            self._claims.pop(ref.signer_name, None)
        else:
            self._claims[ref.signer_name] = claim
        before = self._assignment
        self._assignment = self._assign()
        self.version += 1
        changed = {
            c.ref
            for c in self._claims.values()
            if before.standing(c.ref) != self._assignment.standing(c.ref) and c.ref != ref
        }
        for other in changed | ({ref} if claim is not None else set()):
            standing = self._assignment.standing(other)
            if standing is not None and standing.reason != "Serving":
                log.warning("%s: %s", other, standing.message)
        return changed

    def assignment(self) -> LabelAssignment:
        return self._assignment

    def condition(self, ref: IssuerRef) -> Condition | None:
        """What the issuer's EstServing condition says (None: it has none, having no spec.est)."""
        standing = self._assignment.standing(ref)
        if standing is None:
            return None
        if self._unserved is not None:
            return False, "EstServerNotConfigured", self._unserved
        return standing.holds_label, standing.reason, standing.message

    def _assign(self) -> LabelAssignment:
        return assign_labels(self._claims.values(), self.may_be_default, default_rule=self._default_rule)
