"""Cheap cancellable timers on top of a SimPy environment.

A storm simulator is made of timers that almost never fire: client timeouts,
read deadlines, idle timeouts. A SimPy ``Timeout`` cannot be removed from the
event heap, so each one costs a heap entry and a Python step even when nobody
waits for it any more (design.md §6). ``TimerService`` keeps its own heap with
lazy deletion and keeps exactly one SimPy wake-up scheduled, for the earliest
live deadline. Cancelling is O(1) (a flag); a cancelled timer is dropped when
it reaches the top of the heap, without a SimPy event, and the heap is compacted
when cancelled timers outnumber live ones, so it stays the size of what is
pending.

Timers with equal deadlines fire in the order they were started.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable

import simpy

COMPACT_AFTER = 4096


class Timer:
    __slots__ = ("at", "callback", "arg", "live", "service")

    def __init__(self, at: float, callback: Callable[[Any], None], arg: Any, service: "TimerService") -> None:
        self.at = at
        self.callback = callback
        self.arg = arg
        self.live = True
        self.service = service

    def cancel(self) -> None:
        if self.live:
            self.live = False
            self.service.cancelled += 1


class TimerService:
    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = 0
        self._wake_at = float("inf")
        self._wake_generation = 0
        self.fired = 0
        self.cancelled = 0      # cancelled timers still in the heap

    def start(self, delay: float, callback: Callable[[Any], None], arg: Any = None) -> Timer:
        """Call ``callback(arg)`` after ``delay`` unless the returned timer is cancelled."""
        at = self.env.now + delay
        timer = Timer(at, callback, arg, self)
        if self.cancelled > COMPACT_AFTER and self.cancelled * 2 > len(self._heap):
            self._compact()
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, timer))
        if at < self._wake_at:
            self._schedule_wake(at)
        return timer

    def _compact(self) -> None:
        """Drop cancelled timers when they outnumber the live ones (amortised O(1) per cancel)."""
        heap = self._heap
        heap[:] = [entry for entry in heap if entry[2].live]   # in place: _on_wake holds the list
        heapq.heapify(heap)
        self.cancelled = 0

    def _schedule_wake(self, at: float) -> None:
        self._wake_at = at
        self._wake_generation += 1
        event = self.env.timeout(at - self.env.now, self._wake_generation)
        event.callbacks.append(self._on_wake)

    def _on_wake(self, event: simpy.Event) -> None:
        if event.value != self._wake_generation:
            return  # superseded by an earlier wake-up
        self._wake_at = float("inf")
        heap = self._heap
        now = self.env.now
        while heap:
            at, _, timer = heap[0]
            if not timer.live:
                heapq.heappop(heap)
                self.cancelled -= 1
                continue
            if at > now:
                break
            heapq.heappop(heap)
            timer.live = False
            self.fired += 1
            timer.callback(timer.arg)
        while heap and not heap[0][2].live:
            heapq.heappop(heap)
            self.cancelled -= 1
        if heap and heap[0][0] < self._wake_at:
            self._schedule_wake(heap[0][0])
