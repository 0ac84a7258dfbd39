"""Checks across scenario settings: names that must refer to something, and what the model supports.

``check_references`` runs after typing (``sim.scenario_loader``): clients target
existing services, route mixes name existing routes, queries name existing
tables, faults name existing targets, trace files exist (their paths made
absolute), and the policy settings of clients, edges and services agree with
each other (retries, backoff, hedging, shedding). ``check_supported`` rejects
valid scenarios this version of the model cannot simulate yet (several
services, service-to-service edges).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from sim.scenario_error import ScenarioError, name_list, show_value
from sim.schema import ERROR_KINDS, POLICY_REJECTION_KINDS, Scenario
from sim.units import format_duration, format_size

STEP_KINDS: tuple[str, ...] = ("cpu", "query", "sleep", "alloc", "call")
"""The settings of a route step of which exactly one is set."""


def _step_text(kind: str, value: Any) -> str:
    if kind in ("cpu", "sleep"):
        return format_duration(value)
    if kind == "alloc":
        return format_size(value)
    return show_value(value)


def check_supported(scenario: Scenario) -> None:
    """Reject valid scenarios that this version of the model cannot simulate (none today)."""
    return None


def split_call(target: str) -> tuple[str, str]:
    """``service.route`` -> (service, route); ``service`` -> (service, "")."""
    service, _, route = target.partition(".")
    return service, route


def edge_name(caller: str, callee: str) -> str:
    return f"{caller}->{callee}"


def check_references(scenario: Scenario, base_dir: Path) -> Scenario:
    """Checks across settings; returns the scenario with trace paths made absolute."""
    if not scenario.services:
        raise ScenarioError("services", {}, "no services defined; at least one is required")
    if not scenario.clients:
        raise ScenarioError("clients", {}, "no clients defined; at least one is required")
    for name, service in scenario.services.items():
        _check_service(scenario, name, service)
    clients = {name: _check_client(scenario, name, client, base_dir)
               for name, client in scenario.clients.items()}
    seen_edges: dict[str, int] = {}
    for index, edge in enumerate(scenario.edges):
        for role in ("caller", "callee"):
            _require_service(scenario, f"edges.{index}.{role}", getattr(edge, role))
        name = edge_name(edge.caller, edge.callee)
        if name in seen_edges:
            raise ScenarioError(f"edges.{index}", name, f"{name} is already edges.{seen_edges[name]}; "
                                                       f"one edge per caller and callee")
        seen_edges[name] = index
        _check_policies(edge, f"edges.{index}")
    _check_call_graph(scenario)
    for index, fault in enumerate(scenario.faults):
        _check_fault(scenario, index, fault)
    return dataclasses.replace(scenario, clients=clients)


def _check_service(scenario: Scenario, name: str, service: Any) -> None:
    for database in service.pools:
        if database not in scenario.databases:
            raise ScenarioError(f"services.{name}.pools.{database}", database,
                                f"unknown database {database!r}; databases: {name_list(scenario.databases)}")
    for route_name, route in service.routes.items():
        for index, step in enumerate(route.steps):
            path = f"services.{name}.routes.{route_name}.steps.{index}"
            step_set = {kind: getattr(step, kind) for kind in STEP_KINDS if getattr(step, kind)}
            if len(step_set) != 1:
                shown = ", ".join(f"{kind}: {_step_text(kind, value)}" for kind, value in step_set.items()) or "none"
                raise ScenarioError(path, step_set, f"set exactly one of {', '.join(STEP_KINDS)} "
                                                    f"(this step sets {shown})")
            if step.query:
                _require_table(scenario, f"{path}.query", step.query)
            if step.call:
                callee, route = split_call(step.call)
                target = _require_service(scenario, f"{path}.call", callee)
                if route and route not in target.routes:
                    raise ScenarioError(f"{path}.call", step.call,
                                        f"{route!r} is not a route of service {callee!r}; "
                                        f"routes: {name_list(target.routes)}")
                if not route and not target.routes:
                    raise ScenarioError(f"{path}.call", step.call, f"service {callee!r} has no routes to call")
                if step.fanout_wait > step.fanout:
                    raise ScenarioError(f"{path}.fanout_wait", step.fanout_wait,
                                        f"{step.fanout_wait} is more than fanout ({step.fanout})")
            elif step.fanout != 1 or step.fanout_wait:
                raise ScenarioError(f"{path}.fanout", step.fanout, "fanout and fanout_wait go with a call step")
    _check_shedding(service.shedding, f"services.{name}.shedding")


def _check_shedding(shedding: Any, path: str) -> None:
    """The queue settings of server-side shedding agree with each other and with the limit."""
    if shedding.codel_target > shedding.codel_interval:
        raise ScenarioError(f"{path}.codel_target", format_duration(shedding.codel_target),
                            f"{format_duration(shedding.codel_target)} is above codel_interval "
                            f"({format_duration(shedding.codel_interval)}); codel_target must be "
                            f"<= codel_interval")
    if shedding.discipline == "codel" and shedding.queue_timeout > 0:
        raise ScenarioError(f"{path}.queue_timeout", format_duration(shedding.queue_timeout),
                            f"{format_duration(shedding.queue_timeout)}: queue_timeout applies to the fifo "
                            f"and lifo disciplines only; codel times out with codel_target and "
                            f"codel_interval (set queue_timeout to 0)")
    if shedding.max_in_flight == 0:
        if shedding.queue_length > 0:
            raise ScenarioError(f"{path}.queue_length", shedding.queue_length,
                                f"{shedding.queue_length}: shedding.queue_length needs max_in_flight > 0 "
                                f"(max_in_flight 0 is no limit, so nothing would ever wait)")
        if shedding.discipline != "fifo":
            raise ScenarioError(f"{path}.discipline", shedding.discipline,
                                f"{shedding.discipline}: shedding.discipline {shedding.discipline} needs "
                                f"max_in_flight > 0 (max_in_flight 0 is no limit, so nothing would ever wait)")


def _check_client(scenario: Scenario, name: str, client: Any, base_dir: Path) -> Any:
    path = f"clients.{name}"
    service = _require_service(scenario, f"{path}.target", client.target)
    load = client.load
    for route, weight in load.routes.items():
        if route not in service.routes:
            raise ScenarioError(f"{path}.load.routes.{route}", route,
                                f"{route!r} is not a route of service {client.target!r}; "
                                f"routes: {name_list(service.routes)}")
        if weight < 0:
            raise ScenarioError(f"{path}.load.routes.{route}", weight,
                                f"{show_value(weight)} is a negative weight (weights are >= 0)")
    if load.routes and not any(load.routes.values()):
        raise ScenarioError(f"{path}.load.routes", load.routes,
                            f"{show_value(load.routes)}: every weight is zero; at least one must be > 0")
    if load.kind == "closed" and load.users < 1:
        raise ScenarioError(f"{path}.load.users", load.users,
                            f"{load.users}: a closed-loop load needs users >= 1")
    profile = load.profile
    if profile.kind in ("ramp", "spike") and profile.until < profile.at:
        raise ScenarioError(f"{path}.load.profile.until", format_duration(profile.until),
                            f"{format_duration(profile.until)} is before at "
                            f"({format_duration(profile.at)}); a {profile.kind} needs until >= at")
    _check_policies(client, path)
    if not load.trace:
        return client
    trace_path = (base_dir / load.trace).resolve()
    if not trace_path.is_file():
        raise ScenarioError(f"{path}.load.trace", load.trace,
                            f"{load.trace}: no such file ({trace_path})")
    return dataclasses.replace(client, load=dataclasses.replace(load, trace=str(trace_path)))


def _check_call_graph(scenario: Scenario) -> None:
    """Calls form a graph between services; a cycle is an error unless allow_cycles says so."""
    calls: dict[str, list[str]] = {name: [] for name in scenario.services}
    for name, service in scenario.services.items():
        for route in service.routes.values():
            for step in route.steps:
                if step.call:
                    callee = split_call(step.call)[0]
                    if callee not in calls[name]:
                        calls[name].append(callee)
    if scenario.allow_cycles:
        return
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in calls[node]:
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                raise ScenarioError("services", " -> ".join(cycle),
                                    f"the calls form a cycle ({' -> '.join(cycle)}); set allow_cycles: true "
                                    f"if that is intended")
            if state.get(nxt) is None:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in calls:
        if state.get(name) is None:
            visit(name, [name])


def _check_fault(scenario: Scenario, index: int, fault: Any) -> None:
    path = f"faults.{index}"
    if fault.kind == "db_lock":
        _require_table(scenario, f"{path}.target", fault.target)
        return
    if fault.kind == "partition":
        caller, sep, callee = fault.target.partition("->")
        if not sep:
            raise ScenarioError(f"{path}.target", fault.target,
                                f"{fault.target!r}: a partition's target is an edge, caller->callee")
        if caller not in scenario.services and caller not in scenario.clients:
            raise ScenarioError(f"{path}.target", fault.target,
                                f"{caller!r} is neither a service nor a client; services: "
                                f"{name_list(scenario.services)}; clients: {name_list(scenario.clients)}")
        _require_service(scenario, f"{path}.target", callee)
        return
    service = _require_service(scenario, f"{path}.target", fault.target)
    if fault.instance >= service.instances:
        raise ScenarioError(f"{path}.instance", fault.instance,
                            f"{fault.instance}: service {fault.target!r} has {service.instances} instance(s) "
                            f"(0 to {service.instances - 1})")
    named = [(f"{path}.routes.{index}", route) for index, route in enumerate(fault.routes)]
    if getattr(fault, "route", ""):  # slow_clients: the route requested at the end
        named.append((f"{path}.route", fault.route))
    for route_path, route in named:
        if route not in service.routes:
            raise ScenarioError(route_path, route, f"{route!r} is not a route of service "
                                                   f"{fault.target!r}; routes: {name_list(service.routes)}")


def _check_policies(edge: Any, path: str) -> None:
    """The retry and hedging settings of a client or an edge (``path``) agree with each other."""
    retry = edge.retry
    _check_retry_on(retry.retry_on, f"{path}.retry.retry_on")
    for index, status in enumerate(retry.retry_on_status):
        if not 400 <= status <= 599:
            raise ScenarioError(f"{path}.retry.retry_on_status.{index}", status,
                                f"{status} is not an HTTP error status; retry_on_status takes 400..599")
    if retry.backoff_base > retry.backoff_cap:
        raise ScenarioError(f"{path}.retry.backoff_base", format_duration(retry.backoff_base),
                            f"{format_duration(retry.backoff_base)} is above backoff_cap "
                            f"({format_duration(retry.backoff_cap)}); backoff_base must be <= backoff_cap")
    if retry.jitter == "decorrelated" and retry.backoff != "exponential":
        raise ScenarioError(f"{path}.retry.jitter", retry.jitter,
                            f"decorrelated jitter needs backoff: exponential (backoff is {retry.backoff})")
    if edge.hedging.enabled and retry.max_attempts < 2:
        raise ScenarioError(f"{path}.hedging.enabled", True,
                            f"true: hedging needs retry.max_attempts >= 2 (it is {retry.max_attempts}); "
                            f"the hedges are attempts 2 to max_attempts")


def _check_retry_on(kinds: tuple[str, ...], path: str) -> None:
    retryable = [kind for kind in ERROR_KINDS if kind not in POLICY_REJECTION_KINDS]
    for index, kind in enumerate(kinds):
        if kind in POLICY_REJECTION_KINDS:
            raise ScenarioError(f"{path}.{index}", kind,
                                f"{kind} is a policy rejection and is never retried; retry_on takes "
                                f"{', '.join(retryable)}")
        if kind not in ERROR_KINDS:
            raise ScenarioError(f"{path}.{index}", kind,
                                f"{kind!r} is not an error kind; retry_on takes {', '.join(retryable)}")


def _require_service(scenario: Scenario, path: str, name: str) -> Any:
    if name not in scenario.services:
        raise ScenarioError(path, name, f"unknown service {name!r}; services: {name_list(scenario.services)}")
    return scenario.services[name]


def _require_table(scenario: Scenario, path: str, text: str) -> None:
    database, dot, table = text.partition(".")
    if not dot or not database or not table:
        raise ScenarioError(path, text, f"{show_value(text)} is not database.table")
    if database not in scenario.databases:
        raise ScenarioError(path, text, f"unknown database {database!r} in {text!r}; "
                                        f"databases: {name_list(scenario.databases)}")
    tables = scenario.databases[database].tables
    if table not in tables:
        raise ScenarioError(path, text, f"unknown table {table!r} in {text!r}; "
                                        f"tables of {database}: {name_list(tables)}")


