"""Go duration strings (``time.ParseDuration`` / ``Duration.String``), as cert-manager and our CRDs use them.

Python's ``timedelta`` has microsecond resolution, so nanosecond remainders are dropped on parsing; no
certificate lifetime cares. Values that Go itself would reject (above ~2562047h, the int64 nanosecond
limit) are rejected too, so a duration we accept is one cert-manager accepts.
"""

from __future__ import annotations

import re
from datetime import timedelta

_NANOSECONDS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign, as Go prints it
    "\u03bcs": 1_000,  # Greek small letter mu, which Go also accepts
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_MAX_NANOSECONDS = 2**63 - 1  # Go's time.Duration is an int64 count of nanoseconds
_UNIT = "|".join(sorted((re.escape(unit) for unit in _NANOSECONDS), key=len, reverse=True))
_COMPONENT = re.compile(rf"([0-9]+)?(?:\.([0-9]*))?({_UNIT})")
_WHOLE = re.compile(rf"(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:{_UNIT}))+")
_EXAMPLES = '"2160h", "1h30m", "90m" or "10s" (units h, m, s, ms, us, ns)'


def _quoted(text: str) -> str:
    shown = text if len(text) <= 64 else text[:61] + "..."
    return f'"{shown}"'


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration such as ``2160h``, ``1h30m``, ``1.5h`` or ``300ms``.

    Empty, negative and malformed values raise ``ValueError`` naming the value and the expected form.
    ``"0"`` is accepted (as in Go); whether zero makes sense is the caller's call.
    """
    body = text.strip()
    if not body:
        raise ValueError(
            f"invalid duration {_quoted(text)}: it is empty; expected a Go duration such as {_EXAMPLES}"
        )
    if body.startswith("-"):
        raise ValueError(f"invalid duration {_quoted(text)}: durations must not be negative")
    if body.startswith("+"):
        body = body[1:]
    if body == "0":
        return timedelta(0)
    if not _WHOLE.fullmatch(body):
        raise ValueError(f"invalid duration {_quoted(text)}: expected a Go duration such as {_EXAMPLES}")
    nanoseconds = 0
    for whole, fraction, unit in _COMPONENT.findall(body):
        scale = _NANOSECONDS[unit]
        nanoseconds += int(whole or "0") * scale
        if fraction:
            nanoseconds += int(fraction) * scale // 10 ** len(fraction)
        if nanoseconds > _MAX_NANOSECONDS:
            raise ValueError(
                f"invalid duration {_quoted(text)}: it exceeds the largest Go duration (2562047h)"
            )
    return timedelta(microseconds=nanoseconds // 1_000)


def _split_fraction(value: int, precision: int) -> tuple[int, str]:
    """``value`` in units of 10**-precision → (integer part, ".fraction" without trailing zeros or "")."""
    whole, fraction = divmod(value, 10**precision)
    digits = f"{fraction:0{precision}d}".rstrip("0") if precision else ""
    return whole, f".{digits}" if digits else ""


def format_duration(duration: timedelta) -> str:
    """Format like Go's ``Duration.String``: ``2160h0m0s``, ``1h30m0s``, ``1.5s``, ``300ms``, ``0s``."""
    nanoseconds = (duration // timedelta(microseconds=1)) * 1_000
    sign = "-" if nanoseconds < 0 else ""
    nanoseconds = abs(nanoseconds)
    if nanoseconds == 0:
        return "0s"
    if nanoseconds < 1_000_000_000:
        for limit, unit, precision in ((1_000, "ns", 0), (1_000_000, "\u00b5s", 3), (1_000_000_000, "ms", 6)):
            if nanoseconds < limit:
                whole, fraction = _split_fraction(nanoseconds, precision)
                return f"{sign}{whole}{fraction}{unit}"
    seconds, fraction = _split_fraction(nanoseconds, 9)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{seconds}{fraction}s"
    if minutes or hours:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text
