"""Envoy outlier detection: which instances of the callee an edge's load balancer may pick (pure, no SimPy).

This module owns the per-host state of one Envoy cluster's outlier detector (one
caller -> callee edge with N instances of the callee): the consecutive-failure
counters, the per-interval success-rate buckets, the ejection flags, the ejection-time
backoff, and the interval sweep that returns hosts and runs the statistical
detections. The engine owns the timer (it calls ``sweep`` at every multiple of
``interval``), the load balancer (it picks among ``healthy_hosts()``) and the random
numbers (it passes uniform draws in). Settings: ``sim.schema.OutlierDetectionConfig``
(Envoy's defaults, semantics.md §7 "Outlier detection defaults");
``sim.policies.make_outlier_detector`` builds the object. docs/policies/outlier-detection.md
has the rules with examples; tests/test_outlier_detection.py the exact timelines.

Sources (envoyproxy/envoy; learned from, not copied):
``source/common/upstream/outlier_detection_impl.cc`` / ``.h`` (``putHttpResponseCode``,
``resultToHttpCode``, ``putResultNoLocalExternalSplit``, ``onConsecutiveErrorWorker``,
``ejectHost``, ``checkHostForUneject``, ``unejectHost``, ``onIntervalTimer``,
``processSuccessRateEjections``, ``successRateEjectionThreshold``), the router's
reports (``source/common/router/router.cc``: ``onUpstreamReset``,
``onResponseTimeout``, ``onPerTryTimeout``), ``api/envoy/config/cluster/v3/outlier_detection.proto``,
the architecture overview ``docs/root/intro/arch_overview/upstream/outlier.rst``, the
load balancer's panic rule (``LoadBalancerBase::isHostSetInPanic``), and the
max-ejection history: PR #27909 (2023, the cap became strict) and PR #34796 (2024,
``always_eject_one_host``, default false). What the model keeps:

- **What is reported.** ``split_external_local_origin_errors`` is false (Envoy's
  default; the schema has no such key), so every result becomes an HTTP code:
  a response's own status; a connection failure or reset (``LocalOriginConnectFailed``)
  503; a timeout while awaiting headers (``LocalOriginTimeout``, the router's
  ``timeout_response_code_``) 504. Policy refusals that never reach the host report
  nothing (Envoy skips circuit-breaker overflow on purpose, issue #25487). ``KIND_CODES``
  is the table; ``envoy_code`` applies it.
- **Consecutive counters** (``putHttpResponseCode``): a 5xx increments
  ``consecutive_5xx``; a 502/503/504 also increments ``consecutive_gateway_failure``,
  any other 5xx zeroes it; a non-5xx zeroes both. A detection fires on the result that
  makes a counter *equal* its threshold, at once (not at the sweep); gateway first,
  then 5xx. A detection on a host already ejected is dropped and its counter is not
  reset (``onConsecutiveErrorWorker`` returns early); otherwise the counter is reset
  after the ejection attempt, whether it was enforced, not enforced or overflowed.
- **Ejection attempt** (``ejectHost``): allowed iff
  ``100 x (ejected + 1) / n <= max_ejection_percent``, or, with ``always_eject_one_host``,
  iff nothing is ejected. So with the default 10 % and fewer than 10 hosts, current
  Envoy ejects nothing; before PR #27909 the first ejection was always allowed.
  Refused: stat ``ejections_overflow``. Allowed: enforced iff the uniform draw
  ``u < enforcing_<type> / 100``; then the host is ejected and its backoff grows by one
  while ``backoff x base < max + base``.
- **Sweep** (``onIntervalTimer``), in this order: a host is returned when
  ``min(base x backoff, max_ejection_time) <= now - ejected_at`` (jitter 0: Envoy's
  default ``max_ejection_time_jitter``), and its consecutive counters are zeroed; the
  interval's counts become the judged bucket and a fresh one starts; success-rate and
  failure-percentage detection over hosts not ejected; then every host not ejected
  whose last return is at least ``interval`` ago has its backoff decremented by one.
- **Success rate** (``processSuccessRateEjections``): nothing unless
  ``n >= success_rate_minimum_hosts`` or ``n >= failure_percentage_minimum_hosts``.
  Success rate = 100 x successes / requests of the judged interval. Hosts with
  ``requests >= success_rate_request_volume``, if there are at least
  ``success_rate_minimum_hosts`` of them, give the mean and the population stdev;
  a host with ``rate < mean - stdev_factor x stdev`` (strict) is an outlier. Failure
  percentage: hosts with ``requests >= failure_percentage_request_volume``, at least
  ``failure_percentage_minimum_hosts`` of them; outlier iff ``100 - rate >= threshold``.
  Each outlier goes through the ejection attempt above; hosts are taken in index order
  (Envoy: hash-map order).
- **The pool** (``healthy_hosts``): the hosts not ejected, unless fewer than
  ``panic_threshold`` percent of them are healthy (Envoy's
  ``healthy_panic_threshold``, 50 % by default): then all hosts, ejected or not. With
  ``panic_threshold=0`` and every host ejected the list is empty (Envoy: a local 503,
  "no healthy upstream").

Departures, all small: a detection takes effect at once (Envoy posts it to the main
thread); a host is never ejected twice in one sweep (Envoy's failure-percentage pass
could call ``ejectHost`` on a host the success-rate pass just ejected, which its
``eject`` asserts against); the draw for the second detection of one result is
``u`` rescaled (below) rather than a second random number; active health checking,
local-origin split mode, jitter, priorities and extension monitors are not modelled.

Randomness: ``on_result`` takes one uniform ``u`` in [0, 1). When one result fires both
detections and the first is not enforced, the second uses ``(u - p1) / (1 - p1)``,
which is uniform on [0, 1) and independent of the first outcome given ``u >= p1``, so
the two checks have exactly the probabilities of two independent draws. ``sweep`` calls
``draws()`` once per ejection attempt that passed the max-ejection check.
"""

