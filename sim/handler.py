"""A handler invocation on the server: its steps, its queries, and its context.

``Exchange`` is the server's view of one request on one connection and the
handler's goroutine running it. The handler is a chain of callbacks rather than
a SimPy process (a process costs two events of its own per request, a third of
what a simple request costs). Steps run in order: CPU bursts on
the process's cores (stretched by the GC tax), off-CPU sleeps, heap
allocations held until return, and queries through the service's
``database/sql`` pool (dial or wait for a connection, then one round trip plus
the query time plus any lock wait).

Cancellation follows Go: the request context ends on a client disconnect
(once the body is read), at the TimeoutHandler deadline, or on a body read
error. It reaches a pool wait or a query only when the route
``honours_context``; a ``db_deadline`` (context.WithTimeout around each query)
always does. A cancelled pool wait leaves the queue; a cancelled query closes
its DB connection (the driver abandons it); the handler then returns 500 at the
same instant. CPU work and sleeps are never cut short: Go cannot pre-empt a
goroutine, it stops only when it returns.

Every wait carries a token; a wait that was abandoned (cancellation, deadline)
finds its token stale when its event fires and only tidies up.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

INF = math.inf
NAN = math.nan

if TYPE_CHECKING:  # pragma: no cover
    from sim.server import ServerProcess

OP_CPU = 0
OP_SLEEP = 1
OP_ALLOC = 2
OP_QUERY = 3
OP_CPU_EXP = 4      # exponential CPU time with this mean
OP_SLEEP_EXP = 5
OP_CALL = 6         # a call to another service (with fan-out)
OP_CHANCE = 7       # (probability, op, arg): the inner step runs with that probability

STATUS_OK = 200
STATUS_DB_ERROR = 500
STATUS_BAD_REQUEST = 400
STATUS_NOT_FOUND = 404
STATUS_BAD_GATEWAY = 502


# phases of the wait the handler is in, for cancellation
NOT_WAITING = 0
POOL_WAIT = 1
DIALLING = 2
QUERYING = 3
CALLING = 4


class Exchange:
    __slots__ = (
        "server", "conn", "attempt", "route", "start_at", "write_deadline_at", "background_reader",
        "th_timer", "deadline_timer", "detached", "ctx_done", "allocated_b", "caller_gone_at",
        "close_after", "body_ready_at", "body_deadline_at",
        "plan", "op_index", "phase", "token", "waiter", "db_conn", "pool", "query_target",
        "admitted", "shed_entry",
        "h2", "stream_reset", "write_timer", "response_body",
        "calls", "calls_ok", "calls_failed", "calls_need", "calls_fail_handler", "calls_starting",
        "ctx_deadline_at", "ctx_deadline_timer",
    )

    def __init__(self, server: "ServerProcess", conn: Any, attempt: Any, route: int, start_at: float) -> None:
        self.server = server
        self.conn = conn
        self.attempt = attempt
        self.route = route
        self.start_at = start_at
        self.write_deadline_at = INF
        self.background_reader = False
        self.th_timer = None
        self.deadline_timer = None
        self.detached = False
        self.ctx_done = False
        self.allocated_b = 0
        self.caller_gone_at: float | None = None
        self.close_after = False
        self.body_ready_at = 0.0
        self.body_deadline_at = INF
        self.plan = server.service.route_plans[route]
        self.op_index = 0
        self.phase = NOT_WAITING
        self.token = 0
        self.waiter = None
        self.db_conn = None
        self.pool = None
        self.query_target: tuple[str, str] | None = None
        self.admitted = False        # past the shedding gate (holds one of its slots)
        self.shed_entry = None       # waiting in the shedding queue
        # HTTP/2 streams set stream_reset, write_timer and response_body (ServerProcess._h2_run);
        # a call step sets calls and calls_* (_start_calls): unset slots on the common path
        self.h2 = False              # on an HTTP/2 stream
        # the caller's propagated deadline: the handler's context ends then
        self.ctx_deadline_at = attempt.deadline_at if attempt is not None else INF
        self.ctx_deadline_timer = None
        if attempt is not None:
            attempt.exchange = self
            if attempt.finished:            # the caller gave up while the request was on its way
                self.caller_gone_at = attempt.ended_at

    # ------------------------------------------------------------ context
    def cancel(self, reason: str) -> None:
        """The request context is cancelled (client gone, TimeoutHandler, read error)."""
        if self.ctx_done:
            return
        self.ctx_done = True
        tracer = self.server.world.tracer
        if tracer is not None:
            tracer.append((self.server.env.now, "ctx_cancelled", self.conn.id, reason))
        if self.ctx_deadline_timer is not None:
            self.ctx_deadline_timer.cancel()
            self.ctx_deadline_timer = None
        if self.shed_entry is not None:
            self.server.leave_queue(self)
        elif self.plan is not None and self.plan.honours_context and self.phase != NOT_WAITING:
            self._abandon_wait()

    def on_ctx_deadline(self, _arg: Any = None) -> None:
        """The propagated deadline passed: the context ends (what it reaches depends on the route)."""
        self.ctx_deadline_timer = None
        if self.server.alive:
            self.cancel("deadline")

    def deadline_expired(self, _arg: Any = None) -> None:
        """The db_deadline of the current query passed: it ends whatever honours_context says."""
        self.deadline_timer = None
        if not self.server.alive:
            return
        tracer = self.server.world.tracer
        if tracer is not None:
            tracer.append((self.server.env.now, "db_deadline", self.conn.id, ""))
        if self.phase != NOT_WAITING:
            self._abandon_wait()

    def _abandon_wait(self) -> None:
        """Leave the pool queue, or abandon the query; the handler returns 500 at this instant."""
        server = self.server
        if not server.alive:
            return
        pool = self.pool
        phase = self.phase
        self.token += 1            # whatever the wait was waiting for is now stale
        if phase == CALLING:
            self._cancel_calls()
        elif phase == QUERYING:
            pool.release(self.db_conn, broken=True)
            self.db_conn = None
        elif phase == POOL_WAIT:
            waiter = self.waiter
            if waiter.event.triggered:
                pool.release(waiter.event.value)     # handed a connection in the same instant
            else:
                pool.abandon(waiter)
            self.waiter = None
        # DIALLING: the dial goes on; its connection joins the pool when it lands (_on_dialled)
        self.phase = NOT_WAITING
        ev = server.env.timeout(0)
        ev.callbacks.append(self._after_failed_query)

    def _after_failed_query(self, _event: Any) -> None:
        self._query_finished(STATUS_DB_ERROR)

    # ------------------------------------------------------------ running
    def start(self) -> None:
        """The handler goroutine starts: read the body if it is still arriving, then the steps."""
        env = self.server.env
        now = env.now
        if self.body_ready_at > now:
            if self.body_deadline_at < self.body_ready_at:
                ev = env.timeout(self.body_deadline_at - now)
                ev.callbacks.append(self._on_body_deadline)
            elif self.body_ready_at != INF:
                ev = env.timeout(self.body_ready_at - now)
                ev.callbacks.append(self._on_body_read)
            return     # an HTTP/2 body still arriving: ``body_arrived`` goes on
        self._begin_steps()

    def body_arrived(self) -> None:
        """HTTP/2: the last chunk of the body the handler is reading has arrived."""
        self.body_ready_at = self.server.env.now
        if self.server.alive:
            self._begin_steps()

    def _on_body_deadline(self, _event: Any) -> None:
        # ReadTimeout is absolute: the body read fails at the deadline, whatever progress it made
        if not self.server.alive or self.body_ready_at <= self.server.env.now:
            return
        self.cancel("read_error")
        self.close_after = True
        self.server.end_handler(self, STATUS_BAD_REQUEST)

    def _on_body_read(self, _event: Any) -> None:
        server = self.server
        if not server.alive:
            return
        if not server.service.route_body_unread[self.route] and not self.detached:
            self.background_reader = True       # the body hit EOF: Go starts the background read
            server.add_goroutines(1)
            if self.conn.peer_gone:
                server.reader_saw_eof(self)
        self._begin_steps()

    def _begin_steps(self) -> None:
        server = self.server
        att = self.attempt
        if att is not None and att.to_server_s != att.to_server_s:   # NaN: the first time
            att.to_server_s = server.env.now - att.start_at
        if self.plan is None:  # a path no route serves
            server.end_handler(self, STATUS_NOT_FOUND)
            return
        if server.shedding is not None:
            server.admit(self)        # the shedding gate calls begin_admitted, now or later
            return
        self.begin_admitted()

    def begin_admitted(self) -> None:
        """Past the shedding gate (or with none): injected faults, then the steps."""
        server = self.server
        faults = server.world.faults
        if faults.any_route_faults:
            service = server.service
            env = server.env
            delay = faults.latency_s(service.name, self.route, env.now, self.attempt, server.instance)
            injected = 0
            if delay <= 0:
                injected = faults.injected_status(service.name, self.route, env.now, self.attempt, server.instance)
            if injected:
                server.end_handler(self, injected)
                return
            if delay > 0:
                ev = env.timeout(delay)
                ev.callbacks.append(self._after_injected_latency)
                return
        self._run_steps()

    def _after_injected_latency(self, _event: Any) -> None:
        server = self.server
        if not server.alive:
            return
        injected = server.world.faults.injected_status(server.service.name, self.route, server.env.now,
                                                       self.attempt, server.instance)
        if injected:
            server.end_handler(self, injected)
            return
        self._run_steps()

    def _resume(self, _event: Any) -> None:
        if self.server.alive:
            self._run_steps()

    def _run_steps(self) -> None:
        """Run steps from ``op_index`` until one has to wait (its event resumes us) or the end."""
        server = self.server
        ops = self.plan.ops
        n_ops = len(ops)
        while self.op_index < n_ops:
            op, arg = ops[self.op_index]
            self.op_index += 1
            if op == OP_CHANCE:
                p, op, arg = arg
                if server.service.chance_draws.next() >= p:
                    continue
            if op == OP_CPU:
                server.cores.run(arg).callbacks.append(self._resume)
                return
            if op == OP_QUERY:
                self._start_query(arg)
                return
            if op == OP_SLEEP:
                server.env.timeout(arg).callbacks.append(self._resume)
                return
            if op == OP_CPU_EXP:
                server.cores.run(arg * server.service.step_draws.next()).callbacks.append(self._resume)
                return
            if op == OP_SLEEP_EXP:
                server.env.timeout(arg * server.service.step_draws.next()).callbacks.append(self._resume)
                return
            if op == OP_CALL:
                self._start_calls(arg)
                return
            self.allocated_b += arg          # OP_ALLOC
            server.add_memory(arg)
            if not server.alive:
                return
        server.end_handler(self, STATUS_OK)

    # ------------------------------------------------------------ calls
    def _start_calls(self, arg: tuple) -> None:
        """A call step: ``fanout`` requests to the callee through this process's edge client; the
        handler goes on once ``need`` of them succeeded (the rest are cancelled), or fails (502)
        once too many failed. A route that honours its context passes its deadline and has its
        calls cancelled when the context ends; one that does not calls with a fresh context."""
        callee, route, fanout, need, fail_handler = arg
        server = self.server
        world = server.world
        client = server.callers[callee]
        honours = self.plan.honours_context
        if self.ctx_done and honours:
            self._call_step_failed()
            return
        self.phase = CALLING
        self.token += 1
        self.calls = []
        self.calls_ok = 0
        self.calls_failed = 0
        self.calls_need = need
        self.calls_fail_handler = fail_handler
        self.calls_starting = True
        deadline_at = self.ctx_deadline_at if honours and client.propagates else INF
        for _ in range(fanout):
            req = world.new_request(client, route)
            req.parent = self
            req.deadline_at = deadline_at
            self.calls.append(req)
            client.start_request(req)
        self.calls_starting = False
        self._judge_calls()

    def call_done(self, request: Any, code: int) -> None:
        """A downstream request of the current call step ended."""
        if self.calls is None or request not in self.calls or not self.server.alive:
            return
        if code == 0:
            self.calls_ok += 1
        else:
            self.calls_failed += 1
        if not self.calls_starting:
            self._judge_calls()

    def _judge_calls(self) -> None:
        calls = self.calls
        if calls is None:
            return
        total = len(calls)
        if self.calls_ok >= self.calls_need:
            self._cancel_calls()
            self.phase = NOT_WAITING
            self._run_steps()
        elif self.calls_failed > total - self.calls_need:
            self._cancel_calls()
            self.phase = NOT_WAITING
            if self.calls_fail_handler:
                self.server.end_handler(self, STATUS_BAD_GATEWAY)
            else:
                self._run_steps()

    def _cancel_calls(self) -> None:
        """The handler no longer waits for the calls still out: they are cancelled."""
        calls, self.calls = self.calls, None
        if calls:
            for req in calls:
                if not req.finished:
                    req.client.cancel_request(req)

    def _call_step_failed(self) -> None:
        self.calls = None
        self.phase = NOT_WAITING
        self.server.end_handler(self, STATUS_DB_ERROR)

    # ------------------------------------------------------------ queries
    def _start_query(self, target: tuple[str, str]) -> None:
        """One query through the pool: a connection (idle, dialled or waited for), then the query."""
        server = self.server
        plan = self.plan
        if self.ctx_done and plan.honours_context:
            self._query_finished(STATUS_DB_ERROR)    # database/sql checks the context first
            return
        pool = server.pools[target[0]]
        self.pool = pool
        self.query_target = target
        if plan.db_deadline_s > 0:
            self.deadline_timer = server.timers.start(plan.db_deadline_s, self.deadline_expired)
        conn = pool.take_idle()
        if conn is not None:
            self._run_query(conn)
            return
        self.token += 1
        if pool.can_open():
            if not pool.reserve_open():
                self._query_finished(STATUS_DB_ERROR)   # EMFILE on the DB dial
                return
            self.phase = DIALLING
            server.env.timeout(pool.rtt_s, self.token).callbacks.append(self._on_dialled)
        else:
            self.phase = POOL_WAIT
            self.waiter = pool.wait()
            self.waiter.event.callbacks.append(self._on_pool_conn)

    def _on_dialled(self, event: Any) -> None:
        if not self.server.alive:
            return
        if event.value != self.token:
            self.pool.adopt_dialled()     # requester gone: database/sql putConn keeps it
            return
        self._run_query(self.pool.opened())

    def _on_pool_conn(self, event: Any) -> None:
        if not self.server.alive or self.waiter is None or event is not self.waiter.event:
            return                         # abandoned: _abandon_wait gave the connection back
        self.waiter = None
        self._run_query(event.value)

    def _run_query(self, conn: Any) -> None:
        server = self.server
        world = server.world
        env = server.env
        db_name, table = self.query_target
        self.phase = QUERYING
        self.db_conn = conn
        self.token += 1
        lock_s = world.faults.lock_wait_s(db_name, table, env.now, self.attempt)
        query_s = self.pool.rtt_s + world.query_time_s(db_name, table) + lock_s
        env.timeout(query_s, self.token).callbacks.append(self._on_query_done)

    def _on_query_done(self, event: Any) -> None:
        if not self.server.alive or event.value != self.token:
            return                         # abandoned: the connection was closed then
        self.pool.release(self.db_conn)
        self.db_conn = None
        self._query_finished(STATUS_OK)

    def _query_finished(self, status: int) -> None:
        self.phase = NOT_WAITING
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        if not self.server.alive:
            return
        if status != STATUS_OK:
            self.server.end_handler(self, status)
            return
        self._run_steps()
