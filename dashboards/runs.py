"""Cached runs for the dashboard pages, and their KPIs as the pages show them.

``run_cached`` runs one scenario (given as its complete YAML text, so equal
configurations share an entry and moving a widget back is instant) through
``sim.engine.run_scenario`` under ``st.cache_data``. What it keeps is the
``RunResult`` without its per-request and per-attempt records (~2 MB of the ~2.1 MB
of a seed-collapse run; the figures and KPIs need the summary, levels, windows and
milestones only, ~0.25 MB pickled), so the cache stays bounded:
``CACHE_ENTRIES`` x ~0.25-0.6 MB.

The KPIs (``KPIS``) are summary keys (docs/outputs.md) plus the untouched goodput
from the trigger that ``experiments.console``/``experiments.report`` compare runs by;
labels come from ``experiments.report.KPI_LABELS`` and numbers are formatted with
``experiments.report.format_number``. No model logic here.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import yaml

from experiments.figures import comparison_figure, timeseries_figure
from experiments.catalog import shipped_scenarios
from experiments.console import untouched_goodput_during_fault_rps
from experiments.report import KPI_LABELS, format_number
from sim.engine import run_scenario
from sim.result import ATTEMPT_COLUMNS, REQUEST_COLUMNS, RunResult, empty_columns
from sim.scenario_loader import ScenarioError, dump_scenario_yaml, load_scenario, scenario_from_dict
from sim.schema import Scenario

CACHE_ENTRIES = 64
MAX_REPLICATIONS = 20
SOURCE = "<dashboard>"


def scenario_from_yaml(text: str) -> Scenario:
    """The scenario a complete YAML text describes (as ``dump_scenario_yaml`` writes it)."""
    return scenario_from_dict(yaml.safe_load(text), source=SOURCE)


def slim(result: RunResult) -> RunResult:
    """``result`` without its per-request and per-attempt records (and event trace)."""
    return dataclasses.replace(result, requests=empty_columns(REQUEST_COLUMNS),
                               attempts=empty_columns(ATTEMPT_COLUMNS), trace=None)


@st.cache_data(show_spinner=False, max_entries=CACHE_ENTRIES)
def run_cached(scenario_yaml: str, seed: int, replication: int = 0) -> RunResult:
    """One run of the scenario ``scenario_yaml`` describes; summary, levels, windows and
    milestones kept (``RunResult.summary`` is the summary, the rest feeds the figures)."""
    result = run_scenario(scenario_from_yaml(scenario_yaml), seed=int(seed), replication=int(replication))
    return slim(result)


@st.cache_data(show_spinner=False, max_entries=CACHE_ENTRIES)
def timeseries_cached(scenario_yaml: str, seed: int, replication: int = 0) -> go.Figure:
    """``experiments.figures.timeseries_figure`` of that run (building it takes ~0.5 s, loading
    it from the cache ~0.03 s: moving a widget back redraws at once)."""
    return timeseries_figure(run_cached(scenario_yaml, seed, replication))


@st.cache_data(show_spinner=False, max_entries=16)
def comparison_cached(labelled_yaml: tuple[tuple[str, str], ...], seed: int) -> go.Figure:
    """``experiments.figures.comparison_figure`` of (label, scenario YAML) runs on one seed."""
    return comparison_figure([(label, run_cached(text, seed, 0)) for label, text in labelled_yaml])


def run_replications(scenario_yaml: str, seed: int, replications: int) -> list[RunResult]:
    """Replications 0..R-1 of one scenario and seed (each cached on its own)."""
    count = max(1, min(int(replications), MAX_REPLICATIONS))
    return [run_cached(scenario_yaml, int(seed), replication) for replication in range(count)]


@st.cache_data(show_spinner=False)
def scenario_options() -> list[str]:
    """Every shipped scenario and each of its variants as NAME@VARIANT, in catalogue order."""
    options: list[str] = []
    for name, path in shipped_scenarios().items():
        options.append(name)
        try:
            variants = load_scenario(path).variants
        except ScenarioError:
            continue
        options += [f"{name}@{variant}" for variant in variants]
    return options


@st.cache_data(show_spinner=False, max_entries=64)
def shipped_yaml(option: str) -> str:
    """A shipped scenario (NAME or NAME@VARIANT) as complete YAML (``extends`` and the variant applied)."""
    name, _, variant = option.partition("@")
    # a variant's runs are named NAME@VARIANT, as `stormsim run NAME@VARIANT` names them
    renamed = [f"name={option}"] if variant else []
    return dump_scenario_yaml(load_scenario(shipped_scenarios()[name], overrides=renamed, variant=variant or None))


# ------------------------------------------------------------------ KPIs


@dataclass(frozen=True)
class Kpi:
    key: str          # a summary key, or untouched_goodput_rps (computed like experiments.console)
    label: str
    unit: str         # as in experiments.report.KPI_LABELS: "%" takes a fraction, "x" a ratio
    better: str = ""  # "higher", "lower" or "" (no direction)
    note: str = ""    # what it is, when the label does not say


def _kpi(key: str, better: str = "", unit: str | None = None, label: str | None = None, note: str = "") -> Kpi:
    known_label, known_unit = KPI_LABELS.get(key, (key, ""))
    return Kpi(key, label or known_label, known_unit if unit is None else unit, better, note)


UNTOUCHED_LABEL = "Untouched goodput"
"""Short for experiments.report's "Untouched goodput from the trigger" (console: from the trigger on)."""

