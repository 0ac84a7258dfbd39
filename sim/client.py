"""A client process: Go's http.Client towards one service, its retries and policies.

Each ``ClientInstance`` is one client process (a load source, or one instance of a
calling service on one edge) with its own policy state. An attempt passes the
policies (breaker, throttle, edge limits), is given an instance of the callee by
the edge's load balancer (minus instances that outlier detection has ejected), and
moves onto a connection through that host's ``HostTransport`` (``sim.transport``:
Go's per-host connection pool, dial, TLS, HTTP/1 and HTTP/2). ``Client.Timeout``
(and a per-try timeout) is one deadline per attempt over the wait, the dial, TLS
and the response; ``ResponseHeaderTimeout`` runs from the request being written.

Application retries (``RetryPolicy``) wrap attempts into one logical request. A
request is a chain of callbacks, not a SimPy process.
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING, Any

import simpy

from sim.connection import Conn, Link
from sim.edge_limits import REQUESTS, RETRIES
from sim.h2 import BodyTransfer
from sim.hedging import HedgingPolicy
from sim.load_balancer import LoadBalancer
from sim.policies import (make_breaker, make_edge_limits, make_outlier_detector, make_retry_budget,
                          make_throttle)
from sim.result import ERROR_CODE, SUCCESS
from sim.retry import RetryPolicy
from sim.transport import Dial, HostTransport

INF = math.inf
NAN = math.nan

if TYPE_CHECKING:  # pragma: no cover
    from sim.world import Service, World


class Request:
    """A logical request: what a user asked for."""

    __slots__ = ("id", "client", "route", "touched", "arrival_at", "attempts", "current", "done",
                 "finished", "outstanding", "deadline_timer", "hedge_timer", "prev_backoff_s",
                 "retry_held", "retry_cost", "hedges", "parent", "deadline_at")

    def __init__(self, request_id: int, client: "ClientInstance", route: int, arrival_at: float) -> None:
        self.id = request_id
        self.client = client
        self.route = route
        self.touched = False
        self.arrival_at = arrival_at
        self.attempts = 0
        self.current: Attempt | None = None
        self.done: simpy.Event | None = None     # closed loop: the user waits on it
        self.finished = False
        self.outstanding = 0                     # attempts in flight (hedging: more than one)
        self.deadline_timer = None
        self.hedge_timer = None
        self.prev_backoff_s: float | None = None   # decorrelated jitter
        self.retry_held = False      # a retry was granted (budget, edge limits) and sleeps in its backoff
        self.retry_cost = 0          # what the budget charged for it (AWS), refunded on success
        self.hedges: list[Attempt] | None = None    # hedging: every attempt, in order
        self.parent = None           # service graphs: the handler (Exchange) that made this call
        self.deadline_at = INF   # the caller's propagated deadline (an instant)


class Attempt:
    """One try on the wire."""

    __slots__ = ("request", "client", "number", "route", "start_at", "error", "status", "conn",
                 "timer", "header_timer", "exchange", "new_conn", "finished", "waiting", "ended_at", "recorded",
                 "breaker_generation", "holds_retry", "retry_cost", "retry_after_s", "cancelled",
                 "pool_wait_s", "connect_s", "tls_s", "backlog_s", "flow_wait_s", "to_server_s",
                 "dial", "request_body", "reached_server", "unprocessed_retries",
                 "transport", "deadline_at")

    def __init__(self, request: Request, client: "ClientInstance", number: int, now: float) -> None:
        self.request = request
        self.client = client
        self.number = number
        self.route = request.route
        self.start_at = now
        self.error: str | None = None
        self.status = 0
        self.conn: Conn | None = None
        self.timer = None
        self.header_timer = None
        self.exchange = None
        self.new_conn = False
        self.finished = False
        self.waiting = False
        self.ended_at = 0.0
        self.recorded = False
        self.breaker_generation: int | None = None
        self.holds_retry = False     # counts against the retry budget / edge max_retries until it ends
        self.retry_cost = 0
        self.retry_after_s = 0.0     # Retry-After of the response (shed 503s)
        self.cancelled = False       # a hedge that lost, or cut by the request's deadline
        # "time before the server sees it" (docs/outputs.md): the phases on the attempt's
        # critical path from its start until the server's handler has the request
        self.pool_wait_s = 0.0       # waiting for a connection or an HTTP/2 stream slot
        self.connect_s = 0.0         # TCP connect (SYN retransmits included)
        self.tls_s = 0.0             # TLS handshake (the accept-queue wait excluded)
        self.backlog_s = 0.0         # in the server's accept queue
        self.flow_wait_s = 0.0       # HTTP/2 flow control holding the request body back
        self.to_server_s = NAN   # the whole span; NaN if the server never had it
        self.dial: Dial | None = None          # the dial this attempt started, if any
        self.request_body: BodyTransfer | None = None   # HTTP/2: its request body in flight
        self.reached_server = False  # the server has the request (HTTP/2: it knows the stream)
        self.unprocessed_retries = 0   # HTTP/2 transparent retries of a stream never processed
        self.transport: HostTransport | None = None   # the callee instance's pool it went to
        self.deadline_at = INF   # the deadline the callee learns (deadline propagation)


class ClientInstance:
    def __init__(self, world: "World", name: str, index: int, config: Any, service: "Service",
                 stream_key: str | None = None) -> None:
        """``config`` is a ClientConfig (a load source) or an EdgeConfig (a calling service's
        instance); ``stream_key`` names its random streams (default: client.<name>.<index>)."""
        self.world = world
        self.env: simpy.Environment = world.env
        self.timers = world.timers
        self.name = name
        self.index = index
        self.client_index = world.client_names.index(name)
        self.config = config
        self.service = service
        key = stream_key or f"client.{name}.{index}"
        t = config.transport
        link = Link(t.rtt, t.rtt_jitter, world.streams.exponential(f"{key}.link"),
                    loss_rate=t.loss_rate, bytes_per_s=t.bandwidth_bytes_per_s,
                    loss_uniform=world.streams.uniform(f"{key}.loss") if t.loss_rate > 0 else None)
        self.client_timeout_s = t.client_timeout
        self.header_timeout_s = t.response_header_timeout
        self.max_conns = t.max_conns_per_host
        if config.edge_limits.enabled:     # Envoy max_connections caps dials like MaxConnsPerHost
            limit = config.edge_limits.max_connections
            self.max_conns = min(self.max_conns, limit) if self.max_conns else limit
        # one Transport pool per instance of the callee (Go keys its pools by host)
        self.hosts = [HostTransport(self, h, link) for h in range(service.config.instances)]
        self._only_host = self.hosts[0] if len(self.hosts) == 1 else None
        self.balancer = LoadBalancer(getattr(config, "load_balancer", "round_robin"), len(self.hosts),
                                     world.streams.uniform(f"{key}.balancer").next)
        outlier_cfg = getattr(config, "outlier_detection", None)
        self.outlier = make_outlier_detector(outlier_cfg, len(self.hosts)) if outlier_cfg is not None else None
        if self.outlier is not None:
            self._outlier_uniform = world.streams.uniform(f"{key}.outlier")
            self._outlier_interval_s = outlier_cfg.interval
            self.timers.start(self._outlier_interval_s, self._on_outlier_sweep)
        self.edge_key = name if "->" in name else f"{name}->{service.name}"   # partition faults
        self.propagates = getattr(config, "deadline_propagation", False)
        self.deadline_margin_s = getattr(config, "deadline_margin", 0.0)
        self.open_requests: dict[int, Request] | None = None   # an edge's: ended with its process
        self.shut_down = False
        self.shut_down_at_s: float | None = None
        self.retry = RetryPolicy(config.retry)
        self._backoff_uniform = world.streams.uniform(f"{key}.backoff")
        # resilience policies of this process (None = off); see sim.policies
        retry = config.retry
        self.attempt_timeout_s = min((x for x in (t.client_timeout, retry.per_try_timeout) if x > 0), default=0.0)
        self.deadline_s = retry.deadline
        self.budget = make_retry_budget(retry.budget)
        self.breaker = make_breaker(config.breaker)
        self.throttle = make_throttle(config.throttle)
        self._throttle_uniform = (world.streams.uniform(f"{key}.throttle")
                                  if self.throttle is not None else None)
        self.hedging = (HedgingPolicy(config.hedging.delay, config.hedging.max_outstanding)
                        if config.hedging.enabled else None)
        self.edge_limits = make_edge_limits(config.edge_limits)
        self.observes = self.breaker is not None or self.throttle is not None or self.budget is not None
        self.active_attempts = 0       # attempts out, waiting for a connection or on one
        self.pending_attempts = 0      # of which waiting for a connection (Envoy's pending requests)
        self.retries_denied = 0
        self.retries_held = 0          # granted retries not yet ended (budget and edge max_retries)
        self.rejected = {"breaker_open": 0, "throttled": 0}
        self.methods = service.route_methods

    # ----------------------------------------------------------- logical request
    # A request is a chain of callbacks, not a SimPy process: an attempt passes the
    # policies (breaker, throttle, edge limits), waits for a connection, is sent, and ends
    # (response, error or timeout); then it is recorded, the policies observe it, and the
    # request either retries after the backoff (if the budget grants it), hedges, or
    # finishes. No event is spent on waking a process up, which is most of what a request
    # would otherwise cost.

    def start_request(self, request: Request) -> None:
        """A logical request arrives at this client: its first attempt starts now. Its deadline is
        the retry policy's overall deadline and, for a call made under a propagated deadline, the
        caller's (``request.deadline_at``), whichever comes first."""
        deadline_at = request.deadline_at
        if self.deadline_s > 0 or deadline_at != INF:
            now = self.env.now
            if self.deadline_s > 0 and now + self.deadline_s < deadline_at:
                deadline_at = now + self.deadline_s
            request.deadline_at = deadline_at
            request.deadline_timer = self.timers.start(max(deadline_at - now, 0.0), self._on_deadline, request)
        if self.open_requests is not None:
            self.open_requests[request.id] = request
        if self.budget is not None:
            self.budget.on_request(self.env.now)
        if self.hedging is not None:
            request.hedges = []
        self._start_attempt(request)

    def _start_attempt(self, request: Request) -> bool:
        """Pass the in-process policies and start the next attempt; False if one refused it.

        A refusal by the breaker or the adaptive throttle is not an attempt (nothing left the
        process) and ends the request, unless other hedges of it are still out."""
        now = self.env.now
        held = request.retry_held
        request.retry_held = False
        generation = None
        refusal = None
        breaker = self.breaker
        if breaker is not None:
            if breaker.allow(now):
                generation = breaker.generation
            else:
                refusal = "breaker_open"
        if refusal is None and self.throttle is not None and self.throttle.should_reject(now, self._throttle_uniform.next()):
            refusal = "throttled"
            if breaker is not None:      # the breaker wraps the call: a local refusal is its failure
                breaker.on_result(now, False, 0.0, generation)
        if refusal is not None:
            if held:
                self._release_retry()
            self.rejected[refusal] += 1
            if request.outstanding == 0:
                self._finish_request(request, refusal)
            return False
        number = request.attempts + 1
        att = Attempt(request, self, number, now)
        att.breaker_generation = generation
        if held:
            att.holds_retry = True
            att.retry_cost = request.retry_cost
        request.attempts = number
        request.current = att
        request.outstanding += 1
        if request.hedges is not None:
            request.hedges.append(att)
        self.active_attempts += 1
        if self.attempt_timeout_s > 0:
            att.timer = self.timers.start(self.attempt_timeout_s, self._on_attempt_timeout, att)
        hedging = self.hedging
        if hedging is not None and number < self.retry.max_attempts:
            if request.hedge_timer is not None:
                request.hedge_timer.cancel()
            request.hedge_timer = self.timers.start(hedging.delay_s, self._on_hedge_due, request)
        transport = self._only_host
        if transport is None:
            hosts = self.hosts
            outlier = self.outlier
            usable = outlier.healthy_hosts() if outlier is not None and outlier.ejected_count() else None
            transport = hosts[self.balancer.pick([h.outstanding for h in hosts], usable)]
        att.transport = transport
        transport.outstanding += 1
        if self.propagates:      # what the callee learns: the sooner of the request's and this try's deadlines
            try_deadline_at = now + self.attempt_timeout_s if self.attempt_timeout_s > 0 else INF
            att.deadline_at = min(request.deadline_at, try_deadline_at) - self.deadline_margin_s
        limits = self.edge_limits
        if limits is not None and limits.try_acquire(REQUESTS) is not None:
            limits.force_acquire(REQUESTS)     # held until the attempt ends, like every attempt's
            self._fail(att, "edge_overflow")
            return True
        transport._get_conn(att)
        return True

    def _attempt_ended(self, att: Attempt) -> None:
        """Record the attempt, let the policies observe it; then retry, hedge or finish."""
        world = self.world
        if world.stopped:
            return
        request = att.request
        now = self.env.now
        att.exchange = None           # no cycle with the server's Exchange: refcounting frees both
        if att.new_conn:
            att.dial = None           # nor with its Dial
        if att.request_body is not None:
            att.request_body = None   # nor with its HTTP/2 body
        request.outstanding -= 1
        self.active_attempts -= 1
        att.transport.outstanding -= 1
        if self.edge_limits is not None:
            self.edge_limits.release(REQUESTS)
        if att.holds_retry:
            att.holds_retry = False
            self._release_retry()
        kind = att.error
        status = att.status
        if self.outlier is not None and not att.cancelled:
            ejected = self.outlier.on_result(now, att.transport.host, kind is None and status < 500, status, kind,
                                             self._outlier_uniform.next())
            if ejected is not None and world.tracer is not None:
                world.tracer.append((now, "outlier_ejected", att.transport.host, ejected))
        if kind is None:
            if 200 <= status < 300:
                world.record_attempt(att, SUCCESS)
                if self.observes:
                    self._observe(att, now, None, status)
                if not request.finished:
                    self._finish_request(request, None)
                return
            kind = "http_5xx" if status >= 500 else "http_4xx"
        world.record_attempt(att, ERROR_CODE[kind])
        if att.cancelled:
            # a hedge that lost: its request succeeded, so the breaker hears a success (a failure
            # would trip breakers on hedging itself, and no result at all would leave a
            # half-open breaker waiting for ever on a probe that lost); nothing else sees it
            if self.breaker is not None:
                self.breaker.on_result(now, True, now - att.start_at, att.breaker_generation)
            return
        if self.observes:
            self._observe(att, now, kind, status)
        if request.finished:
            return            # cut by the request's deadline
        if request.hedges is not None:
            self._after_hedge_failed(request, att, kind, status)
            return
        if not self.retry.should_retry(att.number, kind, status, self.methods[att.route]):
            self._finish_request(request, kind)
            return
        if not self._grant_retry(request, kind, now):
            self._finish_request(request, "budget_exhausted")
            return
        backoff_s = self.retry.backoff_s(att.number, self._backoff_uniform.next(), request.prev_backoff_s,
                                         att.retry_after_s)
        request.prev_backoff_s = backoff_s
        ev = self.env.timeout(backoff_s, request)
        ev.callbacks.append(self._on_retry_due)

    def _on_outlier_sweep(self, _arg: Any = None) -> None:
        """Envoy's interval timer: return hosts whose ejection is over, judge success rates."""
        if self.shut_down or self.world.stopped:
            return
        self.outlier.sweep(self.env.now, self._outlier_uniform.next)
        self.timers.start(self._outlier_interval_s, self._on_outlier_sweep)

    def _observe(self, att: Attempt, now: float, kind: str | None, status: int) -> None:
        """The policies learn an attempt's outcome. Breakers count a 4xx as a success (the server
        answered); adaptive throttling counts a 429 as a rejection; budgets see retryable failures."""
        if self.breaker is not None:
            self.breaker.on_result(now, kind is None or kind == "http_4xx", now - att.start_at,
                                   att.breaker_generation)
        if self.throttle is not None:
            self.throttle.on_result(now, kind is None or (kind == "http_4xx" and status != 429))
        budget = self.budget
        if budget is not None:
            if kind is None:
                budget.on_success(now, att.retry_cost)
            elif self.retry.retryable(kind, status):
                budget.on_failure(now, kind)

    def _grant_retry(self, request: Request, kind: str, now: float) -> bool:
        """Ask the retry budget and the edge's max_retries; on a yes the retry holds both until
        its attempt ends (Envoy counts a retry from the decision, through the backoff)."""
        budget = self.budget
        limits = self.edge_limits
        # Envoy's active requests are those on a connection; pending ones wait for a connection
        if budget is not None and not budget.can_retry(now, kind,
                                                       active_requests=self.active_attempts - self.pending_attempts,
                                                       pending_requests=self.pending_attempts):
            self.retries_denied += 1
            return False
        if limits is not None and limits.try_acquire(RETRIES) is not None:
            self.retries_denied += 1
            return False
        request.retry_cost = budget.on_retry(now, kind) if budget is not None else 0
        request.retry_held = True
        self.retries_held += 1
        return True

    def _release_retry(self) -> None:
        self.retries_held -= 1
        if self.budget is not None:
            self.budget.on_retry_done(self.env.now)
        if self.edge_limits is not None:
            self.edge_limits.release(RETRIES)

    def _on_retry_due(self, event: simpy.Event) -> None:
        request = event.value
        if request.finished or self.world.stopped:
            return
        self._start_attempt(request)

    def _on_hedge_due(self, request: Request) -> None:
        """The hedging delay passed with the request unanswered: send another copy if allowed."""
        request.hedge_timer = None
        if request.finished or self.world.stopped or request.attempts >= self.retry.max_attempts:
            return
        if not self.hedging.may_hedge(request.outstanding):
            return        # the next copy goes when one of those fails
        if self._grant_retry(request, "hedge", self.env.now):
            self._start_attempt(request)

    def _after_hedge_failed(self, request: Request, att: Attempt, kind: str, status: int) -> None:
        """gRFC A6: a fatal failure ends the request; a retryable one sends the next hedge at once;
        the request fails when no attempt is out and none is left."""
        retry = self.retry
        if not (retry.retryable(kind, status) and retry.method_allowed(self.methods[att.route])):
            self._finish_request(request, kind)
            return
        if request.attempts < self.retry.max_attempts:
            if self._grant_retry(request, kind, self.env.now):
                self._start_attempt(request)
                return
            if request.outstanding == 0:
                self._finish_request(request, "budget_exhausted")
            return
        if request.outstanding == 0:
            self._finish_request(request, kind)

    def _on_deadline(self, request: Request) -> None:
        """The overall deadline passed: the request fails; its attempts in flight are cut."""
        request.deadline_timer = None
        if request.finished or self.world.stopped:
            return
        self._finish_request(request, "deadline_exceeded", cut_as="deadline_exceeded")

    def _finish_request(self, request: Request, kind: str | None, cut_as: str = "cancelled") -> None:
        """The request ends: success (``kind`` None) or its one error kind. Attempts of it still
        out end with ``cut_as``: ``cancelled`` for hedges that lost (only the breaker hears of
        them, as a success), ``deadline_exceeded`` for attempts the deadline cut (every policy
        sees them as failures)."""
        request.finished = True
        if self.open_requests is not None:
            self.open_requests.pop(request.id, None)
        if request.deadline_timer is not None:
            request.deadline_timer.cancel()
            request.deadline_timer = None
        if request.hedge_timer is not None:
            request.hedge_timer.cancel()
            request.hedge_timer = None
        if request.retry_held:
            request.retry_held = False
            self._release_retry()
        self.world.finish_request(request, SUCCESS if kind is None else ERROR_CODE[kind])
        if request.outstanding:
            for other in (request.hedges if request.hedges is not None else (request.current,)):
                if other is not None and not other.finished:
                    other.cancelled = cut_as == "cancelled" and kind is None   # a hedge that lost
                    self._fail(other, cut_as)
        # break the request <-> attempt cycles: a finished request is freed by refcounting,
        # not left to the cyclic collector (which otherwise dominates a long run's cost)
        request.current = None
        request.hedges = None

    def cancel_request(self, request: Request) -> None:
        """The caller gave up on this request (its handler's context ended, or a fan-out has what it
        needs): it ends ``cancelled``; attempts in flight are reset (the callee sees its context end)."""
        if request.finished or self.world.stopped:
            return
        self._finish_request(request, "cancelled", cut_as="cancelled")

    def shutdown(self) -> None:
        """The calling process died: its requests end ``cancelled`` and its sockets are reset."""
        self.shut_down = True
        self.shut_down_at_s = self.env.now
        if self.open_requests:
            for request in list(self.open_requests.values()):
                self.cancel_request(request)
        for transport in self.hosts:
            transport.reset_all()

    def _finish_attempt(self, att: Attempt) -> None:
        att.finished = True
        att.ended_at = self.env.now
        if att.timer is not None:
            att.timer.cancel()
            att.timer = None
        if att.header_timer is not None:
            att.header_timer.cancel()
            att.header_timer = None

    def _fail(self, att: Attempt, kind: str) -> None:
        """End the attempt with an error (whatever phase it is in)."""
        if att.finished:
            return
        tracer = self.world.tracer
        if tracer is not None:
            tracer.append((self.env.now, "attempt_failed", att.conn.id if att.conn else None, kind))
        self._finish_attempt(att)
        att.error = kind
        if att.waiting:
            att.transport._note_wait_phases(att)
            att.transport._stop_waiting(att)
        conn = att.conn
        if conn is not None:
            att.conn = None
            if att.exchange is not None and att.exchange.caller_gone_at is None:
                att.exchange.caller_gone_at = self.env.now
            transport = conn.client
            body = att.request_body
            if body is not None and not body.done:    # an upload cut short: its flow-control wait so far
                att.flow_wait_s = body.blocked_s + (self.env.now - body.blocked_since
                                                    if body.blocked_since is not None else 0.0)
            if conn.h2 is not None:
                # HTTP/2: RST_STREAM, the connection lives on (unless the server's reset ended it)
                transport.h2.stream_closed(att, conn, reset=kind != "stream_reset")
            else:
                conn.attempt = None
                if conn.client_open:
                    transport._close(conn, notify_server=True)   # HTTP/1: a failed request kills its connection
        self._attempt_ended(att)

    def _on_attempt_timeout(self, att: Attempt) -> None:
        att.timer = None
        self._fail(att, "client_timeout")

    def _on_header_timeout(self, att: Attempt) -> None:
        att.header_timer = None
        self._fail(att, "response_header_timeout")
