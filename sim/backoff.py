"""Backoff before a retry: how long an edge sleeps before retry number n (pure, no SimPy).

This module owns the delay formula only; whether a retry happens at all is
``sim.retry.RetryPolicy`` (attempts, retry-on) and ``sim.retry_budget`` (budgets).
Randomness is passed in as ``uniform`` in [0, 1) from a named stream of
``sim.rng``; a policy never draws. Sources (semantics.md §8 and §7 "gRPC retries"):
the AWS Architecture Blog "Exponential Backoff And Jitter" (Brooker 2015) and its
simulator ``aws-samples/aws-arch-backoff-simulator src/backoff_simulator.py`` for
full, equal and decorrelated jitter; gRFC A6 (2024-08-29 update) for the +/-20 %
multiplicative jitter of gRPC retries.

Numbering: ``retry_number`` 1 is the first retry. The ceiling is
``expo(n) = min(cap_s, base_s * multiplier ** (n - 1))``, which is the AWS
``min(cap, base * 2 ** attempt)`` with ``attempt = n - 1`` starting at 0, and the
gRPC ``min(initialBackoff * mult ** (n - 1), maxBackoff)``. With ``kind="exponential"``,
``multiplier=2`` and ``jitter`` none / full this is exactly ``RetryPolicy.backoff_s``.

Bounds of ``delay_s`` (requires ``0 <= base_s <= cap_s``, ``multiplier >= 1``,
``uniform`` in [0, 1)):

- kind ``none``: 0.
- jitter ``none``: ``expo(n)``, in [0, cap_s].
- jitter ``full``: ``U(0, expo(n))``, in [0, expo(n)) within [0, cap_s].
- jitter ``equal``: ``expo/2 + U(0, expo/2)``, in [expo/2, expo] within [0, cap_s].
- jitter ``decorrelated``: ``min(cap_s, U(base_s, 3 * previous_s))``, in [base_s, cap_s].
- jitter ``grpc``: ``expo(n) * U(0.8, 1.2)``, in [0.8 expo, 1.2 expo]: the only jitter
  that may exceed ``cap_s`` (by up to 20 %, as in gRFC A6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BackoffKind = Literal["none", "constant", "exponential"]
JitterKind = Literal["none", "full", "equal", "decorrelated", "grpc"]

BACKOFF_KINDS: tuple[str, ...] = ("none", "constant", "exponential")
JITTER_KINDS: tuple[str, ...] = ("none", "full", "equal", "decorrelated", "grpc")
GRPC_JITTER = 0.2
"""gRFC A6: the delay is multiplied by U(1 - 0.2, 1 + 0.2)."""


@dataclass(frozen=True)
class BackoffPolicy:
    """The backoff of one edge. Immutable; decorrelated jitter's state is the caller's ``previous_s``.

    - ``kind``: ``none`` (retry at once), ``constant`` (ceiling ``min(cap_s, base_s)``),
      ``exponential`` (ceiling ``min(cap_s, base_s * multiplier ** (n - 1))``).
    - ``jitter``: ``none``, ``full``, ``equal``, ``decorrelated`` (exponential only) or ``grpc``.
    """

    kind: BackoffKind = "exponential"
    base_s: float = 0.1
    cap_s: float = 10.0
    multiplier: float = 2.0
    jitter: JitterKind = "full"

    def __post_init__(self) -> None:
        if self.kind not in BACKOFF_KINDS:
            raise ValueError(f"backoff kind {self.kind!r} is not one of {', '.join(BACKOFF_KINDS)}")
        if self.jitter not in JITTER_KINDS:
            raise ValueError(f"jitter {self.jitter!r} is not one of {', '.join(JITTER_KINDS)}")
        if not 0.0 <= self.base_s <= self.cap_s:
            raise ValueError(f"backoff needs 0 <= base_s <= cap_s, got base_s={self.base_s}, cap_s={self.cap_s}")
        if self.multiplier < 1.0:
            raise ValueError(f"backoff multiplier must be >= 1, got {self.multiplier}")
        if self.jitter == "decorrelated" and self.kind != "exponential":
            raise ValueError("decorrelated jitter is an exponential backoff; use kind 'exponential'")

    def ceiling_s(self, retry_number: int) -> float:
        """``expo(n)``: the un-jittered delay before retry ``retry_number`` (1 = first retry)."""
        if self.kind == "none":
            return 0.0
        if self.kind == "constant":
            return min(self.cap_s, self.base_s)
        try:
            grown = self.base_s * self.multiplier ** (retry_number - 1)
        except OverflowError:
            grown = float("inf")
        return min(self.cap_s, grown)

    def delay_s(self, retry_number: int, uniform: float, previous_s: float | None = None) -> float:
        """Sleep before retry ``retry_number`` (1 = first retry); ``uniform`` in [0, 1).

        ``previous_s`` is used by decorrelated jitter only: the delay this function returned
        for the previous retry of the same logical request, or None before the first retry
        (then it starts at ``base_s``). The caller keeps it per request.
        """
        jitter = self.jitter
        if self.kind == "none":
            return 0.0
        if jitter == "decorrelated":
            prev = self.base_s if previous_s is None else previous_s
            high = 3.0 * prev
            return min(self.cap_s, self.base_s + uniform * (high - self.base_s))
        expo = self.ceiling_s(retry_number)
        if jitter == "none":
            return expo
        if jitter == "full":
            return expo * uniform
        if jitter == "equal":
            half = expo / 2.0
            return half + uniform * half
        # grpc: expo * U(0.8, 1.2)
        return expo * (1.0 - GRPC_JITTER + 2.0 * GRPC_JITTER * uniform)

    def mean_delay_s(self, retry_number: int) -> float:
        """Expected delay before retry ``retry_number`` over ``uniform`` (not for decorrelated jitter)."""
        if self.jitter == "decorrelated" and self.kind != "none":
            raise ValueError("decorrelated jitter's mean depends on the previous delay; sample it")
        expo = self.ceiling_s(retry_number)
        return {"none": expo, "full": expo / 2.0, "equal": 0.75 * expo, "grpc": expo}[self.jitter]
