"""`stormsim boundary`: the tipping point of one numeric setting, by bisection with replications.

    stormsim boundary SCENARIO --param PATH --lo A --hi B [--reps R] [--max-reps M]
                      [--outcome collapse|metastable|crashed] [--level 0.5] [--confidence 0.95]
                      [--tolerance X] [--seed S] [--set PATH=VALUE ...] [--jobs N] [--json]

finds where, between A and B, the probability of the outcome crosses ``level``.
At a point x the scenario runs replications 0..R-1 (common random numbers:
replication r of every point uses the same seed and replication), and p is
estimated with a Wilson score interval at ``confidence``. A point is *above*
when its interval lies entirely above the level, *below* when entirely below;
otherwise R more replications are added, up to M, and if it is still ambiguous
the search stops there: the crossing lies within the bracket of the moment, the
outcome being uncertain at x.

Both ends are evaluated first. Ends on the same side of the level mean "no
crossing in [A, B]" (a finding, exit status 0). Otherwise the direction (p
rising or falling with x) follows from the ends and the bracket is halved until
it is no wider than the tolerance (default (B - A)/32; integer settings bisect
on integers, down to adjacent values).

The pure core is ``find_boundary(evaluate, lo, hi, ...)`` with
``evaluate(x, replications) -> list[bool]``; ``add_boundary_parser`` and
``run_boundary`` are the command-line layer. Bad input is one line on stderr
naming the argument and the value, exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Callable, Literal, Sequence

from experiments.catalog import resolve_scenario, split_variant
from sim.engine import run_scenario
from sim.scenario_checks import check_supported
from sim.scenario_loader import ScenarioError, load_scenario, setting_annotation, setting_text
from sim.schema import Duration, Rate, Scenario, Size
from sim.units import format_duration, format_size, parse_duration, parse_size

EXIT_OK = 0
EXIT_BAD_INPUT = 2

OUTCOMES = ("collapse", "metastable", "crashed")

Side = Literal["above", "below", "uncertain"]
Evaluate = Callable[[float, range], Sequence[bool]]


class BoundaryInputError(ValueError):
    """Bad command-line input: reported in one line, exit status 2."""


# ------------------------------------------------------------------ statistics


def wilson_interval(hits: int, runs: int, confidence: float) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (``hits`` of ``runs``) at ``confidence``."""
    if runs <= 0:
        return 0.0, 1.0
    if not 0 <= hits <= runs:
        raise ValueError(f"hits must be in 0..{runs}, got {hits}")
    z = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    p = hits / runs
    z2n = z * z / runs
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / runs + z * z / (4.0 * runs * runs))
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    if hits == 0:
        low = 0.0
    if hits == runs:
        high = 1.0
    return low, high


@dataclass
class PointEstimate:
    """What is known at one value ``x`` of the setting: hits of the outcome in ``runs`` replications."""

    x: float
    runs: int
    hits: int
    p: float
    ci_low: float
    ci_high: float
    side: Side

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def judge(hits: int, runs: int, level: float, confidence: float) -> PointEstimate:
    """``above`` / ``below`` when the Wilson interval lies entirely on one side of ``level``."""
    low, high = wilson_interval(hits, runs, confidence)
    side: Side = "above" if low > level else "below" if high < level else "uncertain"
    return PointEstimate(x=0.0, runs=runs, hits=hits, p=hits / runs if runs else math.nan,
                         ci_low=low, ci_high=high, side=side)


# ------------------------------------------------------------------ the search


