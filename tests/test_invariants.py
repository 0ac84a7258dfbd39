"""Accounting invariants of the engine, checked on small random scenarios.

A seeded generator draws small scenarios that mix what makes the engine's
bookkeeping hard: OOM kills and restarts, slow (attack) clients, TLS, database
pools with deadlines and cancellation, TimeoutHandler, small backlogs and fd
limits, RTT jitter, same-instant races (arrivals on a grid that the RTTs and
timeouts share), application and transparent retries. Each runs in a ``World``
built directly, so that after ``world.run()`` the live process, the clients and
every connection, dial and handler can be inspected against the identities the
model promises:

- fds == 4 (stdio + listener) + server connections + the pools' open DB connections;
- goroutines == 4 + connections + background readers + TimeoutHandler inner handlers;
- the live heap == MemoryConfig's baseline + per goroutine + per connection +
  per in-flight request + the handlers' allocations;
- each pool: n_open >= n_in_use + idle, n_in_use == the handlers holding a
  connection, every waiter a handler waiting (and every waiting handler queued);
- no open client connection without an owner (the idle pool, a dial, an attempt);
  every waiting attempt queued with a dial or for a dial slot;
- the sampled levels are never negative (and fds, goroutines >= 4 + connections);
- the records: successes + failures + incomplete == arrivals, one attempt record
  per attempt started (so attempts >= requests), outcomes matching.

"Healthy" scenarios (nothing that may hang for ever, minutes to drain) must
also drain: every request ends, no handler or pool user is left, and every
open connection is idle on both ends. A reviewer's random checker of this kind
found the bugs of ``test_regressions.py``. The default run checks
``N_DEFAULT`` scenarios of each kind (a few seconds); ``-m slow`` checks
``N_SLOW`` more of each. The generator is plain seeded ``random``: the same
seeds every run, and a failure names its seed (``random_scenario(seed, dir,
healthy)`` rebuilds it).
"""

from __future__ import annotations

import itertools
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sim.server as server_module
import sim.slow_clients as slow_module
import sim.transport as transport_module
from sim.client import Attempt
from sim.connection import ACTIVE, HANDSHAKE, IDLE, NEW, QUEUED
from sim.handler import DIALLING, POOL_WAIT, QUERYING
from sim.result import INCOMPLETE, SUCCESS
from sim.scenario_loader import scenario_from_dict
from sim.server import BASE_FDS, BASE_GOROUTINES, ServerProcess
from sim.world import World

N_DEFAULT = 4000
N_SLOW = 20000
GRID_S = 0.125      # arrivals, RTTs and timeouts share this grid: same-instant races


# ------------------------------------------------------------------ generator


