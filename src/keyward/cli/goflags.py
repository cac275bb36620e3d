"""The TCS seed's command line, spelled as Go's flag package allows, turned into click's spelling.

The seed's operator parses its arguments with Go's ``flag`` package (its own flags and controller-runtime's
``--zap-*`` flags). Go accepts ``-flag`` as well as ``--flag``, ``-flag=value`` and ``-flag value``, and a
boolean as ``-flag`` or ``-flag=false`` (``strconv.ParseBool``'s spellings: 1 t T TRUE true True, 0 f F
FALSE false False; a boolean never takes the next argument as its value). click accepts ``--flag``,
``--flag=value`` and ``--flag value``, and booleans as ``--flag``/``--no-flag``. ``to_click`` rewrites the
seed's flags, and only those, before click parses the command line of ``keyward operator``.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

#: The seed's boolean flags (main.go, and controller-runtime's zap.Options.BindFlags).
BOOLEAN_FLAGS = frozenset(
    {"leader-elect", "use-random-nonce", "cert-manager-issuer", "csr-full-cert-chain", "zap-devel"}
)
#: The seed's flags that take a value.
VALUE_FLAGS = frozenset(
    {
        "metrics-bind-address",
        "health-probe-bind-address",
        "hsm-config-file",
        "user-pin",
        "so-pin",
        "token-label",
        "key-wrap-mechanism",
        "zap-log-level",
        "zap-encoder",
        "zap-stacktrace-level",
        "zap-time-encoding",
    }
)
TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def to_click(args: Sequence[str]) -> list[str]:
    """``args`` with the seed's flags in click's spelling; everything else unchanged."""
    result: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            result.extend(args[index - 1 :])
            break
        dashes = len(arg) - len(arg.lstrip("-"))
        name, equals, value = arg[dashes:].partition("=")
        if dashes not in (1, 2) or not name:
            result.append(arg)
        elif name in BOOLEAN_FLAGS:
            result.append(f"--{name}" if not equals or value in TRUE else _false(name, value))
        elif name in VALUE_FLAGS:
            result.append(f"--{name}{equals}{value}")
            if not equals and index < len(args):  # Go's "-flag value": the next argument is the value
                result.append(args[index])
                index += 1
        else:
            result.append(arg)
    return result


def _false(name: str, value: str) -> str:
    if value not in FALSE:
        raise click.UsageError(
            f"invalid boolean value {value!r} for --{name}: use true or false (or 1, 0, t, f)"
        )
    return f"--no-{name}"
