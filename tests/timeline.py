"""Helpers of the exact-timeline tests: replayed arrivals, traced runs, and reading the trace.

``run`` keeps the event log (``result.trace``: tuples of instant, kind, connection id,
detail); ``events``/``instants``/``one`` pick entries of one kind, optionally on one
connection; ``approx_all`` compares instants to within ``EXACT``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sim.engine import run_scenario

EXACT = 1e-9


def arrivals(tmp_path: Path, rows: list, name: str = "arrivals.csv") -> dict:
    """An open-loop load replaying ``rows``: instants, or (instant, route) pairs."""
    path = tmp_path / name
    if rows and isinstance(rows[0], tuple):
        path.write_text("at_s,route\n" + "".join(f"{t},{r}\n" for t, r in rows))
    else:
        path.write_text("at_s\n" + "".join(f"{t}\n" for t in rows))
    return {"trace": str(path)}


def run(scn, seed: int | None = None):
    return run_scenario(scn, seed=seed, trace=True)


def events(result, kind: str, conn: int | None = None) -> list[tuple[float, Any, Any]]:
    """(instant, conn id, detail) of every traced event of ``kind`` (on ``conn``)."""
    return [(t, c, d) for t, k, c, d in result.trace if k == kind and (conn is None or c == conn)]


def instants(result, kind: str, conn: int | None = None) -> list[float]:
    return [t for t, _, _ in events(result, kind, conn)]


def one(result, kind: str, conn: int | None = None) -> tuple[float, Any, Any]:
    found = events(result, kind, conn)
    assert len(found) == 1, f"expected one {kind!r} on conn {conn}, got {found}"
    return found[0]


def approx_all(values: list[float]) -> list:
    return [pytest.approx(v, abs=EXACT) for v in values]
