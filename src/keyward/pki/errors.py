"""Errors of certificate issuance, split by who can fix them."""


class RequestError(ValueError):
    """The request itself is unusable: retrying cannot help, so the request fails permanently.

    The message is shown to the user as is (in a Ready condition or a CSR's Failed condition): it names
    the problem and, where there is one, the fix.
    """


class IssuerError(Exception):
    """The CA cannot issue right now (for example it has expired): the issuer's problem, not the request's.

    Callers turn this into an issuer that is not Ready rather than a failed request.
    """
