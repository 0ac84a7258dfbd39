"""Ephemeral ports of one client address towards one destination, and TIME_WAIT.

Linux picks the local port of an outgoing connection from ``ip_local_port_range``
(32768-60999 by default: 28,232 ports) such that the 4-tuple is unique, so the
ports are counted per destination address and port. A port is held while the
connection is open and, on the side that closed first (the active close), for
TIME_WAIT afterwards: 60 s, ``TCP_TIMEWAIT_LEN``, not a sysctl (semantics.md §5).
With every port held, ``connect`` fails at once with EADDRNOTAVAIL ("cannot
assign requested address"). Sustained churn above 28,232 / 60 s = ~470 new
connections per second from one address therefore fails to dial.

Pure bookkeeping, no SimPy: the caller passes the current instant.
"""

from __future__ import annotations

from collections import deque

TIME_WAIT_S = 60.0                 # include/net/tcp.h: #define TCP_TIMEWAIT_LEN (60*HZ)
DEFAULT_EPHEMERAL_PORTS = 60999 - 32768 + 1


class EphemeralPorts:
    """Ports in use (open connections, dials included) plus ports in TIME_WAIT, against a limit."""

    __slots__ = ("limit", "open", "_time_wait_until", "peak_in_use")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"ephemeral port limit must be >= 0, got {limit}")
        self.limit = limit            # 0 = unlimited
        self.open = 0
        self._time_wait_until: deque[float] = deque()   # release instants, in order (fixed length)
        self.peak_in_use = 0

    def _expire(self, now: float) -> None:
        tw = self._time_wait_until
        while tw and tw[0] <= now:
            tw.popleft()

    def time_wait(self, now: float) -> int:
        """Ports held in TIME_WAIT at ``now``."""
        self._expire(now)
        return len(self._time_wait_until)

    def in_use(self, now: float) -> int:
        return self.open + self.time_wait(now)

    def try_take(self, now: float) -> bool:
        """A dial asks for a port: True if one was free (now held), False for EADDRNOTAVAIL."""
        self._expire(now)
        in_use = self.open + len(self._time_wait_until)
        if self.limit and in_use >= self.limit:
            return False
        self.open += 1
        if in_use + 1 > self.peak_in_use:
            self.peak_in_use = in_use + 1
        return True

    def release(self, now: float, time_wait: bool) -> None:
        """The connection holding a port is gone: free at once, or after TIME_WAIT (active close)."""
        self.open -= 1
        if time_wait:
            self._time_wait_until.append(now + TIME_WAIT_S)