def random_scenario(seed: int, trace_dir: Path, healthy: bool = False) -> dict[str, Any]:
    """A small scenario (6 s, 2 to 30 requests on a 125 ms grid) drawn from ``seed``.

    ``healthy``: nothing that may legitimately hang a request for ever (no slow
    clients, no fd limit, no closed-loop users), mostly no client-side timeout
    that would hide a lost request, and 600 s to drain: every request must end.
    """
    rnd = random.Random(seed * 2 + healthy)
    pick = rnd.choice
    routes_used = ["fast", "slow", "db", "post", "cpu"]
    n = rnd.randint(2, 30)
    rows = sorted((rnd.randint(0, 24) * GRID_S, pick(routes_used)) for _ in range(n))
    path = trace_dir / f"arrivals_{seed}.csv"
    path.write_text("at_s,route\n" + "".join(f"{t},{r}\n" for t, r in rows))

    transport: dict[str, Any] = {
        "rtt": pick([0, "250ms", "125ms", "10ms"]),
        "rtt_jitter": pick([0, 0, 0, "2ms", "60ms"]),
        "client_timeout": pick([0, "500ms", "1s", "1.5s"]),
        "max_conns_per_host": pick([0, 0, 1, 2]),
        "response_header_timeout": pick([0, 0, "750ms"]),
        "dial_timeout": pick([0, "1s", "30s"]),
        "max_idle_conns_per_host": pick([1, 2]),
        "idle_conn_timeout": pick(["90s", "90s", "375ms"]),
        "disable_keep_alives": rnd.random() < 0.15,
    }
    if rnd.random() < 0.3:
        transport["tls"] = {"enabled": True, "handshake_timeout": pick(["250ms", "10s"]),
                            "version": pick(["1.2", "1.3"]), "resumption": rnd.random() < 0.5}
    server = {"idle_timeout": pick([0, "500ms", "1s"]), "write_timeout": pick([0, 0, "750ms"]),
              "timeout_handler": pick([0, 0, "625ms"]), "read_header_timeout": pick([0, 0, "500ms"]),
              "read_timeout": pick([0, 0, 0, "1.25s"]), "accept_backlog": pick([1, 2, 4096])}
    memory: dict[str, Any] = {}
    if rnd.random() < 0.4:
        memory = {"limit": pick(["32.1MiB", "32.2MiB", "32.5MiB"]), "restart_after": pick([0, "250ms", "1s"])}
    faults: list[dict[str, Any]] = []
    if rnd.random() < 0.3 and not healthy:
        faults.append({"kind": "slow_clients", "target": "api", "at": pick(["0s", "1s"]), "duration": "2s",
                       "connections_per_s": pick([5, 50]), "bytes_per_s": pick([0, 100, 400, 1000]),
                       "body_bytes": pick([0, 500, 2000]), "route": pick(["", "fast", "slow", "post"])})
    if rnd.random() < 0.15:
        faults.append({"kind": "db_lock", "target": "d.t", "at": "1s", "duration": "1s", "lock_wait": "500ms"})
    if rnd.random() < 0.15:
        faults.append({"kind": "latency", "target": "api", "at": "0.5s", "duration": "2s", "delay": "250ms"})
    if rnd.random() < 0.15:
        faults.append({"kind": "error_rate", "target": "api", "at": "0s", "rate": 0.5, "status": 503})
    pools = {"d": {"max_open_conns": pick([0, 1, 2]), "max_idle_conns": pick([0, 1, 2]),
                   "conn_max_lifetime": pick([0, "500ms"])}}
    honours = rnd.random() < 0.5
    routes = {
        "fast": {"steps": [{"alloc": pick([1, 65536])}]},
        "slow": {"steps": [{"sleep": pick(["250ms", "500ms", "1s", "2s"])}], "method": pick(["GET", "POST"])},
        "db": {"steps": [{"query": "d.t"}, {"alloc": 4096}, {"query": "d.t"}], "honours_context": honours,
               "db_deadline": pick([0, "375ms"])},
        "post": {"steps": [{"query": "d.t"}, {"sleep": "250ms"}], "method": "POST", "request_body": True,
                 "honours_context": honours},
        "cpu": {"steps": [{"cpu": pick(["5ms", "125ms"]), "distribution": pick(["constant", "exponential"])}]},
    }
    service = {"routes": routes, "server": server, "memory": memory, "pools": pools,
               "fd_limit": pick([8, 9, 10, 1000]), "cpu": {"cores": pick([1, 2])},
               "gc": {"enabled": rnd.random() < 0.2}}
    retry = {"max_attempts": pick([1, 2, 3]), "backoff": pick(["none", "exponential"]),
             "backoff_base": "125ms", "jitter": pick(["none", "full"])}
    clients: dict[str, Any] = {"c": {"target": "api", "instances": pick([1, 1, 2]), "load": {"trace": str(path)},
                                     "transport": transport, "retry": retry}}
    if rnd.random() < 0.2 and not healthy:
        clients["u"] = {"target": "api", "load": {"kind": "closed", "users": rnd.randint(1, 3),
                                                  "think_time": "250ms", "routes": {"fast": 1, "db": 1}},
                        "transport": {"rtt": "10ms", "client_timeout": pick([0, "1s"])}}
    databases = {"d": {"rtt": "62.5ms", "tables": {"t": {"query_time": pick(["250ms", "1s"]),
                                                          "distribution": pick(["constant", "exponential"])}}}}
    if healthy:
        service["fd_limit"] = 1000
        transport["client_timeout"] = pick([0, 0, 0, "1.5s"])
        transport["response_header_timeout"] = pick([0, 0, 0, "750ms"])
        return {"duration": "600s", "sample_interval": "10s", "seed": seed, "services": {"api": service},
                "clients": clients, "databases": databases, "faults": faults}
    return {"duration": "6s", "sample_interval": "500ms", "seed": seed, "services": {"api": service},
            "clients": clients, "databases": databases, "faults": faults}


