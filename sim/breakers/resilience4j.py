"""resilience4j CircuitBreaker as a pure state machine.

Owns ``CircuitBreakerStateMachine`` + ``CircuitBreakerMetrics`` with the defaults of
``CircuitBreakerConfig`` (semantics.md §7): failureRateThreshold 50 %,
slowCallRateThreshold 100 %, slowCallDurationThreshold 60 s, waitDurationInOpenState
60 s, permittedNumberOfCallsInHalfOpenState 10, minimumNumberOfCalls 100,
slidingWindowSize 100, COUNT_BASED. Windows: COUNT_BASED = the last N calls (minimum
calls become ``min(minimum, N)``); TIME_BASED = the last N epoch seconds in one-second
partial aggregations. After every recorded call: nothing below the minimum calls, else
trip on ``failure% >= threshold`` or ``slow% >= threshold``; a call is slow when
``duration > slowCallDurationThreshold`` (strict). OPEN -> HALF_OPEN is lazy, on the
first ``allow`` strictly after the wait (unless ``automatic_transition``). HALF_OPEN
admits exactly ``permitted_calls_in_half_open`` calls into a fresh COUNT_BASED window of
that size (minimum ``min(minimum, permitted)``): above the thresholds -> OPEN, below ->
CLOSED. As in the reference, any result recorded while HALF_OPEN counts (no
generation filter). ``max_wait_in_half_open_s`` > 0 sends a stuck half-open to OPEN.
"""

from __future__ import annotations

import math
from collections import deque

from sim.breakers import CLOSED, HALF_OPEN, OPEN, BreakerBase


class _CountWindow:
    def __init__(self, size: int) -> None:
        self.size = size
        self._calls: deque[tuple[bool, bool]] = deque()   # (failed, slow)
        self.n_failed = 0
        self.n_slow = 0

    def record(self, now_s: float, failed: bool, slow: bool) -> None:
        if len(self._calls) == self.size:
            f, s = self._calls.popleft()
            self.n_failed -= f
            self.n_slow -= s
        self._calls.append((failed, slow))
        self.n_failed += failed
        self.n_slow += slow

    def counts(self, now_s: float) -> tuple[int, int, int]:
        return len(self._calls), self.n_failed, self.n_slow


class _TimeWindow:
    """The last ``size_s`` epoch seconds, one partial aggregation per second."""

    def __init__(self, size_s: int) -> None:
        self.size_s = size_s
        self._buckets: deque[list[int]] = deque()   # [epoch second, calls, failed, slow]

    def _drop_old(self, now_s: float) -> None:
        oldest = math.floor(now_s) - self.size_s + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()

    def record(self, now_s: float, failed: bool, slow: bool) -> None:
        self._drop_old(now_s)
        second = math.floor(now_s)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0, 0])
        b = self._buckets[-1]
        b[1] += 1
        b[2] += failed
        b[3] += slow

    def counts(self, now_s: float) -> tuple[int, int, int]:
        self._drop_old(now_s)
        return (sum(b[1] for b in self._buckets), sum(b[2] for b in self._buckets),
                sum(b[3] for b in self._buckets))


class Resilience4jBreaker(BreakerBase):
    def __init__(self, failure_rate_threshold: float = 50.0, slow_call_rate_threshold: float = 100.0,
                 slow_call_duration_threshold_s: float = 60.0, wait_in_open_s: float = 60.0,
                 permitted_calls_in_half_open: int = 10, minimum_calls: int = 100,
                 sliding_window_size: int = 100, sliding_window_type: str = "count",
                 max_wait_in_half_open_s: float = 0.0, automatic_transition: bool = False) -> None:
        super().__init__()
        kind = sliding_window_type.lower().replace("_based", "")
        if kind not in ("count", "time"):
            raise ValueError(f"sliding_window_type {sliding_window_type!r}: expected count or time")
        self.failure_rate_threshold = failure_rate_threshold
        self.slow_call_rate_threshold = slow_call_rate_threshold
        self.slow_call_duration_threshold_s = slow_call_duration_threshold_s
        self.wait_in_open_s = wait_in_open_s
        self.permitted_calls_in_half_open = permitted_calls_in_half_open
        self.sliding_window_size = sliding_window_size
        self.sliding_window_type = kind
        self.minimum_calls = min(minimum_calls, sliding_window_size) if kind == "count" else minimum_calls
        self.max_wait_in_half_open_s = max_wait_in_half_open_s
        self.automatic_transition = automatic_transition
        self._window: _CountWindow | _TimeWindow = self._closed_window()
        self._window_minimum = self.minimum_calls
        self._retry_after_at = 0.0
        self._half_open_at = 0.0
        self._permits_left = 0

    def _closed_window(self) -> _CountWindow | _TimeWindow:
        if self.sliding_window_type == "count":
            return _CountWindow(self.sliding_window_size)
        return _TimeWindow(self.sliding_window_size)

    def _to_open(self, at_s: float) -> None:
        self._retry_after_at = at_s + self.wait_in_open_s
        self._set_state(at_s, OPEN)

    def _to_half_open(self, at_s: float) -> None:
        self._permits_left = self.permitted_calls_in_half_open
        self._window = _CountWindow(self.permitted_calls_in_half_open)
        self._window_minimum = min(self.minimum_calls, self.permitted_calls_in_half_open)
        self._half_open_at = at_s
        self._set_state(at_s, HALF_OPEN)

    def _to_closed(self, at_s: float) -> None:
        self._window = self._closed_window()
        self._window_minimum = self.minimum_calls
        self._set_state(at_s, CLOSED)

    def _advance(self, now_s: float) -> None:
        """Only the timer-driven transitions the reference has (both off by default)."""
        if self._state == OPEN and self.automatic_transition and now_s >= self._retry_after_at:
            self._to_half_open(self._retry_after_at)
        if self._state == HALF_OPEN and self.max_wait_in_half_open_s > 0 and \
                now_s >= self._half_open_at + self.max_wait_in_half_open_s:
            self._to_open(self._half_open_at + self.max_wait_in_half_open_s)
            self._advance(now_s)


    def allow(self, now_s: float) -> bool:
        self._advance(now_s)
        if self._state == CLOSED:
            return True
        if self._state == OPEN:
            if now_s > self._retry_after_at:               # Instant.isAfter: strict
                self._to_half_open(now_s)
            else:
                return False
        if self._permits_left > 0:
            self._permits_left -= 1
            return True
        return False

    def on_result(self, now_s: float, success: bool, latency_s: float,
                  generation: int | None = None) -> None:
        self._advance(now_s)
        if self._state == OPEN:
            return                      # recorded by the reference, but never decides anything
        self._window.record(now_s, not success, latency_s > self.slow_call_duration_threshold_s)
        n_calls, n_failed, n_slow = self._window.counts(now_s)
        if n_calls < self._window_minimum or n_calls == 0:
            return
        above = (n_failed * 100.0 / n_calls >= self.failure_rate_threshold
                 or n_slow * 100.0 / n_calls >= self.slow_call_rate_threshold)
        if above:
            self._to_open(now_s)
        elif self._state == HALF_OPEN:
            self._to_closed(now_s)
