"""An observer of one engine run: handler and pool intervals, and the accounting rules at every sample.

The records a run returns are the client's view (requests and attempts); the server's levels
(``inflight_requests``, ``db_in_use.<db>``, ``goroutines``, ``open_fds``, ``live_heap_mib``) are
sampled counters. To check them against the flows that make them (Little's law per service and
per pool) and against the documented accounting rules, this module wraps a few engine methods
for the duration of one run, *without changing what they do*:

- ``ServerProcess._start_exchange`` / ``end_handler`` / ``die``: each handler's [start, end)
  (a kill ends every handler of the process at the kill instant);
- ``SqlPool.take_idle`` / ``opened`` / ``_put`` / ``release`` / ``close_all``: each connection
  hold [taken, released) (a hand-over to a waiter inside ``_put`` is seen as the pool's
  in-use count going up); ``SqlPool.wait`` / ``abandon``: each wait for a connection;
- ``World._take_sample``: right after each sample, the documented rules computed from the
  live objects (docs/model.md "Goroutines", "File descriptors", docs/outputs.md
  ``live_heap_mib``) next to the values just sampled.

The patches are class attributes set inside ``observe()`` and restored when it exits, in the
process that runs the scenario (the validation runs each scenario in a worker process). If
the engine no longer has one of these methods, ``observe`` raises ``HookMissing`` and the
checks that need it report an error instead of a verdict.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterator

import sim.dbpool as dbpool_module
import sim.server as server_module
import sim.world as world_module

BASE = 4   # stdio + listener fds; main, signals, finaliser, timers goroutines (sim.server)


class HookMissing(RuntimeError):
    """The engine changed: a method the observer wraps is gone."""


@dataclass
class RuleSample:
    """One sample instant, one service: the sampled value and the documented rule's value."""
    at_s: float
    service: str
    level: str
    sampled: float
    rule: float


