"""The CPU of a server process: GOMAXPROCS cores shared first come, first served.

Runnable work (a handler's CPU step, a TLS handshake) takes a free core or
queues for one. Go's scheduler preempts every 10 ms, but for the short bursts
modelled here FCFS over the cores gives the same queueing picture at one event
per burst. When the GC is modelled (``sim.gc``), a burst that starts while a
collection runs is stretched by 1 / (1 - the GC's share of the cores): that is
how a big heap and a burst of allocation turn into CPU saturation (S1's 98%).
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import simpy
from simpy.events import NORMAL


class Cores:
    def __init__(self, env: simpy.Environment, n_cores: int, gc_share: Callable[[], float] | None) -> None:
        """``gc_share`` gives the GC's current share of the cores; None when no GC is modelled."""
        self.env = env
        self.n_cores = n_cores
        self.free = n_cores
        self.gc_share = gc_share
        self._queue: deque[tuple[float, simpy.Event]] = deque()
        self._busy_core_s = 0.0
        self._last_change_at = 0.0
        self.slowdown = 1.0           # cpu_throttle: CPU work takes this many times longer

    def run(self, cpu_s: float) -> simpy.Event:
        """An event that fires when ``cpu_s`` of CPU work has been done on one core (``slowdown``
        times longer while a cpu_throttle fault holds the process back)."""
        if self.slowdown != 1.0:
            cpu_s *= self.slowdown
        done = simpy.Event(self.env)
        done.callbacks.append(self._on_burst_done)
        if self.free > 0:
            self._start(cpu_s, done)
        else:
            self._queue.append((cpu_s, done))
        return done

    def _account(self) -> None:
        now = self.env.now
        self._busy_core_s += (self.n_cores - self.free) * (now - self._last_change_at)
        self._last_change_at = now

    def _start(self, cpu_s: float, done: simpy.Event) -> None:
        self._account()
        self.free -= 1
        if self.gc_share is not None:
            share = self.gc_share()
            if share > 0.0:
                cpu_s /= 1.0 - share
        done._ok = True
        done._value = None
        self.env.schedule(done, NORMAL, cpu_s)

    def _on_burst_done(self, _event: simpy.Event) -> None:
        self._account()
        self.free += 1
        if self._queue:
            cpu_s, done = self._queue.popleft()
            self._start(cpu_s, done)

    def drop_queue(self) -> None:
        """The process died: queued bursts will never run."""
        self._queue.clear()

    def busy_core_seconds(self) -> float:
        """Busy core-seconds since the start, up to now."""
        self._account()
        return self._busy_core_s
