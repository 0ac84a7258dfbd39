"""`stormsim validate`: run the validation suite and write its report.

    stormsim validate [--quick] [--out DIR] [--jobs N] [--json]

``--quick`` is the CI variant (a few minutes on two cores); without it the full suite runs
(rho up to 0.95, every scenario variant, more replications: tens of minutes). Progress goes
to stderr, one line per finished group of runs; the report is written to DIR (default
``out/validation`` or ``out/validation-quick``) as ``validation.json`` and ``validation.html``.
Exit status 0 when every check passed or is a known limitation, 1 when one failed or could
not run, 2 for bad input. docs/validation.md explains every check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class ValidateInputError(ValueError):
    """Bad command-line input: one line, exit status 2."""


def add_validate_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("validate", help="run the validation suite (queueing theory, conservation, monotonicity, "
                                        "reference semantics, convergence) and write its report")
    p.add_argument("--quick", action="store_true", help="the CI variant: rho <= 0.8, base scenarios, a few minutes")
    p.add_argument("--out", default=None, help="output folder (default out/validation or out/validation-quick)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)")
    p.add_argument("--json", action="store_true", help="print the report's summary as JSON on stdout")
    return p


def run_validate(args: argparse.Namespace) -> int:
    from experiments.validation.report import write_report
    from experiments.validation.suite import run_suite
    if args.jobs < 1:
        raise ValidateInputError(f"--jobs: {args.jobs} is not a number of worker processes (at least 1)")
    out_dir = Path(args.out) if args.out else Path("out") / ("validation-quick" if args.quick else "validation")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValidateInputError(f"--out: {str(out_dir)!r} cannot be a folder ({exc.strerror or exc})") from None
    report = run_suite(quick=args.quick, jobs=args.jobs)
    json_path, html_path = write_report(report, out_dir)
    s = report["summary"]
    if args.json:
        print(json.dumps({"summary": s, "json": str(json_path), "html": str(html_path)}))
    else:
        worst = s.get("max_relative_error")
        print(f"validation ({report['suite']}): {s['checks']} checks: {s['passed']} pass, {s['known_limitations']} "
              f"known limitation(s), {s['failed']} fail, {s['errors']} error(s); {s['info']} measurements; "
              f"{report['wall_s']:.0f} s wall")
        if worst:
            print(f"largest relative error of the {s['analytic_checks']} analytic checks: "
                  f"{100 * worst['value']:.2f}% ({worst['check']})")
        for key, lim in report["known_limitations"].items():
            print(f"known limitation {key}: {len(lim['checks'])} check(s); see the report")
        for c in report["checks"]:
            if c["status"] in ("fail", "error"):
                print(f"  {c['status']}: {c['id']}: {c['detail'][:200]}")
        print(f"report: {html_path}\njson:   {json_path}")
    return EXIT_OK if s["ok"] else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - `python -m experiments.validate`
    parser = argparse.ArgumentParser(prog="stormsim")
    sub = parser.add_subparsers(dest="command", required=True)
    add_validate_parser(sub)
    args = parser.parse_args(["validate", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run_validate(args)
    except ValidateInputError as exc:
        print(f"stormsim: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