@dataclass
class Observation:
    handlers: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    holds: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    waits: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    rules: list[RuleSample] = field(default_factory=list)
    final_state: dict[str, dict[str, float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    # open intervals: id -> (object kept alive so its id is not reused, key, start)
    _open_handlers: dict[int, tuple[Any, str, Any, float]] = field(default_factory=dict)
    _open_holds: dict[int, tuple[Any, str, Any, float]] = field(default_factory=dict)
    _open_waits: dict[int, tuple[Any, str, Any, float]] = field(default_factory=dict)
    _pool_key: dict[int, tuple[str, Any]] = field(default_factory=dict)
    _by_proc: dict[int, dict[int, Any]] = field(default_factory=dict)   # id(proc) -> id(ex) -> ex

    def close_open(self, end_at: float) -> None:
        """At the end of the run: intervals still open end at +inf (in flight at the end)."""
        for store, opened in ((self.handlers, self._open_handlers), (self.holds, self._open_holds),
                              (self.waits, self._open_waits)):
            for _obj, key, _owner, start in opened.values():
                store[key].append((start, float("inf")))
            opened.clear()
        self._by_proc.clear()

    def open_handler(self, ex: Any, service: str, proc: Any, start: float) -> None:
        self._open_handlers[id(ex)] = (ex, service, proc, start)
        self._by_proc.setdefault(id(proc), {})[id(ex)] = ex

    def end_handler(self, ex: Any, end: float) -> None:
        item = self._open_handlers.pop(id(ex), None)
        if item is not None:
            self.handlers[item[1]].append((item[3], end))
            self._by_proc[id(item[2])].pop(id(ex), None)

    def live_exchanges(self, proc: Any) -> list[Any]:
        return list(self._by_proc.get(id(proc), {}).values())


def _needed(cls: type, name: str) -> Any:
    fn = getattr(cls, name, None)
    if fn is None:
        raise HookMissing(f"{cls.__module__}.{cls.__name__}.{name} is gone: the observer needs updating")
    return fn


@contextlib.contextmanager
def observe() -> Iterator[Observation]:
    """Patch the engine for one run in this process; yield the ``Observation`` it fills."""
    obs = Observation()
    SP = server_module.ServerProcess
    Pool = dbpool_module.SqlPool
    World = world_module.World
    originals = {(SP, n): _needed(SP, n) for n in ("__init__", "_start_exchange", "end_handler", "die")}
    originals.update({(Pool, n): _needed(Pool, n) for n in ("take_idle", "opened", "_put", "release",
                                                            "close_all", "wait", "abandon")})
    originals[(World, "_take_sample")] = _needed(World, "_take_sample")

    def orig(cls: type, name: str) -> Any:
        return originals[(cls, name)]

    # ---------------------------------------------------------------- handlers
    def sp_init(self, service, generation, instance=0):
        orig(SP, "__init__")(self, service, generation, instance)
        for db, pool in self.pools.items():
            obs._pool_key[id(pool)] = (f"{service.name}.{db}", self)

    def start_exchange(self, ex):
        obs.open_handler(ex, self.service.name, self, self.env.now)
        return orig(SP, "_start_exchange")(self, ex)

    def end_handler(self, ex, status):
        obs.end_handler(ex, self.env.now)
        return orig(SP, "end_handler")(self, ex, status)

    def die(self):
        now = self.env.now
        for ex in obs.live_exchanges(self):
            obs.end_handler(ex, now)
        return orig(SP, "die")(self)

    # ---------------------------------------------------------------- pools
    def pool_key(pool) -> str:
        return obs._pool_key.get(id(pool), ("?", None))[0]

    def open_hold(pool, conn) -> None:
        obs._open_holds[id(conn)] = (conn, pool_key(pool), pool, pool.env.now)

    def close_hold(pool, conn) -> None:
        item = obs._open_holds.pop(id(conn), None)
        if item is None:
            obs.problems.append(f"{pool_key(pool)}: a connection released at {pool.env.now:.6f} s was never taken")
            return
        obs.holds[item[1]].append((item[3], pool.env.now))

    def take_idle(self):
        conn = orig(Pool, "take_idle")(self)
        if conn is not None:
            open_hold(self, conn)
        return conn

    def opened(self):
        conn = orig(Pool, "opened")(self)
        open_hold(self, conn)
        return conn

    def put(self, conn, broken):
        before = self.n_in_use
        result = orig(Pool, "_put")(self, conn, broken)
        if self.n_in_use == before + 1:          # handed to a waiter
            open_hold(self, conn)
        return result

    def release(self, conn, broken=False):
        close_hold(self, conn)
        return orig(Pool, "release")(self, conn, broken)

    def close_all(self):
        now = self.env.now
        for store, opened in ((obs.holds, obs._open_holds), (obs.waits, obs._open_waits)):
            for key in [k for k, v in opened.items() if v[2] is self]:
                _o, name, _p, start = opened.pop(key)
                store[name].append((start, now))
        return orig(Pool, "close_all")(self)

    def wait(self):
        waiter = orig(Pool, "wait")(self)
        obs._open_waits[id(waiter)] = (waiter, pool_key(self), self, self.env.now)
        return waiter

    def abandon(self, waiter):
        if waiter.index >= 0:
            item = obs._open_waits.pop(id(waiter), None)
            if item is not None:
                obs.waits[item[1]].append((item[3], self.env.now))
        return orig(Pool, "abandon")(self, waiter)

    # ---------------------------------------------------------------- rules at each sample
    def take_sample(self, now):
        orig(World, "_take_sample")(self, now)
        try:
            _record_rules(self, now, obs)
        except AttributeError as exc:        # the engine's objects changed shape
            obs.problems.append(f"rules not computable: {exc}")

    patches = {(SP, "__init__"): sp_init, (SP, "_start_exchange"): start_exchange, (SP, "end_handler"): end_handler,
               (SP, "die"): die, (Pool, "take_idle"): take_idle, (Pool, "opened"): opened, (Pool, "_put"): put,
               (Pool, "release"): release, (Pool, "close_all"): close_all, (Pool, "wait"): wait,
               (Pool, "abandon"): abandon, (World, "_take_sample"): take_sample}
    try:
        for (cls, name), fn in patches.items():
            setattr(cls, name, fn)
        yield obs
    finally:
        for (cls, name), fn in originals.items():
            setattr(cls, name, fn)


def rule_values(world: Any, procs: list[Any], obs: Observation) -> dict[str, float]:
    """The documented accounting rules for a set of live processes (summed)."""
    goroutines = fds = live_b = 0.0
    db_open = in_use = waiters = 0.0
    for p in procs:
        live = obs.live_exchanges(p)
        attached = [ex for ex in live if not ex.detached]
        readers = sum(1 for ex in attached if ex.background_reader)
        inner = len(live) if p.timeout_handler_s > 0 else 0
        h2_conns = [c for c in p.open_conns.values() if getattr(c, "h2_server", None) is not None]
        # docs/model.md: HTTP/1 one goroutine per connection, a background reader per in-flight
        # request whose body was read until its client goes (the engine clears the exchange's
        # background_reader then), one per TimeoutHandler-wrapped request while its inner
        # handler runs; HTTP/2 two per connection (serve loop, frame reader), one per running handler
        h2_extra = sum(1 + c.h2_server.running for c in h2_conns)
        goroutines += BASE + p.conns + readers + inner + h2_extra
        pools_open = sum(pool.n_open for pool in p.pools.values())
        db_open += pools_open
        in_use += sum(pool.n_in_use for pool in p.pools.values())
        waiters += sum(pool.n_waiters for pool in p.pools.values())
        fds += BASE + p.conns + pools_open
        mem = p.config.memory
        live_b += (mem.baseline + p.goroutines * mem.per_goroutine + p.conns * mem.per_connection
                   + mem.per_request * len(attached) + sum(ex.allocated_b for ex in live))
    return {"goroutines": goroutines, "open_fds": fds, "live_heap_mib": live_b / 1048576.0,
            "handlers": float(sum(len(obs.live_exchanges(p)) for p in procs)), "db_open": db_open,
            "db_in_use": in_use, "db_waiters": waiters, "server_connections": float(sum(p.conns for p in procs))}


def _record_rules(world: Any, now: float, obs: Observation) -> None:
    levels = world._levels
    groups = [(world.service.name, "", [p for p in world.service.procs if p is not None])]
    if world._per_service_levels:
        groups += [(svc.name, f"svc.{svc.name}.", [p for p in svc.procs if p is not None])
                   for svc in world.services.values()]
    for service, prefix, procs in groups:
        rules = rule_values(world, procs, obs)
        for level in ("goroutines", "open_fds", "live_heap_mib"):
            column = prefix + level
            if column in levels and levels[column]:
                obs.rules.append(RuleSample(now, service, column, float(levels[column][-1]), rules[level]))
        obs.final_state[prefix or "entry"] = rules
