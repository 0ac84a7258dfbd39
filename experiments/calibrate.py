"""``stormsim calibrate``: the simulator beside the real Go stack, on the same scaled scenario.

    stormsim calibrate SCENARIO [--runs N] [--scale F] [--seed N] [--set path=value ...]
                                [--variant NAME] [--out DIR] [--json] [--no-png]

The scenario is put in its testbed form (``experiments.testbed.config.for_testbed``:
checked, scaled, on the loopback network) and run once by the simulator and ``--runs``
times by the testbed, every run on the same seed, so both face the same arrivals. The
table sets the simulated value of each figure beside the median of the testbed runs and
their range, with the relative error ``(sim - real) / real``:

- time to fd exhaustion (first EMFILE at accept, from the trigger), and to the OOM kill;
- peak fds, goroutines, server connections;
- client outcomes by kind (successes, each error kind seen, incomplete);
- P50 and P99 latency of the successes.

A figure marked ``judged`` agrees when the relative error is at most ``TOLERANCE`` (15 %),
or the simulated value lies within the range of the testbed runs, or the difference is
below the figure's floor (``floor_of``: a count of 0.5 % of the requests, 5 fds or
goroutines (``LEVEL_FLOOR``), half a second, 1 ms; noise the real runs show too). Other
rows are for information.

The simulator runs a second time on the scenario told how the machine treated the real
runs (``machine_factors``, ``machine_corrected``: CPU steps stretched by other work on the
cores, the DB stand-in's late timers, the per-request cost of the loopback and both HTTP
stacks). A judged figure only that run meets is ``ok (machine)``: the gap is the machine's.
The figure (``calibration.html`` and ``.png``) overlays the two time series: fds,
goroutines, server connections, and successes and failures per second.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sim.result import RunResult
from sim.schema import ERROR_KINDS

TOLERANCE = 0.15
LEVEL_FLOOR = 5
"""Peaks of fds, goroutines and connections closer than this agree: a real Go server holds 3 fds the
model does not count (epoll and the netpoller's wake-up pipe) and the testbed's server 2 more (its
events file and /proc/self/statm), and its base goroutines differ by one or two."""
DEFAULT_RUNS = 3


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str          # "s", "ms", "count"
    judged: bool


FIGURES: tuple[Figure, ...] = (
    Figure("time_to_fd_exhaustion_s", "time to fd exhaustion (from trigger)", "s", True),
    Figure("time_to_oom_s", "time to OOM kill (from trigger)", "s", False),
    Figure("max_open_fds", "peak fds", "level", True),
    Figure("max_goroutines", "peak goroutines", "level", True),
    Figure("max_server_connections", "peak server connections", "level", True),
    Figure("requests", "requests (population)", "count", False),
    Figure("successes", "outcome: success", "count", True),
    *(Figure(f"errors.{kind}", f"outcome: {kind}", "count", True) for kind in ERROR_KINDS),
    Figure("incomplete", "outcome: incomplete", "count", True),
    Figure("p50_success_ms", "P50 of successes", "ms", True),
    Figure("p99_success_ms", "P99 of successes", "ms", True),
    Figure("attempts_per_request", "attempts per request", "ratio", False),
    Figure("peak_memory_mib", "peak memory (sim: modelled; real: RSS)", "MiB", False),
)


def figures_of(result: RunResult) -> dict[str, float | None]:
    """The compared figures of one run (simulated or testbed), from its summary and records."""
    s = result.summary
    trigger = s.get("trigger_at_s") or 0.0
    out: dict[str, float | None] = {}
    fd = s.get("fd_exhausted_at_s")
    oom = s.get("oom_killed_at_s")
    out["time_to_fd_exhaustion_s"] = None if fd is None else fd - trigger
    out["time_to_oom_s"] = None if oom is None else oom - trigger
    for key in ("max_open_fds", "max_goroutines", "max_server_connections", "incomplete", "attempts_per_request",
                "peak_memory_mib"):
        out[key] = s.get(key)
    errors = s.get("errors") or {}
    for kind in ERROR_KINDS:
        out[f"errors.{kind}"] = float(errors.get(kind, 0))
    req = result.requests
    arrival = np.asarray(req["arrival_at"], dtype=float)
    end = result.milestones.end_at_s
    warmup = result.scenario.warmup
    pop = (arrival >= warmup) & (arrival < end)
    ok = pop & (np.asarray(req["error"]) == 0)
    out["requests"] = float(pop.sum())
    out["successes"] = float(ok.sum())
    lat = (np.asarray(req["end_at"], dtype=float)[ok] - arrival[ok]) * 1000.0
    out["p50_success_ms"] = float(np.percentile(lat, 50)) if lat.size else None
    out["p99_success_ms"] = float(np.percentile(lat, 99)) if lat.size else None
    return out


# ------------------------------------------------------------------ the machine


def machine_factors(real: list[RunResult]) -> dict[str, float]:
    """How the machine treated the real runs (medians over them): the wall / nominal time of the
    handlers' CPU steps (above 1 when other work shares the cores), the mean lateness of the DB
    stand-in's timers (Go 1.19 sleeps in epoll_wait, whose timeout is in whole milliseconds), and
    the median time from an attempt's start to its handler (the per-hop cost of the loopback
    network and of both programs' HTTP stacks)."""
    def med(values: list[Any]) -> float | None:
        present = [float(v) for v in values if v is not None]
        return float(statistics.median(present)) if present else None
    tb = [r.provenance.get("testbed", {}) for r in real]
    return {"cpu_stretch": med([t.get("cpu_stretch") for t in tb]),
            "db_timer_late_ms": med([t.get("db_timer_late_ms") for t in tb]),
            "to_server_p50_ms": med([r.summary.get("to_server_p50_ms") for r in real])}


def machine_corrected(scenario, factors: dict[str, float | None]):
    """The scenario told about the machine: CPU steps times the measured stretch, the DB round trip
    plus the timers' lateness, the client-server round trip twice the measured time to the handler.
    Inputs only: the model is unchanged."""
    import dataclasses
    from experiments.testbed.config import LOOPBACK_RTT_S
    r = dataclasses.replace
    stretch = factors.get("cpu_stretch") or 1.0
    late_s = (factors.get("db_timer_late_ms") or 0.0) / 1000.0
    rtt_s = max(LOOPBACK_RTT_S, 2.0 * (factors.get("to_server_p50_ms") or 0.0) / 1000.0)
    services = {}
    for name, svc in scenario.services.items():
        routes = {rn: r(rc, steps=tuple(r(st, cpu=st.cpu * stretch) if st.cpu else st for st in rc.steps))
                  for rn, rc in svc.routes.items()}
        services[name] = r(svc, routes=routes)
    databases = {name: r(db, rtt=db.rtt + late_s) for name, db in scenario.databases.items()}
    clients = {name: r(cl, transport=r(cl.transport, rtt=rtt_s)) for name, cl in scenario.clients.items()}
    return r(scenario, services=services, databases=databases, clients=clients)


def floor_of(fig: Figure, requests: float) -> float:
    return {"s": 0.5, "ms": 1.0, "count": 0.005 * max(requests, 1.0), "level": LEVEL_FLOOR, "ratio": 0.02,
            "MiB": 1.0}[fig.unit]


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if len(present) < (len(values) + 1) // 2:
        return None        # the event happened in fewer than half the real runs: "never"
    return float(statistics.median(present))


def _rel_error(s: float | None, real: float | None) -> float | None:
    if s is None or real is None:
        return None
    return (s - real) / real if real != 0 else (0.0 if s == 0 else math.inf)


def _verdict(fig: Figure, s: float | None, real: float | None, lo: float | None, hi: float | None,
             n_present: int, requests: float) -> str:
    if s is None and real is None:
        return "ok"
    if s is None or real is None:
        return "GAP"
    if abs(_rel_error(s, real)) <= TOLERANCE:
        return "ok"
    if lo is not None and lo <= s <= hi and n_present > 1:
        return "ok (in range)"
    if abs(s - real) <= floor_of(fig, requests):
        return "ok (below floor)"
    return "GAP"


def compare(sim: dict[str, float | None], real_runs: list[dict[str, float | None]],
            sim_machine: dict[str, float | None] | None = None) -> list[dict[str, Any]]:
    """Rows of the table: figure, sim, real median, real min and max, relative error, verdict.

    With ``sim_machine`` (the simulator run on ``machine_corrected``), a judged figure the plain
    simulator misses but the corrected one meets is ``ok (machine)``: the gap is the machine's
    (its CPU share, its timers, its per-request overhead), not the model's."""
    requests = _median([r.get("requests") for r in real_runs]) or 0.0
    rows = []
    for fig in FIGURES:
        values = [r.get(fig.key) for r in real_runs]
        real = _median(values)
        s = sim.get(fig.key)
        sm = sim_machine.get(fig.key) if sim_machine is not None else None
        present = [v for v in values if v is not None]
        lo = min(present) if present else None
        hi = max(present) if present else None
        if fig.key.startswith("errors.") and not s and not any(present):
            continue              # a kind neither saw
        verdict = "info"
        if fig.judged:
            verdict = _verdict(fig, s, real, lo, hi, len(present), requests)
            if verdict == "GAP" and sim_machine is not None \
                    and _verdict(fig, sm, real, lo, hi, len(present), requests) != "GAP":
                verdict = "ok (machine)"
        rows.append({"key": fig.key, "figure": fig.label, "unit": fig.unit, "sim": s, "real": real,
                     "real_min": lo, "real_max": hi, "real_runs": values, "rel_error": _rel_error(s, real),
                     "sim_machine": sm, "rel_error_machine": _rel_error(sm, real) if sim_machine is not None else None,
                     "verdict": verdict, "judged": fig.judged})
    return rows


def _num(v: float | None, unit: str) -> str:
    if v is None:
        return "never" if unit == "s" else "-"
    if unit in ("count", "level"):
        return f"{v:,.0f}"
    if unit in ("s", "ratio"):
        return f"{v:.2f}"
    return f"{v:.1f}"


def _rel(v: float | None) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "+inf"
    return f"{100 * v:+.0f}%"


def format_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    header = ("figure", "unit", "sim", "real (median)", "real range", "rel. error", "sim (machine)",
              "rel. error (machine)", "verdict")
    body = [(r["figure"], r["unit"], _num(r["sim"], r["unit"]), _num(r["real"], r["unit"]),
             f"{_num(r['real_min'], r['unit'])} .. {_num(r['real_max'], r['unit'])}" if r["real_min"] is not None
             else "-", _rel(r["rel_error"]), _num(r.get("sim_machine"), r["unit"]),
             _rel(r.get("rel_error_machine")), r["verdict"]) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in body])


