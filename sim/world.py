"""The simulated world of one run: services, clients, load, sampling, guards and records.

``World`` builds the runtime components from an inert ``Scenario``, starts the
load (``sim.load``), samples the levels every ``sample_interval``, enforces the
deterministic guards (events, entities) and the opt-in wall-time guard, and
keeps per-request and per-attempt records in compact arrays. ``Service`` is a
named service: its route plans and its current server process (a kill makes
it ``None`` until a restart).
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from typing import Any, Callable

import numpy as np
import simpy

from sim.client import Attempt, ClientInstance, Request
from sim.connection import InstantMessage
from sim.faults import Faults
from sim.load import OpenLoopSource, start_users
from sim.handler import OP_ALLOC, OP_CPU, OP_CPU_EXP, OP_QUERY, OP_SLEEP, OP_SLEEP_EXP
from sim.policies import budget_level
from sim.result import INCOMPLETE, ATTEMPT_COLUMNS, REQUEST_COLUMNS, Milestones, RunResult
from sim.rng import Streams
from sim.scenario_checks import check_supported
from sim.schema import RouteConfig, Scenario, ServiceConfig
from sim.server import ServerProcess
from sim.slow_clients import SlowClients
from sim.timers import TimerService

ARRAY_TYPECODE = {"int64": "q", "int32": "i", "int16": "h", "int8": "b", "bool": "B", "float64": "d",
                  "float32": "f"}


class RoutePlan:
    __slots__ = ("name", "ops", "honours_context", "db_deadline_s")

    def __init__(self, name: str, route: RouteConfig) -> None:
        self.name = name
        self.honours_context = route.honours_context
        self.db_deadline_s = route.db_deadline
        ops: list[tuple[int, Any]] = []
        for step in route.steps:
            exponential = step.distribution == "exponential"
            if step.cpu > 0:
                ops.append((OP_CPU_EXP if exponential else OP_CPU, step.cpu))
            elif step.query:
                db, table = step.query.split(".", 1)
                ops.append((OP_QUERY, (db, table)))
            elif step.sleep > 0:
                ops.append((OP_SLEEP_EXP if exponential else OP_SLEEP, step.sleep))
            elif step.alloc > 0:
                ops.append((OP_ALLOC, step.alloc))
        self.ops = tuple(ops)


class Service:
    def __init__(self, world: "World", name: str, config: ServiceConfig) -> None:
        self.world = world
        self.name = name
        self.config = config
        self.route_names = list(config.routes)
        self.route_plans: list[RoutePlan | None] = [RoutePlan(n, r) for n, r in config.routes.items()] + [None]
        self.step_draws = world.streams.exponential(f"service.{name}.steps")
        self.route_methods = [r.method for r in config.routes.values()] + ["GET"]
        self.route_body_unread = [r.request_body for r in config.routes.values()] + [False]
        self.route_request_bytes = [r.request_bytes for r in config.routes.values()] + [0]
        self.route_response_bytes = [r.response_bytes for r in config.routes.values()] + [0]
        dbs = {st.query.split(".", 1)[0] for r in config.routes.values() for st in r.steps if st.query}
        self.databases_used = sorted(dbs)
        self.generation = 0
        self.current: ServerProcess | None = None
        self.start()

    def start(self) -> None:
        self.generation += 1
        self.current = ServerProcess(self, self.generation)

    def kill(self, process: ServerProcess, reason: str) -> None:
        world = self.world
        now = world.env.now
        world.close_cpu_window(process.generation)
        process.die()
        if self.current is process:
            self.current = None
        world.milestones.kills.append(now)
        if reason == "oom" and world.milestones.oom_killed_at_s is None:
            world.milestones.oom_killed_at_s = now
        restart_s = self.config.memory.restart_after
        if restart_s > 0:
            ev = world.env.timeout(restart_s)
            ev.callbacks.append(self._restart)

    def _restart(self, _event: Any) -> None:
        if self.current is None:
            self.start()
            self.world.milestones.restarts.append(self.world.env.now)


class World:
    def __init__(self, scenario: Scenario, seed: int, replication: int = 0, trace: bool = False,
                 progress: Callable[[float], None] | None = None) -> None:
        check_supported(scenario)
        if seed < 0:
            raise ValueError(f"seed: {seed} is not a seed (a whole number >= 0)")
        self.scenario = scenario
        self.seed = seed
        self.replication = replication
        self.env = simpy.Environment()
        # an event log for small runs and the semantics tests: (at, kind, conn id, detail)
        self.tracer: list[tuple[float, str, Any, Any]] | None = [] if trace else None
        self.timers = TimerService(self.env)
        self._instant_messages: deque[tuple[Callable[[Any], None], Any]] = deque()
        self._delivering = False
        self.streams = Streams(seed, replication)
        self.horizon_s = scenario.duration
        self.stopped = False
        self.milestones = Milestones()
        self.faults = Faults(scenario, scenario.duration, self.streams.uniform("faults.error_rate"))
        self.milestones.trigger_at_s = self.faults.trigger_at_s
        self._any_fault_touches = any(w.touched_routes for w in self.faults.windows)
        self.milestones.faults = self.faults.windows
        self._query_means = {(db, t): (cfg.query_time, cfg.distribution)
                             for db, d in scenario.databases.items() for t, cfg in d.tables.items()}
        self._query_draws = {key: self.streams.exponential(f"db.{key[0]}.{key[1]}.query_time") for key in self._query_means}
        # peaks tracked between samples
        self.peak_fds = 0
        self.peak_goroutines = 0
        self.peak_memory_b = 0.0
        self.peak_server_connections = 0
        self.peak_accept_queue = 0
        self.peak_client_conns = 0
        self.client_conns = 0
        self.handler_s = 0.0
        self.wasted_handler_s = 0.0
        self.shed_rejected = 0
        self.shed_dropped = 0
        self.h2_goaways = 0          # GOAWAY ENHANCE_YOUR_CALM: too many streams waiting for a handler
        self.dials = 0               # connections the clients dialled
        self.syn_retransmits = 0     # SYNs sent again (dropped by a full accept queue, or lost)
        self.tls_handshakes = 0      # handshakes the server ran (full or resumed)
        self._conn_ids = 0
        self._request_ids = 0
        self.inflight: dict[int, Request] = {}
        self.client_names = list(scenario.clients)
        self.services = {name: Service(self, name, cfg) for name, cfg in scenario.services.items()}
        self.service = next(iter(self.services.values()))
        self.route_names = list(self.service.route_names)
        self.slow_clients = SlowClients(self)
        self.clients: dict[str, list[ClientInstance]] = {
            name: [ClientInstance(self, name, i, cfg, self.services[cfg.target]) for i in range(cfg.instances)]
            for name, cfg in scenario.clients.items()}
        self._record = scenario.record_requests
        self._req_cols = {k: array(ARRAY_TYPECODE[v]) for k, v in REQUEST_COLUMNS.items()}
        self._att_cols = {k: array(ARRAY_TYPECODE[v]) for k, v in ATTEMPT_COLUMNS.items()}
        # bound appends in column order: the records are written on the hot path
        self._req_appends = tuple(col.append for col in self._req_cols.values())
        self._att_appends = tuple(col.append for col in self._att_cols.values())
        self.n_requests_done = 0
        self.n_attempts_done = 0
        self._cpu_last: dict[int, float] = {}
        self._stop_event = self.env.event()
        self._wall_started = 0.0
        self._limits = scenario.limits
        self._progress = progress
        self._progress_reported = 0.0
        self._all_instances = [inst for insts in self.clients.values() for inst in insts]
        self._with_breaker = [c for c in self._all_instances if c.breaker is not None]
        self._with_budget = [c for c in self._all_instances if c.budget is not None]
        self._with_throttle = [c for c in self._all_instances if c.throttle is not None]
        self._with_h2 = [c for c in self._all_instances if c.h2 is not None]
        process_names, client_names = self._level_names()
        self._levels = {name: [] for name in ["time_s", *process_names, *client_names]}
        self._zero_when_dead = process_names      # the process's levels; the clients' go on

    # ---------------------------------------------------------------- helpers
    def deliver(self, delay_s: float, callback: Callable[[Any], None], value: Any) -> None:
        """A network message: ``callback(message)`` after ``delay_s``; ``message.value`` is ``value``.

        A message with no transit time (a zero-RTT link) is not an event: it is delivered at
        once, after any zero-delay message already being delivered (FIFO, no recursion)."""
        if delay_s > 0.0:
            self.env.timeout(delay_s, value).callbacks.append(callback)
            return
        if self._delivering:
            self._instant_messages.append((callback, value))
            return
        self._delivering = True
        try:
            callback(InstantMessage(value))
            queue = self._instant_messages
            while queue:
                callback, value = queue.popleft()
                callback(InstantMessage(value))
        finally:
            self._delivering = False

    def next_conn_id(self) -> int:
        self._conn_ids += 1
        return self._conn_ids

    def query_time_s(self, db: str, table: str) -> float:
        mean, dist = self._query_means[(db, table)]
        if dist == "constant" or mean == 0.0:
            return mean
        return mean * self._query_draws[(db, table)].next()

    def note_emfile(self, backoff_s: float) -> None:
        if self.tracer is not None:
            self.tracer.append((self.env.now, "emfile", None, backoff_s))
        if self.milestones.fd_exhausted_at_s is None:
            self.milestones.fd_exhausted_at_s = self.env.now

    def close_cpu_window(self, generation: int) -> None:
        self._cpu_last.pop(generation, None)

    # ------------------------------------------------------------------- load
    def new_request(self, instance: ClientInstance, route: int) -> Request:
        """A logical request arrives at ``instance``: it joins the in-flight set."""
        self._request_ids += 1
        now = self.env.now
        req = Request(self._request_ids, instance, route, now)
        if self._any_fault_touches and self.faults.touched_at_arrival(instance.service.name, route, now):
            req.touched = True
        self.inflight[req.id] = req
        if not self._request_ids & 63 and self.entities() > self._limits.max_entities:
            self.stop("entities")       # checked every 64 arrivals, and at every sample
        return req

    def entities(self) -> int:
        """In-flight logical requests plus open connections, client and server side."""
        server = self.service.current
        server_side = server.conns + len(server.accept_queue) if server is not None else 0
        return len(self.inflight) + self.client_conns + server_side

    # ---------------------------------------------------------------- records
    def record_attempt(self, att: Attempt, code: int) -> None:
        att.recorded = True
        self.n_attempts_done += 1
        if not self._record:
            return
        (request_id, attempt, start_at, end_at, error, new_conn,
         pool_wait_s, connect_s, tls_s, backlog_s, flow_wait_s, to_server_s) = self._att_appends
        request_id(att.request.id)
        attempt(att.number - 1)
        start_at(att.start_at)
        end_at(self.env.now)
        error(code)
        new_conn(1 if att.new_conn else 0)
        pool_wait_s(att.pool_wait_s)
        connect_s(att.connect_s)
        tls_s(att.tls_s)
        backlog_s(att.backlog_s)
        flow_wait_s(att.flow_wait_s)
        to_server_s(att.to_server_s)

    def finish_request(self, req: Request, code: int) -> None:
        self.inflight.pop(req.id, None)
        self.n_requests_done += 1
        if req.done is not None:
            req.done.succeed()
        if not self._record:
            return
        self._append_request(req, self.env.now, code)

    def _append_request(self, req: Request, end_at: float, code: int) -> None:
        request_id, client, route, touched, arrival_at, end, error, attempts = self._req_appends
        request_id(req.id)
        client(req.client.client_index)
        route(req.route)
        touched(1 if req.touched else 0)
        arrival_at(req.arrival_at)
        end(end_at)
        error(code)
        attempts(req.attempts)

    # --------------------------------------------------------------- sampling
    def _level_names(self) -> tuple[list[str], list[str]]:
        """Level columns of the server process (zero while it is dead) and of the clients."""
        service = self.service
        names = ["alive", "server_connections", "accept_queue", "open_fds", "goroutines", "memory_mib",
                 "live_heap_mib", "cpu_utilization", "gc_fraction", "inflight_requests"]
        names += [f"inflight.{r}" for r in service.route_names]
        dbs = service.databases_used
        names += [f"db_in_use.{d}" for d in dbs] + [f"db_waiters.{d}" for d in dbs]
        if service.config.shedding.max_in_flight:
            names += ["shed_admitted", "shed_queue_length"]
        client_names = ["client_connections", "client_inflight"]
        if self._with_breaker:
            client_names += ["breakers_open", "breakers_half_open"]
        if self._with_budget:
            client_names += ["retry_budget_left"]
        if self._with_throttle:
            client_names += ["throttle_reject_probability"]
        if any(c.edge_limits is not None or c.budget is not None for c in self._all_instances):
            client_names += ["retries_outstanding"]
        client_names += ["client_ports_time_wait"]
        if self._with_h2:
            client_names += ["h2_streams_open"]
        return names, client_names

    def _sample(self):
        """The sampling process: levels every sample_interval, then the guards and progress."""
        env = self.env
        step = self.scenario.sample_interval
        while True:
            yield env.timeout(step)
            now = env.now
            self._take_sample(now)
            self._check_guards()
            if self._progress is not None and now - self._progress_reported >= 0.01 * self.horizon_s:
                self._progress_reported = now
                self._progress(now / self.horizon_s)

    def _take_sample(self, now: float) -> None:
        levels = self._levels
        service = self.service
        proc = service.current
        levels["time_s"].append(now)
        if proc is not None:
            busy = proc.cores.busy_core_seconds()
            key = proc.generation
            last_busy, last_at = self._cpu_last.get(key, (0.0, proc.started_at))
            self._cpu_last[key] = (busy, now)
            span = now - last_at
            cpu = (busy - last_busy) / (proc.cores.n_cores * span) if span > 0 else 0.0
            levels["alive"].append(1.0)
            levels["server_connections"].append(proc.conns)
            levels["accept_queue"].append(len(proc.accept_queue))
            levels["open_fds"].append(proc.fds)
            levels["goroutines"].append(proc.goroutines)
            levels["memory_mib"].append(proc.memory_b / 1048576.0)
            levels["live_heap_mib"].append(proc.live_b / 1048576.0)
            levels["cpu_utilization"].append(cpu)
            levels["gc_fraction"].append(proc.gc.cpu_share())
            levels["inflight_requests"].append(proc.inflight)
            for i, route in enumerate(service.route_names):
                levels[f"inflight.{route}"].append(proc.inflight_by_route[i])
            for d in service.databases_used:
                pool = proc.pools[d]
                levels[f"db_in_use.{d}"].append(pool.n_in_use)
                levels[f"db_waiters.{d}"].append(pool.n_waiters)
            if proc.shed_queue is not None:
                levels["shed_admitted"].append(proc.admitted)
                levels["shed_queue_length"].append(len(proc.shed_queue))
        else:
            for name in self._zero_when_dead:
                levels[name].append(0.0)
        levels["client_connections"].append(self.client_conns)
        levels["client_inflight"].append(len(self.inflight))
        if self._with_breaker:
            states = [c.breaker.state(now) for c in self._with_breaker]
            levels["breakers_open"].append(states.count("open"))
            levels["breakers_half_open"].append(states.count("half_open"))
        if self._with_budget:
            levels["retry_budget_left"].append(sum(
                budget_level(c.budget, now, c.active_attempts - c.pending_attempts, c.pending_attempts) for c in self._with_budget))
        if self._with_throttle:
            levels["throttle_reject_probability"].append(
                sum(c.throttle.reject_probability(now) for c in self._with_throttle) / len(self._with_throttle))
        if "retries_outstanding" in levels:
            levels["retries_outstanding"].append(sum(c.retries_held for c in self._all_instances))
        levels["client_ports_time_wait"].append(sum(c.ports.time_wait(now) for c in self._all_instances))
        if self._with_h2:
            levels["h2_streams_open"].append(sum(c.h2.streams_open() for c in self._with_h2))

    def _check_guards(self) -> None:
        events = next(self.env._eid)
        limits = self._limits
        if events > limits.max_events:
            self.stop("events")
        elif self.entities() > limits.max_entities:
            self.stop("entities")
        elif limits.max_wall_time > 0 and time.perf_counter() - self._wall_started > limits.max_wall_time:
            self.stop("wall_time")

    def stop(self, reason: str | None) -> None:
        if self.stopped:
            return
        self.stopped = True
        if reason is not None:
            self.milestones.truncated = True
            self.milestones.truncated_by = reason
        if not self._stop_event.triggered:
            self._stop_event.succeed()

    # -------------------------------------------------------------------- run
    def run(self) -> RunResult:
        env = self.env
        self._wall_started = time.perf_counter()
        for name, cfg in self.scenario.clients.items():
            if cfg.load.kind == "open":
                OpenLoopSource(self, name).start()
            else:
                start_users(self, name)
        self.slow_clients.start()
        env.process(self._sample())
        end = env.timeout(self.horizon_s)
        end.callbacks.append(lambda _e: self.stop(None))
        env.run(until=self._stop_event)
        end_at = env.now
        self.stopped = True
        self.milestones.end_at_s = end_at
        times = self._levels["time_s"]
        if not times or times[-1] < end_at - 1e-9:
            self._take_sample(end_at)     # a run a guard ended early still has its last levels
        for window in self.milestones.faults:       # a guard may have ended the run early
            window.end_at = min(window.end_at, end_at)
        self.milestones.alive_at_end = self.service.current is not None
        self.milestones.restart_pending = (not self.milestones.alive_at_end
                                           and self.service.config.memory.restart_after > 0)
        for req in self.inflight.values():
            if self._record:
                for att in (req.hedges if req.hedges is not None else (req.current,)):
                    if att is not None and not att.recorded:    # in flight, or ended at the last instant
                        c = self._att_cols
                        c["request_id"].append(req.id)
                        c["attempt"].append(att.number - 1)
                        c["start_at"].append(att.start_at)
                        c["end_at"].append(float("nan"))
                        c["error"].append(INCOMPLETE)
                        c["new_conn"].append(1 if att.new_conn else 0)
                self._append_request(req, float("nan"), INCOMPLETE)
        wall_s = time.perf_counter() - self._wall_started
        events = next(env._eid)
        requests = {k: np.frombuffer(v, dtype=REQUEST_COLUMNS[k]).copy() if len(v) else np.zeros(0, REQUEST_COLUMNS[k])
                    for k, v in self._req_cols.items()}
        attempts = {k: np.frombuffer(v, dtype=ATTEMPT_COLUMNS[k]).copy() if len(v) else np.zeros(0, ATTEMPT_COLUMNS[k])
                    for k, v in self._att_cols.items()}
        order = np.argsort(requests["request_id"], kind="stable")
        requests = {k: v[order] for k, v in requests.items()}
        levels = {k: np.asarray(v, dtype=float) for k, v in self._levels.items()}
        counters = {
            "events": float(events),
            "handler_s": self.handler_s,
            "wasted_handler_s": self.wasted_handler_s,
            "peak_open_fds": float(self.peak_fds),
            "peak_goroutines": float(self.peak_goroutines),
            "peak_memory_mib": self.peak_memory_b / 1048576.0,
            "peak_server_connections": float(self.peak_server_connections),
            "peak_accept_queue": float(self.peak_accept_queue),
            "peak_client_connections": float(self.peak_client_conns),
            "requests_finished": float(self.n_requests_done),
            "attempts_finished": float(self.n_attempts_done),
            "slow_connections_opened": float(self.slow_clients.opened),
            "slow_connections_cut_silently": float(self.slow_clients.cut_silently),
            "slow_connections_cut_400": float(self.slow_clients.cut_with_400),
            "slow_requests_completed": float(self.slow_clients.completed),
            "slow_requests_read_timeout": float(self.slow_clients.read_errors),
            "timers_fired": float(self.timers.fired),
            "shed_rejected": float(self.shed_rejected),
            "shed_dropped": float(self.shed_dropped),
            "retries_denied": float(sum(c.retries_denied for c in self._all_instances)),
            "breaker_rejections": float(sum(c.rejected["breaker_open"] for c in self._all_instances)),
            "throttle_rejections": float(sum(c.rejected["throttled"] for c in self._all_instances)),
            "dials": float(self.dials),
            "syn_retransmits": float(self.syn_retransmits),
            "tls_handshakes": float(self.tls_handshakes),
            "peak_client_ports_in_use": float(max((c.ports.peak_in_use for c in self._all_instances), default=0)),
            "h2_redundant_conns": float(sum(c.h2.redundant_dials for c in self._with_h2)),
            "h2_stream_resets_sent": float(sum(c.h2.stream_resets_sent for c in self._with_h2)),
            "h2_goaways": float(self.h2_goaways),
        }
        self.milestones.breaker_transitions = sorted(
            (at_s, c.client_index, c.index, state)
            for c in self._with_breaker for at_s, state in c.breaker.transitions)
        return RunResult(
            scenario=self.scenario, seed=self.seed, replication=self.replication,
            route_names=self.route_names, client_names=self.client_names,
            requests=requests, attempts=attempts, levels=levels, milestones=self.milestones,
            counters=counters, wall_s=wall_s, trace=self.tracer)
