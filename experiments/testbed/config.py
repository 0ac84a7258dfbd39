"""From a scenario to the testbed: what it can express, scaling, and the JSON the Go programs read.

The testbed is one Go ``net/http`` server and one Go load generator on 127.0.0.1. It
expresses one service with its routes (CPU, sleep, alloc and query steps,
``honours_context``, ``db_deadline``, request and response bodies), the four server
timeouts, ``TimeoutHandler``, the listen backlog, the fd limit, GOMAXPROCS, GOGC and
GOMEMLIMIT, a memory limit (a container's OOM kill), ``database/sql`` pools and tables,
``db_lock`` and ``slow_clients`` faults, and open-loop clients (rate and profile, Poisson or
uniform, route mix, instances with their own Transport, the Transport and Client timeouts,
pool settings, application retries with backoff and jitter). ``unsupported`` names every
setting outside that subset; ``for_testbed`` rejects them.

The network is loopback: the scenario's ``rtt`` cannot be imposed, so the testbed form of
a scenario sets it to ``LOOPBACK_RTT_S`` and the simulator runs on that same form
(``experiments.calibrate``). ``scale_scenario`` shrinks rates and capacities together so a
scenario fits a 2-core machine while the per-connection, per-request and time constants
(timeouts, lock waits, query times) stay what they were: the storm keeps its shape and
its clock, with fewer connections.

``arrivals`` draws the open-loop arrivals exactly as the simulator does (same named
streams, same seed), so both face the same instants, routes and client instances.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from typing import Any

import numpy as np

from sim.arrivals import generated_arrivals
from sim.rng import Streams
from sim.scenario_error import ScenarioError
from sim.schema import (ClientConfig, FaultConfig, NoBreakerConfig, NoRetryBudgetConfig, Scenario,
                        ServiceConfig)

LOOPBACK_RTT_S = 0.0001
"""Round trip of the testbed's network (127.0.0.1), as the simulator is told it: the kernel's
loopback plus Go's netpoll wake-ups on each side, about 0.1 ms on the development VM."""

SUPPORTED_FAULTS = ("db_lock", "slow_clients")


# ------------------------------------------------------------------ the expressible subset


def unsupported(scenario: Scenario) -> list[tuple[str, Any, str]]:
    """(path, value, why) for each setting the testbed cannot express; empty if none."""
    problems: list[tuple[str, Any, str]] = []

    def no(path: str, value: Any, why: str) -> None:
        problems.append((path, value, why))

    if len(scenario.services) != 1:
        no("services", list(scenario.services), "the testbed runs one service")
    if scenario.edges:
        no("edges", len(scenario.edges), "the testbed runs one service: no service-to-service edges")
    for name, svc in scenario.services.items():
        p = f"services.{name}"
        if svc.instances != 1:
            no(f"{p}.instances", svc.instances, "the testbed runs one server process")
        if svc.shedding.max_in_flight:
            no(f"{p}.shedding.max_in_flight", svc.shedding.max_in_flight, "no load-shedding middleware in the testbed")
        if svc.memory.restart_after:
            no(f"{p}.memory.restart_after", svc.memory.restart_after, "the testbed does not restart a killed server")
        for rname, route in svc.routes.items():
            for i, step in enumerate(route.steps):
                if step.call:
                    no(f"{p}.routes.{rname}.steps.{i}.call", step.call, "no downstream services in the testbed")
    for name, cl in scenario.clients.items():
        p = f"clients.{name}"
        if cl.load.kind != "open":
            no(f"{p}.load.kind", cl.load.kind, "the testbed offers open-loop load only")
        if cl.load.trace:
            no(f"{p}.load.trace", cl.load.trace, "trace replay is not wired into the testbed")
        t = cl.transport
        if t.protocol != "http1":
            no(f"{p}.transport.protocol", t.protocol, "the testbed speaks HTTP/1.1")
        if t.tls.enabled:
            no(f"{p}.transport.tls.enabled", True, "the testbed runs without TLS")
        for key in ("rtt_jitter", "bandwidth_bytes_per_s", "loss_rate"):
            if getattr(t, key):
                no(f"{p}.transport.{key}", getattr(t, key), "the loopback network has no jitter, bandwidth limit or loss")
        if t.strict_max_concurrent_streams:
            no(f"{p}.transport.strict_max_concurrent_streams", True, "HTTP/2 only")
        if cl.hedging.enabled:
            no(f"{p}.hedging.enabled", True, "no hedging in the load generator")
        if cl.throttle.enabled:
            no(f"{p}.throttle.enabled", True, "no adaptive throttling in the load generator")
        if not isinstance(cl.breaker, NoBreakerConfig):
            no(f"{p}.breaker.kind", cl.breaker.kind, "no circuit breakers in the load generator")
        if not isinstance(cl.retry.budget, NoRetryBudgetConfig):
            no(f"{p}.retry.budget.kind", cl.retry.budget.kind, "no retry budgets in the load generator")
        if cl.edge_limits.enabled:
            no(f"{p}.edge_limits.enabled", True, "no Envoy-style limits in the load generator")
        if cl.outlier_detection.enabled:
            no(f"{p}.outlier_detection.enabled", True, "one server: nothing to eject")
        if cl.deadline_propagation:
            no(f"{p}.deadline_propagation", True, "one hop: nothing to propagate to")
    for i, fault in enumerate(scenario.faults):
        if fault.kind not in SUPPORTED_FAULTS:
            no(f"faults.{i}.kind", fault.kind, f"the testbed plays {' and '.join(SUPPORTED_FAULTS)} faults")
        elif fault.kind == "slow_clients" and fault.route:
            no(f"faults.{i}.route", fault.route, "slow clients request no route in the testbed (404)")
    return problems


