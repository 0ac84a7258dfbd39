"""Slow clients (slowloris): connections that dribble their request or say nothing.

During a ``slow_clients`` fault, new connections reach the service at
``connections_per_s`` (Poisson). Each sends its header block and then its body
at ``bytes_per_s`` (0 = mute). Go's server gives them a goroutine, an fd and
~14 KB each; ReadHeaderTimeout (or its ReadTimeout fallback) cuts them: with no
byte received a silent close, with some bytes a 400. A request that completes
its headers is handled on ``route`` (404 when none), its body read under the
absolute ReadTimeout; the attacker closes the connection when it has the
response. They are attack traffic, not logical requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import simpy

from sim.connection import NEW, Conn, Link
from sim.schema import FaultConfig

if TYPE_CHECKING:  # pragma: no cover
    from sim.server import ServerProcess
    from sim.world import World

ATTACKER_RTT_S = 0.001


class SlowSpec:
    __slots__ = ("fault", "route", "connected_at")

    def __init__(self, fault: FaultConfig, route: int) -> None:
        self.fault = fault
        self.route = route
        self.connected_at = 0.0


class SlowClients:
    def __init__(self, world: "World") -> None:
        self.world = world
        self.env: simpy.Environment = world.env
        self.link = Link(ATTACKER_RTT_S, 0.0, world.streams.exponential("slow_clients.link"))
        self.opened = 0
        self.cut_silently = 0
        self.cut_with_400 = 0
        self.completed = 0        # requests that got through (their response arrived)
        self.read_errors = 0      # cut by ReadTimeout while sending the body

    def start(self) -> None:
        for i, fault in enumerate(self.world.faults.slow_clients):
            if fault.connections_per_s > 0:
                self.env.process(self._arrive(i, fault))

    def _arrive(self, index: int, fault: FaultConfig):
        env = self.env
        world = self.world
        service = world.services[fault.target]
        route = service.route_names.index(fault.route) if fault.route else len(service.route_names)
        gaps = world.streams.exponential(f"slow_clients.{index}.arrivals")
        end_at = world.horizon_s if fault.duration == 0 else min(fault.at + fault.duration, world.horizon_s)
        t = fault.at + gaps.next() / fault.connections_per_s
        while t < end_at:
            yield env.timeout(t - env.now)
            self._connect(service, fault, route)
            t += gaps.next() / fault.connections_per_s

    def _connect(self, service, fault: FaultConfig, route: int) -> None:
        server = service.current
        if server is None or server.on_syn(None) != "accept":
            return
        conn = Conn(self.world.next_conn_id(), self, self.link, server)
        conn.slow = SlowSpec(fault, route)
        conn.established = True
        self.opened += 1
        ev = self.env.timeout(2 * self.link.one_way(), conn)
        ev.callbacks.append(self._on_ack)

    def _on_ack(self, event: simpy.Event) -> None:
        conn: Conn = event.value
        conn.slow.connected_at = self.env.now
        conn.server.on_ack(conn, None)

    # -- server side ---------------------------------------------------------------
    def on_accepted(self, server: "ServerProcess", conn: Conn) -> None:
        spec = conn.slow
        fault = spec.fault
        header_b = server.config.server.header_bytes
        deadline_s = server.header_timeout_s
        now = self.env.now
        if fault.bytes_per_s <= 0:
            if deadline_s > 0:
                conn.server_timer = server.timers.start(deadline_s, self._cut, conn)
            return
        headers_at = spec.connected_at + header_b / fault.bytes_per_s
        if deadline_s > 0 and headers_at > conn.t0 + deadline_s:
            conn.server_timer = server.timers.start(deadline_s, self._cut, conn)
            return
        conn.server_timer = server.timers.start(max(headers_at - now, 0.0), self._headers_read, conn)

    def _cut(self, conn: Conn) -> None:
        conn.server_timer = None
        server = conn.server
        if conn.state != NEW or not server.alive:
            return
        fault = conn.slow.fault
        some_bytes = fault.bytes_per_s > 0 and self.env.now >= conn.slow.connected_at + 1.0 / fault.bytes_per_s
        if some_bytes:
            self.cut_with_400 += 1
        else:
            self.cut_silently += 1
        server.close(conn, notify=False, reason="read_header_timeout_400" if some_bytes else "read_header_timeout")

    def _headers_read(self, conn: Conn) -> None:
        conn.server_timer = None
        server = conn.server
        if conn.state != NEW or not server.alive:
            return
        fault = conn.slow.fault
        body_ready_at = conn.slow.connected_at + (server.config.server.header_bytes + fault.body_bytes) / fault.bytes_per_s
        body_deadline_at = conn.t0 + server.read_timeout_s if server.read_timeout_s > 0 else float("inf")
        server.begin_exchange(conn, None, conn.slow.route, body_ready_at, body_deadline_at)

    def on_response(self, server: "ServerProcess", conn: Conn, status: int) -> None:
        if status == 400:
            self.read_errors += 1
        else:
            self.completed += 1
        ev = self.env.timeout(2 * self.link.one_way(), conn)
        ev.callbacks.append(self._attacker_closes)

    def _attacker_closes(self, event: simpy.Event) -> None:
        conn: Conn = event.value
        if conn.server.alive:
            conn.server.close(conn, notify=False, reason="client_closed")