# ------------------------------------------------------------------ the figure

SERIES: tuple[tuple[str, str, str], ...] = (
    ("open_fds", "open fds", "level"),
    ("goroutines", "goroutines", "level"),
    ("server_connections", "server connections", "level"),
    ("successes", "successes / s", "rate"),
    ("failures", "failures / s", "rate"),
)


def _series(result: RunResult, name: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "level":
        return np.asarray(result.levels["time_s"]), np.asarray(result.levels.get(name, []), dtype=float)
    w = result.windows
    step = result.scenario.sample_interval
    return np.asarray(w["time_s"]), np.asarray(w[name], dtype=float) / step


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    if n <= 1 or y.size < n:
        return y
    return np.convolve(y, np.ones(n) / n, mode="same")


def overlay_figure(sim: RunResult, real: list[RunResult], title: str):
    """Simulated series (one line) over the testbed's (median line, min-max band)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    fig = make_subplots(rows=len(SERIES), cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        subplot_titles=[label for _, label, _ in SERIES])
    smooth_n = max(1, int(round(1.0 / sim.scenario.sample_interval)))     # rates over 1 s
    for row, (name, label, kind) in enumerate(SERIES, start=1):
        curves = []
        for r in real:
            t, y = _series(r, name, kind)
            curves.append((t, _smooth(y, smooth_n) if kind == "rate" else y))
        if curves:
            n = min(len(c[0]) for c in curves)
            t = curves[0][0][:n]
            stack = np.vstack([c[1][:n] for c in curves])
            fig.add_trace(go.Scatter(x=np.concatenate([t, t[::-1]]),
                                     y=np.concatenate([stack.max(axis=0), stack.min(axis=0)[::-1]]),
                                     fill="toself", line={"width": 0}, fillcolor="rgba(31,119,180,0.2)",
                                     name="real Go (range)", showlegend=row == 1, hoverinfo="skip"), row=row, col=1)
            fig.add_trace(go.Scatter(x=t, y=np.median(stack, axis=0), line={"color": "#1f77b4"},
                                     name=f"real Go (median of {len(real)})", showlegend=row == 1), row=row, col=1)
        t, y = _series(sim, name, kind)
        fig.add_trace(go.Scatter(x=t, y=_smooth(y, smooth_n) if kind == "rate" else y,
                                 line={"color": "#d62728", "dash": "dash"}, name="stormsim",
                                 showlegend=row == 1), row=row, col=1)
        for w in sim.milestones.faults:
            fig.add_vrect(x0=w.start_at, x1=w.end_at, fillcolor="grey", opacity=0.08, line_width=0, row=row, col=1)
    fig.update_xaxes(title_text="time (s)", row=len(SERIES), col=1)
    fig.update_layout(title=title, height=220 * len(SERIES), width=1000, template="plotly_white",
                      legend={"orientation": "h", "y": 1.04, "x": 0})
    return fig


# ------------------------------------------------------------------ the command


def add_calibrate_parser(sub: Any) -> None:
    p = sub.add_parser("calibrate", help="run the simulator and the real Go testbed on the same scaled scenario "
                                         "and compare them")
    p.add_argument("scenario", help="a scenario file or the name of a shipped scenario")
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS, help=f"testbed runs (default {DEFAULT_RUNS})")
    p.add_argument("--scale", type=float, default=1.0, help="shrink rates and capacities by this fraction (default 1)")
    p.add_argument("--variant", default=None, help="apply one of the scenario's named variants first")
    p.add_argument("--seed", type=int, default=None, help="seed of both (default: the scenario's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a setting before scaling (repeatable), e.g. --set duration=30s")
    p.add_argument("--out", default=None, help="output folder (default out/calibrate/<scenario>/)")
    p.add_argument("--no-png", action="store_true", help="write the figure as HTML only")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON on stdout")


def calibrate(scenario, seed: int, runs: int, out_dir: Path, png: bool = True,
              log: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Run both, compare, write the table, the figure and ``calibration.json``; return the comparison."""
    from experiments.revision import attach_git_revision
    from experiments.run_files import write_atomic, write_run_outputs
    from experiments.testbed.command import run_once
    from sim.engine import run_scenario
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log(f"simulating {scenario.name} ...")
    sim = run_scenario(scenario, seed=seed)
    attach_git_revision(sim)
    write_run_outputs(sim, out_dir / "sim")
    real: list[RunResult] = []
    for i in range(runs):
        log(f"testbed run {i + 1}/{runs} ({scenario.duration:g} s of load) ...")
        real.append(run_once(scenario, seed, out_dir / f"testbed-{i + 1}"))
    factors = machine_factors(real)
    log(f"simulating {scenario.name} on the measured machine (CPU x{factors['cpu_stretch'] or 1:.2f}, "
        f"DB timers +{factors['db_timer_late_ms'] or 0:.2f} ms, to the handler {factors['to_server_p50_ms'] or 0:.2f} ms)")
    sim_machine = run_scenario(machine_corrected(scenario, factors), seed=seed)
    rows = compare(figures_of(sim), [figures_of(r) for r in real], figures_of(sim_machine))
    comparison = {
        "scenario": scenario.name, "seed": seed, "runs": runs, "tolerance": TOLERANCE, "machine": factors,
        "sim_wall_s": round(sim.wall_s, 3), "testbed_wall_s": [round(r.wall_s, 3) for r in real],
        "wall_s": round(time.perf_counter() - started, 3),
        "gaps": [r["key"] for r in rows if r["verdict"] == "GAP"],
        "rows": rows,
        "sim_summary": sim.summary, "sim_machine_summary": sim_machine.summary,
        "real_summaries": [r.summary for r in real],
    }
    write_atomic(out_dir / "calibration.json", json.dumps(comparison, indent=1, default=str) + "\n")
    write_atomic(out_dir / "calibration.md", format_table(rows, markdown=True) + "\n")
    from experiments.plot_cli import ExportError, export_figure
    fig = overlay_figure(sim, real, f"{scenario.name}: stormsim vs real Go (seed {seed})")
    comparison["figures"] = [str(export_figure(fig, out_dir / "calibration.html", "html"))]
    if png:
        try:
            comparison["figures"].append(str(export_figure(fig, out_dir / "calibration.png", "png")))
        except ExportError as exc:
            log(f"calibrate: no PNG: {exc}")
    return comparison


def run_calibrate(args: argparse.Namespace) -> int:
    from experiments.cli import BadInput, _check_seed, _prepare_out_dir
    from experiments.testbed.build import GoMissing, go_version
    from experiments.testbed.command import prepare
    from experiments.testbed.run import TestbedError
    _check_seed(args.seed)
    if args.runs < 1:
        raise BadInput(f"--runs: {args.runs} is not a number of testbed runs (at least 1)")
    scenario = prepare(args.scenario, args.overrides, args.variant, args.scale)
    try:
        go_version()
    except GoMissing as exc:
        raise BadInput(str(exc)) from None
    seed = scenario.seed if args.seed is None else args.seed
    out_dir = _prepare_out_dir(Path(args.out) if args.out else Path("out") / "calibrate" / scenario.name)
    try:
        comparison = calibrate(scenario, seed, args.runs, out_dir, png=not args.no_png,
                               log=lambda m: print(m, file=sys.stderr))
    except TestbedError as exc:
        print(f"stormsim: testbed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({k: v for k, v in comparison.items()
                          if k not in ("sim_summary", "sim_machine_summary", "real_summaries")},
                         default=str))
        return 0
    m = comparison["machine"]
    print(f"\n{scenario.name}: stormsim vs real Go (net/http, {go_version().split()[2]}), seed {seed}, "
          f"{args.runs} testbed run(s); rel. error = (sim - real median) / real median; machine: CPU steps "
          f"x{m['cpu_stretch'] or 1:.2f}, DB timers +{m['db_timer_late_ms'] or 0:.2f} ms, "
          f"to the handler {m['to_server_p50_ms'] or 0:.2f} ms\n")
    print(format_table(comparison["rows"]))
    gaps = comparison["gaps"]
    print(f"\n{len(gaps)} judged figure(s) beyond {TOLERANCE:.0%}" + (f": {', '.join(gaps)}" if gaps else ""))
    print(f"files: {out_dir}/calibration.md, calibration.json, " + ", ".join(Path(f).name for f in comparison["figures"]))
    return 0
