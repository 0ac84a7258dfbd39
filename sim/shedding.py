"""Server-side load shedding: admission by in-flight limit, and the request queue.

This module owns two pure policy objects (no SimPy; the clock ``now_s`` is
passed in; design.md §2, "Resilience" row):

- ``ServerShedding.admit(now_s, in_flight, queued)`` -> ``'run'`` (start now),
  ``'queue'`` (wait in the ``RequestQueue``) or ``'reject'`` (answer 503 at once).
  A request runs when fewer than ``max_in_flight`` are running and nobody is
  queued; otherwise it queues while the queue holds fewer than ``max_length``;
  otherwise it is rejected. This is the semaphore-plus-bounded-queue bulkhead
  (resilience4j ThreadPoolBulkhead, Hystrix thread pool + queueSizeRejectionThreshold,
  semantics.md §7); Go's net/http itself has no such limit.
- ``RequestQueue``: disciplines ``fifo``, ``lifo`` and ``codel``. ``codel`` is the
  request-queue CoDel of Maurer, "Fail at Scale", ACM Queue 13(8), 2015,
  section "Controlled Delay", combined with that article's "Adaptive LIFO":
  at enqueue, if the queue has not been empty at any instant of the last
  ``interval_s`` (N, 100 ms) -- ``last_empty_at < now - interval_s`` -- the request
  gets the short queue timeout ``target_s`` (M, 5 ms), else the long one
  ``interval_s``; the timeout is fixed at enqueue, as in the article's
  pseudocode. A queued request is dropped once its sojourn exceeds its timeout
  (``now_s > enqueued_at_s + timeout_s``). Dequeue order is FIFO, and LIFO
  (newest first) while the same overload condition holds at dequeue. It is
  not Nichols-Jacobson packet CoDel (no drop-rate control law) and not folly's
  ``Codel`` (min-delay-over-interval, drop at 2 x target). ``fifo``/``lifo``
  take an optional fixed ``timeout_s``.

Scenarios configure shedding with ``services.<name>.shedding`` (``sim.schema.SheddingConfig``,
a different class from this module's ``SheddingConfig``); ``sim.policies.make_shedding``
builds the ``ServerShedding`` from it.

Drops are evaluated lazily at each call but attributed to the instant the
timeout ran out, so results do not depend on how often the caller polls.
Operations are O(log n) amortised (a deque for order plus a deadline heap with
lazy deletion), and fully deterministic (ties broken by arrival sequence).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

RUN = "run"
QUEUE = "queue"
REJECT = "reject"

DISCIPLINES = ("fifo", "lifo", "codel")
CODEL_TARGET_S = 0.005     # Fail at Scale: M = 5 ms
CODEL_INTERVAL_S = 0.100   # Fail at Scale: N = 100 ms


@dataclass(frozen=True)
class QueueConfig:
    """``max_length`` None = unbounded, 0 = no queue; ``timeout_s`` for fifo/lifo only."""

    discipline: str = "fifo"
    max_length: int | None = 0
    timeout_s: float | None = None
    target_s: float = CODEL_TARGET_S
    interval_s: float = CODEL_INTERVAL_S

    def __post_init__(self) -> None:
        if self.discipline not in DISCIPLINES:
            raise ValueError(f"discipline: {self.discipline!r} is not one of {', '.join(DISCIPLINES)}")
        if self.max_length is not None and self.max_length < 0:
            raise ValueError(f"max_length: {self.max_length} is negative")
        if self.timeout_s is not None and self.timeout_s < 0:
            raise ValueError(f"timeout: {self.timeout_s} is negative")
        if self.discipline == "codel" and self.timeout_s is not None:
            raise ValueError("timeout: codel sets its own timeouts (target, interval)")
        if not (0 <= self.target_s <= self.interval_s):
            raise ValueError(f"target ({self.target_s}) must be in [0, interval ({self.interval_s})]")


@dataclass(frozen=True)
class SheddingConfig:
    """``max_in_flight`` None = unlimited (Go's net/http default: no shedding)."""

    max_in_flight: int | None = None
    queue: QueueConfig = field(default_factory=QueueConfig)

    def __post_init__(self) -> None:
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"max_in_flight: {self.max_in_flight} must be at least 1")


class ServerShedding:
    """Admission decision of one server process; stateless apart from its config."""

    def __init__(self, config: SheddingConfig) -> None:
        self.config = config
        self.max_in_flight = config.max_in_flight
        self.max_queue_length = config.queue.max_length

    def admit(self, now_s: float, in_flight: int, queued: int) -> str:
        """'run', 'queue' or 'reject' for a request arriving at ``now_s``.

        ``queued`` is the live queue length (``len(queue)`` after ``queue.expire(now_s)``).
        ``now_s`` is unused by the static rule; it keeps the policy signature uniform.
        """
        if self.max_in_flight is None or (in_flight < self.max_in_flight and queued == 0):
            return RUN
        if self.max_queue_length is None or queued < self.max_queue_length:
            return QUEUE
        return REJECT

    def new_queue(self, now_s: float) -> RequestQueue[Any]:
        return RequestQueue.from_config(self.config.queue, created_at_s=now_s)


