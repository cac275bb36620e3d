"""Ports for a process a test starts, chosen before it starts.

A port the kernel picked for a probe socket is in the ephemeral range, where every outgoing connection
also takes its source port: between the probe's close and the process's bind, a client connection of
the suite (an operator talking to the sandbox, say) may take it. These ports come from below that range,
so only another listener can hold them, and each is checked free when it is handed out.
"""

from __future__ import annotations

import random
import socket

#: Below Linux's default ephemeral range (32768 to 60999), above the ports services usually claim.
LOW, HIGH = 20000, 32000


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports on 127.0.0.1 that nothing listens on now."""
    chosen: list[int] = []
    while len(chosen) < count:
        port = random.randint(LOW, HIGH)
        if port in chosen:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
    return chosen


def free_port() -> int:
    return free_ports(1)[0]
