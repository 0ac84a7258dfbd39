"""HTTP/2 flow control, window by window (RFC 9113 §6.9; x/net/http2 flow.go).

Pure bookkeeping, no SimPy. A sender may have at most the receiver's window of
DATA in flight, per stream and per connection; the receiver gives credit back
with WINDOW_UPDATE once it consumes the data. The engine (``sim.h2``) moves a
body as a few chunks, each as large as the windows allow, and a chunk's credit
comes back one trip after it arrives: so a body larger than its window moves at
most one window per round trip. That is window-level arithmetic: one event per
chunk, not per 16 KiB DATA frame, with the same arrival instants when nothing
but the windows limits the sender.

Values (semantics.md §3): the spec's initial windows are 65,535 for each stream
and for the connection; the connection window changes only by WINDOW_UPDATE. The
Go server advertises 1 MiB per stream and raises its connection window to 1 MiB;
the Go transport advertises 4 MiB per stream and 1 GiB for the connection.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

SPEC_INITIAL_WINDOW = 65_535
MAX_WINDOW = 2**31 - 1
INFLOW_MIN_REFRESH = 4 << 10      # x/net http2 flow.go inflowMinRefresh


class Inflow:
    """The receiver's side of one window: Go's ``inflow``.

    Consumed bytes accumulate as unsent credit; a WINDOW_UPDATE goes out once the
    credit is at least 4 KiB or at least what the sender still has, i.e. once it
    would at least double the sender's window."""

    __slots__ = ("avail", "unsent")

    def __init__(self, window: int) -> None:
        self.avail = window
        self.unsent = 0

    def take(self, n: int) -> None:
        """``n`` bytes of DATA arrive."""
        if n > self.avail:
            raise ValueError(f"flow-control violation: {n} bytes arrived on a window of {self.avail}")
        self.avail -= n

    def add(self, n: int) -> int:
        """``n`` bytes were consumed: the WINDOW_UPDATE increment to send now (0 = hold it back)."""
        unsent = self.unsent + n
        if unsent < INFLOW_MIN_REFRESH and unsent < self.avail:
            self.unsent = unsent
            return 0
        self.avail += unsent
        self.unsent = 0
        return unsent


class Transfer:
    """One body on one stream, from the sender's side: what is left, what the stream window allows."""

    __slots__ = ("remaining", "stream_avail", "in_flight", "on_chunk", "on_done", "owner", "dead",
                 "started_at")

    def __init__(self, n_bytes: int, stream_window: int, owner: Any, started_at: float) -> None:
        self.remaining = n_bytes
        self.stream_avail = stream_window
        self.in_flight = 0
        self.owner = owner               # the engine's stream (attempt or exchange)
        self.dead = False                # the stream was reset: send nothing more
        self.started_at = started_at
        self.on_chunk: Callable[..., Any] | None = None
        self.on_done: Callable[..., Any] | None = None


class Outflow:
    """The sender's side of one direction of one connection: the connection window and the
    bodies waiting for credit, served in the order they blocked (Go's write scheduler is
    round-robin among streams; whole windows at a time makes the order FIFO)."""

    __slots__ = ("conn_avail", "blocked")

    def __init__(self, conn_window: int) -> None:
        self.conn_avail = conn_window
        self.blocked: deque[Transfer] = deque()

    def next_chunk(self, transfer: Transfer) -> int:
        """Bytes of ``transfer`` the windows let go now (taken from both windows), 0 if none."""
        chunk = min(transfer.remaining, transfer.stream_avail, self.conn_avail)
        if chunk <= 0:
            return 0
        transfer.remaining -= chunk
        transfer.stream_avail -= chunk
        transfer.in_flight += chunk
        self.conn_avail -= chunk
        return chunk

    def credit_connection(self, n: int) -> None:
        if self.conn_avail + n > MAX_WINDOW:
            raise ValueError("flow-control window overflow (connection)")
        self.conn_avail += n

    @staticmethod
    def credit_stream(transfer: Transfer, n: int) -> None:
        if transfer.stream_avail + n > MAX_WINDOW:
            raise ValueError("flow-control window overflow (stream)")
        transfer.stream_avail += n


def chunks_for(n_bytes: int, window: int) -> int:
    """Round trips' worth of chunks a body needs when one window limits it: ceil(n / window)."""
    if n_bytes <= 0:
        return 0
    return -(-n_bytes // window)
