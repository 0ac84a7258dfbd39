"""The retry decision of one edge: pure, no SimPy.

``RetryPolicy`` answers two questions with the clock and a uniform draw passed
in: may attempt n+1 follow a failure of kind k (attempts left, the kind and the
status retryable, the method idempotent or retries of it allowed), and how long
to sleep first (``sim.backoff``, raised to a Retry-After when honoured). Whether
the budget lets the retry out is ``sim.retry_budget``; the client asks both.
"""

from __future__ import annotations

from sim.policies import make_backoff
from sim.schema import POLICY_REJECTION_KINDS, RetryConfig

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
"""Methods retried by default (RFC 9110 safe methods; PUT and DELETE are idempotent too, but
their replay is the application's call, so they need ``retry_non_idempotent`` like POST)."""

HTTP_KINDS = frozenset({"http_4xx", "http_5xx"})


class RetryPolicy:
    def __init__(self, config: RetryConfig) -> None:
        self.config = config
        self.max_attempts = config.max_attempts
        self._retry_on = frozenset(config.retry_on) - frozenset(POLICY_REJECTION_KINDS)
        self._statuses = frozenset(config.retry_on_status)
        self.retry_non_idempotent = config.retry_non_idempotent
        self.backoff = make_backoff(config)
        self.honour_retry_after = config.honour_retry_after

    def retryable(self, error_kind: str, status: int = 0) -> bool:
        """Is a failure of this kind (and HTTP status) one the policy retries?"""
        if error_kind not in self._retry_on:
            return False
        if self._statuses and error_kind in HTTP_KINDS:
            return status in self._statuses
        return True

    def method_allowed(self, method: str) -> bool:
        return self.retry_non_idempotent or method in IDEMPOTENT_METHODS

    def should_retry(self, attempts_done: int, error_kind: str, status: int = 0, method: str = "GET") -> bool:
        """After ``attempts_done`` attempts, the last failing with ``error_kind`` (and ``status``)."""
        return (attempts_done < self.max_attempts and self.retryable(error_kind, status)
                and self.method_allowed(method))

    def backoff_s(self, retry_number: int, uniform: float, previous_s: float | None = None,
                  retry_after_s: float = 0.0) -> float:
        """Sleep before retry ``retry_number`` (1 = first retry); ``uniform`` in [0, 1).

        ``previous_s``: the previous sleep of the same request (decorrelated jitter).
        ``retry_after_s``: the failed response's Retry-After, a floor when honoured.
        """
        delay_s = self.backoff.delay_s(retry_number, uniform, previous_s)
        if self.honour_retry_after and retry_after_s > delay_s:
            return retry_after_s
        return delay_s
