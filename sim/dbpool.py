"""Go's database/sql connection pool, one per (service process, database).

Semantics (design.md §2, database/sql): at most ``max_open_conns`` open
connections (0 = unlimited); an idle connection is reused when one exists; a
caller that finds the pool full waits, and when a connection is released it goes
to a waiter picked at random (``connRequestSet.TakeRandom``); the wait ends when
the caller's context does. Released connections beyond ``max_idle_conns`` are
closed; connections older than ``conn_max_lifetime`` are closed instead of
reused. Opening a connection needs a file descriptor of the process and one
round trip to the database.
"""

from __future__ import annotations

from typing import Callable

import simpy

from sim.schema import PoolConfig


class DbConn:
    __slots__ = ("created_at",)

    def __init__(self, created_at: float) -> None:
        self.created_at = created_at


class PoolWaiter:
    __slots__ = ("event", "index")

    def __init__(self, event: simpy.Event) -> None:
        self.event = event
        self.index = -1


class SqlPool:
    def __init__(self, env: simpy.Environment, config: PoolConfig, rtt_s: float,
                 take_fd: Callable[[], bool], release_fd: Callable[[], None],
                 uniform: Callable[[], float]) -> None:
        self.env = env
        self.config = config
        self.rtt_s = rtt_s          # one round trip to the database: a dial, or a query's own
        self._take_fd = take_fd
        self._release_fd = release_fd
        self._uniform = uniform
        self.n_open = 0          # open or being dialled
        self.n_in_use = 0
        self._idle: list[DbConn] = []
        self._waiters: list[PoolWaiter] = []

    # -- taking -----------------------------------------------------------------
    def take_idle(self) -> DbConn | None:
        lifetime = self.config.conn_max_lifetime
        while self._idle:
            conn = self._idle.pop()
            if lifetime > 0 and self.env.now - conn.created_at >= lifetime:
                self._close(conn)
                continue
            self.n_in_use += 1
            return conn
        return None

    def can_open(self) -> bool:
        return self.config.max_open_conns == 0 or self.n_open < self.config.max_open_conns

    def reserve_open(self) -> bool:
        """Reserve a slot and an fd for a new connection; False if the fd table is full (EMFILE)."""
        if not self._take_fd():
            return False
        self.n_open += 1
        return True

    def opened(self) -> DbConn:
        """The dial of a reserved connection finished: the caller now uses it."""
        self.n_in_use += 1
        return DbConn(self.env.now)

    def wait(self) -> PoolWaiter:
        waiter = PoolWaiter(simpy.Event(self.env))
        waiter.index = len(self._waiters)
        self._waiters.append(waiter)
        return waiter

    def abandon(self, waiter: PoolWaiter) -> None:
        """The waiter's context ended: leave the queue (O(1))."""
        i = waiter.index
        if i < 0:
            return
        last = self._waiters.pop()
        if last is not waiter:
            self._waiters[i] = last
            last.index = i
        waiter.index = -1

    # -- giving back ------------------------------------------------------------
    def release(self, conn: DbConn, broken: bool = False) -> None:
        self.n_in_use -= 1
        self._put(conn, broken)

    def _put(self, conn: DbConn, broken: bool) -> None:
        lifetime = self.config.conn_max_lifetime
        expired = lifetime > 0 and self.env.now - conn.created_at >= lifetime
        if broken or expired:
            self._close(conn)
            self._open_for_waiter()
            return
        if self._waiters:
            waiter = self._take_random_waiter()
            self.n_in_use += 1
            waiter.event.succeed(conn)
            return
        if len(self._idle) < self.config.max_idle_conns:
            self._idle.append(conn)
        else:
            self._close(conn)

    def _close(self, conn: DbConn) -> None:
        self.n_open -= 1
        self._release_fd()

    def _take_random_waiter(self) -> PoolWaiter:
        i = min(int(self._uniform() * len(self._waiters)), len(self._waiters) - 1)
        waiter = self._waiters[i]
        self.abandon(waiter)
        return waiter

    def _open_for_waiter(self) -> None:
        """database/sql's maybeOpenNewConnections: a freed slot dials for a waiter."""
        if not self._waiters or not self.can_open() or not self.reserve_open():
            return
        ev = self.env.timeout(self.rtt_s)
        ev.callbacks.append(self._on_waiter_dial)

    def _on_waiter_dial(self, _event: simpy.Event) -> None:
        self.adopt_dialled()

    def adopt_dialled(self) -> None:
        """A dial finished whose requester has gone: the connection joins the pool."""
        self._put(DbConn(self.env.now), broken=False)

    def close_all(self) -> None:
        """The process died: forget everything (its fds die with it)."""
        self._idle.clear()
        self._waiters.clear()
        self.n_open = 0
        self.n_in_use = 0

    # -- levels -----------------------------------------------------------------
    @property
    def n_waiters(self) -> int:
        return len(self._waiters)