def check_expressible(scenario: Scenario) -> None:
    """Raise ``ScenarioError`` naming the first setting the testbed cannot express."""
    problems = unsupported(scenario)
    if problems:
        path, value, why = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ScenarioError(path, value, f"the testbed cannot express {path} = {value!r}: {why}{more}")


# ------------------------------------------------------------------ scaling


def _count(n: int, scale: float, at_least: int = 1) -> int:
    return max(at_least, int(round(n * scale))) if n > 0 else n


def scale_scenario(scenario: Scenario, scale: float) -> Scenario:
    """Rates and capacities times ``scale``; times, sizes and per-unit costs unchanged.

    Scaled: each client's rate (and its profile's target rate) and instances (so the rate
    per instance, and its connection pool, stay the same); each service's fd limit, listen
    backlog, DB pool sizes, shedding slots and queue, the memory baseline and limit; slow clients' connection rates. A storm then builds at the same pace relative
    to its limits: the fds run out at about the same instant, with ``scale`` times fewer.
    """
    if not 0 < scale <= 1:
        raise ValueError(f"--scale: {scale} is not a fraction in (0, 1]")
    if scale == 1:
        return scenario
    r = dataclasses.replace
    clients = {}
    for name, cl in scenario.clients.items():
        load = cl.load
        load = r(load, rate_per_s=load.rate_per_s * scale,
                 profile=r(load.profile, to_rate_per_s=load.profile.to_rate_per_s * scale),
                 users=_count(load.users, scale))
        clients[name] = r(cl, load=load, instances=_count(cl.instances, scale))
    services = {}
    for name, svc in scenario.services.items():
        mem = svc.memory
        # memory as a whole: the heap goal is a multiple of the live heap (baseline included),
        # so a limit scaled on its headroom alone would be hit by the baseline's garbage
        mem = r(mem, limit=int(mem.limit * scale), baseline=int(mem.baseline * scale))
        pools = {db: r(p, max_open_conns=_count(p.max_open_conns, scale),
                       max_idle_conns=_count(p.max_idle_conns, scale)) for db, p in svc.pools.items()}
        shedding = r(svc.shedding, max_in_flight=_count(svc.shedding.max_in_flight, scale),
                     queue_length=_count(svc.shedding.queue_length, scale))
        services[name] = r(svc, fd_limit=max(8, int(round(svc.fd_limit * scale))), memory=mem, pools=pools,
                           shedding=shedding,
                           server=r(svc.server, accept_backlog=_count(svc.server.accept_backlog, scale)))
    faults = tuple(r(f, connections_per_s=f.connections_per_s * scale) if f.kind == "slow_clients" else f
                   for f in scenario.faults)
    return r(scenario, clients=clients, services=services, faults=faults)


