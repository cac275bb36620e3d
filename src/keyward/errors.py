"""Errors a user can cause and fix: the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """A problem the user can fix. ``str()`` names the problem and the fix, on one line."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}: {fix}" if fix else problem)
