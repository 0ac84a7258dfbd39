"""Sweep files: YAML to a validated ``SweepSpec``, its design points and its runs.

This module owns what a sweep *is*: a base scenario (a file or a shipped name,
optionally a variant and ``set`` overrides), factors (a dotted scenario path each,
with ``values``, a ``range`` or a ``distribution``), a design (``grid``,
``random``, ``lhs``, ``sobol``), replications with common random numbers across
cells, and the metrics to summarise. Running it is ``experiments.sweep_runner``.
Every problem is a ``SweepError`` (a ``ScenarioError``) naming the dotted key of
the sweep file and the bad value, so the CLI prints one line and exits 2.

A factor's values are held in the setting's base unit: seconds for durations,
bytes for sizes, per second for rates; ``override`` turns one back into the
``--set`` text the scenario loader reads (``3.0`` -> ``3s``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import numpy as np
import yaml
from scipy import stats
from scipy.stats import qmc

from experiments.catalog import resolve_scenario, split_variant
from sim.outputs import SUMMARY_KEYS
from sim.scenario_error import ScenarioError, show_value
from sim.scenario_loader import load_scenario, setting_annotation, setting_text
from sim.schema import Duration, Rate, Size
from sim.units import parse_duration, parse_size

DESIGNS = ("grid", "random", "lhs", "sobol")
DISTRIBUTIONS = ("uniform", "loguniform", "normal", "choice")
DEFAULT_METRICS: tuple[str, ...] = (
    "goodput_rps", "success_rate", "p99_ms", "attempts_per_request", "collapse_time_s",
    "max_server_connections", "max_open_fds", "peak_memory_mib", "wasted_work_fraction",
)
NUMERIC_SUMMARY_KEYS = tuple(k for k in SUMMARY_KEYS if k not in
                             ("scenario", "seed", "errors", "outcome", "truncated_by", "provenance"))
TOP_KEYS = ("name", "description", "scenario", "variant", "set", "factors", "design", "replications",
            "seed", "metrics")


class SweepError(ScenarioError):
    """A bad sweep file: the dotted key and the value, in one line."""


@dataclass(frozen=True)
class Factor:
    """One swept setting. ``kind`` says how its values are given; values are in base units."""

    path: str
    kind: Literal["values", "range", "distribution"]
    annotation: Any
    values: tuple[Any, ...] = ()                    # kind values (and the grid points of a range)
    low: float = 0.0                                # range / uniform / loguniform bounds
    high: float = 0.0
    n: int = 0                                      # range: grid points
    scale: Literal["linear", "log"] = "linear"
    distribution: str = ""                          # kind distribution
    mean: float = 0.0                               # normal
    sd: float = 0.0

    @property
    def unit(self) -> str:
        return unit_of(self.annotation)

    @property
    def integer(self) -> bool:
        return self.annotation is int or self.annotation == Size

    def grid_values(self) -> tuple[Any, ...]:
        """The values of a full-grid design."""
        if self.kind in ("values", "range"):
            return self.values
        raise SweepError(f"factors.{self.path}", self.distribution,
                         "a distribution cannot be gridded; give values or a range for design grid")

    def from_unit(self, u: float) -> Any:
        """The value at quantile ``u`` in [0, 1) (random, LHS and Sobol designs)."""
        if self.kind == "values" or (self.kind == "distribution" and self.distribution == "choice"):
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        if self.kind == "distribution" and self.distribution == "normal":
            x = float(stats.norm.ppf(min(max(u, 1e-12), 1 - 1e-12), loc=self.mean, scale=self.sd))
        elif self.scale == "log" or self.distribution == "loguniform":
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        return int(round(x)) if self.integer else x


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: a design point (cell) and a replication."""

    run_key: str
    cell: int
    replication: int
    seed: int
    factors: dict[str, Any]

    def overrides(self, spec: "SweepSpec") -> list[str]:
        return [*spec.set_overrides, *(override(spec.factor(p), v) for p, v in self.factors.items())]


@dataclass(frozen=True)
class SweepSpec:
    name: str
    description: str
    sweep_path: str
    sweep_text: str
    scenario_path: str
    scenario_arg: str
    variant: str | None
    set_overrides: tuple[str, ...]
    factors: tuple[Factor, ...]
    design: str
    points: int                 # random / lhs / sobol: number of design points
    design_seed: int
    replications: int
    seed: int
    metrics: tuple[str, ...]

    def factor(self, path: str) -> Factor:
        return next(f for f in self.factors if f.path == path)

    @property
    def factor_paths(self) -> list[str]:
        return [f.path for f in self.factors]

    def digest(self) -> str:
        """Identity of what the sweep computes (its file text and base scenario file), for resume."""
        h = hashlib.sha256(self.sweep_text.encode())
        h.update(Path(self.scenario_path).read_bytes())
        return h.hexdigest()[:16]


