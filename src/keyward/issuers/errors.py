"""Errors shared by every kind of issuer (TCS and EST)."""

from __future__ import annotations


class IssuerNotReady(Exception):
    """The issuer cannot sign now; ``reason`` and ``message`` go to its Ready condition."""

    def __init__(self, reason: str, message: str, *, permanent: bool = True) -> None:
        self.reason = reason
        self.message = message
        #: False: a transient fault worth retrying with backoff (the token could not be opened, say).
        self.permanent = permanent
        super().__init__(f"{reason}: {message}")
