"""Hedged requests: when to send another copy of a slow attempt (pure, no SimPy).

This module owns the hedging timetable of one edge: after the first attempt of a
logical request has been out ``delay_s`` without an answer, send a hedge, then another
every ``delay_s``, while fewer than ``max_outstanding`` attempts are in flight; the
first answer wins and the others are cancelled (the caller's job). Source: gRFC A6
hedging policy (``hedgingDelay``, ``maxAttempts`` including the original, capped at 5
on the client) and "The Tail at Scale" (Dean & Barroso 2013); semantics.md §7 "gRPC
retries (gRFC A6)": with throttling on, no hedges are sent while
``token_count <= maxTokens / 2`` (ask ``GrpcThrottle.can_retry`` too).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HedgingPolicy:
    """``delay_s``: wait between the first attempt and each next hedge. ``max_outstanding``:
    attempts of one logical request in flight at once, the original included (>= 1)."""

    delay_s: float = 0.05
    max_outstanding: int = 2

    def __post_init__(self) -> None:
        if self.delay_s < 0:
            raise ValueError(f"hedging delay_s must be >= 0, got {self.delay_s}")
        if self.max_outstanding < 1:
            raise ValueError(f"hedging max_outstanding must be >= 1, got {self.max_outstanding}")

    def hedge_due_at(self, first_sent_at_s: float, hedges_sent: int = 0) -> float:
        """Time the next hedge is due: ``first_sent_at_s + (hedges_sent + 1) * delay_s``."""
        return first_sent_at_s + (hedges_sent + 1) * self.delay_s

    def may_hedge(self, outstanding: int) -> bool:
        """True iff another copy may be sent with ``outstanding`` attempts in flight."""
        return outstanding < self.max_outstanding
