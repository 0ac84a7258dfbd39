"""Running the testbed: the Go server and load generator on loopback, sampled, bounded, ended by pid.

``run_testbed`` writes the config and the arrivals into a work folder, starts ``tbload``
(which hosts the database stub) and ``tbserver`` (RLIMIT_NOFILE, backlog and the rest from
the config) on 127.0.0.1, each in its own session so a Ctrl-C reaches only us, tells both
the same start instant, and samples the server every ``sample_interval`` on that grid:
its open fds (``/proc/PID/fd``), CPU time (``/proc/PID/stat``), resident memory, the
connections established to its port and its accept queue (``/proc/net/tcp``: the rx_queue
of a listening socket is its accept queue). The server writes its own goroutines, heap,
connections, in-flight handlers and accept errors (``tbserver``'s events file); the load
generator writes every request and attempt when the run ends.

Every wait is bounded: start-up 20 s, the run its duration, the load generator's exit
``EXIT_GRACE_S`` more. On the way out, normal or not (an exception, Ctrl-C, SIGTERM), each
child still running gets SIGTERM, then SIGKILL after ``KILL_GRACE_S``, by its own pid.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from experiments.testbed.build import ensure_built
from experiments.testbed.config import arrivals, to_config
from sim.schema import Scenario

STARTUP_TIMEOUT_S = 20.0
START_LEAD_S = 0.3          # both programs get the start instant this far ahead
EXIT_GRACE_S = 30.0
KILL_GRACE_S = 3.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

SAMPLE_COLUMNS = ("time_s", "alive", "open_fds", "cpu_s", "rss_b", "tcp_established", "tcp_close_wait",
                  "accept_queue")


@dataclass
class RawRun:
    """What one testbed run left: the files of its work folder and the harness's samples."""

    workdir: Path
    config: dict
    t0_ns: int
    port: int
    samples: dict[str, list[float]] = field(default_factory=dict)
    server_exit: int | None = None       # return code if the server died during the run
    server_died_at_s: float | None = None
    wall_s: float = 0.0
    files: dict[str, Path] = field(default_factory=dict)


class TestbedError(RuntimeError):
    """The testbed could not run (a program did not start, or died unexpectedly)."""


# ------------------------------------------------------------------ /proc


def _count_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK     # utime, stime
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def _rss_b(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def tcp_counts(port: int, path: str = "/proc/net/tcp") -> tuple[int, int, int]:
    """(established, close_wait, accept_queue) of the server side of ``port``.

    Sockets whose local port is ``port``: state 01 ESTABLISHED (accepted or still in the
    accept queue), 08 CLOSE_WAIT (the client closed; the server has not yet), and the
    rx_queue of the 0A LISTEN socket, which for a listener is its accept-queue length."""
    hex_port = f"{port:04X}"
    established = close_wait = queue = 0
    try:
        with open(path, encoding="ascii") as fh:
            next(fh, None)
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) < 5 or not parts[1].endswith(":" + hex_port):
                    continue
                state = parts[3]
                if state == "01":
                    established += 1
                elif state == "08":
                    close_wait += 1
                elif state == "0A":
                    queue = int(parts[4].split(":")[1], 16)
    except FileNotFoundError:
        pass
    return established, close_wait, queue


# ------------------------------------------------------------------ processes


def _read_line(proc: subprocess.Popen, timeout_s: float, what: str) -> str:
    """One line from ``proc``'s stdout (unbuffered), waiting at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    fd = proc.stdout.fileno()
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TestbedError(f"{what} did not start within {timeout_s:g} s")
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise TestbedError(f"{what} exited at start (status {proc.wait(timeout=5)}); see its stderr")
            buf += chunk
    return buf.split(b"\n", 1)[0].decode("ascii", "replace").strip()


def stop_process(proc: subprocess.Popen | None) -> None:
    """End one child we started: SIGTERM, then SIGKILL, by its pid; reap it."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    except ProcessLookupError:
        pass


