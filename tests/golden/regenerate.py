"""Regenerate the golden figures of the shipped scenarios: one JSON per scenario and variant.

    .venv/bin/python tests/golden/regenerate.py            # rewrite every golden file
    .venv/bin/python tests/golden/regenerate.py --check    # only say which ones changed
    .venv/bin/python tests/golden/regenerate.py --only cascade-618 fanout-tail   # these (and their variants)

Each file holds the summary keys that tell the scenario's story, at its default seed,
rounded where noted (``FIGURES``). ``tests/test_scenarios_golden.py`` compares them
exactly: the model is deterministic, so any change is a change of behaviour. A commit
that changes a golden file says why in a sentence of its commit message.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from experiments.catalog import shipped_scenarios
from sim.engine import run_scenario
from sim.scenario_loader import load_scenario

GOLDEN_DIR = Path(__file__).resolve().parent
REGENERATE = ".venv/bin/python tests/golden/regenerate.py"

# summary key -> decimals to round to (None: exact as the summary has it; 0: whole number)
FIGURES: dict[str, int | None] = {
    "outcome": None,
    "collapse_at_s": None,
    "fd_exhausted_at_s": None,
    "oom_killed_at_s": None,
    "max_server_connections": None,
    "max_open_fds": None,
    "max_goroutines": None,
    "peak_memory_mib": 1,      # 0.1 MiB
    "p99_ms": 0,               # 1 ms
    "success_rate": 4,         # 1e-4
    "errors": None,
}


def golden_cases() -> list[tuple[str, str | None]]:
    """Every shipped scenario (name, None) followed by each of its variants (name, variant)."""
    cases: list[tuple[str, str | None]] = []
    for name, path in shipped_scenarios().items():
        cases.append((name, None))
        cases.extend((name, variant) for variant in load_scenario(path).variants)
    return cases


def case_id(name: str, variant: str | None) -> str:
    return name if variant is None else f"{name}@{variant}"


def golden_path(name: str, variant: str | None) -> Path:
    return GOLDEN_DIR / f"{case_id(name, variant)}.json"


def _rounded(value: Any, decimals: int | None) -> Any:
    if decimals is None or value is None:
        return value
    if decimals == 0:
        return int(round(value))
    return round(float(value), decimals)


# service-graph runs also pin the cascade: which services collapsed, in order
GRAPH_FIGURES: tuple[str, ...] = ("blast_radius", "services_collapsed")


def golden_figures(summary: dict[str, Any]) -> dict[str, Any]:
    """The story-telling keys of a run's summary, rounded as ``FIGURES`` says (and, for a
    service-graph run, ``GRAPH_FIGURES`` as they are)."""
    figures = {key: _rounded(summary[key], decimals) for key, decimals in FIGURES.items()}
    if "blast_radius" in summary:
        figures.update((key, summary[key]) for key in GRAPH_FIGURES)
    return figures


def golden_record(name: str, variant: str | None, summary: dict[str, Any]) -> dict[str, Any]:
    return {"scenario": case_id(name, variant), "seed": summary["seed"], "figures": golden_figures(summary)}


def compute(name: str, variant: str | None) -> dict[str, Any]:
    scenario = load_scenario(shipped_scenarios()[name], variant=variant)
    return golden_record(name, variant, run_scenario(scenario).summary)


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, allow_nan=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a golden file differs")
    parser.add_argument("--only", nargs="+", metavar="SCENARIO",
                        help="only these shipped scenarios (with their variants); no stale-file check")
    args = parser.parse_args(argv)
    cases = golden_cases()
    wanted = {golden_path(*case).name for case in cases}
    if args.only:
        unknown = sorted(set(args.only) - {name for name, _ in cases})
        if unknown:
            parser.error(f"--only: no shipped scenario named {', '.join(unknown)}")
        cases = [case for case in cases if case[0] in args.only]
    changed = []
    for name, variant in cases:
        path = golden_path(name, variant)
        text = dumps(compute(name, variant))
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old == text:
            print(f"  same     {path.name}")
            continue
        changed.append(path.name)
        if old is not None:
            before, after = json.loads(old)["figures"], json.loads(text)["figures"]
            diffs = [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in after if before.get(k) != after.get(k)]
            print(f"  changed  {path.name}: " + "; ".join(diffs))
        else:
            print(f"  new      {path.name}")
        if not args.check:
            path.write_text(text, encoding="utf-8")
    stale = [] if args.only else sorted(p.name for p in GOLDEN_DIR.glob("*.json") if p.name not in wanted)
    for name in stale:
        print(f"  stale    {name} (no such shipped scenario)" + ("" if args.check else ": removed"))
        if not args.check:
            (GOLDEN_DIR / name).unlink()
    if changed or stale:
        print("\nA changed golden figure needs a sentence in the commit message saying why.")
    return 1 if args.check and (changed or stale) else 0


if __name__ == "__main__":
    sys.exit(main())
