"""Netflix Hystrix (1.5) circuit breaker as a pure state machine.

Owns ``HystrixCircuitBreaker`` with its defaults (semantics.md §7): a rolling
statistics window of 10 s in 10 buckets, requestVolumeThreshold 20,
errorThresholdPercentage 50, sleepWindow 5 s, health snapshot every 500 ms. The trip
check runs only at health snapshots (instants k x 500 ms), so it lags the failures by
up to 500 ms: at a snapshot, if ``total >= 20`` and ``error% >= 50``, CLOSED -> OPEN.
All admitted results count (FAILURE/TIMEOUT/rejections are errors); short-circuited
calls are not counted. After the sleep window (``now > opened + sleep``, strict) exactly
one request flips OPEN -> HALF_OPEN in ``attemptExecution`` and is let through; the
state is lazy until that request. A success while HALF_OPEN closes and resets the
metrics stream; a failure reopens and restarts the sleep window.
"""

from __future__ import annotations

import math
from collections import deque

from sim.breakers import CLOSED, HALF_OPEN, OPEN, BreakerBase

_EPS = 1e-9


class HystrixBreaker(BreakerBase):
    def __init__(self, rolling_window_s: float = 10.0, n_buckets: int = 10,
                 request_volume_threshold: int = 20, error_threshold_percentage: float = 50.0,
                 sleep_window_s: float = 5.0, health_snapshot_interval_s: float = 0.5) -> None:
        super().__init__()
        self.rolling_window_s = rolling_window_s
        self.n_buckets = n_buckets
        self.bucket_s = rolling_window_s / n_buckets
        self.request_volume_threshold = request_volume_threshold
        self.error_threshold_percentage = error_threshold_percentage
        self.sleep_window_s = sleep_window_s
        self.health_snapshot_interval_s = health_snapshot_interval_s
        self._events: deque[tuple[float, bool]] = deque()   # (completed at, error)
        self._n_errors = 0
        self._last_snapshot_k = 0
        self._opened_at: float | None = None

    # ---------------------------------------------------------------- metrics

    def _snapshot(self, at_s: float) -> tuple[int, int]:
        """Health counts at the snapshot instant ``at_s``: the buckets of the rolling window."""
        current_bucket = math.ceil(at_s / self.bucket_s - _EPS) - 1
        window_start_s = (current_bucket - self.n_buckets + 1) * self.bucket_s
        while self._events and self._events[0][0] < window_start_s - _EPS:
            _, err = self._events.popleft()
            self._n_errors -= err
        return len(self._events), self._n_errors

    def _advance(self, now_s: float) -> None:
        """Run the health snapshots due in (last snapshot, now]."""
        if now_s < (self._last_snapshot_k + 1 - 2 * _EPS) * self.health_snapshot_interval_s:
            return        # no snapshot due yet (k_now <= last): the common case, decided cheaply
        k_now = math.floor(now_s / self.health_snapshot_interval_s + _EPS)
        if self._state != CLOSED or not self._events:
            self._last_snapshot_k = max(self._last_snapshot_k, k_now)
            return
        for k in range(self._last_snapshot_k + 1, k_now + 1):
            at_s = k * self.health_snapshot_interval_s
            total, errors = self._snapshot(at_s)
            if total >= self.request_volume_threshold and \
                    errors * 100.0 / total >= self.error_threshold_percentage:
                self._opened_at = at_s
                self._set_state(at_s, OPEN)
                break
            if not self._events:
                break
        self._last_snapshot_k = max(self._last_snapshot_k, k_now)

    # ---------------------------------------------------------------- interface

    def allow(self, now_s: float) -> bool:
        self._advance(now_s)
        if self._state == CLOSED:
            return True
        if self._state == OPEN and self._opened_at is not None and \
                now_s > self._opened_at + self.sleep_window_s:
            self._set_state(now_s, HALF_OPEN)              # the single probe
            return True
        return False

    def on_result(self, now_s: float, success: bool, latency_s: float,
                  generation: int | None = None) -> None:
        self._advance(now_s)
        self._events.append((now_s, not success))
        self._n_errors += not success
        if self._state == HALF_OPEN:
            if success:                                    # markSuccess
                self._events.clear()
                self._n_errors = 0
                self._opened_at = None
                self._set_state(now_s, CLOSED)
            else:                                          # markNonSuccess
                self._opened_at = now_s
                self._set_state(now_s, OPEN)