@dataclass
class BoundaryResult:
    """The outcome of a search.

    ``status``: ``crossing`` (the bracket ``[x_below, x_above]`` is no wider than the tolerance),
    ``no_crossing`` (both ends on the same side: ``x_below``/``x_above`` are None),
    ``uncertain`` (the search stopped at a point ``uncertain_at`` that stayed ambiguous after
    ``max_reps`` runs; the crossing lies within the bracket of that moment, which may still have
    None ends when it was an end of the range that stayed ambiguous).
    ``direction``: ``rising`` when p grows with x, ``falling`` when it shrinks, None if unknown.
    ``points`` are in evaluation order (the two ends first).
    """

    status: Literal["crossing", "no_crossing", "uncertain"]
    direction: Literal["rising", "falling"] | None
    lo: float
    hi: float
    x_below: float | None
    x_above: float | None
    uncertain_at: float | None
    level: float
    confidence: float
    reps: int
    max_reps: int
    tolerance: float
    integer: bool
    points: list[PointEstimate] = field(default_factory=list)

    @property
    def total_runs(self) -> int:
        return sum(p.runs for p in self.points)

    def point(self, x: float | None) -> PointEstimate | None:
        return next((p for p in self.points if p.x == x), None) if x is not None else None

    @property
    def bracket(self) -> tuple[float, float]:
        """The interval known to hold the crossing (``[lo, hi]`` when nothing narrower is known)."""
        if self.x_below is None or self.x_above is None:
            return self.lo, self.hi
        return min(self.x_below, self.x_above), max(self.x_below, self.x_above)

    @property
    def width(self) -> float:
        a, b = self.bracket
        return b - a


def default_tolerance(lo: float, hi: float, integer: bool) -> float:
    return 1.0 if integer else (hi - lo) / 32.0


def find_boundary(evaluate: Evaluate, lo: float, hi: float, *, level: float = 0.5,
                  confidence: float = 0.95, reps: int = 5, max_reps: int | None = None,
                  tolerance: float | None = None, integer: bool = False,
                  on_point: Callable[[PointEstimate, bool], None] | None = None) -> BoundaryResult:
    """Bisect ``[lo, hi]`` for the value where P(outcome) crosses ``level``.

    ``evaluate(x, replications)`` runs the replications (a ``range`` of replication numbers)
    at ``x`` and returns one bool per replication, in order: whether the outcome happened.
    ``on_point(estimate, final)`` is told of every batch as it is judged (``final`` False when
    more replications follow). ``max_reps`` defaults to ``4 * reps``; ``tolerance`` to
    ``(hi - lo) / 32``, or 1 (adjacent values) when ``integer``.
    """
    if max_reps is None:
        max_reps = 4 * reps
    if reps < 1:
        raise ValueError(f"reps must be at least 1, got {reps}")
    if max_reps < reps:
        raise ValueError(f"max_reps ({max_reps}) must be at least reps ({reps})")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if integer:
        if lo != int(lo) or hi != int(hi):
            raise ValueError(f"integer bounds must be whole numbers, got {lo} and {hi}")
        lo, hi = int(lo), int(hi)
    if not lo < hi:
        raise ValueError(f"lo must be below hi, got {lo} and {hi}")
    if tolerance is None:
        tolerance = default_tolerance(lo, hi, integer)
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    if integer:
        tolerance = max(1.0, float(tolerance))

    points: list[PointEstimate] = []

    def estimate(x: float) -> PointEstimate:
        hits = 0
        runs = 0
        while True:
            batch = range(runs, min(runs + reps, max_reps))
            outcomes = list(evaluate(x, batch))
            if len(outcomes) != len(batch):
                raise ValueError(f"evaluate({x!r}, {batch!r}) returned {len(outcomes)} results")
            hits += sum(bool(o) for o in outcomes)
            runs += len(batch)
            point = judge(hits, runs, level, confidence)
            point.x = x
            final = point.side != "uncertain" or runs >= max_reps
            if on_point is not None:
                on_point(point, final)
            if final:
                points.append(point)
                return point

    def result(status: str, direction: str | None, x_below: float | None, x_above: float | None,
               uncertain_at: float | None = None) -> BoundaryResult:
        return BoundaryResult(status=status, direction=direction, lo=lo, hi=hi, x_below=x_below,
                              x_above=x_above, uncertain_at=uncertain_at, level=level,
                              confidence=confidence, reps=reps, max_reps=max_reps,
                              tolerance=float(tolerance), integer=integer, points=points)

    at_lo = estimate(lo)
    at_hi = estimate(hi)
    sides = (at_lo.side, at_hi.side)
    if "uncertain" in sides:
        # An end indistinguishable from the level: the crossing is at or near it.
        other = at_hi if at_lo.side == "uncertain" else at_lo
        direction = None
        x_below = x_above = None
        if other.side != "uncertain":
            direction = ("rising" if (other is at_hi) == (other.side == "above") else "falling")
            x_below = other.x if other.side == "below" else None
            x_above = other.x if other.side == "above" else None
        where = lo if at_lo.side == "uncertain" else hi
        return result("uncertain", direction, x_below, x_above, uncertain_at=where)
    if at_lo.side == at_hi.side:
        return result("no_crossing", None, None, None)

    direction = "rising" if at_lo.side == "below" else "falling"
    x_below, x_above = (lo, hi) if direction == "rising" else (hi, lo)
    while abs(x_above - x_below) > tolerance:
        a, b = sorted((x_below, x_above))
        # 12 significant digits: 2ms..16ms halves to 9ms, not 9.000000000000001ms
        mid = (a + b) // 2 if integer else float(f"{(a + b) / 2.0:.12g}")
        if not a < mid < b:          # no representable point left in between
            break
        point = estimate(mid)
        if point.side == "uncertain":
            return result("uncertain", direction, x_below, x_above, uncertain_at=mid)
        if point.side == "above":
            x_above = mid
        else:
            x_below = mid
    return result("crossing", direction, x_below, x_above)


