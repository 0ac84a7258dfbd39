"""Retry budgets: may this edge send one more retry now? (pure, no SimPy)

This module owns the budget state of one caller -> callee edge (in the engine: of
one client process), shared by all its logical requests: a ratio of retries to
requests, Finagle's expiring token bucket (which Linkerd uses too), Envoy's cap on
concurrent retries, gRPC's retry throttling tokens and the AWS SDK retry quota.
Whether a failure is retryable at all (attempts left, error kind) stays in
``sim.retry.RetryPolicy``; the sleep is ``sim.backoff``. Sources: semantics.md §7
("Envoy cluster circuit breakers", "gRPC retries (gRFC A6)", "Finagle RetryBudget",
"Linkerd budget", "Google SRE") and §8 (aws-sdk-go-v2 ``aws/retry/standard.go``).
docs/policies/retries.md has the formulas. Scenarios pick a budget with
``retry.budget: {kind: ...}`` (the tagged union ``sim.schema.RetryBudgetConfig``);
``sim.policies.make_retry_budget`` builds it.

Every budget has the same surface, so the client wires them one way. The clock
``now_s`` is passed in; none of them draws random numbers.

- ``on_request(now_s)``: a logical request starts (its first attempt is about to be sent).
- ``on_failure(now_s, kind)``: an attempt failed with error ``kind`` (call it before
  ``can_retry`` for that failure: gRPC throttling counts the failure first).
- ``can_retry(now_s, kind, *, active_requests, pending_requests) -> bool``: may a retry
  be sent for that failure? Side-effect free.
- ``on_retry(now_s, kind) -> int``: the retry was decided (call right after a True
  ``can_retry``, before the backoff sleep). Returns a cost token the caller keeps with
  the retry attempt (AWS: the tokens withdrawn; others 0).
- ``on_retry_done(now_s)``: that retry attempt finished, whatever its outcome (Envoy
  counts retries from the decision until here).
- ``on_success(now_s, retry_cost=0)``: an attempt succeeded; ``retry_cost`` is what
  ``on_retry`` returned for it, 0 for a first attempt.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol


class WindowedSum:
    """A sum of amounts added over the last ``window_s`` seconds.

    ``slices=None``: exact; an amount added at t counts while ``now - t < window_s``.
    ``slices=k``: Finagle's ``WindowedAdder(range, k)``: time is cut into slices of
    ``window_s / k`` and the sum covers the current (partial) slice and the ``k - 1``
    before it, so an amount counts for between ``(k-1)/k`` and all of ``window_s``.
    Memory is O(k) in that mode, O(distinct timestamps in the window) when exact.
    """

    __slots__ = ("window_s", "slices", "_slice_s", "_entries", "_total")

    def __init__(self, window_s: float, slices: int | None = None) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if slices is not None and slices < 1:
            raise ValueError(f"slices must be >= 1, got {slices}")
        self.window_s = float(window_s)
        self.slices = slices
        self._slice_s = self.window_s / slices if slices else 0.0
        self._entries: deque[list[float]] = deque()   # [key, amount]; key = time or slice index
        self._total = 0.0

    def _key(self, now_s: float) -> float:
        return float(math.floor(now_s / self._slice_s)) if self.slices else now_s

    def _expire(self, now_s: float) -> None:
        entries = self._entries
        if self.slices:
            oldest_kept = self._key(now_s) - self.slices + 1
            while entries and entries[0][0] < oldest_kept:
                self._total -= entries.popleft()[1]
        else:
            horizon = now_s - self.window_s
            while entries and entries[0][0] <= horizon:
                self._total -= entries.popleft()[1]
        if not entries:
            self._total = 0.0   # no drift from float sums

    def add(self, now_s: float, amount: float = 1.0) -> None:
        entries = self._entries
        if self.slices and entries:
            # the common case: same slice as the last add and nothing old enough to expire
            key = float(math.floor(now_s / self._slice_s))
            if entries[-1][0] == key and entries[0][0] >= key - self.slices + 1:
                entries[-1][1] += amount
                self._total += amount
                return
        self._expire(now_s)
        key = self._key(now_s)
        entries = self._entries
        if entries and entries[-1][0] == key:
            entries[-1][1] += amount
        else:
            entries.append([key, amount])
        self._total += amount

    def total(self, now_s: float) -> float:
        self._expire(now_s)
        return self._total


class RetryBudget(Protocol):
    """The common surface of every budget (module docstring: when to call what)."""

    def on_request(self, now_s: float) -> None: ...
    def on_failure(self, now_s: float, kind: str = "") -> None: ...
    def can_retry(self, now_s: float, kind: str = "", *, active_requests: int = 0,
                  pending_requests: int = 0) -> bool: ...
    def on_retry(self, now_s: float, kind: str = "") -> int: ...
    def on_retry_done(self, now_s: float) -> None: ...
    def on_success(self, now_s: float, retry_cost: int = 0) -> None: ...


class _NoHooks:
    """No-op hooks; each budget overrides the ones it needs."""

    def on_request(self, now_s: float) -> None:
        pass

    def on_failure(self, now_s: float, kind: str = "") -> None:
        pass

    def on_retry(self, now_s: float, kind: str = "") -> int:
        return 0

    def on_retry_done(self, now_s: float) -> None:
        pass

    def on_success(self, now_s: float, retry_cost: int = 0) -> None:
        pass


class UnlimitedBudget(_NoHooks):
    """No budget: every retry the retry policy allows is sent.

    What ``retry.budget: {kind: none}`` means; ``sim.policies.make_retry_budget`` builds
    no object at all for that kind, so the client skips the bookkeeping.
    """

    def can_retry(self, now_s: float, kind: str = "", *, active_requests: int = 0,
                  pending_requests: int = 0) -> bool:
        return True


class RatioBudget(_NoHooks):
    """SRE per-client retry ratio: retries in the window, this one included, <= ratio x requests.

    ``requests`` are logical requests (first attempts, ``on_request``); ``retries`` are
    retries sent (``on_retry``), both over the last ``window_s``. ``slices=None`` counts
    exactly; an integer buckets like ``WindowedSum``. The 10 % ratio is from secondary
    sources (semantics.md §7 "Google SRE"); the 120 s window is our choice, the window
    of the same chapter's adaptive throttling.
    """

    def __init__(self, ratio: float = 0.1, window_s: float = 120.0, slices: int | None = 120) -> None:
        if ratio < 0:
            raise ValueError(f"ratio must be >= 0, got {ratio}")
        self.ratio = float(ratio)
        self.requests = WindowedSum(window_s, slices)
        self.retries = WindowedSum(window_s, slices)

    def on_request(self, now_s: float) -> None:
        self.requests.add(now_s)

    def can_retry(self, now_s: float, kind: str = "", *, active_requests: int = 0,
                  pending_requests: int = 0) -> bool:
        return self.retries.total(now_s) + 1.0 <= self.ratio * self.requests.total(now_s) + 1e-9

    def on_retry(self, now_s: float, kind: str = "") -> int:
        self.retries.add(now_s)
        return 0


class FinagleBudget(_NoHooks):
    """Finagle ``RetryBudget(ttl, minRetriesPerSec, percentCanRetry)``; Linkerd's budget too.

    A ``TokenRetryBudget`` over ``TokenBucket.newLeakyBucket(ttl, reserve)``: every request
    deposits 1000 tokens, a retry withdraws ``int(1000 / percent_can_retry)`` (5000 at
    20 %), and ``balance = reserve + (deposits - withdrawals over the last ttl)`` with
    ``reserve = min_retries_per_s * ttl * withdrawal``. A retry is allowed iff
    ``balance >= withdrawal``. Deposits *and* withdrawals expire after the ttl, in a
    ``WindowedAdder`` of 10 slices. In steady state: retries/s <= percent x requests/s
    + min_retries_per_s. With ``percent_can_retry = 0`` deposits are 0 and a retry costs
    1 (time-only credit), as in Finagle.
    """

    SCALE = 1000

    def __init__(self, ttl_s: float = 10.0, min_retries_per_s: float = 10.0,
                 percent_can_retry: float = 0.2, slices: int | None = 10) -> None:
        if not 1.0 <= ttl_s <= 60.0:
            raise ValueError(f"Finagle requires 1 s <= ttl <= 60 s, got {ttl_s}")
        if min_retries_per_s < 0:
            raise ValueError(f"min_retries_per_s must be >= 0, got {min_retries_per_s}")
        if not 0.0 <= percent_can_retry <= 1000.0:
            raise ValueError(f"percent_can_retry must be in [0, 1000], got {percent_can_retry}")
        self.ttl_s = float(ttl_s)
        self.min_retries_per_s = float(min_retries_per_s)
        self.percent_can_retry = float(percent_can_retry)
        self.deposit = 0 if percent_can_retry == 0 else self.SCALE
        self.withdrawal = 1 if percent_can_retry == 0 else int(self.SCALE / percent_can_retry)
        # Finagle: minRetriesPerSec * ttl.inSeconds * withdrawalAmount (ttl in whole seconds)
        self.reserve = int(self.min_retries_per_s * int(self.ttl_s) * self.withdrawal)
        self.window = WindowedSum(self.ttl_s, slices)
        self.enabled = not (min_retries_per_s == 0 and percent_can_retry == 0)

    def balance(self, now_s: float) -> float:
        """Tokens in the bucket (Finagle's ``count``; its ``balance`` is this / withdrawal)."""
        return self.window.total(now_s) + self.reserve

    def on_request(self, now_s: float) -> None:
        if self.deposit:
            self.window.add(now_s, self.deposit)

    def can_retry(self, now_s: float, kind: str = "", *, active_requests: int = 0,
                  pending_requests: int = 0) -> bool:
        return self.enabled and self.balance(now_s) >= self.withdrawal

    def on_retry(self, now_s: float, kind: str = "") -> int:
        self.window.add(now_s, -self.withdrawal)
        return 0


class EnvoyBudget(_NoHooks):
    """Envoy ``RetryBudget``: concurrent retries < max(budget_percent% x (active + pending), min).

    ``max = max(uint64(budget_percent / 100 * (active + pending)), min_retry_concurrency)``
    (``ResourceManagerImpl::RetryBudgetImpl::max``, floor as the C++ cast); a retry is
    allowed iff the retries outstanding < max. A retry is outstanding from the decision
    (``on_retry``, before the backoff) until its attempt ends (``on_retry_done``), as
    ``RetryStateImpl`` ``inc()``s in ``shouldRetry`` and ``dec()``s in ``resetRetry``.
    ``active_requests`` / ``pending_requests`` are the cluster's upstream requests in
    flight (retries included) and those waiting for a connection; the caller passes them.
    """

    def __init__(self, budget_percent: float = 20.0, min_retry_concurrency: int = 3) -> None:
        if budget_percent < 0:
            raise ValueError(f"budget_percent must be >= 0, got {budget_percent}")
        if min_retry_concurrency < 0:
            raise ValueError(f"min_retry_concurrency must be >= 0, got {min_retry_concurrency}")
        self.budget_percent = float(budget_percent)
        self.min_retry_concurrency = int(min_retry_concurrency)
        self.retries_outstanding = 0

    def max_retries(self, active_requests: int, pending_requests: int = 0) -> int:
        return max(int(self.budget_percent / 100.0 * (active_requests + pending_requests)),
                   self.min_retry_concurrency)

    def can_retry(self, now_s: float, kind: str = "", *, active_requests: int = 0,
                  pending_requests: int = 0) -> bool:
        return self.retries_outstanding < self.max_retries(active_requests, pending_requests)

    def on_retry(self, now_s: float, kind: str = "") -> int:
        self.retries_outstanding += 1
        return 0

    def on_retry_done(self, now_s: float) -> None:
        if self.retries_outstanding <= 0:
            raise RuntimeError("on_retry_done without a matching on_retry")
        self.retries_outstanding -= 1


class GrpcThrottle(_NoHooks):
    """gRFC A6 retry throttling (per server name).

    ``token_count`` starts at ``max_tokens`` (0 < max_tokens <= 1000); a failure subtracts
    1 (floored at 0), a success adds ``token_ratio`` (capped at ``max_tokens``); retries
    and hedges are allowed only while ``token_count > max_tokens / 2``. Tokens are held
    in thousandths, as A6 keeps three decimals, so the arithmetic is exact. Only
    failures the caller deems retryable should be passed to ``on_failure`` (A6: only
    retryable / non-fatal codes and pushback count). ``initial_tokens`` (default
    ``max_tokens``) exists for experiments. Drift: with i.i.d. failure probability f the
    expected change per attempt is ``(1 - f) r - f``, negative iff ``f > r / (1 + r)``.
    """

    def __init__(self, max_tokens: float = 10.0, token_ratio: float = 0.1,
                 initial_tokens: float | None = None) -> None:
        if not 0 < max_tokens <= 1000:
            raise ValueError(f"max_tokens must be in (0, 1000], got {max_tokens}")
        if token_ratio <= 0:
            raise ValueError(f"token_ratio must be > 0, got {token_ratio}")
        self.max_milli = round(max_tokens * 1000)
        self.ratio_milli = int(token_ratio * 1000 + 1e-9)   # A6: three decimal places, rest dropped
        start = max_tokens if initial_tokens is None else initial_tokens
        self.tokens_milli = min(self.max_milli, max(0, round(start * 1000)))

    @property
    def token_count(self) -> float:
        return self.tokens_milli / 1000.0

    def on_failure(self, now_s: float, kind: str = "") -> None:
        self.tokens_milli = max(0, self.tokens_milli - 1000)

    def on_success(self, now_s: float, retry_cost: int = 0) -> None:
        self.tokens_milli = min(self.max_milli, self.tokens_milli + self.ratio_milli)

    def can_retry(self, now_s: float, kind: str = "", *, active_requests: int = 0,
                  pending_requests: int = 0) -> bool:
        return 2 * self.tokens_milli > self.max_milli


class AwsRetryQuota(_NoHooks):
    """aws-sdk-go-v2 standard retryer's retry quota (``aws/retry/standard.go``).

    A bucket of ``tokens`` (default 500, also the capacity). A retry after a timeout
    costs ``timeout_cost`` (10), after any other error ``retry_cost`` (5); it is allowed
    iff ``tokens >= cost`` (``TokenBucket.Retrieve``), and ``on_retry`` withdraws it
    and returns it. On success: a first attempt adds ``no_retry_increment`` (1); a retry
    attempt refunds its own cost (the caller passes it back as ``retry_cost``) and, with
    ``increment_on_retry_success`` (default True), also adds ``no_retry_increment``.
    That default is the current middleware (``aws/retry/middleware.go`` at 1032a4d:
    every attempt releases a ``GetAttemptToken`` worth +1 on success, and a retry also
    releases its ``GetRetryToken``, refunding the cost). False gives the older
    exclusive rule (the initial token only on the first attempt): +1 or the cost. A
    failed attempt refunds nothing. Refunds are capped at the capacity.
    ``timeout_kinds`` are the error kinds charged as timeouts.
    """

    DEFAULT_TIMEOUT_KINDS = frozenset({"client_timeout", "dial_timeout", "tls_timeout",
                                       "response_header_timeout"})

    def __init__(self, tokens: int = 500, retry_cost: int = 5, timeout_cost: int = 10,
                 no_retry_increment: int = 1, increment_on_retry_success: bool = True,
                 timeout_kinds: frozenset[str] | None = None) -> None:
        if tokens < 0 or retry_cost < 0 or timeout_cost < 0 or no_retry_increment < 0:
            raise ValueError("AWS retry quota amounts must be >= 0")
        self.capacity = int(tokens)
        self.tokens = int(tokens)
        self.retry_cost = int(retry_cost)
        self.timeout_cost = int(timeout_cost)
        self.no_retry_increment = int(no_retry_increment)
        self.increment_on_retry_success = bool(increment_on_retry_success)
        self.timeout_kinds = self.DEFAULT_TIMEOUT_KINDS if timeout_kinds is None else frozenset(timeout_kinds)

    def cost_of(self, kind: str) -> int:
        return self.timeout_cost if kind in self.timeout_kinds else self.retry_cost

    def can_retry(self, now_s: float, kind: str = "", *, active_requests: int = 0,
                  pending_requests: int = 0) -> bool:
        return self.tokens >= self.cost_of(kind)

    def on_retry(self, now_s: float, kind: str = "") -> int:
        cost = self.cost_of(kind)
        if cost > self.tokens:
            raise RuntimeError("on_retry without a True can_retry: retry quota exhausted")
        self.tokens -= cost
        return cost

    def on_success(self, now_s: float, retry_cost: int = 0) -> None:
        if retry_cost > 0:
            refund = retry_cost + (self.no_retry_increment if self.increment_on_retry_success else 0)
        else:
            refund = self.no_retry_increment
        self.tokens = min(self.capacity, self.tokens + refund)