KPIS: tuple[Kpi, ...] = (
    _kpi("outcome"),
    _kpi("collapse_time_s", "higher"),
    _kpi("p99_ms", "lower"),
    _kpi("goodput_rps", "higher"),
    _kpi("untouched_goodput_rps", "higher", unit="req/s", label=UNTOUCHED_LABEL,
         note="Successes of requests no fault acted on, per second from the trigger (the first fault) "
              "to the end; all traffic when every request was touched."),
    _kpi("max_server_connections", "lower"),
    _kpi("max_open_fds", "lower"),
    _kpi("peak_memory_mib", "lower"),
    _kpi("attempts_per_request", "lower", note="Retry amplification: attempts sent per logical request."),
    _kpi("success_rate", "higher"),
)
"""What the Tune page shows as metrics, in order."""

COMPARE_KPIS: tuple[Kpi, ...] = KPIS + tuple(
    _kpi(key, better)
    for key, better in (("max_goroutines", "lower"), ("goodput_during_fault_rps", "higher"),
                        ("wasted_work_fraction", "lower"), ("time_to_trip_s", ""),
                        ("time_to_recover_s", "lower"), ("crashes", "lower")))
"""What the Compare page's table shows: the Tune KPIs and the rest of the report's comparison columns."""

NEVER_KEYS = frozenset({"collapse_time_s", "time_to_trip_s", "time_to_recover_s"})
"""KPIs whose None means "never happened" rather than "no data"."""


def kpi_values(result: RunResult, kpis: Sequence[Kpi] = KPIS) -> dict[str, Any]:
    """key -> value of each KPI for one run."""
    out: dict[str, Any] = {}
    for kpi in kpis:
        if kpi.key == "untouched_goodput_rps":
            out[kpi.key] = untouched_goodput_during_fault_rps(result)
        else:
            out[kpi.key] = result.summary.get(kpi.key)
    return out


@dataclass(frozen=True)
class KpiStat:
    """One KPI over replications: the mean and range of the numbers, or the outcomes seen."""

    kpi: Kpi
    values: tuple[Any, ...]

    @property
    def numbers(self) -> list[float]:
        return [float(v) for v in self.values
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]

    @property
    def mean(self) -> float | None:
        nums = self.numbers
        return sum(nums) / len(nums) if nums else None

    @property
    def low(self) -> float | None:
        return min(self.numbers) if self.numbers else None

    @property
    def high(self) -> float | None:
        return max(self.numbers) if self.numbers else None

    @property
    def text(self) -> str:
        """The value as shown: the mean (or the outcomes), with how many runs had one."""
        if self.kpi.unit in ("outcome", "") and not self.numbers:
            counts = Counter(str(v) for v in self.values if v is not None)
            if not counts:
                return "n/a"
            if len(counts) == 1:
                return next(iter(counts))
            return ", ".join(f"{name} ×{n}" for name, n in counts.most_common())
        mean = self.mean
        if mean is None:
            return "never" if self.kpi.key in NEVER_KEYS else "n/a"
        text = format_value(mean, self.kpi.unit)
        missing = len(self.values) - len(self.numbers)
        if missing and self.kpi.key in NEVER_KEYS:
            text += f" ({len(self.numbers)} of {len(self.values)})"
        return text

    @property
    def range_text(self) -> str:
        """``min to max`` over the replications ('' for one run or no numbers)."""
        if len(self.values) < 2 or not self.numbers:
            return ""
        return f"{format_value(self.low, self.kpi.unit)} to {format_value(self.high, self.kpi.unit)}"


