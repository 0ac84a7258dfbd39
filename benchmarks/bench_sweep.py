"""Sweep benchmark: throughput of `stormsim sweep` on 1 and on 2 local workers.

A script, not a test. It writes a 200-run sweep of a small scenario (a healthy
service, 5 s simulated: ~0.1-0.2 s of work per run) into a temporary folder and
runs it through ``experiments.sweep_runner.run_sweep`` (the code path of the CLI,
store included: every row appended and fsynced), first with ``--jobs 1`` and then
with ``--jobs 2``, alternating over ``--repeats`` rounds in this one process. It
reports runs per wall-second for each and the per-round speed-up (2 workers / 1),
whose median is compared with the target of 1.8. The results must be identical;
the script checks that too.

    .venv/bin/python benchmarks/bench_sweep.py [--repeats 3] [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.sweep_file import load_sweep  # noqa: E402
from experiments.sweep_runner import run_sweep  # noqa: E402
from experiments.sweep_store import SweepStore  # noqa: E402

TARGET_SPEEDUP = 1.8
OUT = ROOT / "out" / "bench" / "bench_sweep.json"

SCENARIO = {
    "name": "small",
    "duration": "5s",
    "services": {"api": {"cpu": {"cores": 2},
                         "routes": {"home": {"method": "GET", "steps": [{"cpu": "2ms", "distribution": "exponential"}]}}}},
    "clients": {"web": {"target": "api", "instances": 4, "load": {"rate_per_s": 200},
                        "transport": {"rtt": "1ms", "client_timeout": "1s"}}},
}


def write_sweep(folder: Path, runs: int) -> Path:
    (folder / "small.yaml").write_text(yaml.safe_dump(SCENARIO))
    cells = runs // 10
    sweep = {"name": "bench", "scenario": "small.yaml", "replications": 10, "seed": 1,
             "factors": {"clients.web.load.rate_per_s": {"range": {"from": 100, "to": 400, "n": cells}}},
             "metrics": ["goodput_rps", "p99_ms"]}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def one(path: Path, out: Path, jobs: int) -> tuple[float, list[dict]]:
    spec = load_sweep(path)
    store = SweepStore(out)
    started = time.perf_counter()
    outcome = run_sweep(spec, store, jobs=jobs, progress_stream=open(os.devnull, "w"))
    wall_s = time.perf_counter() - started
    assert outcome.ok == outcome.runs_total, "a run failed"
    return outcome.runs_total / wall_s, store.read_rows()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args(argv)
    rates = {1: [], 2: []}
    speedups = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = write_sweep(folder, args.runs)
        reference = None
        for round_no in range(args.repeats):
            round_rates = {}
            for jobs in ((1, 2) if round_no % 2 == 0 else (2, 1)):
                rate, rows = one(path, folder / f"out-{round_no}-{jobs}", jobs)
                kpis = sorted((r["run_key"], r["goodput_rps"], r["p99_ms"], r["events"]) for r in rows)
                if reference is None:
                    reference = kpis
                assert kpis == reference, "results differ between executors"
                round_rates[jobs] = rate
                rates[jobs].append(rate)
                print(f"round {round_no + 1}: {jobs} worker(s) {rate:.2f} runs/s", flush=True)
            speedups.append(round_rates[2] / round_rates[1])
    result = {
        "runs": args.runs, "repeats": args.repeats, "cpus": os.cpu_count(),
        "loadavg": list(os.getloadavg()),
        "runs_per_s_1_worker": statistics.median(rates[1]), "runs_per_s_2_workers": statistics.median(rates[2]),
        "speedup_median": statistics.median(speedups), "speedups": speedups,
    }
    verdict = "PASS" if result["speedup_median"] >= TARGET_SPEEDUP else "MISS"
    print(f"\n{args.runs}-run sweep: 1 worker {result['runs_per_s_1_worker']:.2f} runs/s, "
          f"2 workers {result['runs_per_s_2_workers']:.2f} runs/s; speed-up {result['speedup_median']:.2f} "
          f"[{min(speedups):.2f}-{max(speedups):.2f}] (identical results)")
    print(f"{verdict}  2 local workers >= {TARGET_SPEEDUP}x one worker: measured {result['speedup_median']:.2f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
