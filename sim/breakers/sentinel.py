"""Alibaba Sentinel degrade rules (circuit breakers) as a pure state machine.

Owns ``ResponseTimeCircuitBreaker`` and ``ExceptionCircuitBreaker`` of sentinel-core
(semantics.md §7). Grades: ``slow_ratio`` (DEGRADE_GRADE_RT = 0: a call is slow when
``rt > max_rt_ms``; trip when ``slow ratio > slow_ratio_threshold``, or both equal 1.0),
``error_ratio`` (1: trip when ``error ratio > error_ratio_threshold``) and
``error_count`` (2: trip when ``errors > error_count_threshold``). Statistics live in a
LeapArray with one bucket of ``stat_interval_s`` (default 1 s), aligned to multiples of
it and reset when a new interval begins; no trip below ``min_request_amount`` (5).
OPEN -> HALF_OPEN lazily on the first ``allow`` at or after ``recovery_timeout_s``
(Sentinel's ``timeWindow``), which lets exactly one probe through; while HALF_OPEN the
next completed call decides (RT <= limit / no error -> CLOSED with the stats reset,
else OPEN with the recovery timer restarted), as ``handleStateChangeWhenThresholdExceeded``
does for any completion.
"""

from __future__ import annotations

import math

from sim.breakers import CLOSED, HALF_OPEN, OPEN, BreakerBase

GRADES = ("slow_ratio", "error_ratio", "error_count")
_GRADE_NUMBERS = {0: "slow_ratio", 1: "error_ratio", 2: "error_count"}


class SentinelBreaker(BreakerBase):
    def __init__(self, grade: str | int = "slow_ratio", max_rt_ms: float = 1000.0,
                 slow_ratio_threshold: float = 1.0, error_ratio_threshold: float = 0.5,
                 error_count_threshold: int = 5, recovery_timeout_s: float = 10.0,
                 min_request_amount: int = 5, stat_interval_s: float = 1.0) -> None:
        super().__init__()
        grade = _GRADE_NUMBERS.get(grade, grade) if isinstance(grade, int) else grade
        if grade not in GRADES:
            raise ValueError(f"sentinel grade {grade!r}: expected one of {', '.join(GRADES)} or 0/1/2")
        self.grade = grade
        self.max_rt_ms = max_rt_ms
        self.slow_ratio_threshold = slow_ratio_threshold
        self.error_ratio_threshold = error_ratio_threshold
        self.error_count_threshold = error_count_threshold
        self.recovery_timeout_s = recovery_timeout_s
        self.min_request_amount = min_request_amount
        self.stat_interval_s = stat_interval_s
        self._bucket_start_at = 0.0
        self._n_total = 0
        self._n_bad = 0          # slow calls (RT grade) or errors (exception grades)
        self._next_retry_at = 0.0

    def _is_bad(self, success: bool, latency_s: float) -> bool:
        if self.grade == "slow_ratio":
            return latency_s * 1000.0 > self.max_rt_ms
        return not success

    def _bucket(self, now_s: float) -> None:
        start = math.floor(now_s / self.stat_interval_s) * self.stat_interval_s
        if start != self._bucket_start_at:
            self._bucket_start_at = start
            self._n_total = 0
            self._n_bad = 0

    def _exceeded(self) -> bool:
        if self._n_total < self.min_request_amount:
            return False
        if self.grade == "slow_ratio":
            ratio = self._n_bad / self._n_total
            return ratio > self.slow_ratio_threshold or (ratio == self.slow_ratio_threshold == 1.0)
        if self.grade == "error_ratio":
            return self._n_bad / self._n_total > self.error_ratio_threshold
        return self._n_bad > self.error_count_threshold

    def _to_open(self, at_s: float) -> None:
        self._next_retry_at = at_s + self.recovery_timeout_s
        self._set_state(at_s, OPEN)


    def allow(self, now_s: float) -> bool:
        if self._state == CLOSED:
            return True
        if self._state == OPEN and now_s >= self._next_retry_at:
            self._set_state(now_s, HALF_OPEN)            # fromOpenToHalfOpen: the one probe
            return True
        return False

    def on_result(self, now_s: float, success: bool, latency_s: float,
                  generation: int | None = None) -> None:
        self._bucket(now_s)
        bad = self._is_bad(success, latency_s)
        self._n_total += 1
        self._n_bad += bad
        if self._state == OPEN:
            return
        if self._state == HALF_OPEN:
            if bad:
                self._to_open(now_s)
            else:
                self._n_total = 0                        # resetStat
                self._n_bad = 0
                self._set_state(now_s, CLOSED)
            return
        if self._exceeded():
            self._to_open(now_s)
