"""The `stormsim` command line: run a scenario, compare scenarios, list the shipped ones.

    stormsim run SCENARIO [--seed N] [--set path=value ...] [--variant NAME] [--out DIR] [--json]
    stormsim compare [SCENARIO ...] [--default] [--seed N] [--jobs N] [--out DIR] [--json]
    stormsim scenarios
    stormsim sweep SWEEP.yaml [--jobs N] [--scheduler ADDRESS] [--out DIR] [--retry-failed]
    stormsim boundary SCENARIO --param PATH --lo A --hi B [--reps R] [--outcome collapse] [--level 0.5]
    stormsim plot RESULTS [--figure KIND] [--x PATH --y PATH --metric KEY] [--format html|png|svg|pdf]
    stormsim validate [--quick] [--out DIR] [--jobs N] [--json]
    stormsim ui [--port 8501]
    stormsim testbed SCENARIO [--scale F] [--out DIR] [--json]
    stormsim calibrate SCENARIO [--runs N] [--scale F] [--out DIR] [--json]

Bad input (an unknown key, a negative timeout, ``5 parsecs``, a missing file)
prints one line naming the field and the value and exits with status 2,
without a traceback and without touching files already written. Output files
are written atomically at the end of a run, so an interrupted run loses only
itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Sequence

from experiments.catalog import DEFAULT_SCENARIO, SEED_VARIANTS, resolve_scenario, shipped_scenarios, split_variant
from experiments.console import format_comparison, format_summary
from experiments.revision import attach_git_revision
from sim.engine import run_scenario
from sim.result import RunResult
from sim.scenario_loader import ScenarioError, load_scenario
from sim.schema import Scenario
from sim.units import parse_duration
from sim.scenario_checks import check_supported

EXIT_OK = 0
EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """A problem with what the user gave us: reported in one line, exit status 2."""


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (naming the option and value) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise BadInput(message)


VALUE_OPTIONS = ("--seed", "--set", "--max-wall-time", "--variant", "--out", "--jobs", "--scheduler",
                 "--lo", "--hi", "--tolerance", "--level", "--port")


def _attach_option_values(argv: Sequence[str]) -> list[str]:
    """``--max-wall-time -1s`` -> ``--max-wall-time=-1s``: a value that starts with '-' stays a value."""
    out: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if item in VALUE_OPTIONS and i + 1 < len(items):
            out.append(f"{item}={items[i + 1]}")
            i += 2
            continue
        out.append(item)
        i += 1
    return out


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="stormsim", description="Discrete-event simulator of cascading timeout storms in Go HTTP services.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_OneLineParser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's `seed`)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                       help="override a setting, e.g. --set clients.web.transport.client_timeout=3s (repeatable)")
        p.add_argument("--max-wall-time", default=None, metavar="DURATION",
                       help="end a run after this much wall-clock time (e.g. 2m); off by default")
        p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout and nothing else there")

    run = sub.add_parser("run", help="run one scenario and write its report")
    run.add_argument("scenario", help="a scenario file or the name of a shipped scenario (see `stormsim scenarios`)")
    run.add_argument("--variant", default=None, help="apply one of the scenario's named variants first")
    run.add_argument("--out", default=None, help="output folder (default out/<scenario>-seed<N>/)")
    common(run)

    compare = sub.add_parser("compare", help="run several scenarios on the same seed and compare them")
    compare.add_argument("scenarios", nargs="*", help="scenario files or shipped names")
    compare.add_argument("--default", action="store_true",
                         help=f"compare the S1 seed variants ({', '.join(SEED_VARIANTS)})")
    compare.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)")
    compare.add_argument("--out", default="out", help="output root (default out/): one folder per run plus compare/")
    common(compare)

    sub.add_parser("scenarios", help="list the shipped scenarios and their variants")

    sweep = sub.add_parser("sweep", help="run a parameter sweep (a sweep file: experiments/sweeps/) durably and resumably")
    sweep.add_argument("sweep", help="a sweep file (YAML) or the name of a shipped sweep")
    sweep.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                       help="local worker processes (default 2; 1 = in this process)")
    sweep.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run on an existing Dask distributed scheduler, e.g. tcp://10.0.0.5:8786")
    sweep.add_argument("--out", default=None, help="output folder (default out/sweeps/<name>/); rerun to resume")
    sweep.add_argument("--retry-failed", action="store_true", help="run again the runs stored as failed")
    sweep.add_argument("--json", action="store_true", help="print the outcome as JSON on stdout")

    from experiments.boundary import add_boundary_parser
    from experiments.plot_cli import add_plot_parser
    from experiments.validate import add_validate_parser
    add_boundary_parser(sub)
    add_plot_parser(sub)
    add_validate_parser(sub)
    from experiments.calibrate import add_calibrate_parser
    from experiments.testbed.command import add_testbed_parser
    add_testbed_parser(sub)
    add_calibrate_parser(sub)

    ui = sub.add_parser("ui", help="start the dashboard (Streamlit) on 127.0.0.1")
    ui.add_argument("--port", type=int, default=8501, help="port on 127.0.0.1 (default 8501)")
    return parser


def _check_seed(seed: int | None) -> None:
    if seed is not None and seed < 0:
        raise BadInput(f"--seed: {seed} is not a seed (a whole number >= 0)")


def _prepare_out_dir(path: Path) -> Path:
    """Create the output folder before the run, so a bad --out fails fast and costs nothing."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--out: {str(path)!r} cannot be a folder ({exc.strerror or exc})") from None
    return path


