"""Client-side adaptive throttling (Google SRE book ch. 21): reject locally before sending.

This module owns the client's own rejection of requests when the backend has been
refusing them: over a sliding window (default 120 s) the client counts
``requests`` (every request the application attempted, the locally rejected ones
included) and ``accepts`` (requests the backend accepted), and rejects a new request
with probability ``P(reject) = max(0, (requests - K * accepts) / (requests + 1))``,
K = 2 (semantics.md §7 "Google SRE"; the formula and K are corroborated by secondary
sources only). Pure: the clock and the uniform draw are passed in; no SimPy. What
counts as "accepted" is the caller's: by the SRE text, any response that is not a
rejection by the backend (an error from overload, here a timeout or a 5xx).
"""

from __future__ import annotations

from sim.retry_budget import WindowedSum


class AdaptiveThrottle:
    """SRE client-side throttling of one client -> backend edge.

    Call ``should_reject(now_s, uniform)`` for every request the application makes (it
    counts the request, then rejects when ``uniform < P(reject)``, P computed from the
    window before this request); call ``on_result(now_s, accepted)`` when a request that
    was sent gets its answer. ``slices=None`` makes the window exact; an integer
    buckets it into that many slices (``WindowedSum``), bounding memory at high rates.
    """

    def __init__(self, k: float = 2.0, window_s: float = 120.0, slices: int | None = 120) -> None:
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        self.k = float(k)
        self.requests = WindowedSum(window_s, slices)
        self.accepts = WindowedSum(window_s, slices)

    def reject_probability(self, now_s: float) -> float:
        requests = self.requests.total(now_s)
        accepts = self.accepts.total(now_s)
        return max(0.0, (requests - self.k * accepts) / (requests + 1.0))

    def should_reject(self, now_s: float, uniform: float) -> bool:
        """Count a request attempted at ``now_s``; True if the client rejects it locally."""
        p = self.reject_probability(now_s)
        self.requests.add(now_s)
        return uniform < p

    def on_result(self, now_s: float, accepted: bool) -> None:
        """A sent request was answered; ``accepted``: the backend did not reject it."""
        if accepted:
            self.accepts.add(now_s)
