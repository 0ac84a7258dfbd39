"""What one run returns: records, sampled levels, milestones and the summary.

The engine fills a ``RunResult``; ``sim.outputs`` derives the per-window series
and the summary from it (design.md §4). Records are columnar numpy arrays, one
entry per logical request or per attempt, so a storm of a million requests costs
tens of megabytes, not a million Python objects.

Error codes in records: ``SUCCESS`` (0), ``INCOMPLETE`` (-1), or 1 + the index of
the kind in ``sim.schema.ERROR_KINDS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.schema import ERROR_KINDS, Scenario

SUCCESS = 0
INCOMPLETE = -1
ERROR_CODE: dict[str, int] = {kind: i + 1 for i, kind in enumerate(ERROR_KINDS)}
ERROR_NAME: dict[int, str] = {code: kind for kind, code in ERROR_CODE.items()}

REQUEST_COLUMNS: dict[str, str] = {
    "request_id": "int64",   # unique per run
    "client": "int32",       # index into RunResult.client_names
    "route": "int32",        # index into RunResult.route_names
    "touched": "bool",       # a fault acted on it directly (decided at arrival)
    "arrival_at": "float64",
    "end_at": "float64",     # NaN while incomplete
    "error": "int8",         # SUCCESS, INCOMPLETE or an ERROR_CODE
    "attempts": "int16",     # attempts started for it
}
ATTEMPT_COLUMNS: dict[str, str] = {
    "request_id": "int64",
    "attempt": "int16",      # 0 = first try
    "start_at": "float64",
    "end_at": "float64",     # NaN while incomplete
    "error": "int8",
    "new_conn": "bool",      # the attempt dialled a new connection
    # "time before the server sees it" (docs/outputs.md), seconds; float32 (~2 us at 30 s)
    "pool_wait_s": "float32",   # waiting for a connection or an HTTP/2 stream slot
    "connect_s": "float32",     # TCP connect on the critical path (SYN retransmits included)
    "tls_s": "float32",         # TLS handshake on the critical path (accept-queue wait excluded)
    "backlog_s": "float32",     # in the server's accept queue on the critical path
    "flow_wait_s": "float32",   # HTTP/2 flow control holding the request body back
    "to_server_s": "float32",   # start of the attempt -> the server's handler has it; NaN if never
}
TO_SERVER_PHASES: tuple[str, ...] = ("pool_wait_s", "connect_s", "tls_s", "backlog_s", "flow_wait_s")
"""The measured phases of ``to_server_s``, in the order they are drawn; the rest of the span,
``to_server_s`` minus their sum, is network transit (derived, not stored)."""
TO_SERVER_COLUMNS: tuple[str, ...] = (*TO_SERVER_PHASES, "to_server_s")


@dataclass
class FaultWindow:
    kind: str
    start_at: float
    end_at: float            # the run's end if the fault lasts to the end
    target: str
    touched_routes: tuple[str, ...]   # "service/route" names of the routes it touches directly


@dataclass
class Milestones:
    trigger_at_s: float | None = None
    faults: list[FaultWindow] = field(default_factory=list)
    kills: list[float] = field(default_factory=list)           # process kills (OOM)
    restarts: list[float] = field(default_factory=list)
    fd_exhausted_at_s: float | None = None                     # first EMFILE at accept
    oom_killed_at_s: float | None = None
    truncated: bool = False
    truncated_by: str | None = None                            # 'events' | 'entities' | 'wall_time'
    end_at_s: float = 0.0                                      # simulated end (earlier if truncated)
    alive_at_end: bool = True
    restart_pending: bool = False      # dead at the end, but a restart was on its way (crash loop)
    # circuit breakers: (instant, client index, client instance, new state), in time order; every
    # client process's, the edges' included (keyed by the caller's instance); state "gone": an
    # edge's process died with its caller while its breaker was not closed
    breaker_transitions: list[tuple[float, int, int, str]] = field(default_factory=list)
    # service graphs: (instant, service, instance, what): what = oom, evicted or restart, in time order
    instance_events: list[tuple[float, str, int, str]] = field(default_factory=list)


@dataclass
class RunResult:
    scenario: Scenario
    seed: int
    replication: int
    route_names: list[str]
    client_names: list[str]
    requests: dict[str, np.ndarray]          # REQUEST_COLUMNS
    attempts: dict[str, np.ndarray]          # ATTEMPT_COLUMNS
    levels: dict[str, np.ndarray]            # sampled every sample_interval; 'time_s' first
    milestones: Milestones
    counters: dict[str, float]               # events, handler_s, wasted_handler_s, ...
    wall_s: float = 0.0
    provenance: dict[str, Any] = field(default_factory=dict)
    windows: dict[str, np.ndarray] = field(default_factory=dict)   # filled by sim.outputs
    summary: dict[str, Any] = field(default_factory=dict)          # filled by sim.outputs
    trace: list[tuple[float, str, Any, Any]] | None = None          # event log, when asked for

    def __post_init__(self) -> None:
        pad_to_server_columns(self.attempts)


def empty_columns(spec: dict[str, str], n: int = 0) -> dict[str, np.ndarray]:
    return {name: np.zeros(n, dtype=dtype) for name, dtype in spec.items()}


def pad_to_server_columns(attempts: dict[str, np.ndarray]) -> None:
    """Give every attempt its time-to-server columns, in place.

    The engine records an attempt's phases when the attempt ends; a writer that appends
    only the older columns (the end-of-run pass over attempts still in flight) leaves
    those columns short at the tail. The missing tail gets the "nothing measured" values:
    0 for the phases, NaN for ``to_server_s``. A column longer than ``request_id`` is a
    bug and raises.
    """
    if "request_id" not in attempts:
        return
    n = len(attempts["request_id"])
    for name in TO_SERVER_COLUMNS:
        dtype = ATTEMPT_COLUMNS[name]
        column = attempts.get(name)
        have = 0 if column is None else len(column)
        if have == n:
            continue
        if have > n:
            raise ValueError(f"attempt column {name!r} has {have} rows, request_id has {n}")
        fill = np.full(n - have, np.nan if name == "to_server_s" else 0.0, dtype=dtype)
        attempts[name] = fill if column is None else np.concatenate([np.asarray(column, dtype=dtype), fill])
