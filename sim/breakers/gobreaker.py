"""sony/gobreaker v1 as a pure state machine.

Owns the consecutive-failure breaker of ``gobreaker.go`` (semantics.md §7):
MaxRequests 0 -> 1, Interval 0 (closed counts cleared only on a state change), Timeout
60 s, ReadyToTrip ``ConsecutiveFailures > 5`` (the 6th consecutive failure trips).
Transitions are lazy, as in ``currentState``: OPEN -> HALF_OPEN on the next check once
``expiry`` is strictly before now; with an Interval the closed counts start a new
generation on the next check after it elapses. Half-open admits while
``Requests < MaxRequests``, closes on ``ConsecutiveSuccesses >= MaxRequests``, and any
failure reopens. Results of calls admitted in an older generation are ignored
(``afterRequest``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sim.breakers import CLOSED, HALF_OPEN, OPEN, BreakerBase


@dataclass
class Counts:
    """gobreaker.Counts: cleared at every new generation."""

    requests: int = 0
    total_successes: int = 0
    total_failures: int = 0
    consecutive_successes: int = 0
    consecutive_failures: int = 0


class GoBreaker(BreakerBase):
    def __init__(self, max_requests: int = 0, interval_s: float = 0.0, timeout_s: float = 0.0,
                 trip_after_consecutive_failures: int = 6,
                 ready_to_trip: Callable[[Counts], bool] | None = None,
                 latency_success_max_s: float | None = None) -> None:
        super().__init__()
        self.max_requests = max_requests if max_requests > 0 else 1
        self.interval_s = interval_s
        self.timeout_s = timeout_s if timeout_s > 0 else 60.0
        self.trip_after_consecutive_failures = trip_after_consecutive_failures
        self._ready_to_trip = ready_to_trip or (
            lambda c: c.consecutive_failures >= self.trip_after_consecutive_failures)
        # IsSuccessful is err == nil; optionally treat a too-slow success as a failure.
        self.latency_success_max_s = latency_success_max_s
        self.counts = Counts()
        self._expiry_at: float | None = None   # None = Go's zero time
        self._new_generation(0.0)

    def _new_generation(self, now_s: float) -> None:
        """toNewGeneration: bump the generation, clear counts, set the expiry."""
        self._generation += 1
        self.counts = Counts()
        if self._state == CLOSED:
            self._expiry_at = now_s + self.interval_s if self.interval_s > 0 else None
        elif self._state == OPEN:
            self._expiry_at = now_s + self.timeout_s
        else:
            self._expiry_at = None

    def _set_state(self, at_s: float, new_state: str) -> None:
        if new_state == self._state:
            return
        self._state = new_state
        self.transitions.append((at_s, new_state))
        self._new_generation(at_s)

    def _current(self, now_s: float) -> str:
        """currentState: the lazy transitions."""
        if self._state == CLOSED:
            if self._expiry_at is not None and self._expiry_at < now_s:
                self._new_generation(now_s)
        elif self._state == OPEN:
            if self._expiry_at is not None and self._expiry_at < now_s:
                self._set_state(now_s, HALF_OPEN)
        return self._state

    def state(self, now_s: float) -> str:
        return self._current(now_s)

    def allow(self, now_s: float) -> bool:
        state = self._current(now_s)
        if state == OPEN:
            return False                                   # ErrOpenState
        if state == HALF_OPEN and self.counts.requests >= self.max_requests:
            return False                                   # ErrTooManyRequests
        self.counts.requests += 1
        return True

    def on_result(self, now_s: float, success: bool, latency_s: float,
                  generation: int | None = None) -> None:
        state = self._current(now_s)
        if state == OPEN or (generation is not None and generation != self._generation):
            return
        if success and self.latency_success_max_s is not None and latency_s > self.latency_success_max_s:
            success = False
        c = self.counts
        if success:
            c.total_successes += 1
            c.consecutive_successes += 1
            c.consecutive_failures = 0
            if state == HALF_OPEN and c.consecutive_successes >= self.max_requests:
                self._set_state(now_s, CLOSED)
        else:
            c.total_failures += 1
            c.consecutive_failures += 1
            c.consecutive_successes = 0
            if state == CLOSED and self._ready_to_trip(c):
                self._set_state(now_s, OPEN)
            elif state == HALF_OPEN:
                self._set_state(now_s, OPEN)