# ------------------------------------------------------------------- tracking


class Tracker:
    """Every connection, dial and handler invocation the engine creates, and the handlers that ended."""

    def __init__(self) -> None:
        self.conns: list[Any] = []
        self.dials: list[Any] = []
        self.exchanges: list[Any] = []
        self.ended: set[int] = set()
        self.problems: list[str] = []


@pytest.fixture
def tracker(monkeypatch):
    t = Tracker()

    class TrackedConn(transport_module.Conn):
        __slots__ = ()

        def __init__(self, *args):
            super().__init__(*args)
            t.conns.append(self)

    class TrackedDial(transport_module.Dial):
        __slots__ = ()

        def __init__(self, *args):
            super().__init__(*args)
            t.dials.append(self)

    class TrackedExchange(server_module.Exchange):
        __slots__ = ()

        def __init__(self, *args):
            super().__init__(*args)
            t.exchanges.append(self)

    original_end_handler = ServerProcess.end_handler

    def end_handler(self, ex, status):
        if id(ex) in t.ended:
            t.problems.append(f"handler on conn {ex.conn.id} ended twice")
        t.ended.add(id(ex))
        original_end_handler(self, ex, status)

    monkeypatch.setattr(transport_module, "Conn", TrackedConn)
    monkeypatch.setattr(slow_module, "Conn", TrackedConn)
    monkeypatch.setattr(transport_module, "Dial", TrackedDial)
    monkeypatch.setattr(server_module, "Exchange", TrackedExchange)
    monkeypatch.setattr(ServerProcess, "end_handler", end_handler)
    return t


# --------------------------------------------------------------------- checks


