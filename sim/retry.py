"""The retry decision of one edge: pure, no SimPy (the seam for the policy library).

``RetryPolicy`` answers two questions with the clock and a uniform draw passed
in: may attempt n+1 follow a failure of kind k, and how long to wait first.
Backoff: none, or exponential ``min(cap, base * 2^(retry-1))`` with AWS full
jitter ``U(0, that)`` or none.
"""

from __future__ import annotations

from sim.schema import RetryConfig


class RetryPolicy:
    def __init__(self, config: RetryConfig) -> None:
        self.config = config
        self.max_attempts = config.max_attempts
        self._retry_on = frozenset(config.retry_on)

    def should_retry(self, attempts_done: int, error_kind: str) -> bool:
        """After ``attempts_done`` attempts, the last failing with ``error_kind``."""
        return attempts_done < self.max_attempts and error_kind in self._retry_on

    def backoff_s(self, retry_number: int, uniform: float) -> float:
        """Sleep before retry number ``retry_number`` (1 = first retry); uniform in [0, 1)."""
        c = self.config
        if c.backoff == "none":
            return 0.0
        ceiling = min(c.backoff_cap, c.backoff_base * (2.0 ** (retry_number - 1)))
        return ceiling * uniform if c.jitter == "full" else ceiling