from __future__ import annotations

import math
from typing import Callable

from sim.schema import OutlierDetectionConfig

CONSECUTIVE_5XX = "consecutive_5xx"
CONSECUTIVE_GATEWAY_FAILURE = "consecutive_gateway_failure"
SUCCESS_RATE = "success_rate"
FAILURE_PERCENTAGE = "failure_percentage"
REASONS = (CONSECUTIVE_5XX, CONSECUTIVE_GATEWAY_FAILURE, SUCCESS_RATE, FAILURE_PERCENTAGE)
"""Ejection reasons, Envoy's ``OutlierEjectionType`` names (lower case)."""

GATEWAY_ERRORS = frozenset({502, 503, 504})
"""``Http::CodeUtility::isGatewayError``."""

CONNECT_FAILED = 503
"""``resultToHttpCode(LocalOriginConnectFailed)``: ServiceUnavailable."""
TIMEOUT = 504
"""``LocalOriginTimeout``: the router reports its ``timeout_response_code_`` (GatewayTimeout)."""

KIND_CODES: dict[str, int | None] = {
    # timeouts while awaiting headers: router onResponseTimeout / onPerTryTimeout
    "client_timeout": TIMEOUT,            # the whole request's timeout (Envoy's route timeout)
    "response_header_timeout": TIMEOUT,   # a per-attempt header timeout (Envoy's per-try timeout)
    "deadline_exceeded": TIMEOUT,         # an attempt cut by the request's overall deadline
    # connection failures and resets: pool failure or stream reset -> router onUpstreamReset
    "dial_timeout": CONNECT_FAILED,       # Envoy's connect_timeout is a pool connection failure
    "tls_timeout": CONNECT_FAILED,        # Envoy raises Connected only after the handshake
    "conn_refused": CONNECT_FAILED,
    "conn_reset": CONNECT_FAILED,
    "eof": CONNECT_FAILED,
    "stream_reset": CONNECT_FAILED,       # RST_STREAM from the server (router: a reset; see its TODO)
    "addr_unavailable": CONNECT_FAILED,   # a local connection failure: Envoy still reports it
    # an HTTP answer without a status passed (the status normally decides; see envoy_code)
    "http_4xx": 400,
    "http_5xx": 500,
    # policy refusals and lost hedges: nothing reached the host, or nothing is reported
    "breaker_open": None,
    "throttled": None,
    "edge_overflow": None,                # Envoy: overflow is not an outlier event (issue #25487)
    "budget_exhausted": None,
    "cancelled": None,                    # a hedge that lost: the router resets it without a report
}
"""What each of ``sim.schema.ERROR_KINDS`` reports to the detector when no HTTP status came back."""