def for_testbed(scenario: Scenario, scale: float = 1.0) -> Scenario:
    """The scenario as the testbed runs it: checked, scaled, on the loopback network.

    This is what ``experiments.calibrate`` hands to the simulator too, so the two runs
    differ only in being simulated or real."""
    check_expressible(scenario)
    scaled = scale_scenario(scenario, scale)
    clients = {name: dataclasses.replace(cl, transport=dataclasses.replace(cl.transport, rtt=LOOPBACK_RTT_S))
               for name, cl in scaled.clients.items()}
    name = scenario.name if scale == 1 else f"{scenario.name}@x{scale:g}"
    return dataclasses.replace(scaled, clients=clients, name=name)


# ------------------------------------------------------------------ the JSON config


def _service(scenario: Scenario) -> tuple[str, ServiceConfig]:
    return next(iter(scenario.services.items()))


def _steps(route: Any) -> list[dict[str, Any]]:
    steps = []
    for st in route.steps:
        base = {"p": st.probability, "dist": st.distribution}
        if st.query:
            db, table = st.query.split(".", 1)
            steps.append({**base, "op": "query", "db": db, "table": table})
        elif st.alloc:
            steps.append({**base, "op": "alloc", "bytes": int(st.alloc)})
        elif st.cpu:
            steps.append({**base, "op": "cpu", "s": st.cpu})
        elif st.sleep:
            steps.append({**base, "op": "sleep", "s": st.sleep})
    return steps


def _client(name: str, cl: ClientConfig) -> dict[str, Any]:
    t, rt = cl.transport, cl.retry
    return {
        "name": name, "instances": cl.instances,
        "transport": {
            "dial_timeout_s": t.dial_timeout, "client_timeout_s": t.client_timeout,
            "response_header_timeout_s": t.response_header_timeout,
            "max_conns_per_host": t.max_conns_per_host,
            # Go: 0 means DefaultMaxIdleConnsPerHost (2), as in the schema
            "max_idle_conns_per_host": t.max_idle_conns_per_host or 2,
            "max_idle_conns": t.max_idle_conns, "idle_conn_timeout_s": t.idle_conn_timeout,
            "disable_keep_alives": t.disable_keep_alives, "drain_response_body": t.drain_response_body,
        },
        "retry": {
            "max_attempts": rt.max_attempts, "retry_on": list(rt.retry_on), "retry_on_status": list(rt.retry_on_status),
            "retry_non_idempotent": rt.retry_non_idempotent, "per_try_timeout_s": rt.per_try_timeout,
            "deadline_s": rt.deadline, "backoff": rt.backoff, "backoff_base_s": rt.backoff_base,
            "backoff_cap_s": rt.backoff_cap, "backoff_multiplier": rt.backoff_multiplier, "jitter": rt.jitter,
            "honour_retry_after": rt.honour_retry_after,
        },
    }


def _window(fault: FaultConfig, duration_s: float) -> tuple[float, float]:
    end = min(fault.at + fault.duration, duration_s) if fault.duration > 0 else duration_s
    return fault.at, end


def slow_connect_times(scenario: Scenario, seed: int) -> list[list[float]]:
    """Connection instants of each slow_clients fault, drawn as the simulator draws them."""
    streams = Streams(seed, 0)
    out = []
    for index, fault in enumerate(f for f in scenario.faults if f.kind == "slow_clients"):
        times: list[float] = []
        if fault.connections_per_s > 0:
            gaps = streams.exponential(f"slow_clients.{index}.arrivals")
            start, end = _window(fault, scenario.duration)
            t = fault.at + gaps.next() / fault.connections_per_s
            while t < end and len(times) < 1_000_000:
                times.append(t)
                t += gaps.next() / fault.connections_per_s
        out.append(times)
    return out


