"""A Go net/http server process: listener, accept loop, connections, deadlines, resources.

One ``ServerProcess`` is one life of the process; an OOM kill ends it and a
restart (``Service.restart``) makes a fresh one. It owns what the process owns:
the accept queue and Go's accept loop with its EMFILE backoff (5 ms doubling to
1 s, reset on success; accept4 fails with EMFILE before looking at the queue),
the fd table (3 stdio + listener + connections + DB connections), goroutines
(one per connection, one background reader per in-flight request whose body is
read, one per TimeoutHandler-wrapped request), memory, CPU cores, DB pools, and
the per-connection deadlines with Go's real semantics (semantics.md §1):

- a new connection waits for its headers under ReadHeaderTimeout (falling back
  to ReadTimeout): no byte -> silent close, some bytes -> 400 and close;
- a kept-alive connection waits under IdleTimeout (falling back to ReadTimeout)
  and only then starts the header deadline;
- ReadTimeout is one absolute deadline from the start of the request over
  headers and body, cleared once the body is read;
- WriteTimeout cancels nothing: the response written after it is lost, the
  connection closes and the client reads EOF when the handler returns;
- the request context is cancelled by a client disconnect only once the body is
  read (always for GET; never for a POST whose body the handler leaves unread);
- TimeoutHandler answers 503 at its deadline and cancels the inner context; the
  inner handler runs on until it returns.

The handler itself (steps, queries, cancellation) lives in ``sim.handler``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

import simpy

from sim.connection import ACTIVE, CLOSED, H2, HANDSHAKE, IDLE, NEW, QUEUED, Conn
from sim.cpu import Cores
from sim.dbpool import SqlPool
from sim.gc import GarbageCollector
from sim.h2 import HEADERS_BYTES, BodyTransfer, H2ServerConn, consume_buffered, credit, pump, receive
from sim.h2_flow import SPEC_INITIAL_WINDOW
from sim.handler import Exchange
from sim.policies import make_shedding
from sim.schema import PoolConfig

INF = math.inf
NAN = math.nan

if TYPE_CHECKING:  # pragma: no cover
    from sim.world import Service

SYNACK_RETRANSMIT_AFTER_S = (1.0, 3.0, 7.0, 15.0, 31.0)   # tcp_synack_retries = 5
SYNACK_GIVE_UP_AFTER_S = 63.0                             # ip-sysctl.rst: passive open times out
BASE_GOROUTINES = 4      # main/accept loop, signal handling, finaliser, timers
BASE_FDS = 4             # stdin, stdout, stderr, listener
ACCEPT_BACKOFF_FIRST_S = 0.005
ACCEPT_BACKOFF_MAX_S = 1.0

# server CPU per TLS handshake (Go 1.19.8 measurements, semantics.md §4)
TLS_SERVER_CPU_S = {"rsa-2048": 0.0017, "ecdsa-p256": 0.00015}
TLS_RESUMED_CPU_S = {"1.3": 0.00011, "1.2": 0.00005}


def ack_chances_after_s(rto_s: float) -> tuple[float, ...]:
    """When, after a dropped final ACK, the client's next ACK-carrying segments arrive: its
    data retransmissions (RTO, doubling: 1, 3, 7, ... x RTO) and its answers to the server's
    SYN-ACK retransmissions, all before the half-open connection expires (63 s)."""
    cached = _ACK_CHANCES.get(rto_s)
    if cached is None:
        data = [rto_s * ((2 << k) - 1) for k in range(15)]          # tcp_retries2 = 15
        cached = tuple(sorted({t for t in (*data, *SYNACK_RETRANSMIT_AFTER_S) if t < SYNACK_GIVE_UP_AFTER_S}))
        _ACK_CHANCES[rto_s] = cached
    return cached


_ACK_CHANCES: dict[float, tuple[float, ...]] = {}


def first_positive(*values: float) -> float:
    positive = [v for v in values if v > 0]
    return min(positive) if positive else 0.0


class ServerProcess:
    def __init__(self, service: "Service", generation: int, instance: int = 0) -> None:
        world = service.world
        self.world = world
        self.service = service
        self.generation = generation     # unique over every process of the run
        self.instance = instance
        self.env: simpy.Environment = world.env
        self.timers = world.timers
        cfg = service.config
        self.config = cfg
        sv = cfg.server
        self.read_timeout_s = sv.read_timeout
        self.header_timeout_s = sv.read_header_timeout or sv.read_timeout
        self.idle_timeout_s = sv.idle_timeout or sv.read_timeout
        self.write_timeout_s = sv.write_timeout
        self.tls_deadline_s = first_positive(sv.read_header_timeout, sv.read_timeout, sv.write_timeout)
        self.timeout_handler_s = sv.timeout_handler
        self.backlog = sv.accept_backlog
        self.h2_max_streams = sv.h2_max_concurrent_streams
        self.h2_stream_window = max(SPEC_INITIAL_WINDOW, sv.h2_stream_window)
        self.h2_conn_window = max(SPEC_INITIAL_WINDOW, sv.h2_connection_window)
        self.response_bytes = service.route_response_bytes
        self.fd_limit = cfg.fd_limit
        mem = cfg.memory
        self.mem_limit = mem.limit
        self.per_conn_b = mem.per_connection + mem.per_goroutine
        self.per_request_b = mem.per_request
        self.per_goroutine_b = mem.per_goroutine
        self.alive = True
        self.started_at = self.env.now
        # resources
        self.fds = BASE_FDS
        self.conns = 0
        self.goroutines = BASE_GOROUTINES
        self.live_b = float(mem.baseline + BASE_GOROUTINES * mem.per_goroutine)
        self.inflight = 0
        self.inflight_by_route = [0] * (len(service.route_names) + 1)   # + the unrouted path
        self.accept_queue: deque[Conn] = deque()
        self.accept_sleeping = False
        self.accept_backoff_s = 0.0
        self.open_conns: dict[int, Conn] = {}
        self.gc = GarbageCollector(self.env, cfg.gc, cfg.cpu.cores, self._live_b)
        self.cores = Cores(self.env, cfg.cpu.cores, self.gc.cpu_share if cfg.gc.enabled else None)
        self.pools: dict[str, SqlPool] = {}
        for db_name in service.databases_used:
            db = world.scenario.databases[db_name]
            self.pools[db_name] = SqlPool(
                self.env, cfg.pools.get(db_name, PoolConfig()), db.rtt, self._take_fd, self._release_fd,
                world.streams.uniform(f"service.{service.name}.pool.{db_name}.pick").next)
        self._oom_pending = False
        # load shedding in front of the handlers (sim.shedding); None = Go's default, no gate
        self.shedding = make_shedding(cfg.shedding)
        self.shed_queue = self.shedding.new_queue(self.env.now) if self.shedding is not None else None
        self.max_in_flight = cfg.shedding.max_in_flight
        self.admitted = 0                  # handlers past the gate, still running
        self.retry_after_s = float(math.ceil(cfg.shedding.retry_after))
        self._shed_timer = None
        self._shed_timer_at = math.inf
        self._admitting = False
        world.peak_fds = max(world.peak_fds, self.fds)
        world.peak_goroutines = max(world.peak_goroutines, self.goroutines)
        world.peak_memory_b = max(world.peak_memory_b, self.memory_b)
        # one client process towards each service this one calls (its own pools and policies)
        self.callers = {callee: world.edge_client(self, callee) for callee in service.callees}

    # ------------------------------------------------------------ resources
    def _live_b(self) -> float:
        return self.live_b

    @property
    def memory_b(self) -> float:
        """Resident memory: the live set plus garbage not yet collected."""
        return self.live_b + self.gc.garbage_b

    def add_memory(self, delta_b: float) -> None:
        self.live_b += delta_b
        if delta_b < 0:
            self.gc.freed(-delta_b)
            return
        gc = self.gc
        if gc.enabled:
            gc.allocated()
        memory_b = self.live_b + gc.garbage_b
        w = self.world
        if memory_b > w.peak_memory_b:
            w.peak_memory_b = memory_b
        if self.mem_limit and memory_b >= self.mem_limit and not self._oom_pending and self.alive:
            # SIGKILL: nothing more happens in this process from this instant; the cleanup
            # (resetting every socket) runs as the next event at the same instant
            self._oom_pending = True
            self.alive = False
            ev = self.env.timeout(0)
            ev.callbacks.append(self._on_oom)

    def _on_oom(self, _event: Any) -> None:
        self.service.kill(self, reason="oom")

    def _take_fd(self) -> bool:
        if self.fds >= self.fd_limit:
            return False
        self.fds += 1
        if self.fds > self.world.peak_fds:
            self.world.peak_fds = self.fds
        return True

    def _release_fd(self) -> None:
        if self.alive:
            self.fds -= 1

    def add_goroutines(self, n: int, other_b: float = 0.0) -> None:
        """``n`` goroutines start (or end, if negative), with ``other_b`` more bytes besides."""
        self.goroutines += n
        self.add_memory(n * self.per_goroutine_b + other_b)
        if self.goroutines > self.world.peak_goroutines:
            self.world.peak_goroutines = self.goroutines

    # --------------------------------------------------------------- listener
    def on_syn(self, conn: Conn) -> str:
        """A SYN arrives: 'accept' (handshake completes), 'drop' (queue full) or 'refuse'."""
        if not self.alive:
            return "refuse"
        if len(self.accept_queue) > self.backlog:      # sk_acceptq_is_full: the queue holds backlog + 1
            return "drop"
        return "accept"

    def on_ack(self, conn: Conn, first_request: Any) -> None:
        """The client's ACK (and, without TLS, its first request) reaches the listener."""
        if first_request is not None:
            conn.pending = first_request
        self._handshake_completes(conn, self.env.now, 0)

    def _handshake_completes(self, conn: Conn, first_ack_at: float, tries: int) -> None:
        if not self.alive or conn.server is not self:
            if conn.slow is None:
                conn.client.on_server_reset(conn)
            return
        if len(self.accept_queue) > self.backlog:
            # Linux checks the queue again at the final ACK and drops the ACK when it is full. The
            # next chance is the next segment carrying an ACK: the client's retransmission of the
            # data it sent after its ACK (the ClientHello, or the request), at its RTO (RTT +
            # 200 ms at least, doubling), or its answer to the server's SYN-ACK retransmission
            # (tcp_synack_retries = 5: 1, 3, 7, 15, 31 s), whichever comes first; after the last
            # SYN-ACK the half-open connection is forgotten (the client's next segment is reset)
            chances = ack_chances_after_s(conn.link.rto_s)
            if tries < len(chances):
                ev = self.env.timeout(first_ack_at + chances[tries] - self.env.now, (conn, first_ack_at, tries + 1))
            else:
                ev = self.env.timeout(first_ack_at + SYNACK_GIVE_UP_AFTER_S - self.env.now, (conn, first_ack_at, -1))
            ev.callbacks.append(self._on_ack_retry)
            return
        self.accept_queue.append(conn)
        conn.queued_at = self.env.now
        if len(self.accept_queue) > self.world.peak_accept_queue:
            self.world.peak_accept_queue = len(self.accept_queue)
        if not self.accept_sleeping:
            self._accept_loop()

    def _on_ack_retry(self, event: Any) -> None:
        conn, first_ack_at, tries = event.value
        if tries < 0:
            conn.state = CLOSED
            if conn.slow is None:
                conn.client.on_server_reset(conn)
            return
        if conn.state == QUEUED:
            self._handshake_completes(conn, first_ack_at, tries)

    def _accept_loop(self) -> None:
        """Go's (*Server).Serve loop from the current instant until it parks or sleeps."""
        while self.alive:
            if self.fds >= self.fd_limit:
                b = self.accept_backoff_s
                self.accept_backoff_s = ACCEPT_BACKOFF_FIRST_S if b == 0.0 else min(2.0 * b, ACCEPT_BACKOFF_MAX_S)
                self.world.note_emfile(self.accept_backoff_s)   # "accept4: too many open files; retrying in ..."
                self.accept_sleeping = True
                ev = self.env.timeout(self.accept_backoff_s)
                ev.callbacks.append(self._on_accept_wake)
                return
            if not self.accept_queue:
                return  # EAGAIN: parked in the poller until the next connection
            conn = self.accept_queue.popleft()
            self.accept_backoff_s = 0.0
            self._accepted(conn)

    def _on_accept_wake(self, _event: Any) -> None:
        self.accept_sleeping = False
        if self.alive:
            self._accept_loop()

    def _accepted(self, conn: Conn) -> None:
        self.fds += 1
        w = self.world
        if self.fds > w.peak_fds:
            w.peak_fds = self.fds
        self.conns += 1
        if self.conns > w.peak_server_connections:
            w.peak_server_connections = self.conns
        self.goroutines += 1
        if self.goroutines > w.peak_goroutines:
            w.peak_goroutines = self.goroutines
        self.open_conns[conn.id] = conn
        self.add_memory(self.per_conn_b)
        now = self.env.now
        if w.tracer is not None:
            w.tracer.append((now, "accept", conn.id, ""))
        conn.t0 = now
        conn.accepted_at = now
        if conn.slow is not None:
            conn.state = NEW
            self.world.slow_clients.on_accepted(self, conn)
            return
        if conn.client.tls is not None:
            if conn.peer_gone:         # the client gave up while queued: the handshake reads EOF
                conn.state = NEW
                self.close(conn, notify=False, reason="tls_eof")
                return
            conn.state = HANDSHAKE
            if self.tls_deadline_s > 0:
                conn.server_timer = self.timers.start(self.tls_deadline_s, self._on_tls_deadline, conn)
            self.env.process(self._tls_handshake(conn))
            return
        conn.state = NEW
        if conn.client.h2 is not None:
            self._h2_start(conn)
            return
        if conn.pending is not None:
            request, conn.pending = conn.pending, None
            request.backlog_s += now - conn.pending_at     # it waited in the accept queue
            self.begin(conn, request)
        elif conn.peer_gone:
            self.close(conn, reason="eof_before_request")
        elif self.header_timeout_s > 0:
            conn.server_timer = self.timers.start(self.header_timeout_s, self._on_header_timeout, conn)

    # -------------------------------------------------------------------- TLS
    def _tls_handshake(self, conn: Conn):
        tls = conn.client.tls
        resumed = tls.resumption and conn.client.has_session
        cpu_s = (TLS_RESUMED_CPU_S[tls.version] if resumed
                 else (tls.server_cpu or TLS_SERVER_CPU_S[tls.key]))
        self.world.tls_handshakes += 1
        yield self.cores.run(cpu_s)
        if not self.alive or conn.state != HANDSHAKE:
            return
        if conn.peer_gone:
            self.close(conn, notify=False, reason="tls_eof")
            return
        if tls.version == "1.2" and not resumed:
            # ServerHelloDone -> client; ClientKeyExchange/Finished -> server: one more round trip
            yield self.env.timeout(conn.link.one_way() + conn.link.one_way())
            if not self.alive or conn.state != HANDSHAKE:
                return
        if conn.server_timer is not None:
            conn.server_timer.cancel()
            conn.server_timer = None
        conn.state = NEW
        conn.t0 = self.env.now
        self.world.deliver(conn.to_client_s(self.env.now), conn.client.on_tls_done, conn)
        if conn.client.h2 is not None:
            self._h2_start(conn)
            return
        if self.header_timeout_s > 0:
            conn.server_timer = self.timers.start(self.header_timeout_s, self._on_header_timeout, conn)

    def _on_tls_deadline(self, conn: Conn) -> None:
        conn.server_timer = None
        if conn.state == HANDSHAKE:
            self.close(conn, reason="tls_deadline")

    # ------------------------------------------------------- request lifecycle
    def on_request(self, conn: Conn, request: Any) -> None:
        """A request's bytes (headers, body sent at once) reach the server on ``conn``."""
        if conn.server is not self or not self.alive or conn.state == CLOSED:
            conn.client.on_server_reset(conn)
            return
        if conn.client.h2 is not None:
            self.h2_on_stream(conn, request)
            return
        if conn.state == QUEUED or conn.state == HANDSHAKE:
            conn.pending = request
            conn.pending_at = self.env.now
            return
        if conn.state == ACTIVE:  # pipelining is not modelled: the client never does it
            raise RuntimeError("request on a busy connection")
        self.begin(conn, request)

    def begin(self, conn: Conn, attempt: Any) -> None:
        self.begin_exchange(conn, attempt, attempt.route, 0.0, INF)

    def begin_exchange(self, conn: Conn, attempt: Any, route: int, body_ready_at: float,
                       body_deadline_at: float) -> None:
        """The request's headers are read: the handler starts."""
        if conn.server_timer is not None:
            conn.server_timer.cancel()
            conn.server_timer = None
        conn.state = ACTIVE
        ex = Exchange(self, conn, attempt, route, self.env.now)
        ex.body_ready_at = body_ready_at
        ex.body_deadline_at = body_deadline_at
        conn.exchange = ex
        if self.world.tracer is not None:
            self.world.tracer.append((self.env.now, "handler_start", conn.id, route))
        self._start_exchange(ex)

    def _start_exchange(self, ex: Exchange) -> None:
        route = ex.route
        conn = ex.conn
        now = ex.start_at
        ex.write_deadline_at = now + self.write_timeout_s if self.write_timeout_s > 0 and not ex.h2 else INF
        self.inflight += 1
        self.inflight_by_route[route] += 1
        # the background reader starts once the body is read: at once without a body (or with
        # one sent whole), later for a dribbled body (sim.handler), never for an unread one;
        # HTTP/2 has none (the stream's reset is what cancels the context)
        ex.background_reader = not ex.h2 and not self.service.route_body_unread[route] and ex.body_ready_at <= now
        goroutines = 1 if ex.background_reader else 0
        if self.timeout_handler_s > 0:
            goroutines += 1
            ex.th_timer = self.timers.start(self.timeout_handler_s, self._on_timeout_handler, ex)
        self.add_goroutines(goroutines, self.per_request_b)
        self.service.handlers_by_instance[self.instance] += 1
        if ex.ctx_deadline_at != INF:
            ex.ctx_deadline_timer = self.timers.start(max(ex.ctx_deadline_at - now, 0.0), ex.on_ctx_deadline)
            if self.world.tracer is not None:
                self.world.tracer.append((now, "deadline_learnt", conn.id, ex.ctx_deadline_at - now))
        if conn.peer_gone and ex.background_reader:
            self.reader_saw_eof(ex)       # the FIN came with the request: the context is done at once
        if self.alive:
            ex.start()

    def reader_saw_eof(self, ex: Exchange) -> None:
        """The background read of a request whose body was read gets EOF (the client closed): it
        cancels the request's context and its goroutine exits (calibrated against Go 1.19: the
        goroutine count drops when the client goes, not when the handler returns)."""
        ex.cancel("client_gone")
        if ex.background_reader:
            ex.background_reader = False
            self.add_goroutines(-1)

    def end_handler(self, ex: Exchange, status: int) -> None:
        """The handler (inner handler, under TimeoutHandler) returned."""
        now = self.env.now
        w = self.world
        if w.tracer is not None:
            w.tracer.append((now, "handler_end", ex.conn.id, status))
        handler_s = now - ex.start_at
        w.handler_s += handler_s
        if ex.caller_gone_at is not None and ex.caller_gone_at < now:
            w.wasted_handler_s += now - max(ex.start_at, ex.caller_gone_at)
        self.inflight -= 1
        self.inflight_by_route[ex.route] -= 1
        if ex.admitted:
            ex.admitted = False
            self.admitted -= 1
            self._admit_queued()
        if ex.th_timer is not None:
            ex.th_timer.cancel()
            ex.th_timer = None
        if ex.ctx_deadline_timer is not None:
            ex.ctx_deadline_timer.cancel()
            ex.ctx_deadline_timer = None
        goroutines = -1 if self.timeout_handler_s > 0 else 0
        freed_b = -ex.allocated_b
        ex.allocated_b = 0
        if ex.detached:     # the 503 went out already: only the inner goroutine ends now
            self.add_goroutines(goroutines, freed_b)
            if ex.h2:
                self._h2_handler_returned(ex)
            return
        if ex.background_reader:
            goroutines -= 1
        self.add_goroutines(goroutines, freed_b - self.per_request_b)
        self._write_response(ex, status)
        if ex.h2:
            self._h2_handler_returned(ex)

    # ------------------------------------------------------------- shedding
    # The gate is a middleware around every routed handler: a semaphore of max_in_flight
    # slots and a bounded queue (sim.shedding). A queued request waits in a select on its
    # context too, so a caller that goes (or a TimeoutHandler 503) takes it out of the queue.

    def admit(self, ex: Exchange) -> None:
        """The request reaches the gate: run it, queue it or shed it (503)."""
        now = self.env.now
        dropped: list[Exchange] = []
        self.shed_queue.expire(now, dropped)
        decision = self.shedding.admit(now, self.admitted, len(self.shed_queue))
        if decision == "run":
            self._run_admitted(ex)
        elif decision == "queue" and ex.ctx_done:
            # the caller went before the request reached the gate (its FIN came with it): the
            # middleware's select on the context returns at once, as for a waiter that goes
            self.end_handler(ex, 503)
        elif decision == "queue":
            ex.shed_entry = self.shed_queue.push(now, ex, dropped)
            if self.world.tracer is not None:
                self.world.tracer.append((now, "shed_queued", ex.conn.id, len(self.shed_queue)))
            self._arm_shed_timer()
        else:
            self.world.shed_rejected += 1
            self._shed(ex, "shed_rejected")
        for gone in dropped:
            self._drop_queued(gone)

    def _run_admitted(self, ex: Exchange) -> None:
        ex.admitted = True
        self.admitted += 1
        ex.begin_admitted()

    def _shed(self, ex: Exchange, why: str) -> None:
        if self.world.tracer is not None:
            self.world.tracer.append((self.env.now, why, ex.conn.id, ""))
        if ex.attempt is not None and self.retry_after_s > 0:
            ex.attempt.retry_after_s = self.retry_after_s
        self.end_handler(ex, 503)

    def _drop_queued(self, ex: Exchange) -> None:
        ex.shed_entry = None
        self.world.shed_dropped += 1
        self._shed(ex, "shed_dropped")

    def leave_queue(self, ex: Exchange) -> None:
        """A queued request's context is done: the middleware returns (nobody reads the answer)."""
        entry = ex.shed_entry
        ex.shed_entry = None
        if entry is not None and self.shed_queue.discard(self.env.now, entry):
            self.end_handler(ex, 503)

    def _admit_queued(self) -> None:
        """A slot is free: the next queued request (by the discipline) runs; timed-out ones are shed."""
        queue = self.shed_queue
        if queue is None or self._admitting or not self.alive:
            return
        self._admitting = True
        try:
            now = self.env.now
            dropped: list[Exchange] = []
            while self.admitted < self.max_in_flight and self.alive:
                ex = queue.pop(now, dropped)
                if ex is None:
                    break
                ex.shed_entry = None
                self._run_admitted(ex)
            for gone in dropped:
                self._drop_queued(gone)
        finally:
            self._admitting = False

    def _arm_shed_timer(self) -> None:
        """Wake up when the earliest queued request times out, to shed it at that instant."""
        due_at = self.shed_queue.next_deadline_at()
        if due_at is None or due_at >= self._shed_timer_at:
            return
        if self._shed_timer is not None:
            self._shed_timer.cancel()
        self._shed_timer_at = due_at
        self._shed_timer = self.timers.start(max(due_at - self.env.now, 0.0), self._on_shed_timer, None)

    def _on_shed_timer(self, _arg: Any) -> None:
        self._shed_timer = None
        self._shed_timer_at = math.inf
        if not self.alive:
            return
        # a request is dropped once its wait *exceeds* its timeout: just after this instant, so
        # after every event already due at it (a handler ending now serves a waiter whose
        # timeout ends now, whichever of the two was scheduled first)
        ev = self.env.timeout(0)
        ev.callbacks.append(self._drop_timed_out)

    def _drop_timed_out(self, _event: Any) -> None:
        if not self.alive:
            return
        dropped: list[Exchange] = []
        self.shed_queue.expire(math.nextafter(self.env.now, math.inf), dropped)
        for gone in dropped:
            self._drop_queued(gone)
        self._arm_shed_timer()

    def _on_timeout_handler(self, ex: Exchange) -> None:
        ex.th_timer = None
        if ex.detached or not self.alive:
            return
        ex.detached = True
        if ex.caller_gone_at is None:
            ex.caller_gone_at = self.env.now   # the inner handler now works for nobody
        if self.world.tracer is not None:
            self.world.tracer.append((self.env.now, "timeout_handler_503", ex.conn.id, ""))
        ex.cancel("timeout_handler")
        self.respond(ex, 503)

    def respond(self, ex: Exchange, status: int) -> None:
        """The outer handler returns before the inner one (TimeoutHandler): the request's own
        memory and background reader go, then the response is written."""
        self.add_goroutines(-1 if ex.background_reader else 0, -self.per_request_b)
        self._write_response(ex, status)

    def _write_response(self, ex: Exchange, status: int) -> None:
        """Write the response, then keep or close the connection."""
        conn = ex.conn
        if ex.h2:
            self._h2_write_response(ex, status)
            return
        conn.exchange = None
        if conn.state == CLOSED or not self.alive:
            return
        attempt = ex.attempt
        now = self.env.now
        if conn.slow is not None:
            self.world.slow_clients.on_response(self, conn, status)
            if ex.close_after:
                self.close(conn, notify=False, reason="close_after_response")
            return
        if conn.peer_gone:
            self.close(conn, notify=False, reason="write_to_gone_client")
            return
        if now > ex.write_deadline_at:
            # WriteTimeout: the write fails, the connection closes, the client reads EOF
            self.close(conn, notify=False, reason="write_timeout")
            conn.client.notify_server_close(conn, conn.to_client_s(now))
            return
        n_bytes = self.response_bytes[ex.route]
        if ex.close_after or not conn.client.keep_alive:
            # a read error, or the request's "Connection: close" (DisableKeepAlives): the server
            # closes after the response, so the TIME_WAIT is the server's, not the client's
            self.close(conn, notify=False, reason="close_after_response")
            conn.client.deliver_response(conn, attempt, status, conn.to_client_s(now, n_bytes), closing=True)
            return
        conn.state = IDLE
        conn.server_idle_since = now
        if self.world.tracer is not None:
            self.world.tracer.append((now, "response_sent", conn.id, status))
        if self.idle_timeout_s > 0 and conn.server_idle_timer is None:
            conn.server_idle_timer = self.timers.start(self.idle_timeout_s, self._on_idle_timeout, conn)
        conn.client.deliver_response(conn, attempt, status, conn.to_client_s(now, n_bytes), closing=False)

    # ---------------------------------------------------------------- closing
    def _on_header_timeout(self, conn: Conn) -> None:
        conn.server_timer = None
        if conn.state == NEW:
            self.close(conn, reason="read_header_timeout")

    def _on_idle_timeout(self, conn: Conn) -> None:
        """IdleTimeout: close if idle for the whole timeout, else wait for the rest of it (one
        lazily re-armed timer per connection rather than a new one per request)."""
        conn.server_idle_timer = None
        if conn.state != IDLE:
            return                     # busy: armed again when it next becomes idle
        remaining_s = conn.server_idle_since + self.idle_timeout_s - self.env.now
        if remaining_s > 1e-12:
            conn.server_idle_timer = self.timers.start(remaining_s, self._on_idle_timeout, conn)
        else:
            self.close(conn, reason="idle_timeout")

    def on_client_close(self, conn: Conn) -> None:
        """The client's FIN reaches the server."""
        if conn.server is not self or not self.alive:
            return
        conn.peer_gone = True
        if self.world.tracer is not None:
            self.world.tracer.append((self.env.now, "fin_seen", conn.id, ""))
        state = conn.state
        if state == QUEUED:
            return  # seen when accepted
        if state == H2:
            for ex in list(conn.h2_server.streams.values()):
                if ex is not None:
                    ex.cancel("client_gone")
            self.close(conn, notify=False, reason="client_closed")
            return
        if state == ACTIVE:
            ex = conn.exchange
            if ex is not None and ex.background_reader:
                self.reader_saw_eof(ex)
            return
        if state != CLOSED:
            self.close(conn, notify=False, reason="client_closed")

    def close(self, conn: Conn, notify: bool = True, reason: str = "") -> None:
        if conn.state == CLOSED:
            return
        tracer = self.world.tracer
        if tracer is not None:
            tracer.append((self.env.now, "server_close", conn.id, reason))
        conn.state = CLOSED
        if conn.server_timer is not None:
            conn.server_timer.cancel()
            conn.server_timer = None
        if conn.server_idle_timer is not None:
            conn.server_idle_timer.cancel()
            conn.server_idle_timer = None
        self.fds -= 1
        self.conns -= 1
        self.goroutines -= 1
        self.add_memory(-self.per_conn_b)
        st = conn.h2_server
        if st is not None:
            self.add_goroutines(-1)             # the frame reader
            st.goaway = True
            if st.idle_timer is not None:
                st.idle_timer.cancel()
                st.idle_timer = None
            for att in st.unstarted:            # never started: nothing runs for them
                st.streams.pop(att, None)
            st.unstarted.clear()
            for ex in list(st.streams.values()):
                if ex is not None and ex.body_ready_at == INF:
                    self._h2_abort_body_wait(ex)    # the body read fails: the handler returns
        del self.open_conns[conn.id]
        if notify and conn.slow is None:
            conn.client.notify_server_close(conn, conn.to_client_s(self.env.now))

    def die(self) -> None:
        """The process is killed: every socket is reset, every goroutine gone."""
        self.alive = False
        if self.world.tracer is not None:
            self.world.tracer.append((self.env.now, "killed", None, ""))
        for conn in list(self.open_conns.values()):
            conn.state = CLOSED
            if conn.server_timer is not None:
                conn.server_timer.cancel()
            if conn.server_idle_timer is not None:
                conn.server_idle_timer.cancel()
            if conn.h2_server is not None and conn.h2_server.idle_timer is not None:
                conn.h2_server.idle_timer.cancel()
            if conn.slow is None:
                conn.client.notify_server_reset(conn, conn.to_client_s(self.env.now))
        for conn in self.accept_queue:
            conn.state = CLOSED
            if conn.slow is None:
                conn.client.notify_server_reset(conn, conn.to_client_s(self.env.now))
        # pending TimeoutHandler and db_deadline timers find the process dead and do nothing
        self.open_conns.clear()
        self.accept_queue.clear()
        for caller in self.callers.values():
            caller.shutdown()          # its outgoing requests end, its sockets are reset
        for pool in self.pools.values():
            pool.close_all()
        self.cores.drop_queue()
        self.fds = 0
        self.conns = 0
        self.goroutines = 0
        self.live_b = 0.0
        self.gc.garbage_b = 0.0
        self.inflight = 0
        self.inflight_by_route = [0] * len(self.inflight_by_route)
        self.admitted = 0
        if self._shed_timer is not None:
            self._shed_timer.cancel()
            self._shed_timer = None

    # ----------------------------------------------------------------- HTTP/2
    # One serve loop and one frame reader per connection, one goroutine per running handler
    # (sim.h2 has the semantics). ``h2_server.running`` counts handlers, reset streams' included.

    def _h2_start(self, conn: Conn) -> None:
        """The connection speaks HTTP/2 from now on: the preface and SETTINGS are exchanged."""
        conn.state = H2
        t = conn.client.config.transport
        st = H2ServerConn(self.h2_conn_window, max(SPEC_INITIAL_WINDOW, t.h2_stream_window),
                          max(SPEC_INITIAL_WINDOW, t.h2_connection_window))
        conn.h2_server = st
        self.add_goroutines(1)                  # readFrames
        st.idle_since = self.env.now
        if self.idle_timeout_s > 0:
            st.idle_timer = self.timers.start(self.idle_timeout_s, self._h2_on_idle_timeout, conn)
        pending, conn.pending = conn.pending, None
        if pending:
            for att in pending:
                att.backlog_s += self.env.now - conn.pending_at
                self.h2_on_stream(conn, att)
        elif conn.peer_gone:
            self.close(conn, reason="eof_before_request")

    def h2_on_stream(self, conn: Conn, att: Any) -> None:
        """A HEADERS frame opens a stream: run its handler, or queue it behind the running ones."""
        st = conn.h2_server
        if st is None:             # still in the accept queue or the handshake: read later
            if conn.pending is None:
                conn.pending = []
                conn.pending_at = self.env.now
            conn.pending.append(att)
            return
        if st.goaway:
            return                 # after GOAWAY: ignored; the client retries it elsewhere
        att.reached_server = True
        st.streams[att] = None
        if att.request_body is not None:
            st.bodies[att] = att.request_body
        st.idle_since = -1.0
        if self.world.tracer is not None:
            self.world.tracer.append((self.env.now, "stream_seen", conn.id, att.request.id))
        if st.running < self.h2_max_streams:
            self._h2_run(conn, att)
            return
        st.unstarted.append(att)
        if len(st.unstarted) > 4 * self.h2_max_streams:
            # rapid-reset defence: too many handlers waiting -> GOAWAY ENHANCE_YOUR_CALM
            self.world.h2_goaways += 1
            self.close(conn, reason="enhance_your_calm")

    def _h2_run(self, conn: Conn, att: Any) -> None:
        st = conn.h2_server
        st.running += 1
        self.add_goroutines(1)        # Go's http2 server runs each stream's handler in its own goroutine
        now = self.env.now
        tr = st.bodies.get(att)
        body_ready_at = now
        if tr is not None and not tr.done:
            body_ready_at = INF      # the body is still arriving: ``h2_body_done`` starts it
        deadline_at = now + self.read_timeout_s if self.read_timeout_s > 0 else INF
        conn.exchange = None
        ex = Exchange(self, conn, att, att.route, now)
        ex.h2 = True
        ex.stream_reset = False       # reset by the client, or by WriteTimeout
        ex.write_timer = None         # WriteTimeout of the stream
        ex.response_body = None       # the response body in flight
        ex.body_ready_at = body_ready_at
        ex.body_deadline_at = deadline_at
        st.streams[att] = ex
        if tr is not None:
            tr.exchange = ex
            if not self.service.route_body_unread[att.route]:
                tr.consumes = True            # the handler reads its body: buffered data is credited
                self._h2_return_credit(conn, tr, *consume_buffered(tr, st.recv_conn))
        if self.write_timeout_s > 0:
            ex.write_timer = self.timers.start(self.write_timeout_s, self._h2_on_write_timeout, ex)
        if self.world.tracer is not None:
            self.world.tracer.append((now, "handler_start", conn.id, att.route))
        self._start_exchange(ex)

    def _h2_return_credit(self, conn: Conn, tr: Any, stream_n: int, conn_n: int) -> None:
        if stream_n or conn_n:
            self.world.deliver(conn.to_client_s(self.env.now), conn.client.on_h2_window_update,
                               (conn, tr, stream_n, conn_n))

    def h2_body_chunk(self, conn: Conn, tr: Any, chunk: int) -> None:
        """A chunk of a request body arrives; the last one lets a handler waiting for it go on."""
        st = conn.h2_server
        if st is None or conn.state == CLOSED or not self.alive or conn.server is not self or tr.dead:
            return
        self._h2_return_credit(conn, tr, *receive(tr, st.recv_conn, chunk))
        if tr.remaining == 0 and tr.in_flight == 0 and not tr.done:
            tr.done = True
            att = tr.attempt
            att.flow_wait_s = tr.blocked_s
            ex = tr.exchange
            if ex is not None and ex.body_ready_at == INF:
                ex.body_arrived()

    def h2_on_window_update(self, event: Any) -> None:
        """The client's WINDOW_UPDATE: response bodies on ``conn`` may go on."""
        conn, tr, stream_n, conn_n = event.value
        st = conn.h2_server
        if st is None or conn.state == CLOSED or not self.alive:
            return
        credit(self.world, conn, st.send, tr, stream_n, conn_n, conn.to_client_s,
               conn.client.on_h2_response_chunk, len(st.streams) > 1)

    def h2_on_rst(self, conn: Conn, att: Any) -> None:
        """The client reset a stream (its timeout): the handler's context is cancelled; a stream
        whose handler has not started never runs. A running handler keeps its slot until it returns."""
        st = conn.h2_server
        if st is None or conn.state == CLOSED or not self.alive or att not in st.streams:
            return
        ex = st.streams[att]
        if ex is None:
            try:
                st.unstarted.remove(att)
            except ValueError:
                pass
            del st.streams[att]
            self._h2_release_body(conn, att)
            self._h2_maybe_idle(conn)
            return
        ex.stream_reset = True
        if ex.response_body is not None:
            ex.response_body.dead = True
        st.streams.pop(att, None)
        self._h2_release_body(conn, att)
        if ex.caller_gone_at is None:
            ex.caller_gone_at = self.env.now
        ex.cancel("client_gone")
        if ex.body_ready_at == INF:
            self._h2_abort_body_wait(ex)

    def _h2_abort_body_wait(self, ex: Exchange) -> None:
        """The stream or its connection went while the handler was reading its body: the read
        fails and the handler returns."""
        ex.body_ready_at = self.env.now
        self.end_handler(ex, 400)

    def _h2_release_body(self, conn: Conn, att: Any) -> None:
        """The stream is closed: connection credit for body bytes nobody read goes back (closeStream)."""
        st = conn.h2_server
        tr = st.bodies.pop(att, None)
        if tr is None:
            return
        tr.dead = True
        if tr.buffered and conn.state != CLOSED:
            n, tr.buffered = tr.buffered, 0
            self._h2_return_credit(conn, tr, 0, st.recv_conn.add(n))

    def _h2_on_write_timeout(self, ex: Exchange) -> None:
        """WriteTimeout on HTTP/2: RST_STREAM to the client at once; the connection lives on and
        the handler's context is not cancelled (EXP E10, Go 1.19)."""
        ex.write_timer = None
        conn = ex.conn
        st = conn.h2_server
        if not self.alive or conn.state == CLOSED or ex.stream_reset or st.streams.get(ex.attempt) is not ex:
            return
        ex.stream_reset = True
        st.streams.pop(ex.attempt, None)
        self._h2_release_body(conn, ex.attempt)
        if self.world.tracer is not None:
            self.world.tracer.append((self.env.now, "h2_write_timeout_rst", conn.id, ""))
        if ex.caller_gone_at is None:
            ex.caller_gone_at = self.env.now
        self.world.deliver(conn.to_client_s(self.env.now), conn.client.on_h2_stream_reset, (conn, ex.attempt))

    def _h2_write_response(self, ex: Exchange, status: int) -> None:
        """The response goes out on its stream (HEADERS, then the body window by window)."""
        conn = ex.conn
        st = conn.h2_server
        att = ex.attempt
        if ex.write_timer is not None:
            ex.write_timer.cancel()
            ex.write_timer = None
        if conn.state == CLOSED or not self.alive or ex.stream_reset:
            return
        st.streams.pop(att, None)
        self._h2_release_body(conn, att)
        now = self.env.now
        busy = len(st.streams) > 0
        if self.world.tracer is not None:
            self.world.tracer.append((now, "response_sent", conn.id, status))
        n_bytes = self.response_bytes[ex.route]
        client = conn.client
        if n_bytes == 0:
            client.deliver_h2_response(conn, att, status, conn.to_client_s(now, HEADERS_BYTES, busy))
        else:
            tr = BodyTransfer(n_bytes, st.client_stream_window, st.client_stream_window, att, now, consumes=True)
            tr.status = status
            ex.response_body = tr
            conn.to_client_s(now, HEADERS_BYTES, busy)       # the HEADERS frame goes first
            pump(self.world, conn, st.send, tr, conn.to_client_s, client.on_h2_response_chunk, busy)
        self._h2_maybe_idle(conn)

    def _h2_handler_returned(self, ex: Exchange) -> None:
        """A handler goroutine ended: its slot goes to the next stream waiting for one."""
        conn = ex.conn
        st = conn.h2_server
        st.running -= 1
        if self.alive:                # a killed process's goroutines went with it
            self.add_goroutines(-1)
        if ex.write_timer is not None:
            ex.write_timer.cancel()
            ex.write_timer = None
        if conn.state == CLOSED or not self.alive:
            return
        while st.unstarted and st.running < self.h2_max_streams:
            self._h2_run(conn, st.unstarted.popleft())
        self._h2_maybe_idle(conn)

    def _h2_maybe_idle(self, conn: Conn) -> None:
        st = conn.h2_server
        if not st.streams and not st.unstarted and st.idle_since < 0:
            st.idle_since = self.env.now

    def _h2_on_idle_timeout(self, conn: Conn) -> None:
        """IdleTimeout: a connection with no stream for the whole timeout is closed with GOAWAY."""
        st = conn.h2_server
        st.idle_timer = None
        if conn.state == CLOSED or not self.alive:
            return
        if st.idle_since < 0:
            st.idle_timer = self.timers.start(self.idle_timeout_s, self._h2_on_idle_timeout, conn)
            return
        remaining_s = st.idle_since + self.idle_timeout_s - self.env.now
        if remaining_s > 1e-12:
            st.idle_timer = self.timers.start(remaining_s, self._h2_on_idle_timeout, conn)
        else:
            self.close(conn, reason="idle_timeout")
