"""A handler invocation on the server: its steps, its queries, and its context.

``Exchange`` is the server's view of one request on one connection; ``handle``
is the handler's goroutine as a SimPy process. Steps run in order: CPU bursts on
the process's cores (stretched by the GC tax), off-CPU sleeps, heap
allocations held until return, and queries through the service's
``database/sql`` pool (dial or wait for a connection, then one round trip plus
the query time plus any lock wait).

Cancellation follows Go: the request context ends on a client disconnect
(once the body is read), at the TimeoutHandler deadline, or on a body read
error. It reaches a pool wait or a query only when the route
``honours_context``; a ``db_deadline`` (context.WithTimeout around each query)
always does. A cancelled pool wait leaves the queue; a cancelled query closes
its DB connection (the driver abandons it). CPU work and sleeps are never cut
short: Go cannot pre-empt a goroutine, it stops only when it returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import simpy

if TYPE_CHECKING:  # pragma: no cover
    from sim.server import ServerProcess

OP_CPU = 0
OP_SLEEP = 1
OP_ALLOC = 2
OP_QUERY = 3
OP_CPU_EXP = 4      # exponential CPU time with this mean
OP_SLEEP_EXP = 5

STATUS_OK = 200
STATUS_DB_ERROR = 500
STATUS_BAD_REQUEST = 400
STATUS_NOT_FOUND = 404


class Exchange:
    __slots__ = (
        "server", "conn", "attempt", "route", "start_at", "write_deadline_at", "background_reader",
        "th_timer", "deadline_timer", "detached", "ctx_done", "process", "interruptible", "allocated_b",
        "caller_gone_at", "close_after", "body_ready_at", "body_deadline_at",
    )

    def __init__(self, server: "ServerProcess", conn: Any, attempt: Any, route: int, start_at: float) -> None:
        self.server = server
        self.conn = conn
        self.attempt = attempt
        self.route = route
        self.start_at = start_at
        self.write_deadline_at = float("inf")
        self.background_reader = False
        self.th_timer = None
        self.deadline_timer = None
        self.detached = False
        self.ctx_done = False
        self.process: simpy.Process | None = None
        self.interruptible = False
        self.allocated_b = 0
        self.caller_gone_at: float | None = None
        self.close_after = False
        self.body_ready_at = 0.0
        self.body_deadline_at = float("inf")
        if attempt is not None:
            attempt.exchange = self
            if attempt.finished:            # the caller gave up while the request was on its way
                self.caller_gone_at = attempt.ended_at

    def cancel(self, reason: str) -> None:
        """The request context is cancelled (client gone, TimeoutHandler, read error)."""
        if self.ctx_done:
            return
        self.ctx_done = True
        tracer = self.server.world.tracer
        if tracer is not None:
            tracer.append((self.server.env.now, "ctx_cancelled", self.conn.id, reason))
        plan = self.server.service.route_plans[self.route]
        if plan is not None and plan.honours_context and self.interruptible:
            self.interruptible = False
            self.process.interrupt(reason)

    def deadline_expired(self, _arg: Any = None) -> None:
        """The db_deadline of the current query passed."""
        self.deadline_timer = None
        tracer = self.server.world.tracer
        if tracer is not None:
            tracer.append((self.server.env.now, "db_deadline", self.conn.id, ""))
        if self.interruptible:
            self.interruptible = False
            self.process.interrupt("db_deadline")


def handle(ex: Exchange):
    server = ex.server
    env = server.env
    service = server.service
    world = server.world
    plan = service.route_plans[ex.route]
    status = STATUS_OK
    if ex.body_ready_at > env.now:
        if ex.body_deadline_at < ex.body_ready_at:
            # ReadTimeout is absolute: the body read fails at the deadline, whatever progress it made
            yield env.timeout(ex.body_deadline_at - env.now)
            if not server.alive:
                return
            ex.cancel("read_error")
            ex.close_after = True
            server.end_handler(ex, STATUS_BAD_REQUEST)
            return
        yield env.timeout(ex.body_ready_at - env.now)
        if not server.alive:
            return
        if not service.route_body_unread[ex.route]:
            ex.background_reader = True       # the body hit EOF: Go starts the background read
            server.add_goroutines(1)
            if ex.conn.peer_gone:
                ex.cancel("client_gone")
    if plan is None:  # a path no route serves
        server.end_handler(ex, STATUS_NOT_FOUND)
        return
    faults = world.faults
    if faults.any_route_faults:
        delay = faults.latency_s(service.name, ex.route, env.now, ex.attempt)
        if delay > 0:
            yield env.timeout(delay)
            if not server.alive:
                return
        injected = faults.injected_status(service.name, ex.route, env.now, ex.attempt)
        if injected:
            server.end_handler(ex, injected)
            return
    for op, arg in plan.ops:
        if op == OP_CPU:
            yield server.cores.run(arg)
        elif op == OP_QUERY:
            status = yield from query(ex, plan, arg)
            if status != STATUS_OK:
                break
        elif op == OP_SLEEP:
            yield env.timeout(arg)
        elif op == OP_CPU_EXP:
            yield server.cores.run(arg * service.step_draws.next())
        elif op == OP_SLEEP_EXP:
            yield env.timeout(arg * service.step_draws.next())
        else:  # OP_ALLOC
            ex.allocated_b += arg
            server.add_memory(arg)
        if not server.alive:
            return
    if server.alive:
        server.end_handler(ex, status)


def query(ex: Exchange, plan: Any, target: tuple[str, str]):
    """One query through the pool; returns the handler's status after it."""
    server = ex.server
    env = server.env
    if ex.ctx_done and plan.honours_context:
        return STATUS_DB_ERROR  # database/sql checks the context first
    db_name, table = target
    pool = server.pools[db_name]
    world = server.world
    if plan.db_deadline_s > 0:
        ex.deadline_timer = server.timers.start(plan.db_deadline_s, ex.deadline_expired)
    conn = pool.take_idle()
    phase = 0            # 0 = getting a connection, 1 = dialling, 2 = querying
    waiter = None
    dial_event = None
    try:
        if conn is None:
            if pool.can_open():
                if not pool.reserve_open():
                    return STATUS_DB_ERROR          # EMFILE on the DB dial
                phase = 1
                ex.interruptible = True
                dial_event = env.timeout(pool.dial_s)
                yield dial_event
                conn = pool.opened()
            else:
                waiter = pool.wait()
                ex.interruptible = True
                conn = yield waiter.event
        if not server.alive:
            return STATUS_DB_ERROR
        phase = 2
        ex.interruptible = True
        lock_s = world.faults.lock_wait_s(db_name, table, env.now, ex.attempt)
        yield env.timeout(pool.dial_s + world.query_time_s(db_name, table) + lock_s)
        ex.interruptible = False
        if server.alive:
            pool.release(conn)
        return STATUS_OK
    except simpy.Interrupt:
        if not server.alive:
            return STATUS_DB_ERROR
        if phase == 2:
            pool.release(conn, broken=True)
        elif phase == 1:
            # the dial goes on; its connection lands in the pool (database/sql putConn)
            pool_ref = pool
            dial_event.callbacks.append(lambda _e: pool_ref.adopt_dialled())
        elif waiter is not None:
            if waiter.event.triggered:
                pool.release(waiter.event.value)
            else:
                pool.abandon(waiter)
        return STATUS_DB_ERROR
    finally:
        ex.interruptible = False
        if ex.deadline_timer is not None:
            ex.deadline_timer.cancel()
            ex.deadline_timer = None