class _SigtermAsInterrupt:
    """SIGTERM (and SIGHUP) raise KeyboardInterrupt while the run lasts, so the cleanup runs."""

    def __enter__(self) -> "_SigtermAsInterrupt":
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            def interrupt(signum: int, _frame: object) -> None:
                raise KeyboardInterrupt
            for sig in (signal.SIGTERM, signal.SIGHUP):
                self.previous[sig] = signal.signal(sig, interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def run_testbed_raw(scenario: Scenario, seed: int, workdir: Path,
                    progress: Callable[[float], None] | None = None) -> RawRun:
    """Run the scenario (already in its testbed form) once on the real Go programs."""
    binaries = ensure_built()
    workdir.mkdir(parents=True, exist_ok=True)
    config = to_config(scenario, seed)
    files = {"config": workdir / "config.json", "arrivals": workdir / "arrivals.txt",
             "events": workdir / "server-events.txt", "records": workdir / "load-records.txt",
             "server_stderr": workdir / "server-stderr.txt", "load_stderr": workdir / "load-stderr.txt"}
    files["config"].write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    with open(files["arrivals"], "w", encoding="ascii") as fh:
        for client, inst, route, at in arrivals(scenario, seed):
            fh.write(f"{client} {inst} {route} {at:.9f}\n")
    for key in ("events", "records"):
        files[key].unlink(missing_ok=True)
    duration_s = scenario.duration
    step_s = scenario.sample_interval
    load = server = None
    started = time.perf_counter()
    with _SigtermAsInterrupt(), open(files["server_stderr"], "wb") as server_err, \
            open(files["load_stderr"], "wb") as load_err:
        try:
            load = subprocess.Popen(
                [str(binaries["tbload"]), "-config", str(files["config"]), "-arrivals", str(files["arrivals"]),
                 "-out", str(files["records"])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=load_err, bufsize=0, start_new_session=True)
            db_port = int(_read_line(load, STARTUP_TIMEOUT_S, "tbload").split()[1])
            server = subprocess.Popen(
                [str(binaries["tbserver"]), "-config", str(files["config"]), "-events", str(files["events"]),
                 "-db", f"127.0.0.1:{db_port}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=server_err, bufsize=0, start_new_session=True)
            port = int(_read_line(server, STARTUP_TIMEOUT_S, "tbserver").split()[1])
            t0_ns = time.time_ns() + int(START_LEAD_S * 1e9)
            server.stdin.write(f"START {t0_ns}\n".encode())
            server.stdin.flush()
            load.stdin.write(f"START {t0_ns} {port}\n".encode())
            load.stdin.flush()
            raw = RawRun(workdir=workdir, config=config, t0_ns=t0_ns, port=port, files=files)
            _sample(raw, server, load, duration_s, step_s, progress)
            try:
                load.wait(timeout=EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                raise TestbedError(f"tbload did not finish within {EXIT_GRACE_S:g} s of the end") from None
            if load.returncode != 0:
                raise TestbedError(f"tbload failed (status {load.returncode}): "
                                   f"{files['load_stderr'].read_text(errors='replace')[-500:]}")
            if server.poll() is not None and raw.server_exit is None:
                raw.server_exit = server.returncode
        finally:
            stop_process(server)
            stop_process(load)
    raw.wall_s = time.perf_counter() - started
    return raw


def _sample(raw: RawRun, server: subprocess.Popen, load: subprocess.Popen, duration_s: float, step_s: float,
            progress: Callable[[float], None] | None) -> None:
    """The server's /proc levels on the grid t0 + k x step, k = 1 .. duration / step."""
    samples: dict[str, list[float]] = {name: [] for name in SAMPLE_COLUMNS}
    raw.samples = samples
    n = int(round(duration_s / step_s))
    pid = server.pid
    for k in range(1, n + 1):
        at_ns = raw.t0_ns + int(round(k * step_s * 1e9))
        wait_s = (at_ns - time.time_ns()) / 1e9
        if wait_s > 0:
            time.sleep(wait_s)
        alive = server.poll() is None
        if not alive and raw.server_exit is None:
            raw.server_exit = server.returncode
            raw.server_died_at_s = (time.time_ns() - raw.t0_ns) / 1e9
        fds = _count_fds(pid) if alive else None
        established, close_wait, queue = tcp_counts(raw.port)
        samples["time_s"].append(k * step_s)
        samples["alive"].append(1.0 if alive and fds is not None else 0.0)
        samples["open_fds"].append(float(fds or 0))
        samples["cpu_s"].append((_cpu_s(pid) if alive else None) or float("nan"))
        samples["rss_b"].append((_rss_b(pid) if alive else None) or 0.0)
        samples["tcp_established"].append(float(established))
        samples["tcp_close_wait"].append(float(close_wait))
        samples["accept_queue"].append(float(queue) if alive else 0.0)
        if load.poll() is not None and load.returncode != 0:
            raise TestbedError(f"tbload died during the run (status {load.returncode})")
        if progress is not None:
            progress(k / n)