class _Entry(Generic[T]):
    __slots__ = ("item", "enqueued_at_s", "alive")

    def __init__(self, item: T, enqueued_at_s: float) -> None:
        self.item = item
        self.enqueued_at_s = enqueued_at_s
        self.alive = True


class RequestQueue(Generic[T]):
    """Queued requests of one server; see the module paragraph for the rules."""

    def __init__(self, discipline: str = "fifo", *, timeout_s: float | None = None,
                 target_s: float = CODEL_TARGET_S, interval_s: float = CODEL_INTERVAL_S,
                 created_at_s: float = 0.0) -> None:
        QueueConfig(discipline=discipline, timeout_s=timeout_s, target_s=target_s,
                    interval_s=interval_s)  # validates
        self.discipline = discipline
        self.timeout_s = timeout_s
        self.target_s = target_s
        self.interval_s = interval_s
        self.last_empty_at = created_at_s
        self._order: deque[_Entry[T]] = deque()
        self._deadlines: list[tuple[float, int, _Entry[T]]] = []
        self._seq = 0
        self._n = 0

    @classmethod
    def from_config(cls, config: QueueConfig, created_at_s: float = 0.0) -> RequestQueue[T]:
        return cls(config.discipline, timeout_s=config.timeout_s, target_s=config.target_s,
                   interval_s=config.interval_s, created_at_s=created_at_s)

    def __len__(self) -> int:
        return self._n

    def overloaded(self, now_s: float) -> bool:
        """codel: the queue has not been empty at any instant of (now - interval, now]."""
        return self._n > 0 and self.last_empty_at < now_s - self.interval_s

    def timeout_for_push_s(self, now_s: float) -> float | None:
        """Queue timeout a request pushed at ``now_s`` would get (call after ``expire``)."""
        if self.discipline != "codel":
            return self.timeout_s
        return self.target_s if self.overloaded(now_s) else self.interval_s

    def next_deadline_at(self) -> float | None:
        """Earliest instant a queued request times out (it is dropped just after), or None.

        A simulator that must answer dropped requests on time schedules a wake-up here.
        """
        heap = self._deadlines
        while heap and not heap[0][2].alive:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def expire(self, now_s: float, dropped: list[T] | None = None) -> list[T]:
        """Drop every request whose sojourn exceeds its timeout; return them, oldest deadline first."""
        out: list[T] = [] if dropped is None else dropped
        heap = self._deadlines
        while heap and heap[0][0] < now_s:
            deadline_s, _, entry = heapq.heappop(heap)
            if not entry.alive:
                continue
            entry.alive = False
            self._n -= 1
            out.append(entry.item)
            if self._n == 0:
                self.last_empty_at = max(self.last_empty_at, deadline_s)
        self._trim()
        return out

    def push(self, now_s: float, item: T, dropped: list[T] | None = None) -> _Entry[T]:
        """Enqueue ``item`` at ``now_s`` (expiring first; drops go to ``dropped``); returns its
        entry, the handle for ``discard``."""
        self.expire(now_s, dropped)
        if self._n == 0:
            self.last_empty_at = now_s  # empty right up to this arrival
        timeout_s = self.timeout_for_push_s(now_s)
        entry = _Entry(item, now_s)
        self._order.append(entry)
        if timeout_s is not None:
            heapq.heappush(self._deadlines, (now_s + timeout_s, self._seq, entry))
        self._seq += 1
        self._n += 1
        return entry

    def discard(self, now_s: float, entry: _Entry[T]) -> bool:
        """Take a queued request out (its caller left); False if it was no longer queued."""
        if not entry.alive:
            return False
        entry.alive = False
        self._n -= 1
        if self._n == 0:
            self.last_empty_at = now_s
        self._trim()
        return True

    def pop(self, now_s: float, dropped: list[T] | None = None) -> T | None:
        """Next request to serve, or None; timed-out requests are appended to ``dropped``."""
        self.expire(now_s, dropped)
        if self._n == 0:
            return None
        newest_first = self.discipline == "lifo" or (
            self.discipline == "codel" and self.overloaded(now_s))
        entry = self._order.pop() if newest_first else self._order.popleft()
        entry.alive = False
        self._n -= 1
        if self._n == 0:
            self.last_empty_at = now_s
        self._trim()
        return entry.item

    def _trim(self) -> None:
        order = self._order
        while order and not order[0].alive:
            order.popleft()
        while order and not order[-1].alive:
            order.pop()