_EPS = 1e-9   # time and percentage comparisons: sweeps at k x interval are float products


def envoy_code(success: bool, status: int, kind: str | None) -> int | None:
    """The HTTP code Envoy's detector would hear for one attempt, or None for no report.

    A status (> 0) decides by itself: the headers arrived and the router reported the
    code (a later failure while reading the body is not reported again). Without a
    status, a kind decides by ``KIND_CODES``; no kind means a success (200).
    """
    if status > 0:
        return int(status)
    if kind is None:
        if not success:
            raise ValueError("a failed result needs an error kind or an HTTP status")
        return 200
    try:
        return KIND_CODES[kind]
    except KeyError:
        raise ValueError(f"unknown error kind {kind!r}; add it to sim.outlier_detection.KIND_CODES") from None


class OutlierDetector:
    """Envoy outlier detection for the ``n_hosts`` instances (0 .. n-1) behind one edge.

    - ``on_result(now, host, success, status, kind, u)``: an attempt on ``host`` ended
      (``status`` 0 when no HTTP status came back; ``u`` a uniform draw in [0, 1) for
      enforcement). Returns the ejection reason if this result ejected the host, else None.
    - ``sweep(now, draws)``: the interval timer; call it at every multiple of
      ``interval`` (from ``interval`` on). ``draws()`` returns a uniform in [0, 1).
    - ``healthy_hosts()``: the load balancer's pool (all hosts in panic).
    - ``ejections``: ``(instant, host, reason)`` of every enforced ejection;
      ``unejections``: ``(instant, host)``; ``stats``: Envoy's counter names.

    ``always_eject_one_host`` and ``panic_threshold`` are Envoy settings the schema does
    not have: None reads ``config.always_eject_one_host`` if the schema gains it (else
    False, Envoy's default); ``panic_threshold`` is the cluster's
    ``common_lb_config.healthy_panic_threshold`` (percent, 50 by default, 0 = never panic).
    """

    def __init__(self, config: OutlierDetectionConfig, n_hosts: int, *,
                 always_eject_one_host: bool | None = None, panic_threshold: float = 50.0) -> None:
        if isinstance(n_hosts, bool) or not isinstance(n_hosts, int) or n_hosts < 1:
            raise ValueError(f"n_hosts must be a whole number >= 1, got {n_hosts!r}")
        if config.max_ejection_time < config.base_ejection_time:
            # DetectorImpl::create rejects this configuration
            raise ValueError(f"outlier detection: max_ejection_time ({config.max_ejection_time} s) cannot be "
                             f"smaller than base_ejection_time ({config.base_ejection_time} s)")
        if not 0.0 <= panic_threshold <= 100.0:
            raise ValueError(f"panic_threshold must be in [0, 100], got {panic_threshold}")
        self.config = config
        self.n_hosts = n_hosts
        if always_eject_one_host is None:
            always_eject_one_host = bool(getattr(config, "always_eject_one_host", False))
        self.always_eject_one_host = always_eject_one_host
        self.panic_threshold = float(panic_threshold)
        self.interval = float(config.interval)
        self.base_ejection_time = float(config.base_ejection_time)
        self.max_ejection_time = float(config.max_ejection_time)
        self._p_enforce = {
            CONSECUTIVE_5XX: config.enforcing_consecutive_5xx / 100.0,
            CONSECUTIVE_GATEWAY_FAILURE: config.enforcing_consecutive_gateway_failure / 100.0,
            SUCCESS_RATE: config.enforcing_success_rate / 100.0,
            FAILURE_PERCENTAGE: config.enforcing_failure_percentage / 100.0,
        }
        n = n_hosts
        self._c5xx = [0] * n          # consecutive 5xx (local-origin failures included)
        self._cgw = [0] * n           # consecutive gateway failures (502/503/504 and local-origin)
        self._total = [0] * n         # requests reported in the current interval
        self._ok = [0] * n            # of which non-5xx
        self._ejected = [False] * n
        self._backoff = [0] * n       # Envoy's ejectTimeBackoff
        self._ejected_at: list[float | None] = [None] * n
        self._unejected_at: list[float | None] = [None] * n
        self._n_ejected = 0
        self.num_ejections = [0] * n  # enforced ejections per host (Envoy's numEjections)
        self.ejections: list[tuple[float, int, str]] = []
        self.unejections: list[tuple[float, int]] = []
        self.stats: dict[str, int] = {"ejections_enforced_total": 0, "ejections_overflow": 0}
        for reason in REASONS:
            self.stats[f"ejections_detected_{reason}"] = 0
            self.stats[f"ejections_enforced_{reason}"] = 0
        # Envoy's successRateAverage / successRateEjectionThreshold of the last sweep, -1 when not computed
        self.success_rate_average = -1.0
        self.success_rate_ejection_threshold = -1.0
        self._healthy: tuple[int, ...] = tuple(range(n))

    # ------------------------------------------------------------------ results

    def on_result(self, now: float, host: int, success: bool, status: int, kind: str | None,
                  u: float) -> str | None:
        """One attempt on ``host`` ended; returns the reason if it ejected the host."""
        self._check_host(host)
        code = envoy_code(success, status, kind)
        if code is None:
            return None
        self._total[host] += 1
        if not 500 <= code <= 599:
            self._ok[host] += 1
            self._c5xx[host] = 0
            self._cgw[host] = 0
            return None
        fired: list[str] = []
        if code in GATEWAY_ERRORS:
            self._cgw[host] += 1
            if self._cgw[host] == self.config.consecutive_gateway_failure:
                fired.append(CONSECUTIVE_GATEWAY_FAILURE)
        else:
            self._cgw[host] = 0
        self._c5xx[host] += 1
        if self._c5xx[host] == self.config.consecutive_5xx:
            fired.append(CONSECUTIVE_5XX)
        if not fired:
            return None
        if not 0.0 <= u < 1.0:
            raise ValueError(f"u must be a uniform draw in [0, 1), got {u}")
        ejected_by = None
        for reason in fired:                      # gateway first, as Envoy posts it first
            if self._ejected[host]:
                continue                          # dropped; the counter keeps its value
            outcome = self._attempt(now, host, reason, u)
            if outcome is True:
                ejected_by = reason
            elif outcome is False:                # not enforced: rescale u for the next check
                p = self._p_enforce[reason]
                u = (u - p) / (1.0 - p)
            if reason == CONSECUTIVE_5XX:
                self._c5xx[host] = 0
            else:
                self._cgw[host] = 0
        return ejected_by

    # ------------------------------------------------------------------ the interval timer

    def sweep(self, now: float, draws: Callable[[], float]) -> None:
        """Envoy's ``onIntervalTimer`` at ``now``: return hosts, judge the interval, decay backoffs."""
        for h in range(self.n_hosts):
            if self._ejected[h] and self.ejection_time(h) <= now - self._ejected_at[h] + _EPS:
                self._uneject(now, h)
        totals, oks = self._total, self._ok
        self._total = [0] * self.n_hosts
        self._ok = [0] * self.n_hosts
        self._judge(now, totals, oks, draws)
        for h in range(self.n_hosts):
            back = self._unejected_at[h]
            if (not self._ejected[h] and back is not None and now - back + _EPS >= self.interval
                    and self._backoff[h] > 0):
                self._backoff[h] -= 1

    def _judge(self, now: float, totals: list[int], oks: list[int], draws: Callable[[], float]) -> None:
        cfg = self.config
        self.success_rate_average = -1.0
        self.success_rate_ejection_threshold = -1.0
        n = self.n_hosts
        if n < cfg.success_rate_minimum_hosts and n < cfg.failure_percentage_minimum_hosts:
            return
        sr_hosts: list[tuple[int, float]] = []
        fp_hosts: list[tuple[int, float]] = []
        for h in range(n):
            if self._ejected[h] or totals[h] == 0:
                continue
            rate = oks[h] * 100.0 / totals[h]
            if totals[h] >= cfg.success_rate_request_volume:
                sr_hosts.append((h, rate))
            if totals[h] >= cfg.failure_percentage_request_volume:
                fp_hosts.append((h, rate))
        if sr_hosts and len(sr_hosts) >= cfg.success_rate_minimum_hosts:
            mean = sum(r for _, r in sr_hosts) / len(sr_hosts)
            stdev = math.sqrt(sum((r - mean) ** 2 for _, r in sr_hosts) / len(sr_hosts))
            threshold = mean - cfg.success_rate_stdev_factor * stdev
            self.success_rate_average = mean
            self.success_rate_ejection_threshold = threshold
            for h, rate in sr_hosts:
                if rate < threshold:
                    self._attempt(now, h, SUCCESS_RATE, draws)
        if fp_hosts and len(fp_hosts) >= cfg.failure_percentage_minimum_hosts:
            for h, rate in fp_hosts:
                if not self._ejected[h] and 100.0 - rate >= cfg.failure_percentage_threshold:
                    self._attempt(now, h, FAILURE_PERCENTAGE, draws)

    # ------------------------------------------------------------------ ejection

    def _attempt(self, now: float, host: int, reason: str, u: float | Callable[[], float]) -> bool | None:
        """A detection on ``host``: True ejected, False not enforced, None over the cap (no draw used)."""
        self.stats[f"ejections_detected_{reason}"] += 1
        allowed = 100.0 * (self._n_ejected + 1) / self.n_hosts <= self.config.max_ejection_percent + _EPS
        if self.always_eject_one_host and self._n_ejected == 0:
            allowed = True
        if not allowed:
            self.stats["ejections_overflow"] += 1
            return None
        draw = u() if callable(u) else u
        if not draw < self._p_enforce[reason]:
            return False
        self._ejected[host] = True
        self._n_ejected += 1
        self.num_ejections[host] += 1
        self._ejected_at[host] = now
        if self._backoff[host] * self.base_ejection_time < self.max_ejection_time + self.base_ejection_time:
            self._backoff[host] += 1
        self.ejections.append((now, host, reason))
        self.stats["ejections_enforced_total"] += 1
        self.stats[f"ejections_enforced_{reason}"] += 1
        self._healthy = tuple(h for h in range(self.n_hosts) if not self._ejected[h])
        return True

    def _uneject(self, now: float, host: int) -> None:
        self._ejected[host] = False
        self._n_ejected -= 1
        self._c5xx[host] = 0
        self._cgw[host] = 0
        self._unejected_at[host] = now
        self.unejections.append((now, host))
        self._healthy = tuple(h for h in range(self.n_hosts) if not self._ejected[h])

    # ------------------------------------------------------------------ queries

    def is_ejected(self, host: int) -> bool:
        self._check_host(host)
        return self._ejected[host]

    def ejected_count(self) -> int:
        """Envoy's ``ejections_active`` gauge."""
        return self._n_ejected

    def in_panic(self) -> bool:
        """Fewer than ``panic_threshold`` percent of the hosts are healthy: the balancer uses them all."""
        return 100.0 * len(self._healthy) / self.n_hosts < self.panic_threshold

    def healthy_hosts(self) -> list[int]:
        """The hosts the load balancer may pick: not ejected, or all of them in panic."""
        if self.in_panic():
            return list(range(self.n_hosts))
        return list(self._healthy)

    def ejection_time(self, host: int) -> float:
        """How long ``host``'s current (or next-judged) ejection lasts: ``min(base x backoff, max)``."""
        return min(self.base_ejection_time * self._backoff[host], self.max_ejection_time)

    def ejected_until(self, host: int) -> float | None:
        """The instant from which a sweep returns ``host``, or None when it is not ejected."""
        if not self._ejected[host]:
            return None
        return self._ejected_at[host] + self.ejection_time(host)

    def backoff(self, host: int) -> int:
        """Envoy's ``ejectTimeBackoff`` of ``host``."""
        return self._backoff[host]

    def consecutive(self, host: int) -> tuple[int, int]:
        """``(consecutive_5xx, consecutive_gateway_failure)`` counters of ``host``."""
        return self._c5xx[host], self._cgw[host]

    def _check_host(self, host: int) -> None:
        if not 0 <= host < self.n_hosts:
            raise ValueError(f"host {host} out of range 0..{self.n_hosts - 1}")
