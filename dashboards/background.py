"""Background jobs of the dashboard: ``stormsim sweep`` and ``stormsim boundary`` as child processes.

A sweep or a tipping-point search takes minutes; the dashboard never runs one in
the Streamlit process. It starts the command line as a child process
(``python -m experiments.cli sweep FILE --out DIR --jobs N`` or ``boundary ... --json``),
with its stdout and stderr going to files in the job's folder, and keeps a small
``Job`` record (pid, command, folder, start time) in ``st.session_state``. This
module has no Streamlit in it, so it is tested on its own.

- ``start_sweep`` / ``start_boundary`` start a job; at most ``MAX_RUNNING`` of each
  kind run at once in this process (one sweep and one boundary), and each has a
  maximum wall time (``DEFAULT_MAX_WALL_S``), enforced by a watchdog thread and by
  ``poll``.
- ``poll(job)``: running (or cancelling), finished with its exit status, cancelled,
  timed out, or failed with the tail of its stderr.
- ``cancel(job)`` ends a process this module started, by its pid and the process group
  it leads (created for it at start); any other pid is left alone: SIGINT first, which the command treats as Ctrl-C
  (a sweep stores what finished, ends its workers and writes its tables; exit 130),
  then SIGTERM and SIGKILL to the group after ``grace_s`` each. Never by name.
- ``sweep_progress(job)``: runs stored in the sweep's ``runs.jsonl`` against the
  manifest's ``runs_total``, and the last progress line of stderr.
- ``boundary_result(job)``: the ``--json`` object of a finished boundary search.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

PROJECT_DIR = Path(__file__).resolve().parent.parent
CLI = (sys.executable, "-m", "experiments.cli")

KINDS = ("sweep", "boundary")
MAX_RUNNING = {"sweep": 1, "boundary": 1}            # jobs of each kind at once (in this process)
DEFAULT_MAX_WALL_S = {"sweep": 2 * 3600.0, "boundary": 3600.0}
MAX_SWEEP_JOBS = 2                                   # worker processes of a dashboard sweep
GRACE_S = 5.0                                        # between SIGINT, SIGTERM and SIGKILL
TAIL_LINES = 12

STDOUT_FILE = "job-stdout.txt"
STDERR_FILE = "job-stderr.txt"
BOUNDARY_FILE = "boundary.json"                      # the boundary's stdout: its --json object
JOB_FILE = "job.json"                                # the Job record, and how it ended (cancel, timeout)
SWEEP_FILE = "sweep.yaml"

State = Literal["running", "cancelling", "finished", "failed", "cancelled", "timed out"]
EXIT_SOME_RUNS_FAILED = 1                            # `stormsim sweep`: all runs stored, some failed
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class JobError(Exception):
    """A job that cannot be started (one already running, a bad argument): one line."""


@dataclass(frozen=True)
class Job:
    """A started command: what ran, where its files are, when it started, how long it may run."""

    kind: str                   # "sweep" or "boundary"
    pid: int                    # the child process; it leads its own process group
    command: tuple[str, ...]
    folder: str                 # the job's folder: a sweep's output folder, or a boundary's
    stdout: str
    stderr: str
    started_at: float           # time.time()
    max_wall_s: float
    sweep_file: str = ""        # sweep: the sweep file it runs
    result_file: str = ""       # boundary: its stdout, the --json object

    @property
    def out_dir(self) -> Path:
        return Path(self.folder)

    @property
    def cli_command(self) -> str:
        """The command as a user types it (``stormsim sweep FILE --out DIR --jobs 2``)."""
        args = list(self.command[len(CLI):]) if tuple(self.command[:len(CLI)]) == CLI else list(self.command)
        return shlex.join(["stormsim", *args])


@dataclass(frozen=True)
class JobStatus:
    state: State
    returncode: int | None
    elapsed_s: float
    detail: str = ""            # failed: the tail of stderr; finished with failed runs: why status 1

    @property
    def running(self) -> bool:
        return self.state in ("running", "cancelling")

    @property
    def ok(self) -> bool:
        return self.state == "finished"


@dataclass(frozen=True)
class SweepProgress:
    total: int | None           # None until the sweep has validated its file and written its manifest
    done: int                   # distinct runs stored (ok or failed)
    failed: int
    line: str = ""              # the sweep's last progress line on stderr

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def text(self) -> str:
        if self.total is None:
            return "starting: validating the sweep file and loading every design point"
        return f"{self.done}/{self.total} runs done, {self.failed} failed"


@dataclass
class _Entry:
    popen: subprocess.Popen
    job: Job
    timer: threading.Timer | None = None
    ended_by: str | None = None         # "cancelled" or "timed out", when we ended it
    ended_at: float | None = None


_LOCK = threading.RLock()
_ENTRIES: dict[int, _Entry] = {}


# ------------------------------------------------------------------ starting


def start_sweep(sweep_file: Path | str, out_dir: Path | str, jobs: int = 1,
                max_wall_s: float | None = None) -> Job:
    """``stormsim sweep FILE --out DIR --jobs N`` in the background; stdout/stderr in ``out_dir``."""
    if not 1 <= int(jobs) <= MAX_SWEEP_JOBS:
        raise JobError(f"jobs: {jobs} is not a number of worker processes from 1 to {MAX_SWEEP_JOBS}")
    sweep_file = Path(sweep_file).resolve()
    if not sweep_file.is_file():
        raise JobError(f"sweep file {str(sweep_file)!r} does not exist")
    folder = Path(out_dir).resolve()
    command = (*CLI, "sweep", str(sweep_file), "--out", str(folder), "--jobs", str(int(jobs)))
    return _start("sweep", command, folder, folder / STDOUT_FILE, max_wall_s, sweep_file=str(sweep_file))


def start_boundary(scenario: str, param: str, lo: str, hi: str, folder: Path | str, *, reps: int = 5,
                   seed: int | None = None, jobs: int = 1, outcome: str = "collapse", level: float = 0.5,
                   overrides: Sequence[str] = (), max_wall_s: float | None = None) -> Job:
    """``stormsim boundary SCENARIO --param P --lo A --hi B ... --json`` in the background.

    ``lo``/``hi`` are written like the setting (``3s``, ``100``). The JSON object lands in
    ``folder/boundary.json`` (the command's stdout)."""
    if not 1 <= int(jobs) <= MAX_SWEEP_JOBS:
        raise JobError(f"jobs: {jobs} is not a number of worker processes from 1 to {MAX_SWEEP_JOBS}")
    folder = Path(folder).resolve()
    command = [*CLI, "boundary", str(scenario), "--param", param, "--lo", str(lo), "--hi", str(hi),
               "--reps", str(int(reps)), "--outcome", outcome, "--level", f"{level:g}", "--jobs", str(int(jobs))]
    if seed is not None:
        command += ["--seed", str(int(seed))]
    for item in overrides:
        command += ["--set", item]
    command.append("--json")
    stdout = folder / BOUNDARY_FILE
    return _start("boundary", tuple(command), folder, stdout, max_wall_s, result_file=str(stdout))


def _start(kind: str, command: tuple[str, ...], folder: Path, stdout: Path, max_wall_s: float | None,
           **extra: str) -> Job:
    max_wall = float(max_wall_s if max_wall_s is not None else DEFAULT_MAX_WALL_S[kind])
    if not max_wall > 0:
        raise JobError(f"max_wall_s: {max_wall_s} is not a positive number of seconds")
    with _LOCK:
        busy = [e.job for e in _ENTRIES.values() if e.job.kind == kind and e.popen.poll() is None]
        if len(busy) >= MAX_RUNNING[kind]:
            other = busy[0]
            raise JobError(f"a {kind} is already running (pid {other.pid}, started "
                           f"{time.strftime('%H:%M:%S', time.localtime(other.started_at))}, {other.folder}); "
                           f"cancel it or wait for it to finish")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JobError(f"{str(folder)!r} cannot be a folder ({exc.strerror or exc})") from None
        stderr = folder / STDERR_FILE
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            with stdout.open("wb") as out, stderr.open("wb") as err:
                # process_group=0: the child leads a group of its own, so cancel() can end its pool
                # workers with it, and a Ctrl-C meant for the dashboard does not reach it (atexit does)
                popen = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=str(PROJECT_DIR), env=env, process_group=0)
        except OSError as exc:
            raise JobError(f"cannot start {shlex.join(command[:4])} ...: {exc.strerror or exc}") from None
        job = Job(kind=kind, pid=popen.pid, command=command, folder=str(folder), stdout=str(stdout),
                  stderr=str(stderr), started_at=time.time(), max_wall_s=max_wall, **extra)
        entry = _Entry(popen, job)
        _ENTRIES[job.pid] = entry
        timer = threading.Timer(max_wall, _expire, args=(job,))
        timer.daemon = True
        timer.start()
        entry.timer = timer
    _write_job_file(job)
    return job


