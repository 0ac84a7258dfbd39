"""The simulated world of one run: services, clients, load, sampling, guards and records.

``World`` builds the runtime components from an inert ``Scenario``, starts the
load (``sim.load``), samples the levels every ``sample_interval``, enforces the
deterministic guards (events, entities) and the opt-in wall-time guard, and
keeps per-request and per-attempt records in compact arrays. ``Service`` is a
named service: its route plans and, per instance, its current server process (a
kill makes it ``None`` until a restart). Services call each other through edges:
each server process has one client process (``ClientInstance``) per service it
calls.
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
from sim.handler import OP_ALLOC, OP_CALL, OP_CHANCE, OP_CPU, OP_CPU_EXP, OP_QUERY, OP_SLEEP, OP_SLEEP_EXP
from sim.policies import budget_level
from sim.result import INCOMPLETE, ATTEMPT_COLUMNS, REQUEST_COLUMNS, Milestones, RunResult
from sim.rng import Streams
from sim.scenario_checks import check_supported, edge_name, split_call
from sim.schema import EdgeConfig, RouteConfig, Scenario, ServiceConfig
from sim.server import ServerProcess
from sim.slow_clients import SlowClients
from sim.timers import TimerService

ARRAY_TYPECODE = {"int64": "q", "int32": "i", "int16": "h", "int8": "b", "bool": "B", "float64": "d",
                  "float32": "f"}


class RoutePlan:
    __slots__ = ("name", "ops", "honours_context", "db_deadline_s")

    def __init__(self, name: str, route: RouteConfig, scenario: Scenario) -> None:
        self.name = name
        self.honours_context = route.honours_context
        self.db_deadline_s = route.db_deadline
        ops: list[tuple[int, Any]] = []
        for step in route.steps:
            exponential = step.distribution == "exponential"
            if step.cpu > 0:
                op = (OP_CPU_EXP if exponential else OP_CPU, step.cpu)
            elif step.query:
                db, table = step.query.split(".", 1)
                op = (OP_QUERY, (db, table))
            elif step.sleep > 0:
                op = (OP_SLEEP_EXP if exponential else OP_SLEEP, step.sleep)
            elif step.alloc > 0:
                op = (OP_ALLOC, step.alloc)
            elif step.call:
                callee, route_name = split_call(step.call)
                routes = list(scenario.services[callee].routes)
                op = (OP_CALL, (callee, routes.index(route_name) if route_name else 0, step.fanout,
                                step.fanout_wait or step.fanout, step.on_error == "fail"))
            else:
                continue
            if step.probability < 1.0:
                op = (OP_CHANCE, (step.probability, op[0], op[1]))
            ops.append(op)
        self.ops = tuple(ops)


class Service:
    def __init__(self, world: "World", name: str, config: ServiceConfig) -> None:
        self.world = world
        self.name = name
        self.config = config
        self.route_names = list(config.routes)
        self.route_plans: list[RoutePlan | None] = [RoutePlan(n, r, world.scenario) for n, r in config.routes.items()] + [None]
        self.step_draws = world.streams.exponential(f"service.{name}.steps")
        self.chance_draws = world.streams.uniform(f"service.{name}.chance")
        self.route_methods = [r.method for r in config.routes.values()] + ["GET"]
        self.route_body_unread = [r.request_body for r in config.routes.values()] + [False]
        self.route_request_bytes = [r.request_bytes for r in config.routes.values()] + [0]
        self.route_response_bytes = [r.response_bytes for r in config.routes.values()] + [0]
        dbs = {st.query.split(".", 1)[0] for r in config.routes.values() for st in r.steps if st.query}
        self.databases_used = sorted(dbs)
        self.callees = sorted({split_call(st.call)[0] for r in config.routes.values() for st in r.steps if st.call})
        self.n_instances = config.instances
        self.procs: list[ServerProcess | None] = [None] * self.n_instances
        self.cpu_slowdown = [1.0] * self.n_instances     # cpu_throttle faults
        self.handlers_by_instance = [0] * self.n_instances   # handlers started, over every life

    @property
    def current(self) -> ServerProcess | None:
        """The process of instance 0 (the only one of a single-instance service)."""
        return self.procs[0]

    def process(self, instance: int) -> ServerProcess | None:
        return self.procs[instance]

    def start(self, instance: int = 0) -> None:
        proc = ServerProcess(self, self.world.next_generation(), instance)
        proc.cores.slowdown = self.cpu_slowdown[instance]
        self.procs[instance] = proc

    def kill(self, process: ServerProcess, reason: str, restart_after_s: float | None = None) -> None:
        """The process dies (OOM, or evicted by a fault); it restarts after ``restart_after_s``
        (default: memory.restart_after; 0 = never)."""
        world = self.world
        now = world.env.now
        world.close_cpu_window(process.generation)
        process.die()
        if self.procs[process.instance] is process:
            self.procs[process.instance] = None
        world.milestones.kills.append(now)
        if reason == "oom" and world.milestones.oom_killed_at_s is None:
            world.milestones.oom_killed_at_s = now
        world.note_instance_down(self, process.instance, now, reason)
        restart_s = self.config.memory.restart_after if restart_after_s is None else restart_after_s
        if restart_s > 0:
            ev = world.env.timeout(restart_s, process.instance)
            ev.callbacks.append(self._restart)

    def _restart(self, event: Any) -> None:
        instance = event.value
        if self.procs[instance] is None and not self.world.stopped:
            self.start(instance)
            self.world.milestones.restarts.append(self.world.env.now)
            self.world.instance_events.append((self.world.env.now, self.name, instance, "restart"))

    def alive_instances(self) -> int:
        return sum(1 for p in self.procs if p is not None)


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
        self._generations = 0
        self.instance_events: list[tuple[float, str, int, str]] = []   # (at, service, instance, what)
        self.services = {name: Service(self, name, cfg) for name, cfg in scenario.services.items()}
        # the edges: declared ones, and Go's defaults for calls with none
        self.edge_configs: dict[str, EdgeConfig] = {edge_name(e.caller, e.callee): e for e in scenario.edges}
        for svc in self.services.values():
            for callee in svc.callees:
                self.edge_configs.setdefault(edge_name(svc.name, callee), EdgeConfig(caller=svc.name, callee=callee))
        self.n_load_clients = len(scenario.clients)
        self.client_names = list(scenario.clients) + list(self.edge_configs)
        self.edge_clients: list[ClientInstance] = []    # every edge client process ever made
        entry = scenario.clients[next(iter(scenario.clients))].target if scenario.clients else None
        self.service = self.services[entry] if entry in self.services else next(iter(self.services.values()))
        for svc in self.services.values():
            for instance in range(svc.n_instances):
                svc.start(instance)
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
        # edge client processes are made as their callers first call; their breakers count too
        self._edge_breakers = any(e.breaker.kind != "none" for e in self.edge_configs.values())
        self._with_budget = [c for c in self._all_instances if c.budget is not None]
        self._with_throttle = [c for c in self._all_instances if c.throttle is not None]
        self._with_h2 = [h for c in self._all_instances for h in c.hosts if h.h2 is not None]
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

    def next_generation(self) -> int:
        self._generations += 1
        return self._generations

    def edge_client(self, caller: ServerProcess, callee: str) -> ClientInstance:
        """The client process of ``caller`` (a server process) towards ``callee``."""
        name = edge_name(caller.service.name, callee)
        client = ClientInstance(self, name, caller.instance, self.edge_configs[name], self.services[callee],
                                stream_key=f"edge.{name}.{caller.generation}")
        client.open_requests = {}
        self.edge_clients.append(client)
        return client

    def _schedule_instance_faults(self) -> None:
        """Instance kills (pod evictions) and CPU throttles, at their instants."""
        for fault, start, end in self.faults.instance_faults:
            ev = self.env.timeout(start, (fault, end))
            ev.callbacks.append(self._on_instance_fault)

    def _on_instance_fault(self, event: Any) -> None:
        fault, end = event.value
        svc = self.services[fault.target]
        if fault.kind == "instance_kill":
            proc = svc.procs[max(fault.instance, 0)]
            if proc is not None:
                if self.tracer is not None:
                    self.tracer.append((self.env.now, "instance_killed", None, f"{svc.name}/{proc.instance}"))
                svc.kill(proc, reason="evicted", restart_after_s=fault.duration)
            return
        instances = range(svc.n_instances) if fault.instance < 0 else (fault.instance,)
        self._set_slowdown(svc, instances, fault.factor)
        ev = self.env.timeout(end - self.env.now, (svc, instances))
        ev.callbacks.append(self._on_throttle_end)

    def _on_throttle_end(self, event: Any) -> None:
        svc, instances = event.value
        self._set_slowdown(svc, instances, 1.0)

    @staticmethod
    def _set_slowdown(svc: Service, instances: Any, factor: float) -> None:
        for i in instances:
            svc.cpu_slowdown[i] = factor
            if svc.procs[i] is not None:
                svc.procs[i].cores.slowdown = factor

    def note_instance_down(self, service: Service, instance: int, at_s: float, reason: str) -> None:
        self.instance_events.append((at_s, service.name, instance, reason))

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
        server_side = 0
        for svc in self.services.values():
            for proc in svc.procs:
                if proc is not None:
                    server_side += proc.conns + len(proc.accept_queue)
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
        if req.parent is not None:
            req.parent.call_done(req, code)
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
        self._per_service_levels = len(self.services) > 1
        if self._per_service_levels:
            # per service, over its instances; they go on while instances die (not zeroed)
            per = ("alive", "cpu_utilization", "inflight_requests", "goroutines", "memory_mib",
                   "server_connections", "open_fds")
            extra = [f"svc.{svc}.{level}" for svc in self.services for level in per]
        else:
            extra = []
        client_names = ["client_connections", "client_inflight"]
        if self._with_breaker or self._edge_breakers:
            client_names += ["breakers_open", "breakers_half_open"]
        if self._with_budget:
            client_names += ["retry_budget_left"]
        if self._with_throttle:
            client_names += ["throttle_reject_probability"]
        if any(c.edge_limits is not None or c.budget is not None for c in self._all_instances):
            client_names += ["retries_outstanding"]
        client_names = extra + client_names + ["client_ports_time_wait"]
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

    def _cpu_utilization(self, proc: ServerProcess, now: float) -> float:
        """Busy core-seconds of ``proc`` since the last sample / its cores x the span."""
        busy = proc.cores.busy_core_seconds()
        key = proc.generation
        last_busy, last_at = self._cpu_last.get(key, (0.0, proc.started_at))
        self._cpu_last[key] = (busy, now)
        span = now - last_at
        return (busy - last_busy) / (proc.cores.n_cores * span) if span > 0 else 0.0

    def _take_sample(self, now: float) -> None:
        levels = self._levels
        levels["time_s"].append(now)
        cpu_by_proc = {}
        for svc in self.services.values():
            for proc in svc.procs:
                if proc is not None:
                    cpu_by_proc[proc.generation] = self._cpu_utilization(proc, now)
        service = self.service
        procs = [p for p in service.procs if p is not None]
        if procs:
            # the entry service, summed over its live instances (CPU: the mean over them)
            levels["alive"].append(float(len(procs)))
            levels["server_connections"].append(sum(p.conns for p in procs))
            levels["accept_queue"].append(sum(len(p.accept_queue) for p in procs))
            levels["open_fds"].append(sum(p.fds for p in procs))
            levels["goroutines"].append(sum(p.goroutines for p in procs))
            levels["memory_mib"].append(sum(p.memory_b for p in procs) / 1048576.0)
            levels["live_heap_mib"].append(sum(p.live_b for p in procs) / 1048576.0)
            levels["cpu_utilization"].append(sum(cpu_by_proc[p.generation] for p in procs) / service.n_instances)
            levels["gc_fraction"].append(sum(p.gc.cpu_share() for p in procs) / len(procs))
            levels["inflight_requests"].append(sum(p.inflight for p in procs))
            for i, route in enumerate(service.route_names):
                levels[f"inflight.{route}"].append(sum(p.inflight_by_route[i] for p in procs))
            for d in service.databases_used:
                levels[f"db_in_use.{d}"].append(sum(p.pools[d].n_in_use for p in procs))
                levels[f"db_waiters.{d}"].append(sum(p.pools[d].n_waiters for p in procs))
            if procs[0].shed_queue is not None:
                levels["shed_admitted"].append(sum(p.admitted for p in procs))
                levels["shed_queue_length"].append(sum(len(p.shed_queue) for p in procs))
        else:
            for name in self._zero_when_dead:
                levels[name].append(0.0)
        if self._per_service_levels:
            for svc in self.services.values():
                live = [p for p in svc.procs if p is not None]
                prefix = f"svc.{svc.name}."
                levels[prefix + "alive"].append(float(len(live)))
                levels[prefix + "cpu_utilization"].append(
                    sum(cpu_by_proc[p.generation] for p in live) / svc.n_instances)
                levels[prefix + "inflight_requests"].append(sum(p.inflight for p in live))
                levels[prefix + "goroutines"].append(sum(p.goroutines for p in live))
                levels[prefix + "memory_mib"].append(sum(p.memory_b for p in live) / 1048576.0)
                levels[prefix + "server_connections"].append(sum(p.conns for p in live))
                levels[prefix + "open_fds"].append(sum(p.fds for p in live))
        levels["client_connections"].append(self.client_conns)
        levels["client_inflight"].append(len(self.inflight))
        if self._with_breaker or self._edge_breakers:
            states = [c.breaker.state(now) for c in self._with_breaker]
            if self._edge_breakers:
                states += [c.breaker.state(now) for c in self.edge_clients
                           if c.breaker is not None and not c.shut_down]
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
        levels["client_ports_time_wait"].append(
            sum(h.ports.time_wait(now) for c in self._all_instances for h in c.hosts))
        if self._with_h2:
            levels["h2_streams_open"].append(sum(h.h2.streams_open() for h in self._with_h2))

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
        self._schedule_instance_faults()
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
        self.milestones.alive_at_end = self.service.alive_instances() > 0
        self.milestones.instance_events = list(self.instance_events)
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
                        for phase in ("pool_wait_s", "connect_s", "tls_s", "backlog_s", "flow_wait_s",
                                      "to_server_s"):
                            c[phase].append(getattr(att, phase))
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
            "peak_client_ports_in_use": float(max((h.ports.peak_in_use for c in self._all_instances
                                                   for h in c.hosts), default=0)),
            "h2_redundant_conns": float(sum(h.h2.redundant_dials for h in self._with_h2)),
            "h2_stream_resets_sent": float(sum(h.h2.stream_resets_sent for h in self._with_h2)),
            "h2_goaways": float(self.h2_goaways),
        }
        if len(self.services) > 1 or self.service.n_instances > 1:
            for svc in self.services.values():
                for i, n in enumerate(svc.handlers_by_instance):
                    counters[f"handlers_started.{svc.name}.{i}"] = float(n)
        # an edge's client processes are keyed by their caller's instance; one that died with
        # its caller while its breaker was not closed ends with "gone" (a restarted caller's
        # new process starts closed)
        transitions = [(at_s, c.client_index, c.index, state)
                       for c in [*self._with_breaker, *(e for e in self.edge_clients if e.breaker is not None)]
                       for at_s, state in c.breaker.transitions]
        for e in self.edge_clients:
            history = e.breaker.transitions if e.breaker is not None else None
            if history and e.shut_down and history[-1][1] != "closed":
                transitions.append((e.shut_down_at_s, e.client_index, e.index, "gone"))
        # by instant only (a stable sort): a lazy breaker's half_open and closed at one instant
        # keep their order
        self.milestones.breaker_transitions = sorted(transitions, key=lambda t: t[0])
        return RunResult(
            scenario=self.scenario, seed=self.seed, replication=self.replication,
            route_names=self.route_names, client_names=self.client_names,
            requests=requests, attempts=attempts, levels=levels, milestones=self.milestones,
            counters=counters, wall_s=wall_s, trace=self.tracer)
