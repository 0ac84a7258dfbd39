"""Envoy-style concurrency limits of one caller -> callee edge (cluster circuit breakers).

This module owns the four resource counters of an Envoy cluster's
``circuit_breakers.thresholds`` (one priority) and their overflow rule, as a pure
object (no SimPy, no clock needed: the limits are instantaneous counts).
Sources: envoyproxy/envoy ``api/envoy/config/cluster/v3/circuit_breaker.proto``
(defaults 1024/1024/1024/3, ``RetryBudget`` 20 % / 3; semantics.md §7),
``source/common/upstream/resource_manager_impl.h`` (``canCreate`` is
``count < max``; the budget's max is ``max(uint64(budget_percent/100 *
(active requests + pending requests)), min_retry_concurrency)``; a budget, once
configured, replaces ``max_retries``) and the "Circuit breaking" architecture
overview. What an overflow means to the caller (the caller acts on it):

- ``'pending'``: a request that would wait for a connection finds
  ``max_pending_requests`` waiting: immediate local 503 (``x-envoy-overloaded``),
  stat ``upstream_rq_pending_overflow``.
- ``'requests'``: ``max_requests`` outstanding: immediate local 503, same stat.
- ``'retries'``: ``max_retries`` retries outstanding (or the budget spent): the
  retry is not made; the failed attempt's own result stands
  (``upstream_rq_retry_overflow``).
- ``'connections'``: no new connection is opened (``upstream_cx_overflow``); the
  request stays pending. Envoy still opens one when the host's pool has none
  at all: that is ``force_acquire('connections')``, the only way a count passes
  its limit. A retry budget's max also shrinks as requests finish, so an
  already-held retry count may then exceed it (as in Envoy); new ones are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CONNECTIONS = "connections"
PENDING = "pending"
REQUESTS = "requests"
RETRIES = "retries"
KINDS = (CONNECTIONS, PENDING, REQUESTS, RETRIES)

ENVOY_MAX_CONNECTIONS = 1024
ENVOY_MAX_PENDING_REQUESTS = 1024
ENVOY_MAX_REQUESTS = 1024
ENVOY_MAX_RETRIES = 3
ENVOY_BUDGET_PERCENT = 20.0
ENVOY_MIN_RETRY_CONCURRENCY = 3

# Envoy cluster stat incremented on each overflow kind.
OVERFLOW_STAT = {
    CONNECTIONS: "upstream_cx_overflow",
    PENDING: "upstream_rq_pending_overflow",
    REQUESTS: "upstream_rq_pending_overflow",
    RETRIES: "upstream_rq_retry_overflow",
}


@dataclass(frozen=True)
class EnvoyRetryBudget:
    """Envoy ``CircuitBreakers.Thresholds.RetryBudget``: concurrent retries as a share of load."""

    budget_percent: float = ENVOY_BUDGET_PERCENT
    min_retry_concurrency: int = ENVOY_MIN_RETRY_CONCURRENCY

    def __post_init__(self) -> None:
        if not (0.0 <= self.budget_percent <= 100.0):
            raise ValueError(f"budget_percent: {self.budget_percent} is not in [0, 100]")
        if self.min_retry_concurrency < 0:
            raise ValueError(f"min_retry_concurrency: {self.min_retry_concurrency} is negative")

    def max_retries(self, active_requests: int, pending_requests: int) -> int:
        # C++ converts the double to uint64_t: truncation toward zero.
        by_share = int(self.budget_percent / 100.0 * (active_requests + pending_requests))
        return max(by_share, self.min_retry_concurrency)


class EdgeLimits:
    """Counters for one edge; ``try_acquire`` returns None when granted, else the overflow reason."""

    def __init__(self, max_connections: int = ENVOY_MAX_CONNECTIONS,
                 max_pending_requests: int = ENVOY_MAX_PENDING_REQUESTS,
                 max_requests: int = ENVOY_MAX_REQUESTS,
                 max_retries: int = ENVOY_MAX_RETRIES,
                 retry_budget: EnvoyRetryBudget | None = None) -> None:
        fixed = {CONNECTIONS: max_connections, PENDING: max_pending_requests,
                 REQUESTS: max_requests, RETRIES: max_retries}
        for kind, value in fixed.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"max {kind}: {value!r} must be a whole number >= 0")
        self._fixed_max = fixed
        self.retry_budget = retry_budget
        self._count = dict.fromkeys(KINDS, 0)
        self.overflows = dict.fromkeys(KINDS, 0)

    def limit(self, kind: str) -> int:
        """Current maximum for ``kind`` (the retry budget's depends on the live request counts)."""
        self._check(kind)
        if kind == RETRIES and self.retry_budget is not None:
            return self.retry_budget.max_retries(self._count[REQUESTS], self._count[PENDING])
        return self._fixed_max[kind]

    def count(self, kind: str) -> int:
        self._check(kind)
        return self._count[kind]

    def can_acquire(self, kind: str) -> bool:
        """Envoy ``ResourceLimit::canCreate``: ``count < max``."""
        return self.count(kind) < self.limit(kind)

    def try_acquire(self, kind: str) -> str | None:
        """Take one ``kind``; None if granted, else the overflow reason (== ``kind``)."""
        if self.can_acquire(kind):
            self._count[kind] += 1
            return None
        self.overflows[kind] += 1
        return kind

    def force_acquire(self, kind: str) -> None:
        """Take one even over the limit (Envoy's first connection of an empty host pool)."""
        self._check(kind)
        self._count[kind] += 1

    def release(self, kind: str) -> None:
        self._check(kind)
        if self._count[kind] == 0:
            raise ValueError(f"release of {kind} with none held")
        self._count[kind] -= 1

    @staticmethod
    def _check(kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown resource kind {kind!r}; expected one of {', '.join(KINDS)}")


def edge_limits_from_mapping(raw: Mapping[str, Any]) -> EdgeLimits:
    """Parse an edge's ``limits:`` block as written in YAML; absent keys take Envoy's defaults."""
    known = {"max_connections", "max_pending_requests", "max_requests", "max_retries", "retry_budget"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"limits: unknown key(s) {', '.join(unknown)}")
    budget_raw = raw.get("retry_budget")
    budget = None
    if budget_raw is not None:
        extra = sorted(set(budget_raw) - {"budget_percent", "min_retry_concurrency"})
        if extra:
            raise ValueError(f"limits.retry_budget: unknown key(s) {', '.join(extra)}")
        budget = EnvoyRetryBudget(
            budget_percent=float(budget_raw.get("budget_percent", ENVOY_BUDGET_PERCENT)),
            min_retry_concurrency=budget_raw.get("min_retry_concurrency", ENVOY_MIN_RETRY_CONCURRENCY))
    return EdgeLimits(
        max_connections=raw.get("max_connections", ENVOY_MAX_CONNECTIONS),
        max_pending_requests=raw.get("max_pending_requests", ENVOY_MAX_PENDING_REQUESTS),
        max_requests=raw.get("max_requests", ENVOY_MAX_REQUESTS),
        max_retries=raw.get("max_retries", ENVOY_MAX_RETRIES),
        retry_budget=budget)