def _expire(job: Job) -> None:
    if poll(job).running:
        cancel(job, reason="timed out", wait=True)


# ------------------------------------------------------------------ watching


def poll(job: Job) -> JobStatus:
    """The job's state now; a running job past its maximum wall time is ended here too."""
    entry = _ENTRIES.get(job.pid)
    returncode = _returncode(job, entry)
    ended_by = entry.ended_by if entry is not None else _read_job_file(job).get("ended_by")
    now = time.time()
    if returncode is None and not _gone(job, entry):
        elapsed = now - job.started_at
        if elapsed > job.max_wall_s and ended_by is None and entry is not None:
            cancel(job, reason="timed out", wait=False)
            ended_by = entry.ended_by
        return JobStatus("cancelling" if ended_by else "running", None, elapsed)
    if entry is not None:
        if entry.ended_at is None:
            entry.ended_at = now
            if entry.timer is not None:
                entry.timer.cancel()
        now = entry.ended_at
    elapsed = now - job.started_at
    completed = returncode == 0 or (job.kind == "sweep" and returncode == EXIT_SOME_RUNS_FAILED)
    if ended_by in ("cancelled", "timed out") and not completed:     # (a cancel too late to stop it: finished)
        detail = ("cancelled" if ended_by == "cancelled" else
                  f"ended after its maximum wall time of {job.max_wall_s:.0f} s")
        if job.kind == "sweep":
            detail += "; the runs that finished are stored (run the same command again to resume)"
        return JobStatus(ended_by, returncode, elapsed, detail)      # type: ignore[arg-type]
    if returncode is None:      # not our child any more (the dashboard restarted): judge by its files
        complete = _sweep_complete(job) if job.kind == "sweep" else boundary_result(job, check_status=False) is not None
        if complete:
            return JobStatus("finished", None, elapsed, "exit status unknown (the dashboard restarted)")
        return JobStatus("failed", None, elapsed, "the process is gone and its exit status is unknown; "
                                                  + (tail(job.stderr, 3) or "its stderr is empty"))
    if returncode == 0:
        return JobStatus("finished", 0, elapsed)
    if job.kind == "sweep" and returncode == EXIT_SOME_RUNS_FAILED:
        progress = sweep_progress(job)
        return JobStatus("finished", returncode, elapsed,
                         f"every run is stored; {progress.failed} of them failed (exit status 1)")
    reason = tail(job.stderr, TAIL_LINES) or "(nothing on stderr)"
    what = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
    return JobStatus("failed", returncode, elapsed, f"{what}: {reason}")


