"""The validation suite: its two plans, the runner (worker processes, progress), the result.

``quick`` runs in CI in a few minutes on two cores: queues up to rho = 0.8 (and one overloaded
point of the deadline queues, which stay stable), 10 replications, every shipped scenario
(without its variants) shortened and drained, 8 examples per monotonicity property, the
reference tests, and 10 replications of seed-collapse for convergence. ``full`` runs on demand:
rho up to 0.95 with longer runs and 20 replications, every shipped scenario *and variant*,
60 examples per property, 30 + 20 replications for convergence. Seeds are fixed, so both are
deterministic; the analytic checks use 99% intervals.

``run_suite`` returns the report as a JSON-able dict; ``experiments.validation.report`` writes
it as ``validation.json`` and ``validation.html``.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from experiments.validation import conservation, convergence, monotonicity, queueing, semantics
from experiments.validation.checks import (CONFIDENCE, ERROR, FAIL, INFO, KNOWN, KNOWN_LIMITATIONS, PASS,
                                           SECTIONS, Check, apply_known_limitations)

Progress = Callable[[str], None]
SECTION_OF = {"queue": "queueing", "shipped": "conservation", "property": "monotonicity", "semantics": "semantics",
              "convergence": "convergence"}


@dataclass
class Plan:
    name: str
    queue_cases: list[queueing.QueueCase]
    shipped: list[conservation.ShippedCase]
    monotone_examples: int
    convergence: list[tuple[str, str | None, int]]
    semantics: bool = True


def quick_plan() -> Plan:
    return Plan("quick", queueing.quick_cases(), conservation.shipped_cases(False, 20.0, 120.0, 5.0), 8,
                [("seed-collapse", None, 10)])


def full_plan() -> Plan:
    return Plan("full", queueing.full_cases(), conservation.shipped_cases(True, 60.0, 300.0, 20.0), 60,
                [("seed-collapse", None, 30), ("retry-storm", None, 20)])


@dataclass
class Task:
    group: tuple[Any, ...]
    index: int
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    weight: float           # rough CPU seconds, for the order and the ETA


def tasks_of(plan: Plan) -> list[Task]:
    tasks: list[Task] = []
    for case in plan.queue_cases:
        rate = 20_000.0 if case.kind == "firm" else 35_000.0
        tasks += [Task(("queue", case.id), r, queueing.run_replication, (case, r), case.customers / rate)
                  for r in range(case.replications)]
    for case in plan.shipped:
        tasks.append(Task(("shipped", case.label), 0, conservation.run_case, (case,), _shipped_weight(case)))
    for prop in monotonicity.CONFIGS:
        tasks.append(Task(("property", prop), 0, monotonicity.run_property, (prop, plan.monotone_examples),
                          0.4 * plan.monotone_examples))
    if plan.semantics:
        tasks.append(Task(("semantics",), 0, semantics.run_tests, (), 20.0))
    for name, variant, reps in plan.convergence:
        tasks += [Task(("convergence", name, variant), r, convergence.run_replication, (name, variant, r), 3.0)
                  for r in range(reps)]
    return tasks


def _shipped_weight(case: conservation.ShippedCase) -> float:
    try:
        from experiments.catalog import shipped_scenarios
        from sim.scenario_loader import load_scenario
        s = load_scenario(shipped_scenarios()[case.name], variant=case.variant)
        rate = sum(c.load.rate_per_s for c in s.clients.values())
        trigger = min((f.at for f in s.faults), default=0.0)
        stop = min(s.duration, max(case.stop_cap_s, trigger + case.after_trigger_s))
        return 0.5 + stop * rate * len(s.services) ** 1.5 / 20_000.0
    except Exception:  # noqa: BLE001 - only an estimate
        return 5.0


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """Run one task in a worker; return its value and the CPU seconds it took there (children too)."""
    before = time.process_time() + _children_cpu()
    value = fn(*args)
    return value, time.process_time() + _children_cpu() - before


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def run_suite(quick: bool = True, jobs: int = 2, progress: Progress | None = None,
              plan: Plan | None = None) -> dict[str, Any]:
    """Run the suite; return the report (JSON-able). ``progress`` gets one line per finished group."""
    plan = plan or (quick_plan() if quick else full_plan())
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tasks = tasks_of(plan)
    total_weight = sum(t.weight for t in tasks) or 1.0
    need: Counter = Counter(t.group for t in tasks)
    results: dict[tuple[Any, ...], dict[int, Any]] = defaultdict(dict)
    checks: list[Check] = []
    queue_by_id = {c.id: c for c in plan.queue_cases}
    say(f"stormsim validate ({plan.name}): {len(plan.queue_cases)} queueing cases, {len(plan.shipped)} shipped "
        f"scenario cases, {len(monotonicity.CONFIGS)} monotonicity properties x {plan.monotone_examples} examples, "
        f"the reference tests, convergence on {', '.join(n for n, _v, _r in plan.convergence)}; "
        f"{len(tasks)} runs on {jobs} worker process(es)")
    done_weight = 0.0
    cpu_by_section: Counter = Counter()

    def finished(task: Task, timed: Any, error: str | None) -> None:
        nonlocal done_weight
        done_weight += task.weight
        value, cpu_s = timed if timed is not None else (None, 0.0)
        cpu_by_section[SECTION_OF[task.group[0]]] += cpu_s
        results[task.group][task.index] = (value, error)
        if len(results[task.group]) < need[task.group]:
            return
        new = assemble(task.group, results[task.group], queue_by_id)
        apply_known_limitations(new)
        checks.extend(new)
        elapsed = time.perf_counter() - started
        frac = done_weight / total_weight
        eta = elapsed * (1 - frac) / frac if frac > 0 else 0.0
        say(f"[{100 * frac:3.0f}% {elapsed:5.0f} s, eta {eta:4.0f} s] {describe(task.group, new)}")

    ordered = sorted(tasks, key=lambda t: -t.weight)
    if jobs <= 1:
        for task in ordered:
            try:
                finished(task, _timed(task.fn, *task.args), None)
            except Exception as exc:  # noqa: BLE001
                finished(task, None, f"{type(exc).__name__}: {exc}")
    else:
        pool = ProcessPoolExecutor(max_workers=jobs)
        try:
            futures: dict[Future, Task] = {pool.submit(_timed, t.fn, *t.args): t for t in ordered}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    task = futures[future]
                    exc = future.exception()
                    finished(task, None if exc else future.result(),
                             f"{type(exc).__name__}: {exc}" if exc else None)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)     # Ctrl-C: do not wait for the queue
            raise
        pool.shutdown()
    checks.extend(mm1_convergence(plan, results))
    wall = time.perf_counter() - started
    report = report_dict(plan, checks, started_at, wall, jobs)
    report["cpu_s_by_section"] = {k: round(v, 1) for k, v in cpu_by_section.items()}
    return report


def assemble(group: tuple[Any, ...], parts: dict[int, Any], queue_by_id: dict[str, queueing.QueueCase]) -> list[Check]:
    """The checks of one finished group of runs."""
    errors = [err for _v, err in parts.values() if err]
    kind = group[0]
    if kind == "queue":
        case = queue_by_id[group[1]]
        if errors:
            return [queueing.error_check(case, errors[0])]
        return queueing.build_checks(case, [parts[i][0] for i in sorted(parts)])
    if kind == "shipped":
        if errors:
            return [Check(id=f"conservation.{group[1]}.run", section="conservation", family="Runs",
                          title=f"{group[1]}: run", compared="", reference="", source="", status=ERROR,
                          detail=errors[0], params={"case": group[1]})]
        return [Check(**d) for d in parts[0][0]]
    if kind == "property":
        if errors:
            return [Check(id=f"monotonicity.{group[1]}", section="monotonicity", family="Monotonicity",
                          title=group[1], compared="", reference="", source="", status=ERROR, detail=errors[0])]
        return [monotonicity.property_check(group[1], parts[0][0])]
    if kind == "semantics":
        return semantics.build_checks(parts[0][0] if not errors else {"error": errors[0]})
    if kind == "convergence":
        if errors:
            return [Check(id=f"convergence.{group[1]}", section="convergence", family="Convergence",
                          title=group[1], compared="", reference="", source="", status=ERROR, detail=errors[0])]
        return convergence.scenario_checks(group[1], group[2], [parts[i][0] for i in sorted(parts)])
    raise ValueError(f"unknown group {group}")


def mm1_convergence(plan: Plan, results: dict[tuple[Any, ...], dict[int, Any]]) -> list[Check]:
    """P99 of M/M/1 at the highest load of the plan, from the queueing replications."""
    mm1 = [c for c in plan.queue_cases if c.kind == "mmc" and c.c == 1]
    if not mm1:
        return []
    case = max(mm1, key=lambda c: c.rho)
    parts = results.get(("queue", case.id), {})
    values = [parts[i][0]["p99_sojourn_s"] * 1000.0 for i in sorted(parts) if parts[i][0] is not None]
    if len(values) < 2:
        return []
    return [convergence.metric_check(f"M/M/1 rho={case.rho:g}", "p99", "P99 latency (ms)", values,
                                     f"the queueing section's replications of {case.id}")]


def describe(group: tuple[Any, ...], checks: list[Check]) -> str:
    counts = Counter(c.status for c in checks)
    tally = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.most_common())
    if group[0] == "queue":
        parts = []
        for c in checks:
            if c.estimate is not None and c.reference_value is not None:
                parts.append(f"{c.id.rsplit('.', 1)[1]} {c.status}: {c.estimate:.4g} vs {c.reference_value:.4g}"
                             + (f" ({100 * c.relative_error:.1f}%)" if c.relative_error is not None else ""))
            else:
                parts.append(f"{c.status}: {c.detail}")
        return f"{group[1]}: " + "; ".join(parts)
    if group[0] == "shipped":
        bad = [c for c in checks if c.status in (FAIL, ERROR, KNOWN)]
        return f"conservation {group[1]}: {len(checks)} checks, {tally}" + "".join(
            f"\n      {c.status}: {c.id}: {c.detail[:160]}" for c in bad)
    if group[0] == "property":
        return f"monotonicity {group[1]}: {checks[0].status}: {checks[0].detail[:200]}"
    if group[0] == "semantics":
        bad = [c for c in checks if c.status in (FAIL, ERROR)]
        return f"reference semantics: {len(checks)} tests, {tally}" + "".join(
            f"\n      {c.status}: {c.id}" for c in bad[:10])
    return f"convergence {group[1]}: " + "; ".join(f"{c.id.rsplit('.', 1)[1]}: {c.detail}" for c in checks)


def report_dict(plan: Plan, checks: list[Check], started_at: str, wall_s: float, jobs: int) -> dict[str, Any]:
    order = list(SECTIONS)
    checks.sort(key=lambda c: (order.index(c.section) if c.section in order else 99, c.family, c.id))
    counts = Counter(c.status for c in checks)
    by_section: dict[str, dict[str, int]] = {s: dict(Counter(c.status for c in checks if c.section == s))
                                             for s in order}
    analytic = [c for c in checks if c.analytic and c.relative_error is not None]
    worst = max(analytic, key=lambda c: c.relative_error, default=None)
    verdicts = [c for c in checks if c.status != INFO]
    used = sorted({c.limitation for c in checks if c.status == KNOWN and c.limitation})
    from experiments.revision import git_revision
    from sim.provenance import stormsim_version
    import numpy
    import simpy
    return {
        "suite": plan.name,
        "started_at": started_at,
        "wall_s": round(wall_s, 1),
        "jobs": jobs,
        "confidence": CONFIDENCE,
        "provenance": {"stormsim_version": stormsim_version(), "git_revision": git_revision(),
                       "python": platform.python_version(), "numpy": numpy.__version__,
                       "simpy": simpy.__version__, "platform": platform.platform(), "cpus": os.cpu_count()},
        "summary": {
            "checks": len(verdicts),
            "info": counts.get(INFO, 0),
            "passed": counts.get(PASS, 0),
            "failed": counts.get(FAIL, 0),
            "known_limitations": counts.get(KNOWN, 0),
            "errors": counts.get(ERROR, 0),
            "ok": counts.get(FAIL, 0) == 0 and counts.get(ERROR, 0) == 0,
            "by_section": by_section,
            "analytic_checks": sum(1 for c in checks if c.analytic),
            "expected_chance_misses": round((1 - CONFIDENCE) * sum(1 for c in checks if c.analytic), 2),
            "max_relative_error": None if worst is None else {
                "value": worst.relative_error, "check": worst.id, "estimate": worst.estimate,
                "reference": worst.reference_value, "ci": [worst.ci_low, worst.ci_high]},
            "max_relative_ci_half_width": _max_relative_half_width(analytic),
        },
        "known_limitations": {k: {**KNOWN_LIMITATIONS[k], "checks": [c.id for c in checks if c.limitation == k]}
                              for k in used},
        "checks": [c.to_json() for c in checks],
    }


def _max_relative_half_width(checks: list[Check]) -> dict[str, Any] | None:
    best = None
    for c in checks:
        if c.ci_low is None or c.ci_high is None or not c.reference_value:
            continue
        half = (c.ci_high - c.ci_low) / 2 / abs(c.reference_value)
        if math.isfinite(half) and (best is None or half > best["value"]):
            best = {"value": half, "check": c.id}
    return best