# ------------------------------------------------------------------ settings as text


def is_integer_setting(annotation: Any) -> bool:
    return annotation is int or annotation == Size


def is_numeric_setting(annotation: Any) -> bool:
    return annotation in (int, float) or annotation in (Duration, Size, Rate)


def parse_setting_value(annotation: Any, text: str) -> float:
    """``text`` as the setting writes it (a Go duration, a size, a number) -> seconds, bytes or the number."""
    if annotation == Duration:
        return parse_duration(text.strip())
    if annotation == Size:
        return float(parse_size(text.strip()))
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    if annotation is int and value != int(value):
        raise ValueError(f"{text!r} is not a whole number (the setting is an integer)")
    return value


def format_setting_value(annotation: Any, value: float) -> str:
    """``value`` written like the setting: ``3.2s``, ``512MiB``, ``450``, ``362.5``."""
    if annotation == Duration:
        return format_duration(float(value))
    if annotation == Size:
        return format_size(int(round(value)))
    if annotation is int:
        return str(int(round(value)))
    text = f"{float(value):.10g}"
    return text


def _describe_type(annotation: Any) -> str:
    if annotation == Duration:
        return "a duration"
    if annotation == Size:
        return "a size"
    if annotation is int:
        return "an integer"
    return "a number"


# ------------------------------------------------------------------ running the scenario


def _run_one(scenario: Scenario, seed: int, replication: int, outcome: str) -> tuple[bool, bool, float]:
    """One replication: (the outcome happened, the run was truncated by a guard, wall seconds)."""
    summary = run_scenario(scenario, seed=seed, replication=replication).summary
    if outcome == "collapse":
        hit = summary["collapse_at_s"] is not None
    else:
        hit = summary["outcome"] == outcome
    return hit, bool(summary["truncated"]), float(summary["wall_s"])


def _load(scenario_arg: str, overrides: Sequence[str]) -> Scenario:
    name, variant = split_variant(scenario_arg)
    scenario = load_scenario(resolve_scenario(name), overrides=list(overrides), variant=variant)
    check_supported(scenario)
    if variant is not None:
        scenario = dataclasses.replace(scenario, name=f"{scenario.name}@{variant}")
    return scenario