def _load(argument: str, overrides: Sequence[str], variant: str | None, max_wall_time: str | None) -> Scenario:
    argument, named_variant = split_variant(argument)
    if named_variant is not None:
        if variant is not None and variant != named_variant:
            raise BadInput(f"--variant: {variant!r} conflicts with {named_variant!r} named in the scenario argument")
        variant = named_variant
    extra = list(overrides)
    if max_wall_time is not None:
        try:
            parse_duration(max_wall_time)
        except ValueError as exc:
            raise BadInput(f"--max-wall-time: {exc}") from None
        extra.append(f"limits.max_wall_time={max_wall_time}")
    scenario = load_scenario(resolve_scenario(argument), overrides=extra, variant=variant)
    check_supported(scenario)
    return _apply_variant_name(scenario, variant)


def _run_dir(root: Path, scenario: Scenario, seed: int) -> Path:
    return root / f"{scenario.name}-seed{seed}"


def _apply_variant_name(scenario: Scenario, variant: str | None) -> Scenario:
    """Runs of a variant are named after it, so their outputs do not overwrite the base's."""
    if variant is None:
        return scenario
    import dataclasses
    return dataclasses.replace(scenario, name=f"{scenario.name}@{variant}")


def _progress_bar(label: str):
    if not sys.stderr.isatty():
        return None
    started = time.perf_counter()

    def show(fraction: float) -> None:
        width = 30
        done = int(fraction * width)
        elapsed = time.perf_counter() - started
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else 0.0
        sys.stderr.write(f"\r{label} [{'#' * done}{'.' * (width - done)}] {fraction:4.0%}  eta {eta:4.0f} s ")
        sys.stderr.flush()
    return show


def _write(result: RunResult, out_dir: Path) -> None:
    from experiments.run_files import write_run_outputs   # plotly and pandas load only when writing
    attach_git_revision(result)
    write_run_outputs(result, out_dir)


def cmd_run(args: argparse.Namespace) -> int:
    _check_seed(args.seed)
    scenario = _load(args.scenario, args.overrides, args.variant, args.max_wall_time)
    seed = scenario.seed if args.seed is None else args.seed
    out_dir = _prepare_out_dir(Path(args.out) if args.out else _run_dir(Path("out"), scenario, seed))
    progress = _progress_bar(scenario.name)
    result = run_scenario(scenario, seed=seed, progress=progress)
    if progress is not None:
        sys.stderr.write("\r" + " " * 70 + "\r")
    _write(result, out_dir)
    if args.json:
        print(json.dumps(result.summary))
    else:
        print(format_summary(result, str(out_dir)))
    return EXIT_OK


