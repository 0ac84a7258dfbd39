"""The policy comparison of docs/scenarios.md: every variant of a scenario over several seeds.

    .venv/bin/python -m experiments.policy_table [SCENARIO] [--seeds 5] [--jobs 2] [--variants a,b]

Runs each named variant of SCENARIO (default ``policy-storm``) for seeds 1..N on the
same random numbers per seed, and prints one Markdown row per variant: the outcomes
over the seeds, then the median over the seeds of the policy KPIs (docs/outputs.md).
Progress goes to stderr. Replications with confidence intervals and sweeps are the
experiments issue's ``stormsim sweep``; this is the small fixed table the docs quote.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from experiments.catalog import resolve_scenario
from sim.engine import run_scenario
from sim.scenario_loader import ScenarioError, load_scenario

COLUMNS: tuple[tuple[str, str, str], ...] = (
    # (summary key, header, format)
    ("success_rate", "success", "{:.1%}"),
    ("attempts_per_request", "attempts/req", "{:.2f}"),
    ("goodput_during_fault_rps", "goodput in fault (req/s)", "{:.0f}"),
    ("collapse_time_s", "collapse after trigger (s)", "{:.1f}"),
    ("time_to_trip_s", "trip after trigger (s)", "{:.1f}"),
    ("time_to_recover_s", "healthy after fault end (s)", "{:.1f}"),
    ("peak_memory_mib", "peak memory (MiB)", "{:.0f}"),
    ("wasted_work_fraction", "wasted work", "{:.0%}"),
)


def _one(job: tuple[str, str, int]) -> tuple[str, int, dict[str, Any]]:
    path, variant, seed = job
    result = run_scenario(load_scenario(path, variant=variant), seed=seed)
    return variant, seed, result.summary


def _median(values: list[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present else None


def policy_rows(path: str, variants: list[str], seeds: list[int], jobs: int) -> list[list[str]]:
    jobs_list = [(path, v, s) for v in variants for s in seeds]
    by_variant: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for done, (variant, seed, summary) in enumerate(pool.map(_one, jobs_list), start=1):
            by_variant[variant].append(summary)
            print(f"\r  {done}/{len(jobs_list)} runs", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    rows = []
    for variant in variants:
        summaries = by_variant[variant]
        outcomes = Counter(s["outcome"] for s in summaries)
        row = [f"`{variant}`", ", ".join(f"{n} {o}" for o, n in outcomes.most_common())]
        for key, _, fmt in COLUMNS:
            values = [s[key] for s in summaries]
            median = _median(values)
            missing = sum(v is None for v in values)
            cell = "-" if median is None else fmt.format(median)
            if median is not None and missing:
                cell += f" ({len(values) - missing}/{len(values)})"
            row.append(cell)
        rows.append(row)
    return rows


def markdown(rows: list[list[str]]) -> str:
    headers = ["variant", "outcomes", *(h for _, h, _ in COLUMNS)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.policy_table", description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default="policy-storm")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 1..N (default 5)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--variants", default="", help="comma-separated variants (default: all of the file's)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        print(f"stormsim: --seeds and --jobs must be >= 1 (got {args.seeds}, {args.jobs})", file=sys.stderr)
        return 2
    try:
        path = str(resolve_scenario(args.scenario))
        base = load_scenario(path)
        variants = [v for v in args.variants.split(",") if v] or list(base.variants)
        for variant in variants:
            load_scenario(path, variant=variant)
    except ScenarioError as error:
        print(f"stormsim: {error}", file=sys.stderr)
        return 2
    print(markdown(policy_rows(path, variants, list(range(1, args.seeds + 1)), args.jobs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