def check_process(world: World, t: Tracker) -> list[str]:
    """Identities of the live process at the end of the run."""
    p = world.service.current
    if p is None:
        return []
    probs: list[str] = []
    pools = list(p.pools.values())
    n_db = sum(pool.n_open for pool in pools)
    if p.fds != BASE_FDS + p.conns + n_db:
        probs.append(f"fds {p.fds} != {BASE_FDS} + {p.conns} conns + {n_db} db")
    if (world.peak_fds < p.fds or world.peak_goroutines < p.goroutines
            or world.peak_server_connections < p.conns or world.peak_memory_b < p.memory_b - 1e-6):
        probs.append("a peak below the current level")
    if p.fds > p.fd_limit:
        probs.append(f"fds {p.fds} above the limit {p.fd_limit}")
    if p.conns != len(p.open_conns):
        probs.append(f"conns {p.conns} != {len(p.open_conns)} open")
    for conn in p.open_conns.values():
        if conn.server is not p or conn.state not in (HANDSHAKE, NEW, ACTIVE, IDLE):
            probs.append(f"open conn {conn.id} in state {conn.state}")
        if conn.slow is None and conn.peer_gone and conn.state != ACTIVE:
            probs.append(f"server keeps conn {conn.id} (state {conn.state}) after the client's FIN")
    for conn in p.accept_queue:
        if conn.state != QUEUED:
            probs.append(f"queued conn {conn.id} in state {conn.state}")

    live = [ex for ex in t.exchanges if ex.server is p and id(ex) not in t.ended]
    attached = [ex for ex in live if not ex.detached]
    if p.inflight != len(live):
        probs.append(f"inflight {p.inflight} != {len(live)} running handlers")
    if sum(p.inflight_by_route) != p.inflight or min(p.inflight_by_route) < 0:
        probs.append(f"inflight_by_route {p.inflight_by_route} vs {p.inflight}")
    readers = sum(1 for ex in attached if ex.background_reader)
    inner = len(live) if p.timeout_handler_s > 0 else 0
    expected_g = BASE_GOROUTINES + p.conns + readers + inner
    if p.goroutines != expected_g:
        probs.append(f"goroutines {p.goroutines} != {BASE_GOROUTINES} + {p.conns} conns + {readers} readers"
                     f" + {inner} TimeoutHandler")
    mem = p.config.memory
    expected_b = (mem.baseline + p.goroutines * mem.per_goroutine + p.conns * mem.per_connection
                  + mem.per_request * len(attached) + sum(ex.allocated_b for ex in live))
    if not math.isclose(p.live_b, expected_b, rel_tol=0, abs_tol=1e-3):
        probs.append(f"live heap {p.live_b} != {expected_b} (MemoryConfig accounting)")
    if p.gc.garbage_b < 0:
        probs.append(f"garbage {p.gc.garbage_b} < 0")

    for name, pool in p.pools.items():
        users = [ex for ex in live if ex.pool is pool]
        holding = sum(1 for ex in users if ex.phase == QUERYING
                      or (ex.phase == POOL_WAIT and ex.waiter is not None and ex.waiter.event.triggered))
        if pool.n_in_use < 0 or pool.n_open < pool.n_in_use + len(pool._idle):
            probs.append(f"pool {name}: open {pool.n_open} < in use {pool.n_in_use} + idle {len(pool._idle)}")
        if pool.config.max_open_conns and pool.n_open > pool.config.max_open_conns:
            probs.append(f"pool {name}: open {pool.n_open} > max {pool.config.max_open_conns}")
        if pool.n_in_use != holding:
            probs.append(f"pool {name}: in use {pool.n_in_use} != {holding} handlers holding a connection")
        queued = {id(w) for w in pool._waiters}
        waiting = {id(ex.waiter) for ex in users if ex.phase == POOL_WAIT and ex.waiter is not None
                   and not ex.waiter.event.triggered}
        if queued != waiting:
            probs.append(f"pool {name}: {len(queued)} waiters queued, {len(waiting)} handlers waiting")
        for i, w in enumerate(pool._waiters):
            if w.index != i:
                probs.append(f"pool {name}: waiter index {w.index} at {i}")
        dialling = sum(1 for ex in users if ex.phase == DIALLING)
        if pool.n_open < pool.n_in_use + len(pool._idle) + dialling:
            probs.append(f"pool {name}: open {pool.n_open} < {pool.n_in_use} in use + {len(pool._idle)} idle"
                         f" + {dialling} dialling")
    return probs


