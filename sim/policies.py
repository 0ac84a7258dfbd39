"""From an edge's policy settings (``sim.schema``) to the pure policy objects that act on them.

This module owns the mapping between the scenario keys of docs/policies.md and the
constructors of the policy library (``sim.backoff``, ``sim.retry_budget``,
``sim.throttling``, ``sim.breakers``, ``sim.edge_limits``, ``sim.shedding``): units
(durations in seconds, Sentinel's milliseconds), the library defaults that the
schema spells differently (``0`` = "one batch"), and which kinds build nothing.
Every client process gets its own objects: policy state is per process, as in the
libraries themselves.
"""

from __future__ import annotations

from sim.backoff import BackoffPolicy
from sim.breakers import Breaker
from sim.breakers.dual_metric import DualMetricBreaker
from sim.breakers.gobreaker import GoBreaker
from sim.breakers.hystrix import HystrixBreaker
from sim.breakers.resilience4j import Resilience4jBreaker
from sim.breakers.sentinel import SentinelBreaker
from sim.edge_limits import EdgeLimits
from sim.retry_budget import (AwsRetryQuota, EnvoyBudget, FinagleBudget, GrpcThrottle, RatioBudget,
                              RetryBudget)
from sim.schema import (AdaptiveThrottleConfig, AwsRetryQuotaConfig, BreakerConfig, DualMetricBreakerConfig,
                        EdgeLimitsConfig, EnvoyRetryBudgetConfig, FinagleRetryBudgetConfig, GoBreakerConfig,
                        GrpcRetryThrottlingConfig, HystrixBreakerConfig, RatioRetryBudgetConfig,
                        Resilience4jBreakerConfig, RetryBudgetConfig, RetryConfig, SentinelBreakerConfig,
                        SheddingConfig)
from sim.shedding import QueueConfig, ServerShedding
from sim.shedding import SheddingConfig as ShedPolicyConfig
from sim.throttling import AdaptiveThrottle


def make_backoff(retry: RetryConfig) -> BackoffPolicy:
    return BackoffPolicy(kind=retry.backoff, base_s=retry.backoff_base, cap_s=retry.backoff_cap,
                         multiplier=retry.backoff_multiplier, jitter=retry.jitter)


def make_retry_budget(config: RetryBudgetConfig) -> RetryBudget | None:
    """The budget object, or None for ``kind: none`` (no bookkeeping at all)."""
    if isinstance(config, RatioRetryBudgetConfig):
        return RatioBudget(ratio=config.ratio, window_s=config.window)
    if isinstance(config, FinagleRetryBudgetConfig):
        return FinagleBudget(ttl_s=config.ttl, min_retries_per_s=config.min_retries_per_s,
                             percent_can_retry=config.percent_can_retry)
    if isinstance(config, EnvoyRetryBudgetConfig):
        return EnvoyBudget(budget_percent=config.budget_percent,
                           min_retry_concurrency=config.min_retry_concurrency)
    if isinstance(config, GrpcRetryThrottlingConfig):
        return GrpcThrottle(max_tokens=config.max_tokens, token_ratio=config.token_ratio)
    if isinstance(config, AwsRetryQuotaConfig):
        return AwsRetryQuota(tokens=config.tokens, retry_cost=config.retry_cost,
                             timeout_cost=config.timeout_cost, no_retry_increment=config.no_retry_increment,
                             increment_on_retry_success=config.increment_on_retry_success)
    return None


def budget_level(budget: RetryBudget, now_s: float, active_requests: int, pending_requests: int) -> float:
    """Retries the budget would still allow right now (the time-series ``retry_budget_left``).

    ratio: ``ratio x requests - retries`` over the window; finagle/linkerd: balance /
    withdrawal; envoy: max concurrent retries - outstanding; grpc: tokens above half
    the bucket; aws: tokens / retry cost. Negative values are shown as 0.
    """
    if isinstance(budget, RatioBudget):
        left = budget.ratio * budget.requests.total(now_s) - budget.retries.total(now_s)
    elif isinstance(budget, FinagleBudget):
        left = budget.balance(now_s) / budget.withdrawal if budget.enabled else 0.0
    elif isinstance(budget, EnvoyBudget):
        left = budget.max_retries(active_requests, pending_requests) - budget.retries_outstanding
    elif isinstance(budget, GrpcThrottle):
        left = budget.token_count - budget.max_milli / 2000.0
    elif isinstance(budget, AwsRetryQuota):
        left = budget.tokens / budget.retry_cost if budget.retry_cost else float(budget.tokens)
    else:
        left = 0.0
    return max(0.0, float(left))