# ------------------------------------------------------------------ units


def unit_of(annotation: Any) -> str:
    if annotation == Duration:
        return "s"
    if annotation == Size:
        return "B"
    if annotation == Rate:
        return "req/s"
    return ""


def override(factor: Factor, value: Any) -> str:
    """``path=value`` text for the scenario loader (seconds back to ``3s``)."""
    return f"{factor.path}={setting_text(factor.annotation, value)}"


def _number(annotation: Any, raw: Any, where: str) -> float:
    """A bound or value of a numeric setting in base units (``3s`` -> 3.0)."""
    try:
        if annotation == Duration:
            return parse_duration(raw)
        if annotation == Size:
            return float(parse_size(raw))
    except ValueError as exc:
        raise SweepError(where, raw, str(exc)) from None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        raise SweepError(where, raw, f"{show_value(raw)} is not a number")
    return float(raw)


def _numeric(annotation: Any) -> bool:
    return annotation in (int, float) or annotation in (Duration, Size, Rate)


def _plain_value(annotation: Any, raw: Any, where: str) -> Any:
    """A listed value in base units (numbers) or as written (strings, booleans, choices)."""
    if _numeric(annotation):
        x = _number(annotation, raw, where)
        return int(round(x)) if annotation is int or annotation == Size else x
    if annotation is bool and not isinstance(raw, bool):
        raise SweepError(where, raw, f"{show_value(raw)} is not true or false")
    if get_origin(annotation) is Literal and str(raw) not in get_args(annotation):
        raise SweepError(where, raw, f"{show_value(raw)} is not one of {', '.join(get_args(annotation))}")
    return raw


# ---------------------------------------------------------------- loading

SWEEP_DIR = Path(__file__).resolve().parent / "sweeps"


def resolve_sweep(argument: str) -> Path:
    """A sweep file, or the name of a shipped one (``timeout-x-retries``)."""
    path = Path(argument)
    if path.is_file():
        return path
    shipped = {p.stem: p for p in sorted(SWEEP_DIR.glob("*.yaml"))}
    if argument in shipped:
        return shipped[argument]
    raise SweepError("sweep", argument, f"{argument!r} is neither a file nor a shipped sweep "
                                        f"(shipped: {', '.join(shipped) or 'none'})")



