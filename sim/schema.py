"""The scenario schema: typed, immutable configuration values.

This module owns the *shape* of a scenario file. Every class is a frozen
dataclass whose fields are the YAML keys; each field carries its default, its
documentation and its bounds in ``metadata`` (see ``setting``). Loading, unit
parsing and validation live in ``sim.scenario_loader``; the runtime components
that act on these values live elsewhere (``ServiceConfig`` is data, ``Server`` is
behaviour).

Types used in annotations:

- ``Duration``: seconds as a float; written in files as Go durations (``250ms``,
  ``1m30s``) or ``0``.
- ``Size``: bytes as an int; written as ``4KiB``, ``512MiB``, ``14.4kB`` or a bare
  integer of bytes.
- ``Rate``: events per second as a float (keys end in ``_per_s``).

The schema is shaped for service graphs (named services with routes, clients
that target a service, caller -> callee edges with transport and policy,
named dependencies, a fault timeline) even where the model simulates a subset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

Duration = Annotated[float, "duration"]
Size = Annotated[int, "size"]
Rate = Annotated[float, "rate"]

ERROR_KINDS: tuple[str, ...] = (
    "client_timeout",
    "dial_timeout",
    "tls_timeout",
    "response_header_timeout",
    "conn_refused",
    "conn_reset",
    "eof",
    "http_4xx",
    "http_5xx",
    "breaker_open",
    "throttled",
    "edge_overflow",
    "budget_exhausted",
    "deadline_exceeded",
    "cancelled",
    "stream_reset",
    "addr_unavailable",
)
"""Every error kind a logical request or an attempt can end with (design.md §4).

