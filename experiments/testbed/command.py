"""``stormsim testbed``: run a scenario on the real Go server and load generator.

    stormsim testbed SCENARIO [--scale F] [--seed N] [--set path=value ...] [--variant NAME]
                              [--out DIR] [--json]

The scenario is checked against what the testbed can express, scaled by ``--scale``
(rates and capacities together), put on the loopback network, and run once. The output
folder holds the same files as ``stormsim run`` (summary.json, timeseries.csv, the
records, report.html) plus ``testbed/`` with what the Go programs wrote.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from experiments.testbed.build import GoMissing, go_version
from experiments.testbed.config import for_testbed
from sim.result import RunResult
from sim.schema import Scenario


def add_testbed_parser(sub: Any) -> None:
    p = sub.add_parser("testbed", help="run a scenario on a real Go net/http server and http.Client on loopback")
    p.add_argument("scenario", help="a scenario file or the name of a shipped scenario")
    p.add_argument("--scale", type=float, default=1.0,
                   help="shrink rates and capacities (fds, pools, backlog, memory, client instances) together "
                        "by this fraction, e.g. 0.25 (default 1)")
    p.add_argument("--variant", default=None, help="apply one of the scenario's named variants first")
    p.add_argument("--out", default=None, help="output folder (default out/testbed/<scenario>-seed<N>/)")
    p.add_argument("--seed", type=int, default=None, help="seed of the arrivals (default: the scenario's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                   help="override a setting before scaling (repeatable), e.g. --set duration=30s")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout and nothing else there")


def prepare(argument: str, overrides: list[str], variant: str | None, scale: float) -> Scenario:
    """The scenario as the testbed (and the simulator, when calibrating) runs it."""
    from experiments.cli import BadInput, _load
    if not 0 < scale <= 1:
        raise BadInput(f"--scale: {scale:g} is not a fraction in (0, 1]")
    scenario = _load(argument, overrides, variant, None)
    return for_testbed(scenario, scale)


def run_once(scenario: Scenario, seed: int, out_dir: Path, progress=None, write: bool = True) -> RunResult:
    """One testbed run of ``scenario`` (in its testbed form); outputs written to ``out_dir``."""
    from experiments.testbed.collect import collect
    from experiments.testbed.run import run_testbed_raw
    raw = run_testbed_raw(scenario, seed, out_dir / "testbed", progress=progress)
    result = collect(raw, scenario, seed, {"go": go_version(), "wall_s": round(raw.wall_s, 3)})
    if write:
        from experiments.revision import attach_git_revision
        from experiments.run_files import write_run_outputs
        attach_git_revision(result)
        write_run_outputs(result, out_dir)
    return result


def run_testbed(args: argparse.Namespace) -> int:
    from experiments.cli import BadInput, _check_seed, _prepare_out_dir, _progress_bar
    from experiments.console import format_summary
    _check_seed(args.seed)
    scenario = prepare(args.scenario, args.overrides, args.variant, args.scale)
    try:
        go_version()
    except GoMissing as exc:
        raise BadInput(str(exc)) from None
    seed = scenario.seed if args.seed is None else args.seed
    out_dir = _prepare_out_dir(Path(args.out) if args.out else Path("out") / "testbed" / f"{scenario.name}-seed{seed}")
    print(f"testbed: {scenario.name}, {scenario.duration:g} s of load on 127.0.0.1 ...", file=sys.stderr)
    progress = _progress_bar(f"testbed {scenario.name}")
    from experiments.testbed.run import TestbedError
    try:
        result = run_once(scenario, seed, out_dir, progress=progress)
    except TestbedError as exc:
        print(f"stormsim: testbed: {exc}", file=sys.stderr)
        return 1
    if progress is not None:
        sys.stderr.write("\r" + " " * 70 + "\r")
    if args.json:
        print(json.dumps(result.summary))
    else:
        print(format_summary(result, str(out_dir)))
    return 0
