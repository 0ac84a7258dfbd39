"""Open-loop arrival times: rate profiles, Poisson or evenly spaced, and trace replay.

A rate profile is a piecewise-linear function of time. Arrival instants come
from inverting its cumulative rate Lambda(t): a Poisson process maps unit-rate
exponential gaps through Lambda^-1 (time rescaling), an evenly spaced one maps
the integers. Instants are produced in numpy batches on demand, so a long run
never holds them all.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from sim.schema import LoadConfig

BATCH = 2048


def rate_breakpoints(load: LoadConfig, horizon_s: float) -> tuple[np.ndarray, np.ndarray]:
    """(times, rates) of the piecewise-linear rate, from 0 to horizon_s."""
    base = load.rate_per_s
    p = load.profile
    if p.kind == "constant":
        pts = [(0.0, base), (horizon_s, base)]
    elif p.kind == "step":
        pts = [(0.0, base), (p.at, base), (p.at, p.to_rate_per_s), (horizon_s, p.to_rate_per_s)]
    elif p.kind == "ramp":
        pts = [(0.0, base), (p.at, base), (p.until, p.to_rate_per_s), (horizon_s, p.to_rate_per_s)]
    elif p.kind == "spike":
        pts = [(0.0, base), (p.at, base), (p.at, p.to_rate_per_s), (p.until, p.to_rate_per_s),
               (p.until, base), (horizon_s, base)]
    else:  # pragma: no cover - the loader rejects other kinds
        raise ValueError(f"unknown profile kind {p.kind!r}")
    pts = [(min(max(t, 0.0), horizon_s), r) for t, r in pts]
    times = np.array([t for t, _ in pts], dtype=float)
    rates = np.array([r for _, r in pts], dtype=float)
    return times, rates


class CumulativeRate:
    """Lambda(t) of a piecewise-linear rate and its inverse."""

    def __init__(self, times: np.ndarray, rates: np.ndarray) -> None:
        self.times = times
        self.rates = rates
        seg = (rates[:-1] + rates[1:]) / 2.0 * np.diff(times)
        self.cum = np.concatenate([[0.0], np.cumsum(seg)])

    @property
    def total(self) -> float:
        return float(self.cum[-1])

    def inverse(self, targets: np.ndarray) -> np.ndarray:
        """Instants t with Lambda(t) = target (targets sorted, < total)."""
        idx = np.searchsorted(self.cum, targets, side="right") - 1
        idx = np.clip(idx, 0, len(self.times) - 2)
        t0 = self.times[idx]
        r0 = self.rates[idx]
        r1 = self.rates[idx + 1]
        dt = self.times[idx + 1] - t0
        rem = targets - self.cum[idx]
        slope = np.where(dt > 0, (r1 - r0) / np.where(dt > 0, dt, 1.0), 0.0)
        # solve r0*x + slope*x^2/2 = rem for x >= 0
        flat = np.abs(slope) < 1e-12
        with np.errstate(divide="ignore", invalid="ignore"):
            x_lin = rem / np.where(r0 > 0, r0, np.inf)
            disc = np.maximum(r0 * r0 + 2.0 * slope * rem, 0.0)
            x_quad = (np.sqrt(disc) - r0) / np.where(flat, 1.0, slope)
        x = np.where(flat, x_lin, x_quad)
        return t0 + np.clip(x, 0.0, dt)


def generated_arrivals(load: LoadConfig, horizon_s: float, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Batches of increasing arrival instants in [0, horizon_s)."""
    times, rates = rate_breakpoints(load, horizon_s)
    cum = CumulativeRate(times, rates)
    total = cum.total
    position = 0.0
    count = 0
    while True:
        if load.arrivals == "poisson":
            targets = position + np.cumsum(rng.standard_exponential(BATCH))
            position = float(targets[-1])
        else:
            targets = np.arange(count, count + BATCH, dtype=float) + 0.5
            count += BATCH
        keep = targets < total
        if keep.any():
            yield cum.inverse(targets[keep])
        if not keep.all():
            return


def trace_arrivals(path: str, horizon_s: float) -> tuple[np.ndarray, list[str] | None]:
    """Arrival instants (and routes, if the trace has a `route` column) from a CSV trace."""
    with open(path, encoding="utf-8") as fh:
        header = [h.strip() for h in fh.readline().split(",")]
        rows = [line.strip().split(",") for line in fh if line.strip()]
    at_col = header.index("at_s")
    route_col = header.index("route") if "route" in header else None
    at = np.array([float(r[at_col]) for r in rows], dtype=float)
    order = np.argsort(at, kind="stable")
    at = at[order]
    routes = [rows[i][route_col].strip() for i in order] if route_col is not None else None
    keep = (at >= 0) & (at < horizon_s)
    at = at[keep]
    if routes is not None:
        routes = [r for r, k in zip(routes, keep) if k]
    return at, routes
