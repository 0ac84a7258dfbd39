"""The write-up's dual-metric circuit breaker (scenarios.md S7, S9) as a pure state machine.

Owns the chapter-3 breaker: CLOSED -> OPEN when a sampling window shows success rate
< 90 % or P99 > 2,000 ms, in 3 consecutive windows; OPEN -> HALF_OPEN after
``base_open_s x 2^n`` (60 s x 2^n; n = reopenings since the last close, capped at
``max_open_s``); HALF_OPEN sends probe batches (3 low-weight probes every 30 s, the
sales-event fix) and goes CLOSED when the probe results show success >= 95 % and
P99 <= 1,200 ms, else back to OPEN with n + 1.

Choices the write-up leaves open (flagged in docs/policies/breakers.md):
sampling windows are ``sampling_window_s`` = 1 s long, aligned to multiples of it, and
judged when the clock passes their end (so the trip is stamped at the 3rd bad window's
end); a window with fewer than ``min_calls_per_window`` results is not judged bad and
breaks the streak; P99 is nearest-rank over the window's completed calls, failures
included. OPEN -> HALF_OPEN and new probe batches are timer-driven (stamped at their
due instant even when observed later). Half-open decides once
``probe_results_to_decide`` probe results are in (default one batch), or reopens as
soon as the success target can no longer be met. Results of calls admitted in an
older generation (passed as ``generation``) are ignored, so stragglers are not probes.
"""

from __future__ import annotations

import math

from sim.breakers import CLOSED, HALF_OPEN, OPEN, BreakerBase


def p99_s(latencies_s: list[float]) -> float:
    """Nearest-rank 99th percentile."""
    ordered = sorted(latencies_s)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


class DualMetricBreaker(BreakerBase):
    def __init__(self, sampling_window_s: float = 1.0, trip_success_rate_below: float = 0.90,
                 trip_p99_above_s: float = 2.0, n_bad_windows_to_trip: int = 3,
                 min_calls_per_window: int = 1, base_open_s: float = 60.0, max_open_s: float = 3840.0,
                 probe_batch_size: int = 3, probe_interval_s: float = 30.0,
                 probe_results_to_decide: int | None = None,
                 close_success_rate_at_least: float = 0.95, close_p99_at_most_s: float = 1.2) -> None:
        super().__init__()
        self.sampling_window_s = sampling_window_s
        self.trip_success_rate_below = trip_success_rate_below
        self.trip_p99_above_s = trip_p99_above_s
        self.n_bad_windows_to_trip = n_bad_windows_to_trip
        self.min_calls_per_window = min_calls_per_window
        self.base_open_s = base_open_s
        self.max_open_s = max_open_s
        self.probe_batch_size = probe_batch_size
        self.probe_interval_s = probe_interval_s
        self.probe_results_to_decide = probe_results_to_decide or probe_batch_size
        self.close_success_rate_at_least = close_success_rate_at_least
        self.close_p99_at_most_s = close_p99_at_most_s
        self.n_reopenings = 0                      # the n of 60 s x 2^n
        self._window_index = 0
        self._window_latencies_s: list[float] = []
        self._window_n_failed = 0
        self._n_bad_windows = 0
        self._half_open_at_s = 0.0
        self._open_until_s = 0.0
        self._probe_batch_index = -1
        self._probes_left = 0
        self._probe_latencies_s: list[float] = []
        self._probe_n_failed = 0

    # ---------------------------------------------------------------- timers

    def open_duration_s(self) -> float:
        return min(self.max_open_s, self.base_open_s * 2.0 ** self.n_reopenings)

    def _to_open(self, at_s: float) -> None:
        self._open_until_s = at_s + self.open_duration_s()
        self._set_state(at_s, OPEN)

    def _to_closed(self, at_s: float) -> None:
        self.n_reopenings = 0
        self._n_bad_windows = 0
        self._window_index = math.floor(at_s / self.sampling_window_s)
        self._window_latencies_s = []
        self._window_n_failed = 0
        self._set_state(at_s, CLOSED)

    def _judge_window(self, window_index: int) -> None:
        n = len(self._window_latencies_s)
        bad = n >= self.min_calls_per_window and n > 0 and (
            (n - self._window_n_failed) / n < self.trip_success_rate_below
            or p99_s(self._window_latencies_s) > self.trip_p99_above_s)
        self._n_bad_windows = self._n_bad_windows + 1 if bad else 0
        self._window_latencies_s = []
        self._window_n_failed = 0
        if self._n_bad_windows >= self.n_bad_windows_to_trip:
            self._n_bad_windows = 0
            self._to_open((window_index + 1) * self.sampling_window_s)

    def _advance(self, now_s: float) -> None:
        if self._state == CLOSED:
            current = math.floor(now_s / self.sampling_window_s)
            if current > self._window_index:
                self._judge_window(self._window_index)
                if self._state == CLOSED and current > self._window_index + 1:
                    self._n_bad_windows = 0        # the windows in between were empty
                self._window_index = current
        if self._state == OPEN and now_s >= self._open_until_s:
            self._half_open_at_s = self._open_until_s
            self._probe_batch_index = -1
            self._probe_latencies_s = []
            self._probe_n_failed = 0
            self._set_state(self._open_until_s, HALF_OPEN)
        if self._state == HALF_OPEN:
            batch = math.floor((now_s - self._half_open_at_s) / self.probe_interval_s)
            if batch > self._probe_batch_index:
                self._probe_batch_index = batch
                self._probes_left = self.probe_batch_size

    # ---------------------------------------------------------------- interface

    def allow(self, now_s: float) -> bool:
        self._advance(now_s)
        if self._state == CLOSED:
            return True
        if self._state == HALF_OPEN and self._probes_left > 0:
            self._probes_left -= 1
            return True
        return False

    def on_result(self, now_s: float, success: bool, latency_s: float,
                  generation: int | None = None) -> None:
        self._advance(now_s)
        if generation is not None and generation != self._generation:
            return
        if self._state == CLOSED:
            self._window_latencies_s.append(latency_s)
            self._window_n_failed += not success
        elif self._state == HALF_OPEN:
            self._probe_latencies_s.append(latency_s)
            self._probe_n_failed += not success
            n = len(self._probe_latencies_s)
            best_success = (self.probe_results_to_decide - self._probe_n_failed) / self.probe_results_to_decide
            if best_success < self.close_success_rate_at_least:
                self.n_reopenings += 1
                self._to_open(now_s)
            elif n >= self.probe_results_to_decide:
                ok = ((n - self._probe_n_failed) / n >= self.close_success_rate_at_least
                      and p99_s(self._probe_latencies_s) <= self.close_p99_at_most_s)
                if ok:
                    self._to_closed(now_s)
                else:
                    self.n_reopenings += 1
                    self._to_open(now_s)
