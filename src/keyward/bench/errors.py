"""A benchmark that cannot finish says why in one line, and where to look (the CLI prints it)."""

from __future__ import annotations

from keyward.errors import UserError


class BenchFailed(UserError):
    """Something under test did not do its job (no certificate, an error answer, a process that died)."""