def _returncode(job: Job, entry: _Entry | None) -> int | None:
    if entry is not None:
        return entry.popen.poll()
    try:                        # our child, but its Popen is gone (this module was reloaded)
        pid, status = os.waitpid(job.pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return None if pid == 0 else os.waitstatus_to_exitcode(status)


def _gone(job: Job, entry: _Entry | None) -> bool:
    """A process that is not our child (or no longer exists): True when nothing is left of it."""
    if entry is not None:
        return False
    try:
        os.waitpid(job.pid, os.WNOHANG)
        return False
    except ChildProcessError:
        return not _alive(job.pid)


def sweep_progress(job: Job) -> SweepProgress:
    """Runs stored in ``runs.jsonl`` (distinct run keys) against the manifest's ``runs_total``."""
    from experiments.sweep_store import MANIFEST_FILE, SweepStore
    folder = job.out_dir
    total = None
    try:
        total = int(json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))["runs_total"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    rows = {row.get("run_key"): row for row in SweepStore(folder).read_rows() if isinstance(row, dict)}
    failed = sum(1 for row in rows.values() if row.get("status") != "ok")
    return SweepProgress(total=total, done=len(rows), failed=failed, line=_progress_line(job.stderr))


def _sweep_complete(job: Job) -> bool:
    progress = sweep_progress(job)
    return progress.total is not None and progress.done >= progress.total


def _progress_line(path: str) -> str:
    for line in reversed(_tail_lines(path, 40)):
        if " done, " in line and " failed" in line:
            return line.strip()
    return ""


def boundary_result(job: Job, check_status: bool = True) -> dict[str, Any] | None:
    """The ``--json`` object of a finished boundary search; None while it runs or if it failed."""
    if check_status and poll(job).state != "finished":
        return None
    try:
        data = json.loads(Path(job.result_file or job.stdout).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def tail(path: str | Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of a text file (progress redraws split at carriage returns)."""
    return "\n".join(_tail_lines(path, lines))


def _tail_lines(path: str | Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    parts = [p.rstrip() for p in text.replace("\r", "\n").split("\n")]
    return [p for p in parts if p.strip()][-lines:]


# ------------------------------------------------------------------ ending


def cancel(job: Job, *, reason: str = "cancelled", grace_s: float = GRACE_S, wait: bool = True) -> None:
    """End the job we started, by its pid: SIGINT (the command's Ctrl-C: a sweep stores what
    finished and writes its tables), then SIGTERM and SIGKILL to its process group, ``grace_s``
    apart. ``wait=False`` returns at once and escalates in a background thread."""
    entry = _ENTRIES.get(job.pid)
    if entry is None or entry.popen.poll() is not None:
        return                  # not a process this module started here, or already ended: leave it alone
    with _LOCK:
        if entry.ended_by is not None:
            return              # being ended already
        entry.ended_by = reason
        if entry.timer is not None and reason != "timed out":
            entry.timer.cancel()
    _write_job_file(job, ended_by=reason)
    if wait:
        _end(job, entry, grace_s)
    else:
        threading.Thread(target=_end, args=(job, entry, grace_s), daemon=True).start()


def _end(job: Job, entry: _Entry, grace_s: float) -> None:
    _signal(job.pid, signal.SIGINT, group=False)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if _wait_exit(entry, grace_s) and not _group_alive(job.pid):
            return
        _signal(job.pid, sig, group=True)
    _wait_exit(entry, grace_s)
    deadline = time.monotonic() + grace_s     # the group's stray members, killed above, to vanish
    while _group_alive(job.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _wait_exit(entry: _Entry, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for the process to exit (and reap it); True if it did."""
    try:
        entry.popen.wait(timeout=timeout_s)
        return True
    except subprocess.TimeoutExpired:
        return False


def _signal(pid: int, sig: int, *, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)         # the group our child leads (process_group=0 at start)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_jobs(kind: str | None = None) -> list[Job]:
    """The jobs of this process that are still running (of one kind, or all)."""
    with _LOCK:
        return [e.job for e in _ENTRIES.values()
                if e.popen.poll() is None and (kind is None or e.job.kind == kind)]


def end_all(grace_s: float = 2.0) -> None:
    """Cancel every running job of this process (at exit, and in test teardown)."""
    for job in running_jobs():
        cancel(job, grace_s=grace_s, wait=True)


atexit.register(end_all)


# ------------------------------------------------------------------ the job file


def _write_job_file(job: Job, **extra: Any) -> None:
    path = Path(job.folder) / JOB_FILE
    data = {**_read_job_file(job), **dataclasses.asdict(job), **extra}
    data["command"] = list(job.command)
    try:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass                    # the record is a convenience; the job runs without it


def _read_job_file(job: Job) -> dict[str, Any]:
    try:
        data = json.loads((Path(job.folder) / JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