def make_breaker(config: BreakerConfig) -> Breaker | None:
    """The breaker object, or None for ``kind: none``."""
    if isinstance(config, GoBreakerConfig):
        return GoBreaker(max_requests=config.max_requests, interval_s=config.interval, timeout_s=config.timeout,
                         trip_after_consecutive_failures=config.trip_after_consecutive_failures)
    if isinstance(config, HystrixBreakerConfig):
        return HystrixBreaker(rolling_window_s=config.rolling_window, n_buckets=config.n_buckets,
                              request_volume_threshold=config.request_volume_threshold,
                              error_threshold_percentage=config.error_threshold_percentage,
                              sleep_window_s=config.sleep_window,
                              health_snapshot_interval_s=config.health_snapshot_interval)
    if isinstance(config, Resilience4jBreakerConfig):
        return Resilience4jBreaker(
            failure_rate_threshold=config.failure_rate_threshold,
            slow_call_rate_threshold=config.slow_call_rate_threshold,
            slow_call_duration_threshold_s=config.slow_call_duration_threshold,
            wait_in_open_s=config.wait_in_open, permitted_calls_in_half_open=config.permitted_calls_in_half_open,
            minimum_calls=config.minimum_calls, sliding_window_size=config.sliding_window_size,
            sliding_window_type=config.sliding_window_type, max_wait_in_half_open_s=config.max_wait_in_half_open,
            automatic_transition=config.automatic_transition)
    if isinstance(config, SentinelBreakerConfig):
        return SentinelBreaker(grade=config.grade, max_rt_ms=config.max_rt * 1000.0,
                               slow_ratio_threshold=config.slow_ratio_threshold,
                               error_ratio_threshold=config.error_ratio_threshold,
                               error_count_threshold=config.error_count_threshold,
                               recovery_timeout_s=config.recovery_timeout,
                               min_request_amount=config.min_request_amount, stat_interval_s=config.stat_interval)
    if isinstance(config, DualMetricBreakerConfig):
        return DualMetricBreaker(
            sampling_window_s=config.sampling_window, trip_success_rate_below=config.trip_success_rate_below,
            trip_p99_above_s=config.trip_p99_above, n_bad_windows_to_trip=config.n_bad_windows_to_trip,
            min_calls_per_window=config.min_calls_per_window, base_open_s=config.base_open,
            max_open_s=config.max_open, probe_batch_size=config.probe_batch_size,
            probe_interval_s=config.probe_interval,
            probe_results_to_decide=config.probe_results_to_decide or None,
            close_success_rate_at_least=config.close_success_rate_at_least,
            close_p99_at_most_s=config.close_p99_at_most)
    return None


def make_throttle(config: AdaptiveThrottleConfig) -> AdaptiveThrottle | None:
    return AdaptiveThrottle(k=config.k, window_s=config.window) if config.enabled else None


def make_edge_limits(config: EdgeLimitsConfig) -> EdgeLimits | None:
    if not config.enabled:
        return None
    return EdgeLimits(max_connections=config.max_connections, max_pending_requests=config.max_pending_requests,
                      max_requests=config.max_requests, max_retries=config.max_retries)


def make_shedding(config: SheddingConfig) -> ServerShedding | None:
    """The admission policy of one server process, or None when ``max_in_flight`` is 0 (no shedding)."""
    if config.max_in_flight == 0:
        return None
    queue = QueueConfig(discipline=config.discipline, max_length=config.queue_length,
                        timeout_s=(config.queue_timeout or None) if config.discipline != "codel" else None,
                        target_s=config.codel_target, interval_s=config.codel_interval)
    return ServerShedding(ShedPolicyConfig(max_in_flight=config.max_in_flight, queue=queue))


# Outlier detection (service graphs): imported here, next to its factory.
from sim.outlier_detection import OutlierDetector  # noqa: E402
from sim.schema import OutlierDetectionConfig  # noqa: E402


def make_outlier_detector(config: OutlierDetectionConfig, n_hosts: int) -> OutlierDetector | None:
    """Envoy outlier detection for the ``n_hosts`` instances of the callee behind one edge, or None when
    not ``enabled``. One detector per edge and caller process: Envoy's detector is per cluster."""
    if not config.enabled:
        return None
    return OutlierDetector(config, n_hosts)