def check_clients(world: World, t: Tracker) -> list[str]:
    """Every open client connection has an owner; every waiting attempt waits somewhere. The
    checks are per host transport (a client process's Go Transport pool towards one instance)."""
    probs: list[str] = []
    dial_of = {id(d.conn): d for d in t.dials}
    instances = [h for inst in itertools.chain.from_iterable(world.clients.values()) for h in inst.hosts]
    if world.client_conns != sum(inst.n_conns for inst in instances):
        probs.append(f"client_conns {world.client_conns} != sum of n_conns")
    for inst in instances:
        mine = [c for c in t.conns if c.client is inst and c.client_open]
        if len(mine) != inst.n_conns:
            probs.append(f"{inst.caller.name}.{inst.caller.index}: n_conns {inst.n_conns} != {len(mine)} open")
        if inst.max_conns and inst.n_conns > inst.max_conns:
            probs.append(f"{inst.caller.name}.{inst.caller.index}: {inst.n_conns} conns > MaxConnsPerHost {inst.max_conns}")
        if len(inst.idle) > inst.max_idle_per_host:
            probs.append(f"{inst.caller.name}.{inst.caller.index}: {len(inst.idle)} idle > MaxIdleConnsPerHost")
        idle_ids = {id(c) for c in inst.idle}
        for c in mine:
            user = c.attempt
            dial = dial_of.get(id(c))
            if c.in_pool:
                if id(c) not in idle_ids:
                    probs.append(f"conn {c.id} in_pool but not in the idle list")
                continue
            if not c.established:
                if dial is None or dial.done:
                    probs.append(f"conn {c.id} not established and no dial in flight")
                continue
            if isinstance(user, transport_module.Dial) and not user.done:
                continue                  # TLS handshake in flight
            if isinstance(user, Attempt) and user.conn is c and not user.finished:
                continue
            probs.append(f"orphan client conn {c.id}: owner {type(user).__name__}, server state {c.state}")
        for c in inst.idle:
            if not c.client_open or not c.in_pool:
                probs.append(f"idle list holds conn {c.id} (open {c.client_open}, in_pool {c.in_pool})")
        wanters = {id(a) for a in inst._wanters}
        slot_waiters = {id(a) for a in inst._slot_waiters if a.waiting}
        if slot_waiters and not (inst.max_conns and inst.n_conns >= inst.max_conns):
            probs.append(f"{inst.caller.name}.{inst.caller.index}: {len(slot_waiters)} wait for a dial slot with "
                         f"{inst.n_conns}/{inst.max_conns} conns")
        dialling_for = {id(d.attempt) for d in t.dials if not d.done and d.attempt is not None
                        and d.conn.client is inst}
        for req in world.inflight.values():
            att = req.current
            if att is None or att.transport is not inst:
                continue
            if att.waiting:
                if inst.keep_alive and id(att) not in wanters:
                    probs.append(f"request {req.id}: waiting attempt not in the wait queue")
                if id(att) not in slot_waiters and id(att) not in dialling_for:
                    probs.append(f"request {req.id}: waiting with neither a dial nor a dial-slot place")
                if att.conn is not None or att.finished:
                    probs.append(f"request {req.id}: waiting attempt finished or on a connection")
            elif att.conn is not None:
                if att.finished or att.conn.attempt is not att or not att.conn.client_open:
                    probs.append(f"request {req.id}: attempt on conn {att.conn.id} not owned by it")
    return probs


def check_records(world: World, result) -> list[str]:
    probs: list[str] = []
    req, att = result.requests, result.attempts
    err = req["error"]
    n = len(err)
    arrivals = world._request_ids
    successes = int(np.sum(err == SUCCESS))
    failures = int(np.sum(err > 0))
    incomplete = int(np.sum(err == INCOMPLETE))
    if successes + failures + incomplete != arrivals or n != arrivals:
        probs.append(f"records: {successes} + {failures} + {incomplete} != {arrivals} arrivals ({n} rows)")
    if incomplete != len(world.inflight):
        probs.append(f"records: {incomplete} incomplete != {len(world.inflight)} in flight")
    if len(np.unique(req["request_id"])) != n:
        probs.append("records: duplicate request ids")
    if result.counters["requests_finished"] != successes + failures:
        probs.append("records: requests_finished != successes + failures")
    if n and (req["attempts"] < 1).any():
        probs.append("records: a request with no attempt")
    n_rows = len(att["error"])
    if n_rows < n or int(req["attempts"].sum()) != n_rows:
        probs.append(f"records: {n_rows} attempt rows for {int(req['attempts'].sum())} attempts started")
    numbers: dict[int, list[int]] = {}
    last_error: dict[int, int] = {}
    for rid, number, code in zip(att["request_id"].tolist(), att["attempt"].tolist(), att["error"].tolist()):
        numbers.setdefault(rid, []).append(number)
        last_error[rid] = code if number >= max(numbers[rid]) else last_error[rid]
    for rid, attempts, code, arrival, end in zip(req["request_id"].tolist(), req["attempts"].tolist(),
                                                 err.tolist(), req["arrival_at"].tolist(), req["end_at"].tolist()):
        rows = numbers.get(rid, [])
        if sorted(rows) != list(range(attempts)):
            probs.append(f"request {rid}: attempt rows {sorted(rows)} for {attempts} attempts")
        elif code != INCOMPLETE and last_error.get(rid) != code:
            probs.append(f"request {rid}: outcome {code}, last attempt {last_error.get(rid)}")
        if code == INCOMPLETE:
            if not math.isnan(end):
                probs.append(f"request {rid}: incomplete with an end")
        elif not arrival - 1e-12 <= end <= world.milestones.end_at_s + 1e-12:
            probs.append(f"request {rid}: ends at {end}, arrived at {arrival}")
    return probs