The kinds after ``http_5xx`` come from the policy layer (docs/policies.md): ``breaker_open`` (a
circuit breaker refused the attempt), ``throttled`` (client-side adaptive
throttling refused it), ``edge_overflow`` (an Envoy-style edge limit on pending or
outstanding requests refused it: Envoy's local 503), ``budget_exhausted`` (a
request whose failed attempt the retry policy would retry but the retry budget
refused; its attempts keep their own kinds) and ``deadline_exceeded`` (the
overall deadline of a logical request over all its attempts passed). They are
never retried. ``cancelled`` ends an attempt that lost to another hedge of its
request, and a service-to-service request whose caller gave up on it (the calling
handler's context ended, its fan-out had what it needed, or its process died). ``stream_reset`` is an HTTP/2 stream the
server reset (RST_STREAM: its WriteTimeout fired); the connection lives on.
``addr_unavailable`` is a dial that found no free ephemeral port towards the
callee (connect: EADDRNOTAVAIL, "cannot assign requested address"): the ports
are open connections plus TIME_WAIT. New kinds are appended so that stored
codes keep their meaning.
"""

POLICY_REJECTION_KINDS: tuple[str, ...] = ("breaker_open", "throttled", "edge_overflow",
                                           "budget_exhausted", "deadline_exceeded", "cancelled")
"""Error kinds made by the policy layer; never retried, so never in ``retry_on``."""

RETRYABLE_KINDS: tuple[str, ...] = (
    "client_timeout",
    "dial_timeout",
    "tls_timeout",
    "response_header_timeout",
    "conn_refused",
    "conn_reset",
    "eof",
    "http_5xx",
    "stream_reset",
    "addr_unavailable",
)


def setting(default: Any, doc: str, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None) -> Any:
    """A documented scenario field with optional numeric bounds."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if isinstance(default, (dict, list, tuple)) or dataclasses.is_dataclass(default):
        frozen_default = default
        return field(default_factory=lambda: frozen_default, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- run


@dataclass(frozen=True)
class LimitsConfig:
    """Guards that end a runaway run deterministically (truncated, never an OOM of ours)."""

    max_events: int = setting(30_000_000, "End the run after this many simulation events (checked at every sample, so a run may pass it by one sample interval's events).", gt=0)
    max_entities: int = setting(
        250_000,
        "End the run when in-flight logical requests plus open connections (client side, and "
        "server side with the accept queue) exceed this number; checked every 64 arrivals and at every sample.", gt=0)
    max_wall_time: Duration = setting(
        0.0, "End the run after this much wall-clock time; 0 = off. When it fires, same-seed "
        "identity is not promised for that run.", ge=0)


@dataclass(frozen=True)
class OutcomeConfig:
    """Thresholds of the collapse, recovery and outcome definitions (docs/outputs.md)."""

    collapse_window: Duration = setting(1.0, "Sliding window over which untouched goodput and offered rate are measured.", gt=0)
    collapse_fraction: float = setting(0.5, "Collapse when untouched goodput stays below this fraction of its offered rate ...", gt=0, le=1)
    collapse_hold: Duration = setting(2.0, "... for this long (also the hold time of recovery).", ge=0)
    recovery_fraction: float = setting(0.9, "Recovered when untouched goodput stays at or above this fraction of its offered rate for the hold time.", gt=0, le=1)
    watch: Duration = setting(30.0, "A collapse can be called metastable only if every fault ended at least this long before the end of the run.", ge=0)


# -------------------------------------------------------------------------- load


@dataclass(frozen=True)
class ProfileConfig:
    """How an open-loop rate changes over time."""

    kind: Literal["constant", "step", "ramp", "spike"] = setting(
        "constant", "constant: rate_per_s throughout. step: rate_per_s until `at`, then `to_rate_per_s`. "
        "ramp: rate_per_s until `at`, linear to `to_rate_per_s` at `until`, then stays. spike: "
        "`to_rate_per_s` between `at` and `until`, rate_per_s otherwise.")
    at: Duration = setting(0.0, "Start of the step, ramp or spike.", ge=0)
    until: Duration = setting(0.0, "End of the ramp or spike (ignored for constant and step).", ge=0)
    to_rate_per_s: Rate = setting(0.0, "The rate after the step, at the end of the ramp, or during the spike.", ge=0)


@dataclass(frozen=True)
class LoadConfig:
    """The load one client offers: open loop (arrivals regardless of responses) or closed loop."""

    kind: Literal["open", "closed"] = setting("open", "open: arrivals at a rate, whatever happens to earlier requests (what makes retry storms). closed: `users` who each wait for their response, then think.")
    rate_per_s: Rate = setting(100.0, "Open loop: logical requests per second over all instances of the client.", ge=0)
    arrivals: Literal["poisson", "uniform"] = setting("poisson", "Open loop: poisson (exponential gaps) or uniform (evenly spaced).")
    profile: ProfileConfig = setting(ProfileConfig(), "Open loop: how the rate changes over time.")
    trace: str = setting("", "Open loop: a CSV file of arrival times to replay instead of generating them (column `at_s`, optional column `route`); relative to the scenario file. Empty = off.")
    users: int = setting(0, "Closed loop: number of users.", ge=0)
    think_time: Duration = setting(1.0, "Closed loop: mean think time between a response and the user's next request.", ge=0)
    think: Literal["exponential", "constant"] = setting("exponential", "Closed loop: think-time distribution.")
    routes: dict[str, float] = setting({}, "Route mix: route name -> weight (normalised). Empty = the service's routes, each with weight 1.")


# --------------------------------------------------------------------- transport


@dataclass(frozen=True)
class TlsConfig:
    """TLS between the caller and the callee (semantics.md §4)."""

    enabled: bool = setting(False, "Use TLS on new connections.")
    version: Literal["1.2", "1.3"] = setting("1.3", "TLS 1.2 full handshake: 2 RTTs; TLS 1.3: 1 RTT; resumed: 1 RTT.")
    resumption: bool = setting(False, "Resume sessions (Go clients resume nothing by default: ClientSessionCache is nil).")
    key: Literal["ecdsa-p256", "rsa-2048"] = setting("ecdsa-p256", "Server key type; sets the default server CPU per handshake.")
    server_cpu: Duration = setting(0.0, "Server CPU per full handshake; 0 = by key type (rsa-2048 1.7 ms, ecdsa-p256 0.15 ms, measured Go 1.19.8).", ge=0)
    handshake_timeout: Duration = setting(10.0, "Client TLSHandshakeTimeout (DefaultTransport: 10s); 0 = none.", ge=0)


@dataclass(frozen=True)
class TransportConfig:
    """The caller's http.Transport and http.Client settings for one edge, and the network path (semantics.md §2, §3, §5)."""

    protocol: Literal["http1", "http2"] = setting(
        "http1", "Wire protocol. http1: one request at a time per connection. http2: Go's bundled HTTP/2 "
        "transport (over TLS when tls.enabled, else h2c with prior knowledge): streams multiplexed on "
        "connections, flow control, RST_STREAM on a timeout.")
    rtt: Duration = setting(0.001, "Network round-trip time between caller and callee; a one-way trip is half.", ge=0)
    rtt_jitter: Duration = setting(0.0, "Mean of an exponential extra delay added to each one-way trip; 0 = none.", ge=0)
    bandwidth_bytes_per_s: Rate = setting(0.0, "Bandwidth of each connection, each way: a message of n bytes takes n / bandwidth to send before its one-way trip; 0 = unlimited (bodies cost no time of their own).", ge=0)
    loss_rate: float = setting(
        0.0, "Probability that a TCP segment (1,448 bytes of payload) is lost. A lost segment is recovered by "
        "fast retransmit (+1 RTT) when at least 3 segments follow it in flight (a long message, or other "
        "HTTP/2 streams busy on the connection), else by the retransmission timeout (+ RTT + max(200 ms, "
        "4 x rtt_jitter)); a lost SYN is sent again after the 1 s initial RTO. TCP delivers in order, so "
        "everything behind a lost segment on that connection waits too (head-of-line blocking).", ge=0, lt=1)
    dial_timeout: Duration = setting(30.0, "net.Dialer Timeout (DefaultTransport: 30s); 0 = none.", ge=0)
    tcp_syn_linear_timeouts: int = setting(0, "The caller's kernel: SYN retransmissions 1 s apart before the RTO starts doubling. 0: 1, 3, 7, 15, 31, 63 s, ETIMEDOUT at 127 s (kernels before 6.5); 4: 1, 2, 3, 4, 5, 7, 11, 19, 35, 67 s, ETIMEDOUT at 131 s (the default since Linux 6.5, measured on the testbed's 6.18: a dropped connect completed after 2.06 s).", ge=0, le=10)
    tls: TlsConfig = setting(TlsConfig(), "TLS settings.")
    client_timeout: Duration = setting(0.0, "http.Client Timeout: one deadline over dial, TLS, waiting, headers and body, per attempt; 0 = none (http.DefaultClient).", ge=0)
    response_header_timeout: Duration = setting(0.0, "Transport ResponseHeaderTimeout, from the request being written; 0 = none.", ge=0)
    max_conns_per_host: int = setting(0, "Transport MaxConnsPerHost: 0 = no limit; requests beyond it wait FIFO with no timer of their own.", ge=0)
    max_idle_conns_per_host: int = setting(2, "Transport MaxIdleConnsPerHost: a connection becoming idle beyond it is closed; 0 = Go's DefaultMaxIdleConnsPerHost, 2 (disable pooling with disable_keep_alives). HTTP/1 only: HTTP/2 connections live in their own pool.", ge=0)
    max_idle_conns: int = setting(100, "Transport MaxIdleConns over all hosts: beyond it the oldest idle connection is closed; 0 = no limit.", ge=0)
    idle_conn_timeout: Duration = setting(90.0, "Transport IdleConnTimeout (DefaultTransport: 90s); an HTTP/2 connection with no stream for this long closes too; 0 = none.", ge=0)
    disable_keep_alives: bool = setting(False, "Transport DisableKeepAlives: a new connection per request (HTTP/1).")
    drain_response_body: bool = setting(True, "The caller reads each response body to EOF before closing it. false: it closes the body early, and an HTTP/1 connection is then closed instead of reused (Go's earlyCloseFn).")
    strict_max_concurrent_streams: bool = setting(False, "HTTP/2 StrictMaxConcurrentStreams: true, requests beyond the server's stream limit wait for a slot on the existing connection; false (Go's default), each such request dials a new connection, and when one lands the others that find room are closed unused (the dial race of EXP E11).")
    h2_stream_window: Size = setting(4 << 20, "HTTP/2 SETTINGS_INITIAL_WINDOW_SIZE the caller advertises: how much of one response body the callee may send ahead of the caller's WINDOW_UPDATEs (Go transport 4 MiB; the spec's default 65,535).", ge=1, le=2**31 - 1)
    h2_connection_window: Size = setting(1 << 30, "HTTP/2 connection window the caller grants, shared by every response body on the connection (Go transport 1 GiB; the spec's default 65,535).", ge=1, le=2**31 - 1)
    ephemeral_ports: int = setting(28232, "Ephemeral ports of the caller's address towards the callee (ip_local_port_range 32768-60999 = 28,232). A connection holds its port while open and, when the caller closed it first, 60 s more in TIME_WAIT; a dial with no free port fails at once with addr_unavailable. 0 = unlimited.", ge=0)


# ---------------------------------------------------------------------- policies
# Resilience policies of one edge (docs/policies.md). A block with a `kind` is a
# tagged union: `kind` picks the class, and only that class's keys are accepted.


@dataclass(frozen=True)
class NoRetryBudgetConfig:
    """No retry budget: every retry the retry policy allows is sent."""

    kind: Literal["none"] = setting("none", "No budget.")


@dataclass(frozen=True)
class RatioRetryBudgetConfig:
    """Google SRE per-client retry ratio: retries over the window, this one included, <= ratio x requests."""

    kind: Literal["ratio"] = setting("ratio", "SRE retry ratio.")
    ratio: float = setting(0.1, "Retries allowed per logical request over the window (SRE: 10%).", ge=0)
    window: Duration = setting(120.0, "Sliding window of the counts (our choice: the 2 min window of SRE adaptive throttling).", gt=0)


@dataclass(frozen=True)
class FinagleRetryBudgetConfig:
    """Finagle RetryBudget (Linkerd uses the same): deposits per request, withdrawals per retry, both expiring after the ttl."""

    kind: Literal["finagle", "linkerd"] = setting("finagle", "finagle or linkerd (same rules and defaults).")
    ttl: Duration = setting(10.0, "How long deposits and withdrawals count (Finagle: 1s to 60s).", ge=1, le=60)
    min_retries_per_s: float = setting(10.0, "Retries per second allowed whatever the request rate (the reserve).", ge=0)
    percent_can_retry: float = setting(0.2, "Retries as a fraction of requests (0.2 = 20%).", ge=0, le=1000)


@dataclass(frozen=True)
class EnvoyRetryBudgetConfig:
    """Envoy cluster RetryBudget: retries outstanding < max(budget_percent% x (active + pending), min_retry_concurrency)."""

    kind: Literal["envoy"] = setting("envoy", "Envoy retry budget.")
    budget_percent: float = setting(20.0, "Share of active plus pending requests that may be retries, in percent.", ge=0, le=100)
    min_retry_concurrency: int = setting(3, "Retries allowed outstanding whatever the load.", ge=0)


@dataclass(frozen=True)
class GrpcRetryThrottlingConfig:
    """gRPC retry throttling (gRFC A6): failures take a token, successes add token_ratio; no retries or hedges at or below max_tokens/2."""

    kind: Literal["grpc"] = setting("grpc", "gRPC retry throttling.")
    max_tokens: float = setting(10.0, "Bucket size and starting level.", gt=0, le=1000)
    token_ratio: float = setting(0.1, "Tokens a success adds (three decimals kept).", gt=0)


@dataclass(frozen=True)
class AwsRetryQuotaConfig:
    """aws-sdk-go-v2 standard retryer's retry quota."""

    kind: Literal["aws"] = setting("aws", "AWS SDK retry quota.")
    tokens: int = setting(500, "Bucket capacity and starting level.", ge=0)
    retry_cost: int = setting(5, "Tokens a retry after a non-timeout error takes.", ge=0)
    timeout_cost: int = setting(10, "Tokens a retry after a timeout takes.", ge=0)
    no_retry_increment: int = setting(1, "Tokens a successful attempt returns.", ge=0)
    increment_on_retry_success: bool = setting(True, "A successful retry returns its cost and the increment (current SDK); false: its cost only (older SDKs).")


RetryBudgetConfig = Union[NoRetryBudgetConfig, RatioRetryBudgetConfig, FinagleRetryBudgetConfig,
                          EnvoyRetryBudgetConfig, GrpcRetryThrottlingConfig, AwsRetryQuotaConfig]


@dataclass(frozen=True)
class RetryConfig:
    """Application-level retries of one edge: attempts, what is retried, backoff, deadline, budget."""

    max_attempts: int = setting(1, "Attempts per logical request, the first included (hedges included when hedging is on); 1 = no retries.", ge=1)
    retry_on: tuple[str, ...] = setting(RETRYABLE_KINDS, f"Error kinds that are retried; any of {', '.join(RETRYABLE_KINDS)}. Policy rejections ({', '.join(POLICY_REJECTION_KINDS)}) are never retried.")
    retry_on_status: tuple[int, ...] = setting((), "For http_4xx and http_5xx: only these statuses are retried (e.g. [429, 502, 503, 504]); empty = every status of the kinds in retry_on.")
    retry_non_idempotent: bool = setting(False, "Retry POST, PUT, PATCH and DELETE routes too; false: only GET, HEAD, OPTIONS, TRACE are retried.")
    per_try_timeout: Duration = setting(0.0, "Deadline of each attempt, on top of transport.client_timeout (which is per attempt too); 0 = none.", ge=0)
    deadline: Duration = setting(0.0, "Overall deadline of a logical request over all its attempts and backoffs (a context.WithTimeout around the retry loop); when it passes, the attempts in flight are cancelled and the request fails with deadline_exceeded (a backoff sleep is cut short by it too); 0 = none.", ge=0)
    backoff: Literal["none", "constant", "exponential"] = setting("none", "none: retry at once. constant: backoff_base (at most backoff_cap). exponential: backoff_base x backoff_multiplier^(retry-1), at most backoff_cap.")
    backoff_base: Duration = setting(0.1, "Backoff base (the first retry's ceiling).", ge=0)
    backoff_cap: Duration = setting(10.0, "Backoff cap.", ge=0)
    backoff_multiplier: float = setting(2.0, "Exponential growth per retry.", ge=1)
    jitter: Literal["none", "full", "equal", "decorrelated", "grpc"] = setting("full", "none: the ceiling. full: U(0, ceiling). equal: ceiling/2 + U(0, ceiling/2). decorrelated: min(cap, U(base, 3 x previous sleep)) (exponential only). grpc: ceiling x U(0.8, 1.2).")
    honour_retry_after: bool = setting(False, "A response carrying Retry-After (or gRPC pushback) sets the sleep before the retry to at least its value.")
    budget: RetryBudgetConfig = setting(NoRetryBudgetConfig(), "Retry budget shared by the logical requests of each client process: kind none, ratio, finagle, linkerd, envoy, grpc or aws.")


@dataclass(frozen=True)
class HedgingConfig:
    """Hedged requests (gRFC A6, The Tail at Scale): more copies of a slow attempt; the first answer wins."""

    enabled: bool = setting(False, "Hedge: attempts 2..retry.max_attempts are sent `delay` apart while the request is unanswered, instead of after failures; a retryable failure sends the next hedge at once.")
    delay: Duration = setting(0.05, "Wait after each attempt before the next hedge.", ge=0)
    max_outstanding: int = setting(2, "Attempts of one logical request in flight at once, the original included.", ge=1)


@dataclass(frozen=True)
class AdaptiveThrottleConfig:
    """Google SRE client-side adaptive throttling: reject locally with P = max(0, (requests - k x accepts) / (requests + 1))."""

    enabled: bool = setting(False, "Throttle attempts locally (they fail with `throttled`).")
    k: float = setting(2.0, "Accepts multiplier (SRE: 2; lower is more aggressive).", gt=0)
    window: Duration = setting(120.0, "Sliding window of the request and accept counts (SRE: 2 min).", gt=0)


@dataclass(frozen=True)
class NoBreakerConfig:
    """No circuit breaker."""

    kind: Literal["none"] = setting("none", "No breaker.")


@dataclass(frozen=True)
class GoBreakerConfig:
    """sony/gobreaker: trips on consecutive failures; half-open admits max_requests."""

    kind: Literal["gobreaker"] = setting("gobreaker", "sony/gobreaker.")
    max_requests: int = setting(1, "MaxRequests: calls admitted while half-open; that many consecutive successes close it.", ge=1)
    interval: Duration = setting(0.0, "Interval: cyclic clearing of the closed-state counts; 0 = only on state changes.", ge=0)
    timeout: Duration = setting(60.0, "Timeout: open -> half-open after this.", gt=0)
    trip_after_consecutive_failures: int = setting(6, "Default ReadyToTrip: ConsecutiveFailures > 5, i.e. the 6th consecutive failure trips.", ge=1)


@dataclass(frozen=True)
class HystrixBreakerConfig:
    """Netflix Hystrix: rolling error percentage, checked at health snapshots; one probe after the sleep window."""

    kind: Literal["hystrix"] = setting("hystrix", "Netflix Hystrix.")
    rolling_window: Duration = setting(10.0, "metrics.rollingStats.timeInMilliseconds.", gt=0)
    n_buckets: int = setting(10, "metrics.rollingStats.numBuckets.", ge=1)
    request_volume_threshold: int = setting(20, "circuitBreaker.requestVolumeThreshold: calls in the window before it may trip.", ge=0)
    error_threshold_percentage: float = setting(50.0, "circuitBreaker.errorThresholdPercentage.", ge=0, le=100)
    sleep_window: Duration = setting(5.0, "circuitBreaker.sleepWindowInMilliseconds: then exactly one probe is let through.", gt=0)
    health_snapshot_interval: Duration = setting(0.5, "metrics.healthSnapshot.intervalInMilliseconds: the trip check runs at these instants.", gt=0)


@dataclass(frozen=True)
class Resilience4jBreakerConfig:
    """resilience4j CircuitBreaker: failure-rate and slow-call-rate thresholds over a count or time window."""

    kind: Literal["resilience4j"] = setting("resilience4j", "resilience4j.")
    failure_rate_threshold: float = setting(50.0, "failureRateThreshold, percent.", gt=0, le=100)
    slow_call_rate_threshold: float = setting(100.0, "slowCallRateThreshold, percent.", gt=0, le=100)
    slow_call_duration_threshold: Duration = setting(60.0, "slowCallDurationThreshold: a call longer than this is slow.", ge=0)
    wait_in_open: Duration = setting(60.0, "waitDurationInOpenState.", gt=0)
    permitted_calls_in_half_open: int = setting(10, "permittedNumberOfCallsInHalfOpenState.", ge=1)
    minimum_calls: int = setting(100, "minimumNumberOfCalls before rates are judged.", ge=1)
    sliding_window_size: int = setting(100, "slidingWindowSize: calls (count) or seconds (time).", ge=1)
    sliding_window_type: Literal["count", "time"] = setting("count", "slidingWindowType: COUNT_BASED or TIME_BASED.")
    max_wait_in_half_open: Duration = setting(0.0, "maxWaitDurationInHalfOpenState: back to open after this; 0 = wait for the permitted calls.", ge=0)
    automatic_transition: bool = setting(False, "automaticTransitionFromOpenToHalfOpenEnabled.")


@dataclass(frozen=True)
class SentinelBreakerConfig:
    """Alibaba Sentinel degrade rule: slow ratio, error ratio or error count in one stat interval; one probe."""

    kind: Literal["sentinel"] = setting("sentinel", "Alibaba Sentinel.")
    grade: Literal["slow_ratio", "error_ratio", "error_count"] = setting("slow_ratio", "The rule's grade (0, 1, 2).")
    max_rt: Duration = setting(1.0, "slow_ratio: a call slower than this is slow (Sentinel count, in ms).", ge=0)
    slow_ratio_threshold: float = setting(1.0, "slow_ratio: trip above this share of slow calls.", ge=0, le=1)
    error_ratio_threshold: float = setting(0.5, "error_ratio: trip above this share of errors.", ge=0, le=1)
    error_count_threshold: int = setting(5, "error_count: trip above this many errors.", ge=0)
    recovery_timeout: Duration = setting(10.0, "timeWindow: open -> half-open after this.", gt=0)
    min_request_amount: int = setting(5, "minRequestAmount: calls in the interval before it may trip.", ge=1)
    stat_interval: Duration = setting(1.0, "statIntervalMs: the statistics window.", gt=0)


@dataclass(frozen=True)
class DualMetricBreakerConfig:
    """The incident write-up's breaker (scenarios.md S7): success rate and P99 over consecutive windows, exponential open time, probe batches."""

    kind: Literal["dual_metric"] = setting("dual_metric", "The write-up's dual-metric breaker.")
    sampling_window: Duration = setting(1.0, "Length of a sampling window (our choice).", gt=0)
    trip_success_rate_below: float = setting(0.90, "A window is bad below this success rate.", ge=0, le=1)
    trip_p99_above: Duration = setting(2.0, "... or above this P99.", ge=0)
    n_bad_windows_to_trip: int = setting(3, "Consecutive bad windows that trip it.", ge=1)
    min_calls_per_window: int = setting(1, "A window with fewer results is not judged (our choice).", ge=1)
    base_open: Duration = setting(60.0, "Open time after the first trip; doubled at each reopening.", gt=0)
    max_open: Duration = setting(3840.0, "Cap of the open time (our choice; the write-up has none).", gt=0)
    probe_batch_size: int = setting(3, "Probes per half-open batch.", ge=1)
    probe_interval: Duration = setting(30.0, "Between probe batches.", gt=0)
    probe_results_to_decide: int = setting(0, "Probe results before deciding; 0 = one batch.", ge=0)
    close_success_rate_at_least: float = setting(0.95, "Close when probes succeed at least this often ...", ge=0, le=1)
    close_p99_at_most: Duration = setting(1.2, "... and their P99 is at most this.", ge=0)


BreakerConfig = Union[NoBreakerConfig, GoBreakerConfig, HystrixBreakerConfig, Resilience4jBreakerConfig,
                      SentinelBreakerConfig, DualMetricBreakerConfig]


@dataclass(frozen=True)
class EdgeLimitsConfig:
    """Envoy-style cluster circuit breakers of one edge: concurrency limits that reject locally."""

    enabled: bool = setting(False, "Apply the limits (Envoy's defaults below; a Go client has none).")
    max_connections: int = setting(1024, "Connections open or dialling; beyond it requests wait for one (like MaxConnsPerHost).", ge=1)
    max_pending_requests: int = setting(1024, "Attempts waiting for a connection; one more fails at once with edge_overflow.", ge=0)
    max_requests: int = setting(1024, "Attempts outstanding; one more fails at once with edge_overflow.", ge=1)
    max_retries: int = setting(3, "Retries outstanding (from the decision to the end of the retry attempt); one more is not made (the request fails with budget_exhausted).", ge=0)


@dataclass(frozen=True)
class OutlierDetectionConfig:
    """Envoy outlier detection on one edge: sick instances of the callee leave the load balancer's
    pool for a while (api/envoy/config/cluster/v3/outlier_detection.proto; semantics.md §7)."""

    enabled: bool = setting(False, "Eject outlier instances (off: a Go client has none).")
    consecutive_5xx: int = setting(5, "Consecutive 5xx answers (or connection failures) from one instance that eject it.", ge=1)
    enforcing_consecutive_5xx: float = setting(100.0, "Percent chance that a consecutive-5xx detection is enforced.", ge=0, le=100)
    consecutive_gateway_failure: int = setting(5, "Consecutive gateway failures (502, 503, 504, connection failures) that eject an instance.", ge=1)
    enforcing_consecutive_gateway_failure: float = setting(0.0, "Percent chance that a gateway-failure detection is enforced (Envoy: 0, off).", ge=0, le=100)
    interval: Duration = setting(10.0, "Time between sweeps that judge success rates and failure percentages and return instances whose ejection has ended.", gt=0)
    base_ejection_time: Duration = setting(30.0, "An ejection lasts this long times the number of times the instance was ejected ...", gt=0)
    max_ejection_time: Duration = setting(300.0, "... capped at this.", gt=0)
    max_ejection_percent: float = setting(10.0, "An ejection is allowed only if 100 x (ejected + 1) / instances <= this (current Envoy: with the default 10% and fewer than 10 instances nothing is ejected; see always_eject_one_host).", ge=0, le=100)
    always_eject_one_host: bool = setting(False, "Allow one ejection whatever max_ejection_percent says (Envoy's always_eject_one_host; before Envoy PR #27909 the first ejection was always allowed).")
    enforcing_success_rate: float = setting(100.0, "Percent chance that a success-rate detection is enforced.", ge=0, le=100)
    success_rate_minimum_hosts: int = setting(5, "Success-rate detection needs at least this many instances with enough requests in the interval.", ge=1)
    success_rate_request_volume: int = setting(100, "Requests an instance needs in the interval to be judged by success rate.", ge=1)
    success_rate_stdev_factor: float = setting(1.9, "Ejected when its success rate is below mean - factor x stdev of the judged instances (Envoy's 1900 / 1000).", ge=0)
    failure_percentage_threshold: float = setting(85.0, "Ejected when its failure percentage in the interval is at least this ...", ge=0, le=100)
    enforcing_failure_percentage: float = setting(0.0, "... with this percent chance (Envoy: 0, off).", ge=0, le=100)
    failure_percentage_minimum_hosts: int = setting(5, "Failure-percentage detection needs at least this many instances with enough requests.", ge=1)
    failure_percentage_request_volume: int = setting(50, "Requests an instance needs in the interval to be judged by failure percentage.", ge=1)


LoadBalancerKind = Literal["round_robin", "random", "least_request", "p2c"]
LOAD_BALANCER_DOC = ("How an attempt picks an instance of the callee: round_robin, random, least_request "
                     "(fewest outstanding attempts) or p2c (power of two choices: the less loaded of two "
                     "random instances); instances ejected by outlier detection are skipped.")
PROPAGATION_DOC = ("Send the caller's deadline with each request (gRPC's grpc-timeout; a header for HTTP): the "
                   "callee's deadline is min(its own timeouts, the caller's remaining budget - deadline_margin), "
                   "and its handler's context ends at that instant. false: each hop starts its own clock.")


@dataclass(frozen=True)
class ClientConfig:
    """A source of load that calls one service through one edge (transport + policies)."""

    target: str = setting("", "Name of the service this client calls.")
    instances: int = setting(1, "Client processes, each with its own connection pool (Transport) and its own policy state; the load is split evenly.", ge=1)
    load: LoadConfig = setting(LoadConfig(), "The offered load.")
    transport: TransportConfig = setting(TransportConfig(), "Transport and client timeouts.")
    retry: RetryConfig = setting(RetryConfig(), "Retries, backoff, deadline and retry budget.")
    hedging: HedgingConfig = setting(HedgingConfig(), "Hedged requests.")
    throttle: AdaptiveThrottleConfig = setting(AdaptiveThrottleConfig(), "Client-side adaptive throttling.")
    breaker: BreakerConfig = setting(NoBreakerConfig(), "Circuit breaker of each client process: kind none, gobreaker, hystrix, resilience4j, sentinel or dual_metric.")
    edge_limits: EdgeLimitsConfig = setting(EdgeLimitsConfig(), "Envoy-style concurrency limits.")
    load_balancer: LoadBalancerKind = setting("round_robin", LOAD_BALANCER_DOC)
    outlier_detection: OutlierDetectionConfig = setting(OutlierDetectionConfig(), "Envoy outlier detection over the target's instances.")
    deadline_propagation: bool = setting(False, PROPAGATION_DOC)
    deadline_margin: Duration = setting(0.0, "With deadline_propagation: kept back from the remaining budget for the way back.", ge=0)


@dataclass(frozen=True)
class EdgeConfig:
    """A caller -> callee edge between services: each instance of the caller is one client
    process towards the callee, with this transport and these policies. A handler step
    ``call: callee.route`` uses it (a call with no edge uses Go's defaults)."""

    caller: str = setting("", "Calling service.")
    callee: str = setting("", "Called service.")
    transport: TransportConfig = setting(TransportConfig(), "The caller's transport for this edge.")
    retry: RetryConfig = setting(RetryConfig(), "The caller's retries on this edge.")
    hedging: HedgingConfig = setting(HedgingConfig(), "Hedged requests.")
    throttle: AdaptiveThrottleConfig = setting(AdaptiveThrottleConfig(), "Client-side adaptive throttling.")
    breaker: BreakerConfig = setting(NoBreakerConfig(), "Circuit breaker.")
    edge_limits: EdgeLimitsConfig = setting(EdgeLimitsConfig(), "Envoy-style concurrency limits.")
    load_balancer: LoadBalancerKind = setting("round_robin", LOAD_BALANCER_DOC)
    outlier_detection: OutlierDetectionConfig = setting(OutlierDetectionConfig(), "Envoy outlier detection over the callee's instances.")
    deadline_propagation: bool = setting(False, PROPAGATION_DOC)
    deadline_margin: Duration = setting(0.0, "With deadline_propagation: kept back from the remaining budget for the way back.", ge=0)


# ----------------------------------------------------------------------- service


@dataclass(frozen=True)
class StepConfig:
    """One step of a handler. Exactly one of `cpu`, `query`, `sleep`, `alloc`, `call` is set."""

    cpu: Duration = setting(0.0, "CPU work on one core.", ge=0)
    query: str = setting("", "A query on `db.table` through the service's database/sql pool for that database.")
    sleep: Duration = setting(0.0, "Off-CPU wait (e.g. an unmodelled downstream call).", ge=0)
    alloc: Size = setting(0, "Heap allocated from this step until the handler returns.", ge=0)
    call: str = setting("", "A call to another service, `service.route` (or `service`: its first route), through the edge from this service to it; the handler waits for it.")
    fanout: int = setting(1, "call: this many copies of the call in parallel (the load balancer spreads them).", ge=1)
    fanout_wait: int = setting(0, "call with fanout: go on once this many copies succeeded, cancelling the rest (0 = wait for all).", ge=0)
    on_error: Literal["fail", "continue"] = setting("fail", "call: when the call fails (or too few copies can succeed): fail (the handler returns 502 at once) or continue with the next step.")
    distribution: Literal["constant", "exponential"] = setting("constant", "For cpu and sleep steps: the value is exact (constant) or the mean of an exponential draw.")
    probability: float = setting(1.0, "The step runs with this probability and is skipped otherwise (e.g. `sleep: 1s` with `probability: 0.01`: a handler slow 1% of the time).", ge=0, le=1)


@dataclass(frozen=True)
class RouteConfig:
    """One endpoint of a service: its handler and how it treats its context."""

    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"] = setting("GET", "HTTP method (GET/HEAD: a client disconnect cancels the context; POST with an unread body: it does not).")
    steps: tuple[StepConfig, ...] = setting((), "The handler's work, in order.")
    honours_context: bool = setting(False, "Do cancellation and deadlines reach the handler's queries? false: the work runs to completion after the caller has gone (orphaned work).")
    db_deadline: Duration = setting(0.0, "A context.WithTimeout around each query inside the handler (server-side deadline); 0 = none. A deadline always ends the query, whatever honours_context says.", ge=0)
    request_body: bool = setting(False, "The request carries a body that the handler does not read before its queries (a POST whose disconnect Go does not notice).")
    request_bytes: Size = setting(0, "Size of the request body. A handler that reads its body (request_body false) starts its steps once the body has arrived: it crosses the link's bandwidth and, on HTTP/2, the server's flow-control windows.", ge=0)
    response_bytes: Size = setting(0, "Size of the response body, read by the caller before the attempt ends: it crosses the link's bandwidth and, on HTTP/2, the caller's flow-control windows.", ge=0)


@dataclass(frozen=True)
class ServerConfig:
    """Go http.Server settings (semantics.md §1)."""

    read_timeout: Duration = setting(0.0, "ReadTimeout: absolute deadline for headers and body from the first byte of the request; cleared once the body is read; 0 = none.", ge=0)
    read_header_timeout: Duration = setting(0.0, "ReadHeaderTimeout; 0 = falls back to read_timeout.", ge=0)
    write_timeout: Duration = setting(0.0, "WriteTimeout: from the end of the headers; cancels nothing, the response is lost (client EOF) at the handler's first write after it; 0 = none.", ge=0)
    idle_timeout: Duration = setting(0.0, "IdleTimeout for keep-alive connections; 0 = falls back to read_timeout.", ge=0)
    timeout_handler: Duration = setting(0.0, "Wrap every handler in http.TimeoutHandler with this duration (503 at the deadline, the inner context cancelled, the handler keeps running); 0 = off.", ge=0)
    accept_backlog: int = setting(4096, "Listen backlog (somaxconn, default 4096); beyond it SYNs are dropped silently.", ge=1)
    header_bytes: Size = setting(512, "Size of a request's header block (what a slow-header client dribbles).", ge=1)
    h2_max_concurrent_streams: int = setting(250, "HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (Go server 250). Handlers still running after their stream was reset count against it; new streams beyond it wait, and more than 4 x this many waiting gets GOAWAY ENHANCE_YOUR_CALM and the connection closed.", ge=1)
    h2_stream_window: Size = setting(1 << 20, "HTTP/2 SETTINGS_INITIAL_WINDOW_SIZE the server advertises: how much of one request body a caller may send ahead of the server's WINDOW_UPDATEs (Go server 1 MiB, MaxUploadBufferPerStream; the spec's default 65,535).", ge=1, le=2**31 - 1)
    h2_connection_window: Size = setting(1 << 20, "HTTP/2 connection window the server grants, shared by every request body on the connection (Go server 1 MiB, MaxUploadBufferPerConnection; the spec's default 65,535).", ge=1, le=2**31 - 1)


@dataclass(frozen=True)
class MemoryConfig:
    """Memory accounting of the server process (connmem experiment, semantics.md §1)."""

    limit: Size = setting(0, "Memory limit (container); the process is killed (OOM) when its memory (live set plus uncollected garbage) reaches it; 0 = none.", ge=0)
    baseline: Size = setting(32 * 1024 * 1024, "Memory of the process at rest.", ge=0)
    per_connection: Size = setting(10306, "Per open server connection, its goroutine excluded (measured 14,402 B idle keep-alive incl. one goroutine).", ge=0)
    per_request: Size = setting(2228, "Per in-flight request, its goroutines excluded (measured +6,324 B incl. the background reader).", ge=0)
    per_goroutine: Size = setting(4096, "Per goroutine (stack and g).", ge=0)
    restart_after: Duration = setting(0.0, "Restart the process this long after a kill; 0 = stays dead.", ge=0)


@dataclass(frozen=True)
class CpuConfig:
    """CPU of the server process: GOMAXPROCS cores shared FCFS by runnable work."""

    cores: int = setting(2, "GOMAXPROCS cores.", ge=1)


@dataclass(frozen=True)
class GcConfig:
    """Go's garbage collector: heap goal, mark cycles and their CPU (docs/model.md, GC)."""

    enabled: bool = setting(False, "Model the heap and its collector. false: memory is the live set only and the GC costs no CPU.")
    gogc: int = setting(100, "GOGC: the next cycle starts when the heap reaches live-at-last-mark x (1 + GOGC/100) (4 MiB at least).", ge=1)
    gomemlimit: Size = setting(0, "GOMEMLIMIT (Go 1.19+ soft limit): the heap goal never exceeds it; 0 = none.", ge=0)
    mark_rate_per_core: Size = setting(512 * 1024 * 1024, "Live bytes one core marks per second; a cycle lasts live / (rate x cores x background_fraction).", gt=0)
    background_fraction: float = setting(0.25, "Share of the cores the GC takes while a cycle runs (Go's 25% background workers).", gt=0, lt=1)
    assist_fraction: float = setting(0.5, "Share of the cores taken while a cycle runs and the heap is past its goal (mark assists; Go's GC CPU limiter caps at 50%).", gt=0, lt=1)


@dataclass(frozen=True)
class PoolConfig:
    """Go database/sql pool of one service towards one database."""

    max_open_conns: int = setting(0, "SetMaxOpenConns: 0 = unlimited; waiters beyond it get a random freed connection, their wait ends with their context.", ge=0)
    max_idle_conns: int = setting(2, "SetMaxIdleConns (default 2): released connections beyond it are closed.", ge=0)
    conn_max_lifetime: Duration = setting(0.0, "SetConnMaxLifetime: a connection older than this is closed instead of reused; 0 = none.", ge=0)


@dataclass(frozen=True)
class SheddingConfig:
    """Server-side load shedding in front of the handlers (a bulkhead middleware; Go's net/http has none)."""

    max_in_flight: int = setting(0, "Handlers running at once; beyond it requests queue or get a 503. 0 = no limit (no shedding).", ge=0)
    queue_length: int = setting(0, "Requests that may wait for a slot; one more gets a 503 at once. 0 = no queue.", ge=0)
    discipline: Literal["fifo", "lifo", "codel"] = setting("fifo", "Queue order. codel: Fail at Scale's controlled delay with adaptive LIFO (queue timeout codel_target when the queue has not been empty for codel_interval, else codel_interval).")
    queue_timeout: Duration = setting(0.0, "fifo, lifo: a request waiting longer gets a 503; 0 = none.", ge=0)
    codel_target: Duration = setting(0.005, "codel: the short queue timeout under overload (M, 5 ms).", ge=0)
    codel_interval: Duration = setting(0.1, "codel: the long queue timeout and the overload interval (N, 100 ms).", gt=0)
    retry_after: Duration = setting(0.0, "Retry-After carried by the shed 503s (rounded up to whole seconds, as the header has); 0 = none.", ge=0)


@dataclass(frozen=True)
class ServiceConfig:
    """A Go HTTP service: server settings, CPU, memory, fds, routes and DB pools."""

    instances: int = setting(1, "Instances of the service (more than one: service graphs issue).", ge=1)
    server: ServerConfig = setting(ServerConfig(), "http.Server settings.")
    cpu: CpuConfig = setting(CpuConfig(), "CPU.")
    gc: GcConfig = setting(GcConfig(), "Garbage collector.")
    memory: MemoryConfig = setting(MemoryConfig(), "Memory accounting and OOM.")
    fd_limit: int = setting(524288, "RLIMIT_NOFILE as the process runs (Go raises the soft limit to the hard one); fds: 3 stdio + listener + connections + DB connections.", ge=8)
    routes: dict[str, RouteConfig] = setting({}, "Routes by name.")
    pools: dict[str, PoolConfig] = setting({}, "database/sql pools by database name; a database used without an entry gets the defaults.")
    shedding: SheddingConfig = setting(SheddingConfig(), "Load shedding in front of the handlers.")


@dataclass(frozen=True)
class TableConfig:
    """A table of a database: its query time."""

    query_time: Duration = setting(0.002, "Mean time of one query on this table (without lock waits).", ge=0)
    distribution: Literal["constant", "exponential"] = setting("exponential", "Query-time distribution.")


@dataclass(frozen=True)
class DatabaseConfig:
    """A database shared by the services that query it."""

    rtt: Duration = setting(0.0005, "Round trip between a service and the database (one per query, one per dial).", ge=0)
    tables: dict[str, TableConfig] = setting({}, "Tables by name.")


# ------------------------------------------------------------------------ faults


@dataclass(frozen=True)
class FaultConfig:
    """One fault on the timeline. `kind` selects which of the other fields apply.

    - ``db_lock``: while it lasts, every query on ``target`` (``db.table``) waits ``lock_wait`` first.
    - ``latency``: ``delay`` added to the handlers of ``routes`` of service ``target``.
    - ``error_rate``: a fraction ``rate`` of the requests to ``routes`` of ``target`` fail with ``status``.
    - ``instance_kill``: instance ``instance`` of service ``target`` is killed at ``at`` (pod
      eviction) and starts again ``duration`` later (0 = never; its sockets are reset).
    - ``cpu_throttle``: while it lasts, the instances of ``target`` (or only ``instance``) run
      their CPU work ``factor`` times slower (a cgroup CPU quota).
    - ``partition``: while it lasts, the edge ``target`` (``caller->callee``) drops everything:
      SYNs and requests are lost (dials and attempts time out).
    - ``slow_clients``: ``connections_per_s`` new connections to service ``target`` that dribble
      their header block (``services.X.server.header_bytes``) and then ``body_bytes`` of body at
      ``bytes_per_s`` (0 = mute: connect and send nothing), then request ``route`` (empty: a path
      no route serves, answered 404). They are attack traffic: not logical requests.
    """

    kind: Literal["db_lock", "latency", "error_rate", "slow_clients", "instance_kill", "cpu_throttle",
                  "partition"] = setting("db_lock", "Fault kind.")
    at: Duration = setting(0.0, "Start of the fault.", ge=0)
    duration: Duration = setting(0.0, "How long it lasts; 0 = until the end of the run.", ge=0)
    target: str = setting("", "db_lock: `database.table`; partition: an edge `caller->callee`; others: a service name.")
    instance: int = setting(-1, "latency, error_rate, instance_kill, cpu_throttle: the instance of the service it acts on (0-based); -1 = every instance (instance_kill: instance 0).", ge=-1)
    factor: float = setting(2.0, "cpu_throttle: CPU work takes this many times longer.", ge=1)
    routes: tuple[str, ...] = setting((), "latency, error_rate: routes it acts on; empty = every route of the service.")
    lock_wait: Duration = setting(15.0, "db_lock: wait of each query on the locked table.", ge=0)
    delay: Duration = setting(0.0, "latency: delay added to the handler.", ge=0)
    rate: float = setting(0.0, "error_rate: fraction of requests that fail.", ge=0, le=1)
    status: int = setting(500, "error_rate: HTTP status returned.", ge=400, le=599)
    connections_per_s: Rate = setting(0.0, "slow_clients: new slow connections per second (Poisson).", ge=0)
    bytes_per_s: float = setting(0.0, "slow_clients: bytes per second each connection sends; 0 = mute.", ge=0)
    body_bytes: Size = setting(0, "slow_clients: request body dribbled after the headers.", ge=0)
    route: str = setting("", "slow_clients: the route requested once the request is complete; empty = none (404).")


# ---------------------------------------------------------------------- scenario


@dataclass(frozen=True)
class Scenario:
    """One scenario: services, clients, edges, databases and a fault timeline."""

    name: str = setting("scenario", "Scenario name (used in output folder names).")
    description: str = setting("", "What the scenario shows.")
    seed: int = setting(1, "Default seed (overridden by --seed).", ge=0)
    duration: Duration = setting(60.0, "Simulated time.", gt=0)
    warmup: Duration = setting(0.0, "Requests arriving before this are left out of the population.", ge=0)
    sample_interval: Duration = setting(0.1, "Time-series sampling interval.", gt=0)
    record_requests: bool = setting(True, "Keep per-request and per-attempt records (needed for percentiles).")
    limits: LimitsConfig = setting(LimitsConfig(), "Runaway guards.")
    outcome: OutcomeConfig = setting(OutcomeConfig(), "Collapse and recovery thresholds.")
    services: dict[str, ServiceConfig] = setting({}, "Services by name.")
    databases: dict[str, DatabaseConfig] = setting({}, "Databases by name.")
    clients: dict[str, ClientConfig] = setting({}, "Clients (load sources) by name.")
    edges: tuple[EdgeConfig, ...] = setting((), "Caller -> callee edges between services (service graphs issue).")
    faults: tuple[FaultConfig, ...] = setting((), "The fault timeline; the first fault's start is the trigger time.")
    allow_cycles: bool = setting(False, "Allow call cycles between services (a service calling itself, directly or through others); rejected otherwise.")
    variants: dict[str, dict[str, Any]] = setting({}, "Named variants: variant name -> {dotted.path: value} overrides, chosen with --variant.")