def _compare_one(path: str, overrides: Sequence[str], max_wall_time: str | None, seed: int | None,
                 out_root: str) -> RunResult:
    scenario = _load(path, overrides, None, max_wall_time)
    run_seed = scenario.seed if seed is None else seed
    result = run_scenario(scenario, seed=run_seed)
    _write(result, _run_dir(Path(out_root), scenario, run_seed))
    return result


def cmd_compare(args: argparse.Namespace) -> int:
    _check_seed(args.seed)
    names = list(args.scenarios)
    if args.default or not names:
        names = list(SEED_VARIANTS) + names
    paths = []
    for n in names:
        base, variant = split_variant(n)
        paths.append(str(resolve_scenario(base)) + (f"@{variant}" if variant else ""))
    for path in paths:   # validate everything before spending time on any run
        _load(path, args.overrides, None, args.max_wall_time)
    if args.jobs < 1:
        raise BadInput(f"--jobs: {args.jobs} is not a number of worker processes (at least 1)")
    _prepare_out_dir(Path(args.out) / "compare")
    log = sys.stderr
    log.write(f"running {len(paths)} scenarios on {args.jobs} worker process(es)...\n")
    started = time.perf_counter()
    results: dict[str, RunResult] = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(_compare_one, p, args.overrides, args.max_wall_time, args.seed, args.out): p
                   for p in paths}
        for done, future in enumerate(as_completed(futures), start=1):
            result = future.result()
            results[futures[future]] = result
            log.write(f"  [{done}/{len(paths)}] {result.summary['scenario']}: {result.summary['outcome']} "
                      f"({result.wall_s:.1f} s)\n")
    ordered = [results[p] for p in paths]
    from experiments.report import write_comparison_html
    compare_dir = Path(args.out) / "compare"
    compare_dir.mkdir(parents=True, exist_ok=True)
    write_comparison_html([(r.summary["scenario"], r) for r in ordered], compare_dir / "comparison.html")
    (compare_dir / "comparison.json").write_text(json.dumps([r.summary for r in ordered], indent=2) + "\n")
    if args.json:
        print(json.dumps([r.summary for r in ordered]))
        return EXIT_OK
    seed_text = "each scenario's own seed" if args.seed is None else f"seed {args.seed}"
    print(f"\n{len(ordered)} scenarios, {seed_text}, in {time.perf_counter() - started:.1f} s wall\n")
    print(format_comparison(ordered))
    print(f"\ncomparison: {compare_dir / 'comparison.html'}")
    print("reports:    " + "\n            ".join(
        str(_run_dir(Path(args.out), r.scenario, r.seed) / "report.html") for r in ordered))
    return EXIT_OK


def cmd_scenarios(_args: argparse.Namespace) -> int:
    for name, path in shipped_scenarios().items():
        try:
            scenario = load_scenario(path)
            description = " ".join(scenario.description.split())
            variants = list(scenario.variants)
        except ScenarioError as exc:
            description, variants = f"(invalid: {exc})", []
        marker = "*" if name == DEFAULT_SCENARIO else " "
        print(f"{marker} {name:32s} {description[:100]}")
        for variant in variants:
            print(f"    {name}@{variant}")
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    from experiments.sweep_file import load_sweep, resolve_sweep
    from experiments.sweep_runner import run_sweep
    from experiments.sweep_store import SweepStore
    if args.jobs < 1:
        raise BadInput(f"--jobs: {args.jobs} is not a number of worker processes (at least 1)")
    spec = load_sweep(resolve_sweep(args.sweep))
    out_dir = Path(args.out) if args.out else Path("out") / "sweeps" / spec.name
    store = SweepStore(out_dir)
    where = f"the Dask scheduler at {args.scheduler}" if args.scheduler else f"{args.jobs} local worker process(es)"
    print(f"sweep {spec.name}: {len(spec.factors)} factor(s), design {spec.design}, "
          f"{spec.replications} replication(s), on {where} -> {out_dir}", file=sys.stderr)
    outcome = run_sweep(spec, store, jobs=args.jobs, scheduler=args.scheduler, retry_failed=args.retry_failed)
    tables = _finish_sweep(out_dir)
    stored = outcome.already_done + outcome.finished
    all_rows = store.read_rows()
    n_failed = sum(1 for r in {row["run_key"]: row for row in all_rows}.values() if r.get("status") != "ok")
    rate = outcome.finished / outcome.wall_s if outcome.wall_s > 0 else 0.0
    report = {"sweep": spec.name, "out": str(out_dir), "runs_total": outcome.runs_total,
              "already_done": outcome.already_done, "ran": outcome.finished, "ok_now": outcome.ok,
              "failed_now": outcome.failed, "failed_total": n_failed, "interrupted": outcome.interrupted,
              "wall_s": round(outcome.wall_s, 3), "runs_per_wall_s": round(rate, 3),
              "files": {k: str(v) for k, v in tables.items()}}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{spec.name}: {stored}/{outcome.runs_total} runs stored ({outcome.already_done} from before, "
              f"{outcome.finished} now in {outcome.wall_s:.1f} s, {rate:.2f} runs/s); {n_failed} failed")
        for name, path in tables.items():
            print(f"  {name:8s} {path}")
    if outcome.interrupted:
        print(f"stormsim: interrupted: {stored} of {outcome.runs_total} runs are stored in {out_dir}; "
              f"run the same command again to resume", file=sys.stderr)
        return 130
    return 1 if n_failed else EXIT_OK


