"""Envoy-style concurrency limits of one caller -> callee edge (cluster circuit breakers).

This module owns the four resource counters of an Envoy cluster's
``circuit_breakers.thresholds`` (one priority) and their overflow rule, as a pure
object (no SimPy, no clock needed: the limits are instantaneous counts).
Sources: envoyproxy/envoy ``api/envoy/config/cluster/v3/circuit_breaker.proto``
(defaults 1024/1024/1024/3; semantics.md §7),
``source/common/upstream/resource_manager_impl.h`` (``canCreate`` is
``count < max``) and the "Circuit breaking" architecture overview. The
``max_retries`` limit here is Envoy's fixed one; Envoy's ``RetryBudget``, which
replaces it when configured, is ``sim.retry_budget.EnvoyBudget`` (scenario key
``retry.budget: {kind: envoy}``). ``sim.policies.make_edge_limits`` builds an
``EdgeLimits`` from a scenario's ``edge_limits:`` block. What an overflow means to
the caller (the caller acts on it):

- ``'pending'``: a request that would wait for a connection finds
  ``max_pending_requests`` waiting: immediate local 503 (``x-envoy-overloaded``),
  stat ``upstream_rq_pending_overflow``.
- ``'requests'``: ``max_requests`` outstanding: immediate local 503, same stat.
- ``'retries'``: ``max_retries`` retries outstanding: the retry is not made; the
  failed attempt's own result stands (``upstream_rq_retry_overflow``).
- ``'connections'``: no new connection is opened (``upstream_cx_overflow``); the
  request stays pending. Envoy still opens one when the host's pool has none
  at all: that is ``force_acquire('connections')``, the only way a count passes
  its limit.
"""

from __future__ import annotations

CONNECTIONS = "connections"
PENDING = "pending"
REQUESTS = "requests"
RETRIES = "retries"
KINDS = (CONNECTIONS, PENDING, REQUESTS, RETRIES)

ENVOY_MAX_CONNECTIONS = 1024
ENVOY_MAX_PENDING_REQUESTS = 1024
ENVOY_MAX_REQUESTS = 1024
ENVOY_MAX_RETRIES = 3

# Envoy cluster stat incremented on each overflow kind.
OVERFLOW_STAT = {
    CONNECTIONS: "upstream_cx_overflow",
    PENDING: "upstream_rq_pending_overflow",
    REQUESTS: "upstream_rq_pending_overflow",
    RETRIES: "upstream_rq_retry_overflow",
}


class EdgeLimits:
    """Counters for one edge; ``try_acquire`` returns None when granted, else the overflow reason."""

    def __init__(self, max_connections: int = ENVOY_MAX_CONNECTIONS,
                 max_pending_requests: int = ENVOY_MAX_PENDING_REQUESTS,
                 max_requests: int = ENVOY_MAX_REQUESTS,
                 max_retries: int = ENVOY_MAX_RETRIES) -> None:
        fixed = {CONNECTIONS: max_connections, PENDING: max_pending_requests,
                 REQUESTS: max_requests, RETRIES: max_retries}
        for kind, value in fixed.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"max {kind}: {value!r} must be a whole number >= 0")
        self._max = fixed
        self._count = dict.fromkeys(KINDS, 0)
        self.overflows = dict.fromkeys(KINDS, 0)

    def limit(self, kind: str) -> int:
        """The maximum for ``kind``."""
        self._check(kind)
        return self._max[kind]

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