def check_levels(result) -> list[str]:
    probs: list[str] = []
    lv = result.levels
    for name, values in lv.items():
        if len(values) and np.nanmin(values) < 0:
            probs.append(f"level {name} negative: {np.nanmin(values)}")
    alive = lv["alive"] > 0
    if (lv["open_fds"][alive] < BASE_FDS + lv["server_connections"][alive]).any():
        probs.append("level open_fds below 4 + server_connections")
    if (lv["goroutines"][alive] < BASE_GOROUTINES + lv["server_connections"][alive]).any():
        probs.append("level goroutines below 4 + server_connections")
    if (lv["memory_mib"] < lv["live_heap_mib"] - 1e-9).any():
        probs.append("level memory below the live heap")
    return probs


def check_drained(world: World, result, t: Tracker) -> list[str]:
    """A healthy run, minutes after its last arrival: every request ended and both ends are at rest."""
    probs: list[str] = []
    incomplete = int(np.sum(result.requests["error"] == INCOMPLETE))
    if incomplete:
        probs.append(f"drained: {incomplete} requests never ended")
    p = world.service.current
    open_ids: set[int] = set()
    if p is not None:
        open_ids = set(p.open_conns)
        if p.inflight or p.accept_queue:
            probs.append(f"drained: {p.inflight} handlers running, {len(p.accept_queue)} queued")
        for name, pool in p.pools.items():
            if pool.n_in_use or pool._waiters or pool.n_open != len(pool._idle):
                probs.append(f"drained: pool {name} open {pool.n_open} in use {pool.n_in_use} "
                             f"idle {len(pool._idle)} waiters {len(pool._waiters)}")
        for conn in p.open_conns.values():
            if conn.state not in (NEW, IDLE) or not conn.client_open or not conn.in_pool:
                probs.append(f"drained: server conn {conn.id} state {conn.state}, client open "
                             f"{conn.client_open} in pool {conn.in_pool}")
    for conn in t.conns:
        if conn.client_open and (not conn.in_pool or conn.id not in open_ids or conn.server is not p):
            probs.append(f"drained: client conn {conn.id} open (in pool {conn.in_pool}) without its server end")
    return probs


def run_and_check(seed: int, trace_dir: Path, t: Tracker, healthy: bool = False) -> tuple[list[str], dict]:
    data = random_scenario(seed, trace_dir, healthy)
    world = World(scenario_from_dict(data), seed)
    result = world.run()
    probs = list(t.problems)
    probs += check_process(world, t)
    probs += check_clients(world, t)
    probs += check_records(world, result)
    probs += check_levels(result)
    if healthy:
        probs += check_drained(world, result, t)
    return probs, data


# ---------------------------------------------------------------------- tests


def test_generator_is_deterministic_and_varied(tmp_path):
    """The same seed draws the same scenario; a default batch covers every feature it mixes."""
    assert random_scenario(7, tmp_path) == random_scenario(7, tmp_path)
    assert random_scenario(7, tmp_path, healthy=True) == random_scenario(7, tmp_path, healthy=True)
    batch = [random_scenario(s, tmp_path) for s in range(1000)]

    def count(pred) -> int:
        return sum(1 for d in batch if pred(d))

    def svc(d):
        return d["services"]["api"]

    def tr(d):
        return d["clients"]["c"]["transport"]

    share = 50                       # every feature in at least 5% of the scenarios
    assert count(lambda d: svc(d)["memory"]) > share
    assert count(lambda d: svc(d)["memory"] and svc(d)["memory"]["restart_after"]) > share
    assert count(lambda d: any(f["kind"] == "slow_clients" for f in d["faults"])) > share
    assert count(lambda d: "tls" in tr(d)) > share
    assert count(lambda d: svc(d)["server"]["timeout_handler"]) > share
    assert count(lambda d: svc(d)["server"]["accept_backlog"] < 4096) > share
    assert count(lambda d: svc(d)["fd_limit"] < 1000) > share
    assert count(lambda d: tr(d)["rtt_jitter"]) > share
    assert count(lambda d: d["clients"]["c"]["retry"]["max_attempts"] > 1) > share
    assert count(lambda d: svc(d)["routes"]["db"]["db_deadline"]) > share
    assert count(lambda d: "u" in d["clients"]) > share