def _check_param_in(scenario: Scenario, dotted: str) -> Any:
    """The scenario's own value at ``dotted`` (None when it is not set there, e.g. another kind),
    or an error when the path goes through a service, client, route or list entry that does not exist."""
    node: Any = scenario
    segments = dotted.split(".")
    for depth, segment in enumerate(segments):
        here = ".".join(segments[:depth]) or "the scenario"
        last = depth == len(segments) - 1
        if isinstance(node, dict):
            if segment not in node:
                if last:
                    return None
                known = ", ".join(map(str, node)) or "(none)"
                raise BoundaryInputError(f"--param: {dotted}: {here} has no entry {segment!r} "
                                         f"(it has: {known})")
            node = node[segment]
        elif isinstance(node, tuple):
            index = int(segment)
            if index >= len(node):
                raise BoundaryInputError(f"--param: {dotted}: {here} has {len(node)} entries, "
                                         f"no index {index}")
            node = node[index]
        elif dataclasses.is_dataclass(node):
            if not hasattr(node, segment):
                return None
            node = getattr(node, segment)
        else:
            return None
    return node


# ------------------------------------------------------------------ command line


def add_boundary_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``boundary`` on an argparse ``add_subparsers()`` object; returns its parser."""
    p = subparsers.add_parser(
        "boundary", help="find the value of a setting where an outcome becomes likely (a tipping point)",
        description="Bisect one numeric setting between --lo and --hi for the value where the probability "
                    "of the outcome crosses --level, running replications at each point (common random "
                    "numbers) and judging each with a Wilson score interval.")
    p.add_argument("scenario", help="a scenario file or the name of a shipped scenario, optionally NAME@VARIANT")
    p.add_argument("--param", required=True, metavar="PATH",
                   help="the numeric setting to vary, e.g. clients.web.load.rate_per_s")
    p.add_argument("--lo", required=True, metavar="A",
                   help="low end of the range, written like the setting (3s, 512MiB, 100)")
    p.add_argument("--hi", required=True, metavar="B", help="high end of the range, written like the setting")
    p.add_argument("--reps", type=int, default=5, metavar="R",
                   help="replications per batch at each point (default 5)")
    p.add_argument("--max-reps", type=int, default=None, metavar="M",
                   help="most replications at one point before it is called uncertain (default 4R)")
    p.add_argument("--outcome", default="collapse", choices=OUTCOMES,
                   help="what counts as a hit: collapse (collapse_at_s set), or the run's outcome being "
                        "metastable or crashed (default collapse)")
    p.add_argument("--level", type=float, default=0.5, help="the probability whose crossing is sought (default 0.5)")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="confidence of the Wilson intervals (default 0.95)")
    p.add_argument("--tolerance", default=None, metavar="X",
                   help="stop when the bracket is no wider than this, written like the setting "
                        "(default (B - A)/32; integer settings: adjacent values)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's `seed`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override another setting, e.g. --set clients.web.transport.client_timeout=1s (repeatable)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes for the runs at one point (default 2; 1 = in this process)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout and nothing else there")
    return p


@dataclass
class _Plan:
    scenario_arg: str
    scenario_name: str
    param: str
    annotation: Any
    lo: float
    hi: float
    tolerance: float
    integer: bool
    seed: int
    overrides: list[str]
    base_value: Any


def _validate(args: argparse.Namespace) -> _Plan:
    if args.reps < 1:
        raise BoundaryInputError(f"--reps: {args.reps} is not a number of replications (at least 1)")
    max_reps = 4 * args.reps if args.max_reps is None else args.max_reps
    if max_reps < args.reps:
        raise BoundaryInputError(f"--max-reps: {max_reps} is below --reps {args.reps}")
    if not (0.0 < args.level < 1.0):
        raise BoundaryInputError(f"--level: {args.level:g} is not a probability strictly between 0 and 1")
    if not (0.0 < args.confidence < 1.0):
        raise BoundaryInputError(f"--confidence: {args.confidence:g} is not strictly between 0 and 1")
    if args.outcome not in OUTCOMES:
        raise BoundaryInputError(f"--outcome: {args.outcome!r} is not one of {', '.join(OUTCOMES)}")
    if args.jobs < 1:
        raise BoundaryInputError(f"--jobs: {args.jobs} is not a number of worker processes (at least 1)")
    if args.seed is not None and args.seed < 0:
        raise BoundaryInputError(f"--seed: {args.seed} is not a seed (a whole number >= 0)")

    name, _variant = split_variant(args.scenario)
    resolve_scenario(name)       # a missing scenario fails before anything else about it
    try:
        annotation = setting_annotation(args.param)
    except ScenarioError as exc:
        raise BoundaryInputError(f"--param: {exc}") from None
    if not is_numeric_setting(annotation):
        raise BoundaryInputError(f"--param: {args.param} is not a numeric setting (it is not a number, "
                                 f"duration or size), so it has no tipping point to bisect")
    values = {}
    for option, text in (("--lo", args.lo), ("--hi", args.hi)):
        try:
            values[option] = parse_setting_value(annotation, text)
        except ValueError as exc:
            raise BoundaryInputError(f"{option}: {exc} ({args.param} is {_describe_type(annotation)})") from None
    lo, hi = values["--lo"], values["--hi"]
    if not lo < hi:
        raise BoundaryInputError(f"--lo: {args.lo} is not below --hi {args.hi}")
    integer = is_integer_setting(annotation)
    if args.tolerance is None:
        tolerance = default_tolerance(lo, hi, integer)
    else:
        try:
            tolerance = parse_setting_value(annotation, args.tolerance)
        except ValueError as exc:
            raise BoundaryInputError(f"--tolerance: {exc} ({args.param} is {_describe_type(annotation)})") from None
        if not tolerance > 0:
            raise BoundaryInputError(f"--tolerance: {args.tolerance} is not a positive width")

    base = _load(args.scenario, args.overrides)
    base_value = _check_param_in(base, args.param)
    for text in (setting_text(annotation, lo), setting_text(annotation, hi)):   # invalid combos fail now
        _load(args.scenario, [*args.overrides, f"{args.param}={text}"])
    seed = base.seed if args.seed is None else args.seed
    return _Plan(scenario_arg=args.scenario, scenario_name=base.name, param=args.param, annotation=annotation,
                 lo=lo, hi=hi, tolerance=tolerance, integer=integer, seed=seed,
                 overrides=list(args.overrides), base_value=base_value)


class _Runner:
    """``evaluate(x, replications)`` over local processes, recording what each point cost."""

    def __init__(self, plan: _Plan, outcome: str, pool: Executor | None) -> None:
        self.plan = plan
        self.outcome = outcome
        self.pool = pool
        self.truncated: dict[float, int] = {}
        self.run_wall_s = 0.0

    def scenario_at(self, x: float) -> Scenario:
        text = setting_text(self.plan.annotation, int(x) if self.plan.integer else x)
        return _load(self.plan.scenario_arg, [*self.plan.overrides, f"{self.plan.param}={text}"])

    def __call__(self, x: float, replications: range) -> list[bool]:
        scenario = self.scenario_at(x)
        seed = self.plan.seed
        if self.pool is None:
            results = [_run_one(scenario, seed, r, self.outcome) for r in replications]
        else:
            futures = [self.pool.submit(_run_one, scenario, seed, r, self.outcome) for r in replications]
            results = [f.result() for f in futures]      # in replication order, whatever finishes first
        self.truncated[x] = self.truncated.get(x, 0) + sum(t for _, t, _ in results)
        self.run_wall_s += sum(w for _, _, w in results)
        return [hit for hit, _, _ in results]


def _ci_text(p: PointEstimate) -> str:
    return f"[{p.ci_low:.2f}, {p.ci_high:.2f}]"


def _point_dict(p: PointEstimate, annotation: Any, truncated: int = 0) -> dict[str, Any]:
    out = {"x": int(p.x) if is_integer_setting(annotation) else p.x,
           "text": format_setting_value(annotation, p.x), "runs": p.runs, "hits": p.hits,
           "p": round(p.p, 6), "ci": [round(p.ci_low, 6), round(p.ci_high, 6)], "side": p.side}
    if truncated:
        out["truncated_runs"] = truncated
    return out


def _message(result: BoundaryResult, plan: _Plan, outcome: str) -> str:
    fmt = lambda v: format_setting_value(plan.annotation, v)  # noqa: E731
    conf = f"{result.confidence:.0%}" if round(result.confidence * 100, 6).is_integer() else f"{result.confidence:g}"
    what = f"P({outcome})"
    if result.status == "no_crossing":
        a, b = result.point(result.lo), result.point(result.hi)
        side = "above" if a.side == "above" else "below"
        return (f"no crossing in [{fmt(result.lo)}, {fmt(result.hi)}]: {what} is {side} {result.level:g} at both "
                f"ends (p={a.p:.2f} {_ci_text(a)} at {fmt(a.x)}, p={b.p:.2f} {_ci_text(b)} at {fmt(b.x)}; "
                f"{conf} Wilson intervals)")
    if result.status == "uncertain":
        u = result.point(result.uncertain_at)
        a, b = result.bracket
        return (f"{what} crosses {result.level:g} within [{fmt(a)}, {fmt(b)}]; the search stopped at "
                f"{fmt(u.x)}, where the outcome is uncertain after {u.runs} runs (p={u.p:.2f} {_ci_text(u)}, "
                f"{conf} Wilson interval): the crossing is likely near it (raise --max-reps to narrow it)")
    first, second = sorted((result.point(result.x_below), result.point(result.x_above)), key=lambda q: q.x)
    return (f"{what} crosses {result.level:g} between {fmt(first.x)} (p={first.p:.2f} {_ci_text(first)}) and "
            f"{fmt(second.x)} (p={second.p:.2f} {_ci_text(second)}), {result.direction} with "
            f"{plan.param.rsplit('.', 1)[-1]}; {conf} Wilson intervals")


def boundary_json(result: BoundaryResult, plan: _Plan, outcome: str, wall_s: float,
                  truncated: dict[float, int] | None = None) -> dict[str, Any]:
    truncated = truncated or {}
    fmt = lambda v: format_setting_value(plan.annotation, v)  # noqa: E731
    num = (lambda v: int(v)) if plan.integer else (lambda v: v)  # noqa: E731

    def end(x: float | None) -> dict[str, Any] | None:
        p = result.point(x)
        return None if p is None else _point_dict(p, plan.annotation, truncated.get(p.x, 0))

    bracket = None
    if result.status != "no_crossing":
        a, b = result.bracket
        bracket = {"lo": num(a), "hi": num(b), "lo_text": fmt(a), "hi_text": fmt(b), "width": num(b - a),
                   "below": end(result.x_below), "above": end(result.x_above)}
    return {
        "scenario": plan.scenario_name,
        "param": plan.param,
        "outcome": outcome,
        "status": result.status,
        "direction": result.direction,
        "level": result.level,
        "confidence": result.confidence,
        "range": {"lo": num(result.lo), "hi": num(result.hi), "lo_text": fmt(result.lo), "hi_text": fmt(result.hi)},
        "bracket": bracket,
        "uncertain_at": end(result.uncertain_at),
        "ends": {"lo": end(result.lo), "hi": end(result.hi)},
        "points": [_point_dict(p, plan.annotation, truncated.get(p.x, 0)) for p in sorted(result.points, key=lambda q: q.x)],
        "message": _message(result, plan, outcome),
        "seed": plan.seed,
        "reps": result.reps,
        "max_reps": result.max_reps,
        "tolerance": num(result.tolerance) if plan.integer else result.tolerance,
        "tolerance_text": fmt(result.tolerance),
        "overrides": plan.overrides,
        "total_runs": result.total_runs,
        "wall_s": round(wall_s, 3),
    }


def format_boundary(result: BoundaryResult, plan: _Plan, outcome: str, wall_s: float, jobs: int,
                    truncated: dict[float, int] | None = None) -> str:
    truncated = truncated or {}
    fmt = lambda v: format_setting_value(plan.annotation, v)  # noqa: E731
    conf = f"{result.confidence:.0%}" if round(result.confidence * 100, 6).is_integer() else f"{result.confidence:g}"
    sets = "".join(f" --set {o}" for o in plan.overrides)
    lines = [f"{plan.scenario_name}: P({outcome}) against {plan.param} in [{fmt(result.lo)}, {fmt(result.hi)}], "
             f"level {result.level:g}, seed {plan.seed}{sets}", "", _message(result, plan, outcome), ""]
    if result.status == "crossing":
        a, b = result.bracket
        lines.insert(3, f"bracket: [{fmt(a)}, {fmt(b)}]  (width {fmt(b - a)}, tolerance {fmt(result.tolerance)})")
    marks = {result.x_below: "bracket", result.x_above: "bracket", result.uncertain_at: "stopped"}
    header = f"  {'x':>12}  {'runs':>5}  {'hits':>5}  {'p':>5}  {conf + ' CI':>14}  judged"
    lines.append(header)
    for p in sorted(result.points, key=lambda q: q.x):
        note = marks.get(p.x, "")
        if truncated.get(p.x):
            note = f"{note} ({truncated[p.x]} truncated)".strip()
        lines.append(f"  {fmt(p.x):>12}  {p.runs:>5}  {p.hits:>5}  {p.p:>5.2f}  {_ci_text(p):>14}  "
                     f"{p.side:<9} {note}".rstrip())
    lines.append("")
    lines.append(f"{result.total_runs} runs in {wall_s:.1f} s wall on {jobs} worker process(es)")
    return "\n".join(lines)


def run_boundary(args: argparse.Namespace) -> int:
    """The ``boundary`` command. Bad input: one line on stderr and exit status 2."""
    try:
        plan = _validate(args)
    except (BoundaryInputError, ScenarioError) as exc:
        print(f"stormsim: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    log = sys.stderr
    fmt = lambda v: format_setting_value(plan.annotation, v)  # noqa: E731
    max_reps = 4 * args.reps if args.max_reps is None else args.max_reps
    log.write(f"boundary of {args.outcome} in {plan.param} over [{fmt(plan.lo)}, {fmt(plan.hi)}] "
              f"({plan.scenario_name}, seed {plan.seed}, {args.reps} runs per batch, at most {max_reps} "
              f"per point, {args.jobs} worker process(es))\n")
    started = time.perf_counter()
    point_started = [time.perf_counter()]

    def on_point(p: PointEstimate, final: bool) -> None:
        now = time.perf_counter()
        verdict = p.side if final or p.side != "uncertain" else "uncertain, adding runs"
        log.write(f"  {plan.param.rsplit('.', 1)[-1]}={fmt(p.x)}: {p.hits}/{p.runs} {args.outcome}, "
                  f"p={p.p:.2f} {_ci_text(p)} -> {verdict}  ({now - point_started[0]:.1f} s)\n")
        log.flush()
        point_started[0] = now

    pool = ProcessPoolExecutor(max_workers=args.jobs) if args.jobs > 1 else None
    try:
        runner = _Runner(plan, args.outcome, pool)
        result = find_boundary(runner, plan.lo, plan.hi, level=args.level, confidence=args.confidence,
                               reps=args.reps, max_reps=max_reps, tolerance=plan.tolerance,
                               integer=plan.integer, on_point=on_point)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    wall_s = time.perf_counter() - started
    if any(runner.truncated.values()):
        log.write(f"warning: {sum(runner.truncated.values())} run(s) were ended early by a guard "
                  f"(limits.*); their outcome is judged on the truncated run\n")
    if args.json:
        print(json.dumps(boundary_json(result, plan, args.outcome, wall_s, runner.truncated)))
    else:
        print(format_boundary(result, plan, args.outcome, wall_s, args.jobs, runner.truncated))
    return EXIT_OK
