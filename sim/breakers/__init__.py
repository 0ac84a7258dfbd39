"""Circuit breakers: the common interface (pure, no SimPy).

This package owns the breaker policies of design.md's resilience row: sony/gobreaker,
Netflix Hystrix, resilience4j (count and time windows, slow-call rate), Alibaba
Sentinel degrade rules, and the dual-metric breaker of the incident write-up.
Sources: /work/shared/reference/semantics.md §7 (reference semantics and defaults)
and /work/shared/scenarios.md S7 (the dual-metric breaker). Every breaker is a pure
state machine: the clock ``now_s`` (float seconds) is passed in to every call, and
lazy transitions happen only where the reference is lazy.

Interface (``Breaker``):

- ``allow(now_s) -> bool``: False means the call is rejected as ``breaker_open``;
  in half-open only the permitted probes are admitted.
- ``generation`` (int): bumped on every state change (and on gobreaker's interval
  reset). Read it right after ``allow`` returned True and hand it back to
  ``on_result`` so that breakers which ignore results of an older generation
  (gobreaker; the dual-metric breaker's probes) can do so. ``None`` = current.
- ``on_result(now_s, success, latency_s, generation=None)`` for an admitted call.
- ``state(now_s) -> 'closed' | 'open' | 'half_open'``.
- ``transitions: list[tuple[float, str]]``: (instant, new state) for the time series.

Scenarios configure a breaker with the ``breaker:`` block of a client (the tagged
union ``sim.schema.BreakerConfig``); ``sim.policies.make_breaker`` builds the object
from it. ``KINDS`` are the implemented kinds (the scenario also accepts ``none``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)


@runtime_checkable
class Breaker(Protocol):
    transitions: list[tuple[float, str]]

    @property
    def generation(self) -> int: ...

    def allow(self, now_s: float) -> bool: ...

    def on_result(self, now_s: float, success: bool, latency_s: float,
                  generation: int | None = None) -> None: ...

    def state(self, now_s: float) -> str: ...


class BreakerBase:
    """State bookkeeping shared by the implementations: current state, generation, transitions."""

    def __init__(self) -> None:
        self._state = CLOSED
        self._generation = 0
        self.transitions: list[tuple[float, str]] = []

    @property
    def generation(self) -> int:
        return self._generation

    def _advance(self, now_s: float) -> None:
        """Timer-driven transitions due by ``now_s``; none unless a breaker has some."""

    def state(self, now_s: float) -> str:
        self._advance(now_s)
        return self._state

    def _set_state(self, at_s: float, new_state: str) -> None:
        if new_state == self._state:
            return
        self._state = new_state
        self._generation += 1
        self.transitions.append((at_s, new_state))


KINDS = ("gobreaker", "hystrix", "resilience4j", "sentinel", "dual_metric")
"""The breaker kinds a scenario's ``breaker.kind`` may name besides ``none``."""

__all__ = ["Breaker", "BreakerBase", "CLOSED", "OPEN", "HALF_OPEN", "STATES", "KINDS"]
