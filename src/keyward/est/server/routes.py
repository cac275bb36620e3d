"""EST paths: ``/.well-known/est[/LABEL]/OPERATION``, where the label may itself contain '/'."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Operation(Enum):
    CACERTS = "cacerts"
    SIMPLEENROLL = "simpleenroll"
    SIMPLEREENROLL = "simplereenroll"
    CSRATTRS = "csrattrs"
    SERVERKEYGEN = "serverkeygen"
    FULLCMC = "fullcmc"

    @property
    def methods(self) -> frozenset[str]:
        if self in (Operation.CACERTS, Operation.CSRATTRS):
            return frozenset({"GET", "HEAD"})
        return frozenset({"POST"})


_OPERATIONS = {operation.value: operation for operation in Operation}


@dataclass(frozen=True)
class EstPath:
    """A parsed EST path; ``label`` is ``None`` for the default CA (no label in the path)."""

    label: str | None
    operation: Operation


def parse_est_path(tail: str) -> EstPath | None:
    """Parse what follows ``/.well-known/est/``; ``None`` when the last segment is no EST operation."""
    label, slash, name = tail.rpartition("/")
    operation = _OPERATIONS.get(name)
    if operation is None:
        return None
    return EstPath(label if slash else None, operation)
