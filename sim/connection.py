"""A TCP connection between a client instance and a server process, and the link it crosses.

One ``Conn`` object holds both ends: the client's view (open, in the idle pool,
the attempt using it) and the server's (accepted, its state in Go's serve loop,
its current deadline timer). Each end learns of the other's close one one-way
trip later, which is where the keep-alive races come from. ``Link`` draws the
one-way delays of one caller -> callee path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import simpy

from sim.rng import BatchedStream

if TYPE_CHECKING:  # pragma: no cover
    from sim.server import ServerProcess


class InstantMessage:
    """A message delivered without transit time; like an event, it carries ``value``."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


Message = Union[simpy.Event, InstantMessage]
"""What a network callback receives: the timeout that carried it, or an instant message."""


class Link:
    """One-way network delays: rtt/2 plus an optional exponential jitter."""

    __slots__ = ("half_rtt_s", "jitter_s", "_exp")

    def __init__(self, rtt_s: float, jitter_s: float, exp: BatchedStream) -> None:
        self.half_rtt_s = rtt_s / 2.0
        self.jitter_s = jitter_s
        self._exp = exp

    def one_way(self) -> float:
        if self.jitter_s > 0.0:
            return self.half_rtt_s + self.jitter_s * self._exp.next()
        return self.half_rtt_s


# server-side states of a connection in Go's (*conn).serve loop
QUEUED = 0      # in the accept queue, not yet accepted
HANDSHAKE = 1   # accepted, TLS handshake in progress
NEW = 2         # accepted, waiting for the first request's headers
ACTIVE = 3      # a request is being handled
IDLE = 4        # keep-alive, waiting for the next request
CLOSED = 5


class Conn:
    __slots__ = (
        "id", "client", "link", "server",
        # client side
        "client_open", "reused", "in_pool", "idle_timer", "idle_since", "attempt", "established",
        # server side
        "state", "server_timer", "server_idle_timer", "server_idle_since", "t0", "pending", "exchange",
        "slow", "peer_gone", "to_server_at", "to_client_at",
    )

    def __init__(self, conn_id: int, client: Any, link: Link, server: "ServerProcess") -> None:
        self.id = conn_id
        self.client = client
        self.link = link
        self.server = server
        self.client_open = True
        self.reused = False
        self.in_pool = False
        self.idle_timer = None   # IdleConnTimeout: one pending timer, re-armed when it fires early
        self.idle_since = 0.0
        self.attempt = None
        self.established = False
        self.state = QUEUED
        self.server_timer = None       # header, TLS handshake deadlines
        self.server_idle_timer = None  # IdleTimeout: one pending timer, re-armed when it fires early
        self.server_idle_since = 0.0
        self.t0 = 0.0
        self.pending = None      # a request that reached the server before it could be read
        self.exchange = None     # the server's current request on this connection
        self.slow = None         # SlowClient spec for attack connections
        self.peer_gone = False   # the server has seen the client's FIN
        self.to_server_at = 0.0  # arrival of the last segment sent each way (TCP keeps them in order)
        self.to_client_at = 0.0

    def to_server_s(self, now: float) -> float:
        """Delay of a segment the client sends now: one way, never overtaking an earlier one."""
        at = now + self.link.one_way()
        if at < self.to_server_at:
            at = self.to_server_at
        self.to_server_at = at
        return at - now

    def to_client_s(self, now: float) -> float:
        """Delay of a segment the server sends now: one way, never overtaking an earlier one."""
        at = now + self.link.one_way()
        if at < self.to_client_at:
            at = self.to_client_at
        self.to_client_at = at
        return at - now
