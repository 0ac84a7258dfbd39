"""The calibration suite behind docs/calibration.md: every S1 seed variant and the slow-header scenario.

    python -m experiments.testbed.suite [--runs 3] [--scale 0.25] [--out out/calibration] [--docs]
                                        [--only NAME ...]

Runs ``stormsim calibrate`` on each case of ``CASES`` (the scenario's own duration and fault
timeline, scaled by ``--scale``), writes ``suite.md`` (every table, with the machine
factors) and ``suite.json`` into ``--out``, and with ``--docs`` copies each overlay figure to
``docs/figures/calibration-<case>.png``. At the default settings it takes about half an
hour of wall time on a 2-core machine (three minutes of real load per case).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from experiments.calibrate import TOLERANCE, calibrate, format_table
from experiments.testbed.build import go_version
from experiments.testbed.command import prepare

CASES: tuple[tuple[str, str], ...] = (
    ("seed-collapse", "baseline: no server timeouts, handlers ignore their context, 30 s client timeout, 3 attempts"),
    ("seed-server-timeouts", "the write-up's four server timeouts"),
    ("seed-db-deadline", "a 2 s deadline on every query (context.WithTimeout)"),
    ("seed-client-timeout", "3 s client timeout, handlers honour their context"),
    ("seed-client-timeout-ignored", "3 s client timeout, handlers ignore their context"),
    ("seed-timeouthandler", "http.TimeoutHandler(2 s), handlers honour their context"),
    ("slowloris", "S2: mute and dribbling connections, the zero http.Server"),
    ("slowloris@read-header-timeout", "S2 with ReadHeaderTimeout 2 s"),
)
DOCS_FIGURES = Path(__file__).resolve().parents[2] / "docs" / "figures"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.testbed.suite", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--scale", type=float, default=0.25)
    p.add_argument("--out", default="out/calibration")
    p.add_argument("--docs", action="store_true", help="copy the figures to docs/figures/calibration-<case>.png")
    p.add_argument("--only", nargs="*", default=None, help="run only these cases")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    started = time.perf_counter()
    version = go_version()
    for case, what in CASES:
        if args.only and case not in args.only:
            continue
        scenario = prepare(case, [], None, args.scale)
        case_dir = out / case.replace("@", "-")
        print(f"[{time.perf_counter() - started:6.0f} s] {case} ...", file=sys.stderr, flush=True)
        comparison = calibrate(scenario, scenario.seed, args.runs, case_dir,
                               log=lambda m: print(f"    {m}", file=sys.stderr, flush=True))
        comparison["what"] = what
        results[case] = comparison
        if args.docs:
            png = case_dir / "calibration.png"
            if png.is_file():
                DOCS_FIGURES.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(png, DOCS_FIGURES / f"calibration-{case.replace('@', '-')}.png")
        _write(out, results, args, version, time.perf_counter() - started)
    print(f"done in {time.perf_counter() - started:.0f} s: {out / 'suite.md'}", file=sys.stderr)
    return 0


def _write(out: Path, results: dict, args: argparse.Namespace, version: str, wall_s: float) -> None:
    lines = [f"Calibration suite: scale {args.scale:g}, {args.runs} testbed run(s) per case, {version}, "
             f"{wall_s:.0f} s wall. Tolerance {TOLERANCE:.0%}.", ""]
    for case, c in results.items():
        m = c["machine"]
        lines += [f"### {case}", "", c["what"] + ".", "",
                  f"Machine: CPU steps x{(m['cpu_stretch'] or 1):.2f}, DB timers +{(m['db_timer_late_ms'] or 0):.2f} ms, "
                  f"attempt start to handler {(m['to_server_p50_ms'] or 0):.2f} ms (medians). "
                  f"Gaps: {', '.join(c['gaps']) or 'none'}.", "", format_table(c["rows"], markdown=True), ""]
    (out / "suite.md").write_text("\n".join(lines), encoding="utf-8")
    slim = {case: {k: v for k, v in c.items() if k not in ("sim_summary", "sim_machine_summary", "real_summaries")}
            for case, c in results.items()}
    (out / "suite.json").write_text(json.dumps(slim, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
