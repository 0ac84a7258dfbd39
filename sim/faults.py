"""The fault timeline: which fault is active when, what it does, and whom it touches.

Faults act on named targets: a DB lock on ``db.table`` makes every query on that
table wait ``lock_wait`` while it lasts; latency and error injection act on
routes of a service (or of one instance); instance kills and CPU throttles act on
instances (``sim.world`` schedules them); a partition drops everything on an edge;
slow clients are handled by ``sim.slow_clients``. A
request is *touched* when a fault acts on it directly: its route is touched by a
fault active when it arrives, or a fault acted on it (its query waited on the
lock, its handler was delayed or failed); in a service graph a request whose
downstream call was touched is touched too. Collapse is judged on the untouched
rest (design.md §4).
"""

from __future__ import annotations

from typing import Any

from sim.result import FaultWindow
from sim.rng import BatchedStream
from sim.schema import FaultConfig, Scenario


class Faults:
    def __init__(self, scenario: Scenario, end_at: float, error_uniform: BatchedStream) -> None:
        self.windows: list[FaultWindow] = []
        self._locks: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        self._latency: dict[tuple[str, str], list[tuple[float, float, float, int]]] = {}
        self._errors: dict[tuple[str, str], list[tuple[float, float, float, int, int]]] = {}
        self._partitions: dict[str, list[tuple[float, float]]] = {}
        self.instance_faults: list[tuple[FaultConfig, float, float]] = []   # kills, CPU throttles
        self._touching: dict[tuple[str, str], list[tuple[float, float]]] = {}
        self.slow_clients: list[FaultConfig] = []
        self._uniform = error_uniform
        self._route_names: dict[str, list[str]] = {name: list(s.routes) for name, s in scenario.services.items()}
        for fault in scenario.faults:
            if fault.at >= end_at:
                continue            # scheduled after the end of this run: it never happens
            start = fault.at
            end = min(fault.at + fault.duration, end_at) if fault.duration > 0 else end_at
            touched = self._touched_routes(scenario, fault)
            self.windows.append(FaultWindow(fault.kind, start, end, fault.target, tuple(f"{s}/{r}" for s, r in touched)))
            for key in touched:
                self._touching.setdefault(key, []).append((start, end))
            if fault.kind == "db_lock":
                db, table = fault.target.split(".", 1)
                self._locks.setdefault((db, table), []).append((start, end, fault.lock_wait))
            elif fault.kind == "latency":
                for key in touched:
                    self._latency.setdefault(key, []).append((start, end, fault.delay, fault.instance))
            elif fault.kind == "error_rate":
                for key in touched:
                    self._errors.setdefault(key, []).append((start, end, fault.rate, fault.status, fault.instance))
            elif fault.kind == "partition":
                self._partitions.setdefault(fault.target, []).append((start, end))
            elif fault.kind in ("instance_kill", "cpu_throttle"):
                self.instance_faults.append((fault, start, end))
            elif fault.kind == "slow_clients":
                self.slow_clients.append(fault)
        self.windows.sort(key=lambda w: w.start_at)
        self.trigger_at_s = self.windows[0].start_at if self.windows else None
        self.any_route_faults = bool(self._latency or self._errors)
        self.partitions = bool(self._partitions)
        self._route_keys: dict[str, list[tuple[str, str]]] = {
            s: [(s, r) for r in routes] for s, routes in self._route_names.items()}

    @staticmethod
    def _touched_routes(scenario: Scenario, fault: FaultConfig) -> list[tuple[str, str]]:
        if fault.kind == "db_lock":
            return [(s_name, r_name) for s_name, s in scenario.services.items()
                    for r_name, r in s.routes.items() if any(st.query == fault.target for st in r.steps)]
        if fault.kind in ("latency", "error_rate", "instance_kill", "cpu_throttle"):
            routes = fault.routes or tuple(scenario.services[fault.target].routes)
            return [(fault.target, r) for r in routes]
        return []

    def partitioned(self, edge: str, now: float) -> bool:
        """Is the edge ``caller->callee`` cut at ``now``?"""
        windows = self._partitions.get(edge)
        return bool(windows) and any(start <= now < end for start, end in windows)

    def touched_at_arrival(self, service: str, route: int, now: float) -> bool:
        windows = self._touching.get(self._route_keys[service][route])
        if not windows:
            return False
        return any(start <= now < end for start, end in windows)

    @staticmethod
    def _mark(attempt: Any) -> None:
        """The fault acted on this attempt: its request, and the requests it serves upstream."""
        request = attempt.request if attempt is not None else None
        while request is not None and not request.touched:
            request.touched = True
            parent = request.parent
            request = parent.attempt.request if parent is not None and parent.attempt is not None else None

    def lock_wait_s(self, db: str, table: str, now: float, attempt: Any) -> float:
        windows = self._locks.get((db, table))
        if not windows:
            return 0.0
        wait = 0.0
        for start, end, lock_s in windows:
            if start <= now < end:
                wait = max(wait, lock_s)
        if wait > 0:
            self._mark(attempt)
        return wait

    def latency_s(self, service: str, route: int, now: float, attempt: Any, instance: int = 0) -> float:
        windows = self._latency.get(self._route_keys[service][route])
        if not windows:
            return 0.0
        delay = sum(d for start, end, d, inst in windows if start <= now < end and inst in (-1, instance))
        if delay > 0:
            self._mark(attempt)
        return delay

    def injected_status(self, service: str, route: int, now: float, attempt: Any, instance: int = 0) -> int:
        windows = self._errors.get(self._route_keys[service][route])
        if not windows:
            return 0
        for start, end, rate, status, inst in windows:
            if start <= now < end and inst in (-1, instance):
                self._mark(attempt)
                if self._uniform.next() < rate:
                    return status
        return 0