def to_config(scenario: Scenario, seed: int) -> dict[str, Any]:
    """The JSON both Go programs read (experiments/testbed/internal/tbconf)."""
    check_expressible(scenario)
    name, svc = _service(scenario)
    sv = svc.server
    routes = [{"name": rname, "method": r.method, "steps": _steps(r), "honours_context": r.honours_context,
               "db_deadline_s": r.db_deadline, "request_body": r.request_body,
               "request_bytes": int(r.request_bytes), "response_bytes": int(r.response_bytes)}
              for rname, r in svc.routes.items()]
    locks = []
    for fault in scenario.faults:
        if fault.kind == "db_lock" and fault.at < scenario.duration:
            db, table = fault.target.split(".", 1)
            start, end = _window(fault, scenario.duration)
            locks.append({"db": db, "table": table, "start_s": start, "end_s": end, "lock_wait_s": fault.lock_wait})
    slow = [f for f in scenario.faults if f.kind == "slow_clients"]
    slow_cfg = [{"connect_at_s": times, "bytes_per_s": f.bytes_per_s, "header_bytes": int(sv.header_bytes),
                 "body_bytes": int(f.body_bytes), "path": "/__no_route"}
                for f, times in zip(slow, slow_connect_times(scenario, seed))]
    return {
        "name": scenario.name, "seed": seed, "duration_s": scenario.duration,
        "sample_interval_s": scenario.sample_interval,
        "server": {
            "read_timeout_s": sv.read_timeout, "read_header_timeout_s": sv.read_header_timeout,
            "write_timeout_s": sv.write_timeout, "idle_timeout_s": sv.idle_timeout,
            "timeout_handler_s": sv.timeout_handler, "accept_backlog": sv.accept_backlog,
            "fd_limit": svc.fd_limit, "cores": svc.cpu.cores, "memory_limit_b": int(svc.memory.limit),
            "baseline_b": int(svc.memory.baseline), "gogc": svc.gc.gogc, "gomemlimit_b": int(svc.gc.gomemlimit),
        },
        "routes": routes,
        "pools": {db: {"max_open_conns": p.max_open_conns, "max_idle_conns": p.max_idle_conns,
                       "conn_max_lifetime_s": p.conn_max_lifetime} for db, p in svc.pools.items()},
        "databases": {db: {"rtt_s": d.rtt, "tables": {t: {"query_time_s": tc.query_time, "dist": tc.distribution}
                                                      for t, tc in d.tables.items()}}
                      for db, d in scenario.databases.items()},
        "locks": locks,
        "clients": [_client(cname, cl) for cname, cl in scenario.clients.items()],
        "slow_clients": slow_cfg,
    }


# ------------------------------------------------------------------ arrivals


def arrivals(scenario: Scenario, seed: int) -> list[tuple[int, int, int, float]]:
    """(client index, instance, route index, instant) of every open-loop arrival, in time order.

    The same draws as ``sim.load.OpenLoopSource``: instants from the stream
    ``client.<name>.arrivals``, the instance from ``client.<name>.instance`` and the route
    from ``client.<name>.route`` (route indexes into the service's routes)."""
    streams = Streams(seed, 0)
    _, svc = _service(scenario)
    route_names = list(svc.routes)
    out: list[tuple[int, int, int, float]] = []
    for ci, (cname, cl) in enumerate(scenario.clients.items()):
        batches = generated_arrivals(cl.load, scenario.duration, streams.generator(f"client.{cname}.arrivals"))
        times = np.fromiter(itertools.chain.from_iterable(b.tolist() for b in batches), dtype=float)
        pick_instance = streams.uniform(f"client.{cname}.instance")
        weights = cl.load.routes or {r: 1.0 for r in route_names}
        idx = [route_names.index(r) for r in weights]
        cum = np.cumsum([weights[r] for r in weights], dtype=float)
        cum_list = (cum / cum[-1]).tolist()
        pick_route = streams.uniform(f"client.{cname}.route")
        n = cl.instances
        for t in times.tolist():
            inst = int(pick_instance.next() * n) if n > 1 else 0
            route = idx[0] if len(idx) == 1 else idx[min(bisect.bisect_right(cum_list, pick_route.next()), len(idx) - 1)]
            out.append((ci, inst, route, t))
    out.sort(key=lambda a: a[3])
    return out
