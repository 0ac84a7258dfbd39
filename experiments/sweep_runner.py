"""Running a sweep: its runs on local worker processes or a Dask cluster, durably, resumably.

This module owns the execution of ``stormsim sweep``: which runs are still to do
(``SweepStore`` knows the finished ones), where they run (in this process with one
job, a local process pool with several, the workers of an existing Dask
``distributed`` scheduler with ``scheduler``), the progress line, and what an
interrupted or failing run leaves behind. A run is a pure function of its
``RunSpec`` (scenario file, overrides, seed, replication), so the results are the
same whatever the executor and the number of workers; only ``wall_s`` differs.
A run that raises is stored as ``failed`` with its error and the sweep goes on.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TextIO

from experiments.sweep_file import RunSpec, SweepSpec, run_specs
from experiments.sweep_store import SweepStore, row_for


@dataclass(frozen=True)
class RunPayload:
    """What a worker needs for one run (picklable, small)."""

    run: RunSpec
    scenario_path: str
    variant: str | None
    overrides: tuple[str, ...]


@dataclass
class SweepOutcome:
    runs_total: int
    already_done: int = 0
    ok: int = 0
    failed: int = 0
    interrupted: bool = False
    wall_s: float = 0.0

    @property
    def finished(self) -> int:
        return self.ok + self.failed


@functools.lru_cache(maxsize=64)
def _scenario(path: str, mtime_ns: int, overrides: tuple[str, ...], variant: str | None) -> Any:
    """A design point's scenario, loaded once per worker process (its replications reuse it)."""
    from sim.scenario_loader import load_scenario
    return load_scenario(path, overrides=list(overrides), variant=variant)


def execute_run(payload: RunPayload) -> dict[str, Any]:
    """Run one design point and replication; never raises (a failure is a row)."""
    from sim.engine import run_scenario
    started = time.perf_counter()
    run = payload.run
    try:
        scenario = _scenario(payload.scenario_path, os.stat(payload.scenario_path).st_mtime_ns,
                             payload.overrides, payload.variant)
        result = run_scenario(scenario, seed=run.seed, replication=run.replication)
        return row_for(run, result.summary, time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - a failed run is data, not a crash of the sweep
        last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" (at {last[0].filename.rsplit('/', 1)[-1]}:{last[0].lineno})" if last else ""
        return row_for(run, None, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}{where}")


class Progress:
    """One status line on stderr: a bar, done/total, failed, runs per second and the ETA.

    On a terminal it redraws in place at most every 0.2 s; elsewhere (CI logs) it prints
    a line every 10% of the runs and at the end."""

    def __init__(self, total: int, already: int, stream: TextIO | None = None, label: str = "sweep") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        self.done = already
        self.already = already
        self.failed = 0
        self.label = label
        self.started = time.perf_counter()
        self.tty = self.stream.isatty()
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        now = time.perf_counter()
        decile = (10 * self.done) // max(self.total, 1)
        if self.tty and (now - self._last_draw >= 0.2 or self.done == self.total):
            self._last_draw = now
            self.stream.write("\r" + self.line() + " ")
            self.stream.flush()
        elif not self.tty and (decile != self._last_decile or self.done == self.total):
            self._last_decile = decile
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        width = 28
        fraction = self.done / self.total if self.total else 1.0
        bar = "#" * int(fraction * width) + "." * (width - int(fraction * width))
        elapsed = time.perf_counter() - self.started
        new = self.done - self.already
        rate = new / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = _duration_text(left / rate) if rate > 0 else "?"
        return (f"{self.label} [{bar}] {self.done}/{self.total} done, {self.failed} failed, "
                f"{rate:.1f} runs/s, eta {eta}")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _duration_text(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def pending_payloads(spec: SweepSpec, done_rows: dict[str, dict[str, Any]],
                     retry_failed: bool) -> list[RunPayload]:
    """The runs still to do: not stored yet, or stored as failed when ``retry_failed``."""
    payloads = []
    for run in run_specs(spec):
        row = done_rows.get(run.run_key)
        if row is not None and (row.get("status") == "ok" or not retry_failed):
            continue
        payloads.append(RunPayload(run, spec.scenario_path, spec.variant, tuple(run.overrides(spec))))
    return payloads


def run_sweep(spec: SweepSpec, store: SweepStore, *, jobs: int = 2, scheduler: str | None = None,
              retry_failed: bool = False, progress_stream: TextIO | None = None,
              on_row: Callable[[dict[str, Any]], None] | None = None) -> SweepOutcome:
    """Run every unfinished run of ``spec``, appending each row to ``store`` as it finishes."""
    runs = run_specs(spec)
    done_rows = store.open(spec, len(runs))
    outcome = SweepOutcome(runs_total=len(runs))
    payloads = pending_payloads(spec, done_rows, retry_failed)
    outcome.already_done = len(runs) - len(payloads)
    progress = Progress(len(runs), outcome.already_done, progress_stream, label=spec.name)
    started = time.perf_counter()
    rows = _execute(payloads, jobs, scheduler)
    try:
        for row in rows:
            store.append(row)
            failed = row["status"] != "ok"
            outcome.failed += failed
            outcome.ok += not failed
            progress.update(failed)
            if on_row is not None:
                on_row(row)
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()             # ends the pool or the Dask client now, not at garbage collection
        store.close()
        progress.close()
        outcome.wall_s = time.perf_counter() - started
    return outcome


def _execute(payloads: list[RunPayload], jobs: int, scheduler: str | None) -> Iterator[dict[str, Any]]:
    if not payloads:
        return iter(())
    if scheduler:
        return _on_dask(payloads, scheduler)
    if jobs == 1:
        return (execute_run(p) for p in payloads)
    return _on_processes(payloads, jobs)


def _on_processes(payloads: list[RunPayload], jobs: int) -> Iterator[dict[str, Any]]:
    """A local pool; at most 2 x jobs runs submitted at a time, so Ctrl-C loses little."""
    pool = ProcessPoolExecutor(max_workers=jobs)
    queue = list(reversed(payloads))
    in_flight = set()
    try:
        while queue or in_flight:
            while queue and len(in_flight) < 2 * jobs:
                in_flight.add(pool.submit(execute_run, queue.pop()))
            done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
    finally:
        pool.shutdown(wait=not in_flight, cancel_futures=True)
        for pid in list(getattr(pool, "_processes", {}) or {}):
            if in_flight:           # interrupted: end the workers we started, by their id
                try:
                    os.kill(pid, 15)
                except OSError:
                    pass


def _on_dask(payloads: list[RunPayload], address: str) -> Iterator[dict[str, Any]]:
    """The workers of an existing Dask distributed scheduler at ``address``."""
    from distributed import Client, as_completed
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        from experiments.sweep_file import SweepError
        raise SweepError("--scheduler", address, f"cannot reach a Dask scheduler at {address} ({exc})") from None
    try:
        futures = client.map(execute_run, payloads, pure=False)
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            client.cancel([f for f in futures if not f.done()])
    finally:
        client.close()
