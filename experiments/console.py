"""Plain-text views of results for the terminal: one run's KPIs and milestones, a comparison table.

Everything here returns strings; the CLI decides where they go (stdout, or
stderr when ``--json`` owns stdout).
"""

from __future__ import annotations

from typing import Any

from experiments.kpis import untouched_goodput_rps
from sim.outputs import is_graph_run
from sim.result import RunResult


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if unit == "%":
            return f"{100.0 * value:.{digits}f}%"
        text = f"{value:,.{digits}f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip() if unit and unit != "%" else text


def untouched_goodput_during_fault_rps(result: RunResult) -> float | None:
    """Untouched successes per second from the trigger to the end (from the warm-up if no fault)."""
    return untouched_goodput_rps(result, from_s=result.milestones.trigger_at_s)


TO_SERVER_SHARES: tuple[tuple[str, str], ...] = (
    ("pool_wait", "pool"), ("connect", "connect"), ("tls", "TLS"),
    ("backlog", "backlog"), ("flow_wait", "flow"), ("transit", "transit"),
)


def to_server_line(s: dict[str, Any]) -> str:
    """One line: the time before the server sees an attempt, P50/P99 and each phase's share."""
    label = "  time before the server sees it: "
    never = s.get("attempts_never_reached_server") or 0
    tail = f"; {never:,} attempt{'s' if never != 1 else ''} never reached it" if never else ""
    if s.get("to_server_p50_ms") is None:
        return label + "no attempt reached the server" + tail
    shares = ", ".join(f"{name} {_fmt(s.get(f'to_server_{part}_fraction'), '%')}" for part, name in TO_SERVER_SHARES)
    return label + f"P50 {_fmt(s['to_server_p50_ms'], 'ms')}, P99 {_fmt(s.get('to_server_p99_ms'), 'ms')} ({shares})" + tail


def cascade_text(s: dict[str, Any]) -> str:
    """``c 10.0 s -> b 10.6 s; blast radius 2 of 3``: the collapse instants in cascade order."""
    cascade = s.get("cascade") or []
    chain = " -> ".join(f"{c['service']} {c['collapsed_at_s']:.1f} s" for c in cascade) or "no service collapsed"
    return f"{chain}; blast radius {s.get('blast_radius', len(cascade))} of {len(s.get('services') or {})}"


def cascade_line(s: dict[str, Any]) -> str:
    return "  cascade              " + cascade_text(s)


def entry_clients_line(s: dict[str, Any]) -> str | None:
    """One line per load source when there are several: success rate and P99 end to end."""
    entry = s.get("entry_clients") or {}
    if len(entry) < 2:
        return None
    parts = [f"{name} -> {row['target']}: success {_fmt(row['success_rate'], '%')}, p99 {_fmt(row['p99_ms'], 'ms')}"
             for name, row in entry.items()]
    return "  entry clients        " + "; ".join(parts)