def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file; every design point's scenario is loaded once to check it."""
    sweep_path = Path(path)
    try:
        text = sweep_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SweepError("", str(path), f"cannot read sweep file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark is not None else str(path)
        raise SweepError("", str(path), f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise SweepError("", data, f"{path}: a sweep file is a mapping of settings")
    spec = _spec(data, sweep_path, text)
    check_points(spec)
    return spec


def _spec(data: dict, sweep_path: Path, text: str) -> SweepSpec:
    for key in data:
        if key not in TOP_KEYS:
            raise SweepError(str(key), key, f"unknown sweep setting {key!r}; valid keys: {', '.join(TOP_KEYS)}")
    scenario_arg = data.get("scenario")
    if not isinstance(scenario_arg, str) or not scenario_arg:
        raise SweepError("scenario", scenario_arg, "a sweep needs `scenario:` (a scenario file or a shipped name)")
    name_part, at_variant = split_variant(scenario_arg)
    candidate = sweep_path.parent / name_part
    try:
        scenario_path = candidate if candidate.is_file() else resolve_scenario(name_part)
    except ScenarioError as error:
        raise SweepError("scenario", scenario_arg, f"{error.reason} (relative paths are from the "
                                                   f"sweep file's folder)") from None
    variant = data.get("variant", at_variant)
    set_overrides = data.get("set", [])
    if isinstance(set_overrides, dict):
        set_overrides = [f"{k}={_yaml_text(v)}" for k, v in set_overrides.items()]
    if not isinstance(set_overrides, list) or not all(isinstance(s, str) for s in set_overrides):
        raise SweepError("set", set_overrides, "`set` is a list of dotted.path=value strings or a mapping")
    factors_raw = data.get("factors")
    if not isinstance(factors_raw, dict) or not factors_raw:
        raise SweepError("factors", factors_raw, "a sweep needs at least one factor: `factors: {dotted.path: {...}}`")
    factors = tuple(_factor(str(p), raw) for p, raw in factors_raw.items())
    design_raw = data.get("design", {"kind": "grid"})
    if isinstance(design_raw, str):
        design_raw = {"kind": design_raw}
    if not isinstance(design_raw, dict):
        raise SweepError("design", design_raw, "`design` is a kind or a mapping {kind, points, seed}")
    for key in design_raw:
        if key not in ("kind", "points", "seed"):
            raise SweepError(f"design.{key}", key, f"unknown design setting {key!r}; valid keys: kind, points, seed")
    design = design_raw.get("kind", "grid")
    if design not in DESIGNS:
        raise SweepError("design.kind", design, f"{show_value(design)} is not one of {', '.join(DESIGNS)}")
    points = design_raw.get("points", 0)
    if design != "grid":
        if not isinstance(points, int) or isinstance(points, bool) or points < 1:
            raise SweepError("design.points", points, f"design {design} needs points: a whole number >= 1")
        if design == "sobol" and points & (points - 1):
            raise SweepError("design.points", points, f"{points}: Sobol points must be a power of two (e.g. 16, 32, 64)")
    elif "points" in design_raw:
        raise SweepError("design.points", points, "a grid has the points of its factors; `points` is for random, lhs and sobol")
    design_seed = _whole(design_raw.get("seed", 0), "design.seed", minimum=0)
    replications = _whole(data.get("replications", 1), "replications", minimum=1)
    seed = _whole(data.get("seed", 1), "seed", minimum=0)
    metrics_raw = data.get("metrics", list(DEFAULT_METRICS))
    if not isinstance(metrics_raw, list) or not metrics_raw:
        raise SweepError("metrics", metrics_raw, "`metrics` is a non-empty list of summary keys")
    allowed = set(NUMERIC_SUMMARY_KEYS)
    for index, metric in enumerate(metrics_raw):
        if metric not in allowed and not (isinstance(metric, str) and metric.startswith("errors.")):
            raise SweepError(f"metrics.{index}", metric, f"{show_value(metric)} is not a numeric summary key "
                                                         f"(docs/outputs.md); e.g. {', '.join(DEFAULT_METRICS[:4])}")
    name = data.get("name", sweep_path.stem)
    if not isinstance(name, str) or not name or "/" in name:
        raise SweepError("name", name, f"{show_value(name)} is not a usable name (a non-empty string without '/')")
    return SweepSpec(
        name=name, description=str(data.get("description", "")), sweep_path=str(sweep_path.resolve()),
        sweep_text=text, scenario_path=str(Path(scenario_path).resolve()), scenario_arg=scenario_arg,
        variant=variant, set_overrides=tuple(set_overrides), factors=factors, design=design,
        points=int(points or 0), design_seed=design_seed, replications=replications, seed=seed,
        metrics=tuple(metrics_raw))


def _yaml_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _whole(raw: Any, where: str, minimum: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
        raise SweepError(where, raw, f"{show_value(raw)} is not a whole number >= {minimum}")
    return raw


def _factor(path: str, raw: Any) -> Factor:
    where = f"factors.{path}"
    try:
        annotation = setting_annotation(path)
    except ScenarioError as error:
        raise SweepError(where, path, f"{path} is not a scenario setting: {error.reason}") from None
    if isinstance(raw, list):
        raw = {"values": raw}
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("values", "range", "distribution"):
        raise SweepError(where, raw, "a factor is one of {values: [...]}, {range: {from, to, n, scale}} "
                                     "or {distribution: {kind, ...}}")
    kind, body = next(iter(raw.items()))
    if kind == "values":
        if not isinstance(body, list) or not body:
            raise SweepError(f"{where}.values", body, "values is a non-empty list")
        values = tuple(_plain_value(annotation, v, f"{where}.values.{i}") for i, v in enumerate(body))
        return Factor(path, "values", annotation, values=values)
    if not _numeric(annotation):
        raise SweepError(where, kind, f"{path} is not numeric: give it `values`")
    if kind == "range":
        return _range_factor(path, annotation, body, where)
    return _distribution_factor(path, annotation, body, where)


def _range_factor(path: str, annotation: Any, body: Any, where: str) -> Factor:
    if not isinstance(body, dict):
        raise SweepError(f"{where}.range", body, "range is a mapping {from, to, n, scale}")
    for key in body:
        if key not in ("from", "to", "n", "scale"):
            raise SweepError(f"{where}.range.{key}", key, f"unknown range setting {key!r}; valid keys: from, to, n, scale")
    if "from" not in body or "to" not in body:
        raise SweepError(f"{where}.range", body, "range needs from and to")
    low = _number(annotation, body["from"], f"{where}.range.from")
    high = _number(annotation, body["to"], f"{where}.range.to")
    if not low < high:
        raise SweepError(f"{where}.range.to", body["to"], f"to must be above from ({body['from']})")
    scale = body.get("scale", "linear")
    if scale not in ("linear", "log"):
        raise SweepError(f"{where}.range.scale", scale, f"{show_value(scale)} is not linear or log")
    if scale == "log" and low <= 0:
        raise SweepError(f"{where}.range.from", body["from"], "a log range needs from > 0")
    n = body.get("n", 5)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise SweepError(f"{where}.range.n", n, f"{show_value(n)}: n is the number of grid points, a whole number >= 2")
    grid = np.geomspace(low, high, n) if scale == "log" else np.linspace(low, high, n)
    integer = annotation is int or annotation == Size
    values = tuple(dict.fromkeys(int(round(x)) if integer else float(x) for x in grid))
    return Factor(path, "range", annotation, values=values, low=low, high=high, n=n, scale=scale)


def _distribution_factor(path: str, annotation: Any, body: Any, where: str) -> Factor:
    if not isinstance(body, dict) or body.get("kind") not in DISTRIBUTIONS:
        raise SweepError(f"{where}.distribution.kind", body.get("kind") if isinstance(body, dict) else body,
                         f"distribution kind is one of {', '.join(DISTRIBUTIONS)}")
    kind = body["kind"]
    allowed = {"uniform": {"low", "high"}, "loguniform": {"low", "high"}, "normal": {"mean", "sd"},
               "choice": {"values"}}[kind] | {"kind"}
    for key in body:
        if key not in allowed:
            raise SweepError(f"{where}.distribution.{key}", key,
                             f"unknown setting {key!r} for a {kind} distribution; valid keys: {', '.join(sorted(allowed))}")
    if kind == "choice":
        values = body.get("values")
        if not isinstance(values, list) or not values:
            raise SweepError(f"{where}.distribution.values", values, "choice needs a non-empty values list")
        return Factor(path, "distribution", annotation, distribution="choice",
                      values=tuple(_plain_value(annotation, v, f"{where}.distribution.values.{i}")
                                   for i, v in enumerate(values)))
    if kind == "normal":
        mean = _number(annotation, body.get("mean"), f"{where}.distribution.mean")
        sd = _number(annotation, body.get("sd"), f"{where}.distribution.sd")
        if sd <= 0:
            raise SweepError(f"{where}.distribution.sd", body.get("sd"), "sd must be > 0")
        return Factor(path, "distribution", annotation, distribution="normal", mean=mean, sd=sd)
    low = _number(annotation, body.get("low"), f"{where}.distribution.low")
    high = _number(annotation, body.get("high"), f"{where}.distribution.high")
    if not low < high:
        raise SweepError(f"{where}.distribution.high", body.get("high"), "high must be above low")
    if kind == "loguniform" and low <= 0:
        raise SweepError(f"{where}.distribution.low", body.get("low"), "a loguniform distribution needs low > 0")
    return Factor(path, "distribution", annotation, distribution=kind, low=low, high=high)


# ----------------------------------------------------------------- design


def design_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The cells of the design, in a fixed order: factor path -> value (base units)."""
    factors = spec.factors
    if spec.design == "grid":
        grids = [f.grid_values() for f in factors]
        mesh = np.array(np.meshgrid(*[np.arange(len(g)) for g in grids], indexing="ij")).reshape(len(grids), -1).T
        return [{f.path: grids[i][int(row[i])] for i, f in enumerate(factors)} for row in mesh]
    d = len(factors)
    if spec.design == "random":
        unit = np.random.default_rng(spec.design_seed).random((spec.points, d))
    elif spec.design == "lhs":
        unit = qmc.LatinHypercube(d=d, seed=np.random.default_rng(spec.design_seed)).random(spec.points)
    else:
        unit = qmc.Sobol(d=d, scramble=True, seed=np.random.default_rng(spec.design_seed)).random(spec.points)
    return [{f.path: f.from_unit(float(row[i])) for i, f in enumerate(factors)} for row in unit]


def run_specs(spec: SweepSpec) -> list[RunSpec]:
    """Every run: cells x replications. Replication r of every cell uses (seed, r): common
    random numbers, so cells differ only by their factors."""
    runs = []
    for cell, point in enumerate(design_points(spec)):
        for replication in range(spec.replications):
            key_text = json.dumps([point, replication, spec.seed], sort_keys=True, default=str)
            run_key = f"c{cell:05d}-r{replication:03d}-{hashlib.sha1(key_text.encode()).hexdigest()[:8]}"
            runs.append(RunSpec(run_key, cell, replication, spec.seed, dict(point)))
    return runs


def check_points(spec: SweepSpec) -> None:
    """Load the scenario of every design point, so a bad value stops the sweep before it starts."""
    seen = set()
    for cell, point in enumerate(design_points(spec)):
        overrides = [*spec.set_overrides, *(override(spec.factor(p), v) for p, v in point.items())]
        key = tuple(overrides)
        if key in seen:
            continue
        seen.add(key)
        try:
            load_scenario(spec.scenario_path, overrides=overrides, variant=spec.variant)
        except ScenarioError as error:
            shown = ", ".join(f"{p}={setting_text(spec.factor(p).annotation, v)}" for p, v in point.items())
            raise SweepError(error.path or "factors", error.value,
                             f"design point {cell} ({shown}): {error.reason}") from None