def aggregate(results: Sequence[RunResult], kpis: Sequence[Kpi] = KPIS) -> dict[str, KpiStat]:
    """key -> KpiStat of each KPI over ``results`` (replications of one configuration)."""
    per_run = [kpi_values(result, kpis) for result in results]
    return {kpi.key: KpiStat(kpi, tuple(values[kpi.key] for values in per_run)) for kpi in kpis}


def format_value(value: Any, unit: str) -> str:
    """One KPI value as text, like experiments.report.format_kpi (without HTML)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if unit == "%":
        return f"{100.0 * float(value):.4g} %"
    if unit == "x":
        return f"{float(value):.3g} ×"
    if unit in ("int", "", "outcome"):
        return format_number(value)
    if unit == "at":
        return f"{float(value):,.3f} s"
    return f"{format_number(value)} {unit}"


@dataclass(frozen=True)
class Delta:
    text: str | None     # None: no change to show
    colour: str          # a st.metric delta_color
    arrow: str           # a st.metric delta_arrow


def delta(current: KpiStat, baseline: KpiStat) -> Delta:
    """How ``current`` differs from ``baseline``, coloured by whether that is better."""
    kpi = current.kpi
    now, before = current.mean, baseline.mean
    if now is not None and before is not None:
        diff = now - before
        if math.isclose(now, before, rel_tol=1e-9, abs_tol=1e-12):
            return Delta(None, "off", "off")
        if kpi.unit == "%":
            text = f"{100.0 * diff:+.3g} pp"
        elif kpi.unit == "x":
            text = f"{diff:+.3g}"
        else:
            text = ("+" if diff > 0 else "-") + format_value(abs(diff), kpi.unit)
        good = (diff > 0) == (kpi.better == "higher")
        colour = "gray" if not kpi.better else ("green" if good else "red")
        return Delta(text, colour, "up" if diff > 0 else "down")
    if kpi.key == "collapse_time_s":
        if now is None and before is not None:
            return Delta("no collapse now", "green", "off")
        if now is not None and before is None:
            return Delta("collapses now", "red", "off")
        return Delta(None, "off", "off")
    if current.text != baseline.text:
        return Delta(f"baseline: {baseline.text}", "gray", "off")
    return Delta(None, "off", "off")


def kpi_frame(current: dict[str, KpiStat], baseline: dict[str, KpiStat] | None = None) -> pd.DataFrame:
    """The KPIs as a table (raw numbers for the CSV): value (mean), min, max, baseline, change."""
    rows = []
    for key, stat in current.items():
        row: dict[str, Any] = {
            "kpi": stat.kpi.label, "key": key, "unit": stat.kpi.unit,
            "value": stat.mean if stat.numbers else (stat.text if stat.text not in ("n/a",) else None),
            "min": stat.low, "max": stat.high, "runs": len(stat.values), "shown": stat.text,
        }
        if baseline is not None and key in baseline:
            base = baseline[key]
            row["baseline"] = base.mean if base.numbers else (base.text if base.text != "n/a" else None)
            row["change"] = (stat.mean - base.mean) if stat.mean is not None and base.mean is not None else None
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_frame(labelled: Sequence[tuple[str, RunResult]],
                     kpis: Sequence[Kpi] = COMPARE_KPIS, formatted: bool = True) -> pd.DataFrame:
    """KPIs side by side: one row per KPI, one column per configuration (formatted text, or raw values)."""
    rows = []
    values = [(label, kpi_values(result, kpis)) for label, result in labelled]
    for kpi in kpis:
        row: dict[str, Any] = {"KPI": kpi.label} if formatted else {"kpi": kpi.label, "key": kpi.key,
                                                                    "unit": kpi.unit}
        for label, kv in values:
            value = kv.get(kpi.key)
            if formatted:
                row[label] = ("never" if value is None and kpi.key in NEVER_KEYS
                              else format_value(value, kpi.unit))
            else:
                row[label] = value
        rows.append(row)
    return pd.DataFrame(rows)
