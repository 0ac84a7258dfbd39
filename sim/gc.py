"""Go's garbage collector as it matters to a storm: heap goal, garbage and mark cycles.

The process's memory is its live set (connections, goroutines, in-flight
requests, handler allocations) plus garbage: everything freed since the last
collection. A cycle starts when live + garbage reaches the heap goal,
``live_at_last_mark x (1 + GOGC/100)`` (4 MiB at least, never above GOMEMLIMIT
when set); it marks the live set at ``mark_rate_per_core`` on its share of the
cores, and when it ends the garbage that existed at its start is gone (garbage
freed during the cycle floats to the next one). While a cycle runs the GC takes
``background_fraction`` of the cores, ``assist_fraction`` when the heap has run
past its goal. Two consequences a storm shows: a live set swollen by stuck
requests raises the goal above a container limit, so the next burst of
allocation is an OOM kill rather than a collection; and a big heap means long
cycles that tax every CPU burst.
"""

from __future__ import annotations

from typing import Callable

import simpy

from sim.schema import GcConfig

MIN_HEAP_GOAL_B = 4 * 1024 * 1024


class GarbageCollector:
    def __init__(self, env: simpy.Environment, config: GcConfig, cores: int, live_b: Callable[[], float]) -> None:
        self.env = env
        self.config = config
        self.enabled = config.enabled
        self._cores = cores
        self._live_b = live_b
        self.garbage_b = 0.0
        self.in_cycle = False
        self._garbage_at_start_b = 0.0
        self.cycles = 0
        self.goal_b = self._goal(live_b())

    def _goal(self, marked_live_b: float) -> float:
        goal = max(marked_live_b * (1.0 + self.config.gogc / 100.0), MIN_HEAP_GOAL_B)
        if self.config.gomemlimit:
            goal = min(goal, float(self.config.gomemlimit))
        return goal

    def freed(self, bytes_: float) -> None:
        if self.enabled:
            self.garbage_b += bytes_

    def allocated(self) -> None:
        """Called after the live set grew: start a cycle if the heap reached its goal."""
        if self.enabled and not self.in_cycle and self._live_b() + self.garbage_b >= self.goal_b:
            self._start_cycle()

    def _start_cycle(self) -> None:
        self.in_cycle = True
        self.cycles += 1
        self._garbage_at_start_b = self.garbage_b
        c = self.config
        mark_s = self._live_b() / (c.mark_rate_per_core * self._cores * c.background_fraction)
        ev = self.env.timeout(mark_s)
        ev.callbacks.append(self._end_cycle)

    def _end_cycle(self, _event: object) -> None:
        self.in_cycle = False
        self.garbage_b = max(0.0, self.garbage_b - self._garbage_at_start_b)
        live = self._live_b()
        self.goal_b = self._goal(live)
        if live + self.garbage_b >= self.goal_b:
            self._start_cycle()

    def cpu_share(self) -> float:
        if not self.in_cycle:
            return 0.0
        if self._live_b() + self.garbage_b > self.goal_b:
            return self.config.assist_fraction
        return self.config.background_fraction