def check_seeds(seeds: range, tmp_path: Path, tracker: Tracker, healthy: bool) -> None:
    failures = []
    for seed in seeds:
        tracker.__init__()
        probs, _ = run_and_check(seed, tmp_path, tracker, healthy)
        if probs:
            failures.append(f"seed {seed} (healthy={healthy}): " + "; ".join(probs[:6]))
    assert not failures, "\n".join(failures[:10])


def batches(n_seeds: int, n_batches: int, first: int = 0) -> list[range]:
    size = n_seeds // n_batches
    return [range(first + i * size, first + (i + 1) * size) for i in range(n_batches)]


@pytest.mark.parametrize("seeds", batches(N_DEFAULT, 16), ids=lambda r: f"{r.start}-{r.stop - 1}")
def test_accounting_identities_hold_at_the_end_of_random_runs(seeds, tmp_path, tracker):
    """fds, goroutines, live heap, pools, client connections and waiters, levels and
    records are consistent at the end of ``N_DEFAULT`` random 6 s runs (kills,
    slow clients, TLS, deadlines, small backlogs and fd limits, jitter, retries)."""
    check_seeds(seeds, tmp_path, tracker, healthy=False)


@pytest.mark.parametrize("seeds", batches(N_DEFAULT, 16), ids=lambda r: f"{r.start}-{r.stop - 1}")
def test_healthy_random_runs_drain_completely(seeds, tmp_path, tracker):
    """The same identities, and on scenarios where nothing can hang for ever every
    request ends and both ends come to rest: no handler, no pool user or waiter,
    every open connection idle on both sides (the bugs r1, r4, r8 of test_regressions.py left a
    request or a connection behind)."""
    check_seeds(seeds, tmp_path, tracker, healthy=True)


@pytest.mark.slow
@pytest.mark.parametrize("seeds", batches(N_SLOW, 40, first=100_000), ids=lambda r: f"{r.start}-{r.stop - 1}")
@pytest.mark.parametrize("healthy", [False, True])
def test_invariants_on_many_more_random_runs(seeds, healthy, tmp_path, tracker):
    """``N_SLOW`` more seeds of each kind (``make test-slow`` / ``-m slow``)."""
    check_seeds(seeds, tmp_path, tracker, healthy)


def test_an_attempt_ending_at_the_horizon_instant_keeps_its_record(tmp_path):
    """One request at 0 s, a 5 s handler, Client.Timeout 1 s, a 1 s run: the attempt
    times out at the very instant the run ends. Whatever the order of the two
    events at 1 s, the request's ``attempts`` (1) must match its attempt rows: one
    row, in flight (INCOMPLETE, no end) if the request is incomplete."""
    path = tmp_path / "one.csv"
    path.write_text("at_s\n0\n")
    data = {"duration": "1s", "sample_interval": "500ms",
            "services": {"api": {"routes": {"a": {"steps": [{"sleep": "5s"}]}}}},
            "clients": {"c": {"target": "api", "load": {"trace": str(path)},
                              "transport": {"rtt": "10ms", "client_timeout": "1s"}}}}
    result = World(scenario_from_dict(data), 1).run()
    assert result.requests["attempts"].tolist() == [1]
    assert len(result.attempts["error"]) == 1
    if result.requests["error"][0] == INCOMPLETE:
        assert result.attempts["error"].tolist() == [INCOMPLETE]
        assert math.isnan(result.attempts["end_at"][0])
    else:
        assert result.attempts["error"].tolist() == result.requests["error"].tolist()