def _finish_sweep(out_dir: Path) -> dict[str, Path]:
    """The derived tables and the sweep report from what the store holds."""
    from experiments.sweep_report import write_sweep_report
    from experiments.sweep_summary import read_manifest, read_runs_jsonl, summarize_cells, write_tables
    manifest = read_manifest(out_dir)
    runs = read_runs_jsonl(out_dir / "runs.jsonl")
    if runs.empty:
        return {}
    # a run stored again (--retry-failed) counts once, as its last row; tables in run order
    runs = runs.drop_duplicates("run_key", keep="last").sort_values(["cell", "replication"]).reset_index(drop=True)
    cells = summarize_cells(runs, manifest["factors"], manifest["metrics"])
    write_tables(out_dir, runs, cells)
    report = write_sweep_report(out_dir)
    return {"runs": out_dir / "runs.parquet", "cells": out_dir / "cells.csv", "report": report}


def cmd_ui(args: argparse.Namespace) -> int:
    """Streamlit runs as a child process, so that `experiments` never imports it; Ctrl-C ends it."""
    import importlib.util
    import subprocess
    if not 1 <= args.port <= 65535:
        raise BadInput(f"--port: {args.port} is not a TCP port (1-65535)")
    if importlib.util.find_spec("streamlit") is None:
        raise BadInput("the dashboard needs streamlit: run `make ui` (it installs the project's set-up)")
    app = Path(__file__).resolve().parent.parent / "dashboards" / "app.py"
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", "127.0.0.1",
               "--server.port", str(args.port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false"]
    import signal
    print(f"stormsim dashboard: http://127.0.0.1:{args.port}  (Ctrl-C to stop)", file=sys.stderr)
    child = subprocess.Popen(command)

    def stop_child(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt   # SIGTERM/SIGHUP (kill, a supervisor, a closed terminal) end it like Ctrl-C
    previous = {sig: signal.signal(sig, stop_child) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    from experiments.boundary import run_boundary
    from experiments.calibrate import run_calibrate
    from experiments.plot_cli import run_plot
    from experiments.testbed.command import run_testbed
    from experiments.validate import ValidateInputError, run_validate
    handlers = {"run": cmd_run, "compare": cmd_compare, "scenarios": cmd_scenarios, "sweep": cmd_sweep,
                "boundary": run_boundary, "plot": run_plot, "ui": cmd_ui,
                "testbed": run_testbed, "calibrate": run_calibrate, "validate": run_validate}
    try:
        args = _parser().parse_args(_attach_option_values(sys.argv[1:] if argv is None else argv))
        return handlers[args.command](args)
    except (ScenarioError, BadInput, ValidateInputError) as exc:
        print(f"stormsim: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("stormsim: interrupted; files already written are untouched", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
