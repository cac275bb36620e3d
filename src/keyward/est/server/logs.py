"""What the EST server writes to its log about requests: client-chosen text escaped, credentials never.

- ``printable`` escapes every character that is not printable (CR, LF, ESC, NEL, U+2028 ...) in a
  value a client chose (path, user agent, label ...), so that no request can add a line to the log or
  send escape sequences to a terminal showing it;
- ``HttpErrorLog`` is the log aiohttp's request handler gets instead of ``aiohttp.server``. aiohttp logs
  a request it cannot parse with a traceback whose message quotes the offending line, which may be an
  ``Authorization`` header; here such a request is one line naming the client and the kind of error.
  Other errors (bugs) keep their traceback; their arguments are escaped.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

#: Longest client-chosen value written to the log; the rest is cut off.
VALUE_LIMIT = 200


def printable(value: object, limit: int = VALUE_LIMIT) -> str:
    """``value`` as one line of printable text: non-printable characters as ``\\xNN``/``\\uNNNN``,
    backslashes doubled (so an escape in the log is never the client's own text), at most ``limit``
    characters of the original."""
    text = str(value)
    cut = len(text) > limit
    escaped = "".join(_escape(character) for character in text[:limit])
    return escaped + ("..." if cut else "")


def _escape(character: str) -> str:
    if character == "\\":
        return "\\\\"
    if character.isprintable():
        return character
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class HttpErrorLog(logging.LoggerAdapter[logging.Logger]):
    """The logger for aiohttp's ``RequestHandler`` (``AppRunner(logger=...)``): see the module docstring."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        exc_info = kwargs.get("exc_info")
        error = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1] if exc_info else None
        if isinstance(error, HttpProcessingError):
            # aiohttp's call: ("Error handling request from %s", request.remote)
            client = f" from {printable(args[0], 64)}" if args and args[0] is not None else ""
            self.logger.info(
                "EST server: refused a malformed HTTP request%s (%s, %s); its content is not logged, as it "
                "may hold credentials",
                client,
                type(error).__name__,
                error.code,
            )
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = " ".join(str(part) for part in (msg, *args))
        self.logger.log(level, "%s", printable(text, 1000), exc_info=exc_info, stacklevel=2)
