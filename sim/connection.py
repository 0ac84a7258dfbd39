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


MSS_BYTES = 1448            # TCP payload per segment (1500 MTU - IP and TCP headers with timestamps)
RTO_MIN_S = 0.2            # Linux TCP_RTO_MIN: RTO = srtt + max(200 ms, 4 x rttvar)
FAST_RETRANSMIT_DUPACKS = 3


class Link:
    """One caller -> callee path: one-way delays (rtt/2 plus an optional exponential jitter),
    bandwidth, and segment loss with TCP's recovery (fast retransmit or RTO)."""

    __slots__ = ("half_rtt_s", "rtt_s", "jitter_s", "_exp", "loss_rate", "_loss_uniform", "rto_s",
                 "bytes_per_s", "lossy", "plain")

    def __init__(self, rtt_s: float, jitter_s: float, exp: BatchedStream, *, loss_rate: float = 0.0,
                 loss_uniform: BatchedStream | None = None, bytes_per_s: float = 0.0) -> None:
        self.half_rtt_s = rtt_s / 2.0
        self.rtt_s = rtt_s
        self.jitter_s = jitter_s
        self._exp = exp
        self.loss_rate = loss_rate
        self._loss_uniform = loss_uniform
        self.lossy = loss_rate > 0.0
        self.rto_s = rtt_s + max(RTO_MIN_S, 4.0 * jitter_s)
        self.bytes_per_s = bytes_per_s
        self.plain = not self.lossy and bytes_per_s <= 0.0   # one-way delays only: the fast path

    def one_way(self) -> float:
        if self.jitter_s > 0.0:
            return self.half_rtt_s + self.jitter_s * self._exp.next()
        return self.half_rtt_s

    def loss_delay_s(self, n_bytes: int, busy: bool) -> float:
        """Extra delay of a message of ``n_bytes`` from a lost segment: 0 if none was lost, one
        RTT when fast retransmit recovers it (3 duplicate ACKs: at least 3 segments follow it, or
        other streams keep the connection busy), the RTO otherwise. At most one loss per message."""
        n_segments = max(1, -(-n_bytes // MSS_BYTES))
        p_any = 1.0 - (1.0 - self.loss_rate) ** n_segments
        u = self._loss_uniform.next()
        if u >= p_any:
            return 0.0
        lost_index = int(u / p_any * n_segments)      # which segment, uniform given a loss
        if busy or n_segments - lost_index - 1 >= FAST_RETRANSMIT_DUPACKS:
            return self.rtt_s
        return self.rto_s

    def syn_lost(self) -> bool:
        return self.lossy and self._loss_uniform.next() < self.loss_rate


# server-side states of a connection in Go's (*conn).serve loop
QUEUED = 0      # in the accept queue, not yet accepted
HANDSHAKE = 1   # accepted, TLS handshake in progress
NEW = 2         # accepted, waiting for the first request's headers
ACTIVE = 3      # a request is being handled
IDLE = 4        # keep-alive, waiting for the next request
CLOSED = 5
H2 = 6          # an HTTP/2 connection being served (its streams are in ``h2_server``)


class Conn:
    __slots__ = (
        "id", "client", "link", "server",
        # client side
        "client_open", "reused", "in_pool", "idle_timer", "idle_since", "attempt", "established",
        # server side
        "state", "server_timer", "server_idle_timer", "server_idle_since", "t0", "pending", "exchange",
        "slow", "peer_gone", "to_server_at", "to_client_at", "to_server_free_at", "to_client_free_at",
        # HTTP/2 state of each end (sim.h2), None on HTTP/1
        "h2", "h2_server",
        # the "time before the server sees it" phases (instants; NaN until they happen)
        "dial_started_at", "established_at", "tls_done_at", "queued_at", "accepted_at",
        # ephemeral port of the client end
        "holds_port", "pending_at",
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
        self.to_server_free_at = 0.0   # when the sender's side of the link is free again (bandwidth)
        self.to_client_free_at = 0.0
        self.h2 = None
        self.h2_server = None
        nan = float("nan")
        self.dial_started_at = nan
        self.established_at = nan
        self.tls_done_at = nan
        self.queued_at = nan
        self.accepted_at = nan
        self.holds_port = False
        self.pending_at = 0.0    # when ``pending`` reached the server (it waits for the accept)

    def to_server_s(self, now: float, n_bytes: int = 0, busy: bool = False) -> float:
        """Delay of a message of ``n_bytes`` the client sends now: serialisation, one way, any
        loss recovery, and never overtaking an earlier one (TCP delivers in order, which is how
        one lost segment stalls every HTTP/2 stream on the connection)."""
        link = self.link
        if link.plain:
            at = now + link.one_way()
        else:
            start = now
            if link.bytes_per_s > 0.0 and n_bytes:
                start = max(now, self.to_server_free_at) + n_bytes / link.bytes_per_s
                self.to_server_free_at = start
            at = start + link.one_way()
            if link.lossy:
                at += link.loss_delay_s(n_bytes, busy)
        if at < self.to_server_at:
            at = self.to_server_at
        self.to_server_at = at
        return at - now

    def to_client_s(self, now: float, n_bytes: int = 0, busy: bool = False) -> float:
        """Delay of a message of ``n_bytes`` the server sends now (see ``to_server_s``)."""
        link = self.link
        if link.plain:
            at = now + link.one_way()
        else:
            start = now
            if link.bytes_per_s > 0.0 and n_bytes:
                start = max(now, self.to_client_free_at) + n_bytes / link.bytes_per_s
                self.to_client_free_at = start
            at = start + link.one_way()
            if link.lossy:
                at += link.loss_delay_s(n_bytes, busy)
        if at < self.to_client_at:
            at = self.to_client_at
        self.to_client_at = at
        return at - now
