"""Errors of certificate issuance, split by who can fix them."""

from __future__ import annotations


class RequestError(ValueError):
    """The request itself is unusable: retrying cannot help, so the request fails permanently.

    The message is shown to the user as is (in a Ready condition or a CSR's Failed condition): it names
    the problem and, where there is one, the fix.
    """


class IssuerError(Exception):
    """The CA cannot issue right now (for example it has expired): the issuer's problem, not the request's.

    Callers turn this into an issuer that is not Ready rather than a failed request.
    """


class PolicyViolation(RequestError):
    """The request asks for something the issuance policy refuses; ``rule`` names the rule (see
    docs/POLICY.md), and the message starts with it."""

    def __init__(self, rule: str, problem: str) -> None:
        super().__init__(f"policy {rule}: {problem}")
        self.rule = rule
        self.problem = problem

    def __reduce__(self) -> tuple[type[PolicyViolation], tuple[str, str]]:
        # Raised in signing processes and pickled back: rebuild from both arguments, not from args.
        return type(self), (self.rule, self.problem)