def format_summary(result: RunResult, out_dir: str | None = None) -> str:
    s = result.summary
    lines = [f"{s['scenario']}  (seed {s['seed']}, {_fmt(s['duration_s'], 's')} simulated in {_fmt(s['wall_s'], 's', 2)} wall, {s['events']:,} events)"]
    if result.scenario.description:
        lines.append("  " + " ".join(result.scenario.description.split()))
    lines.append("")
    lines.append(f"  outcome              {s['outcome']}" + ("  (truncated by the %s guard)" % s["truncated_by"] if s["truncated"] else ""))
    lines.append(f"  offered / goodput    {_fmt(s['offered_rps'], 'req/s')} / {_fmt(s['goodput_rps'], 'req/s')}   success {_fmt(s['success_rate'], '%')}")
    lines.append(f"  untouched goodput    {_fmt(untouched_goodput_during_fault_rps(result), 'req/s')} from the trigger on")
    lines.append(f"  latency              p50 {_fmt(s['p50_ms'], 'ms')}  p90 {_fmt(s['p90_ms'], 'ms')}  p99 {_fmt(s['p99_ms'], 'ms')}  p99.9 {_fmt(s['p999_ms'], 'ms')}  (p99 of successes {_fmt(s['p99_success_ms'], 'ms')})")
    lines.append(to_server_line(s))
    lines.append(f"  attempts/request     {_fmt(s['attempts_per_request'], '', 3)}   incomplete {s['incomplete']:,}   wasted handler time {_fmt(s['wasted_work_fraction'], '%')}")
    errors = {k: v for k, v in s["errors"].items() if v}
    lines.append("  errors               " + (", ".join(f"{k} {v:,}" for k, v in errors.items()) if errors else "none"))
    lines.append(f"  peaks                connections {_fmt(s['max_server_connections'])}  accept queue {_fmt(s['max_accept_queue'])}  fds {_fmt(s['max_open_fds'])}  goroutines {_fmt(s['max_goroutines'])}")
    lines.append(f"                       memory {_fmt(s['peak_memory_mib'], 'MiB')}  CPU {_fmt(s['max_cpu_utilization'], '%')}")
    graph = is_graph_run(result) and "services" in s
    if graph:
        entry_line = entry_clients_line(s)
        if entry_line:
            lines.append(entry_line)
        lines.append(cascade_line(s))
    lines.append("")
    lines.append("  milestones")
    trigger = s["trigger_at_s"]

    def at(value: float | None) -> str:
        if value is None:
            return "never"
        rel = f"  (trigger +{value - trigger:.1f} s)" if trigger is not None and value >= trigger else ""
        return f"{value:.2f} s{rel}"
    for window in result.milestones.faults:
        lines.append(f"    {window.kind} on {window.target}: {window.start_at:.2f} s to {window.end_at:.2f} s")
    lines.append(f"    collapse             {at(s['collapse_at_s'])}")
    lines.append(f"    fd exhaustion        {at(s['fd_exhausted_at_s'])}")
    lines.append(f"    OOM kill             {at(s['oom_killed_at_s'])}" + (f"   crashes {s['crashes']}" + (", crash loop" if s["crash_loop"] else "") if s["crashes"] else ""))
    lines.append(f"    recovery             {at(s['recovered_at_s'])}")
    if s["faults_end_at_s"] is not None and s["faults_end_at_s"] < result.milestones.end_at_s - 1e-9:
        lines.append(f"    healthy again        {at(s['healthy_again_at_s'])}"
                     + (f"   ({s['time_to_recover_s']:.1f} s after the faults ended)"
                        if s["time_to_recover_s"] is not None else ""))
    if s["breaker_trips"]:
        lines.append(f"    breaker trips        {s['breaker_trips']}, first {at(s['first_trip_at_s'])}, "
                     f"all closed again {at(s['breakers_closed_at_s'])}")
    policy = [(label, s[key]) for key, label in (("retries_denied", "retries denied by the budget"),
                                                 ("shed_rejected", "shed at the gate"),
                                                 ("shed_dropped", "shed from the queue")) if s[key]]
    if policy:
        lines.append("    policies             " + ", ".join(f"{label} {value:,}" for label, value in policy))
    if out_dir:
        lines.append("")
        files = "summary.json, timeseries.csv, requests.parquet, attempts.parquet"
        if graph:
            files += ", services.csv, edges.csv"
        lines.append(f"  report: {out_dir}/report.html   ({files})")
    return "\n".join(lines)


COMPARISON_COLUMNS: tuple[tuple[str, str], ...] = (
    ("scenario", "scenario"),
    ("outcome", "outcome"),
    ("collapse", "collapse after trigger"),
    ("fd_exhausted", "fds out after"),
    ("oom", "OOM after"),
    ("conns", "peak conns"),
    ("fds", "peak fds"),
    ("goroutines", "peak goroutines"),
    ("p99", "P99"),
    ("untouched", "untouched goodput"),
    ("attempts", "attempts/req"),
    ("trip", "breaker trip after"),
    ("healthy", "healthy after faults"),
)


def comparison_row(result: RunResult) -> dict[str, str]:
    s = result.summary
    trigger = s["trigger_at_s"]

    def after(value: float | None) -> str:
        if value is None:
            return "never"
        return f"+{value - trigger:.1f} s" if trigger is not None else f"{value:.1f} s"
    p99 = s["p99_ms"]
    return {
        "scenario": s["scenario"],
        "outcome": s["outcome"],
        "collapse": after(s["collapse_at_s"]),
        "fd_exhausted": after(s["fd_exhausted_at_s"]),
        "oom": after(s["oom_killed_at_s"]),
        "conns": f"{s['max_server_connections']:,}",
        "fds": f"{s['max_open_fds']:,}",
        "goroutines": f"{s['max_goroutines']:,}",
        "p99": "-" if p99 is None else (f"{p99 / 1000:.1f} s" if p99 >= 1000 else f"{p99:.0f} ms"),
        "untouched": _fmt(untouched_goodput_during_fault_rps(result), "req/s"),
        "attempts": f"{s['attempts_per_request']:.2f}",
        "trip": "-" if s["time_to_trip_s"] is None else f"+{s['time_to_trip_s']:.1f} s",
        "healthy": "never" if s["time_to_recover_s"] is None else f"+{s['time_to_recover_s']:.1f} s",
    }


def format_comparison(results: list[RunResult]) -> str:
    rows = [comparison_row(r) for r in results]
    headers = [title for _, title in COMPARISON_COLUMNS]
    keys = [key for key, _ in COMPARISON_COLUMNS]
    widths = [max(len(h), *(len(row[k]) for row in rows)) for h, k in zip(headers, keys)]
    out = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))]
    out.append("  ".join("-" * w for w in widths))
    for row in rows:
        out.append("  ".join(row[k].ljust(w) if i == 0 else row[k].rjust(w) for i, (k, w) in enumerate(zip(keys, widths))))
    return "\n".join(out)
