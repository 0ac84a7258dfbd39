"""Circuit breakers: the common interface and the factory (pure, no SimPy).

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
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable

from sim.units import parse_duration

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


def _kinds() -> dict[str, type]:
    from sim.breakers.dual_metric import DualMetricBreaker
    from sim.breakers.gobreaker import GoBreaker
    from sim.breakers.hystrix import HystrixBreaker
    from sim.breakers.resilience4j import Resilience4jBreaker
    from sim.breakers.sentinel import SentinelBreaker
    return {
        "gobreaker": GoBreaker,
        "hystrix": HystrixBreaker,
        "resilience4j": Resilience4jBreaker,
        "sentinel": SentinelBreaker,
        "dual_metric": DualMetricBreaker,
    }


KINDS = ("gobreaker", "hystrix", "resilience4j", "sentinel", "dual_metric")


def make_breaker(kind: str, **settings: Any) -> Breaker:
    """Build a breaker from an edge's ``breaker:`` policy block (minus ``kind``).

    Settings are the constructor's keyword names. A duration may also be written
    without its ``_s`` suffix as a Go duration (``wait_in_open: 60s`` ->
    ``wait_in_open_s=60.0``). Unknown settings raise ``ValueError``.
    """
    classes = _kinds()
    if kind not in classes:
        raise ValueError(f"unknown breaker kind {kind!r}; expected one of {', '.join(KINDS)}")
    cls = classes[kind]
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    kwargs: dict[str, Any] = {}
    for name, value in settings.items():
        if name in params:
            kwargs[name] = parse_duration(value) if (name.endswith("_s") and isinstance(value, str)) else value
        elif f"{name}_s" in params:
            kwargs[f"{name}_s"] = parse_duration(value)
        else:
            raise ValueError(f"breaker {kind}: unknown setting {name!r}; expected one of {', '.join(sorted(params))}")
    return cls(**kwargs)  # type: ignore[no-any-return]


__all__ = ["Breaker", "BreakerBase", "CLOSED", "OPEN", "HALF_OPEN", "STATES", "KINDS", "make_breaker"]
