"""Conservation and consistency on every shipped scenario (a short run of each, observed).

Each case (a shipped scenario or one of its variants) runs once at its own seed, shortened
to ``stop_at`` and then *drained*: every open-loop client replays, as a trace, exactly the
arrivals the engine would have generated before ``stop_at`` (the same named stream, so the run
is the original run up to ``stop_at``), and nothing after; the run goes on for ``drain_s`` so
the work in flight can end. The run is watched by ``experiments.validation.observer``.

Checks per case (ids ``conservation.<case>.<check>``):

- ``little.client``: the sampled ``client_inflight`` equals, at every sample, the number of
  request records in the system (ties at a sample instant bracketed), and its time-average
  is reported next to lambda W from the records.
- ``little.service.<S>``: the same for each service's sampled ``inflight_requests`` against
  the handlers' [start, end) intervals (a kill ends them).
  The verdict is the pointwise agreement; L (levels) and lambda W (intervals) are reported with
  their gap, which is then exactly the error of sampling every ``sample_interval``.
- ``little.pool.<db>`` and ``little.pool_wait.<db>``: ``db_in_use.<db>`` against connection
  holds and ``db_waiters.<db>`` against waits for a connection (entry service; the levels of
  other services' pools are not sampled).
- ``attempts``: attempt rows = first tries + retries; every request with an attempt has exactly
  one first try; a request without an attempt was refused locally (``breaker_open``,
  ``throttled``); the ``retries`` window series sums to the retries.
- ``outcomes``: successes + failures + incomplete = arrivals, in the records, in the window
  series (entry requests, each edge, the requests to each service) and in the summary's
  population; ``requests_finished`` agrees.
- ``non_negative``: no level is ever negative.
- ``goroutines``, ``fds``, ``memory``: at every sample the sampled ``goroutines``,
  ``open_fds`` and ``live_heap_mib`` equal docs/model.md's rules applied to the live objects.
- ``drained``: when every request has ended, the server is at rest: no handler, no pool
  connection in use, no waiter, and goroutines, fds and live heap back to their at-rest values
  (4 + connections (+ HTTP/2 frame readers), 4 + connections + idle DB connections, baseline +
  goroutines + connections). A case whose requests do not all end within the drain reports
  ``not drained`` (pass, with the reason) rather than a verdict.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from experiments.catalog import shipped_scenarios
from experiments.validation.checks import ERROR, FAIL, PASS, Check
from experiments.validation.observer import BASE, HookMissing, observe
from sim.graph_outputs import client_targets
from sim.arrivals import generated_arrivals
from sim.engine import run_scenario
from sim.outputs import entry_clients, is_graph_run
from sim.result import ERROR_CODE, INCOMPLETE, SUCCESS
from sim.rng import Streams
from sim.scenario_loader import load_scenario
from sim.schema import ERROR_KINDS, Scenario

LOCAL_REFUSALS = (ERROR_CODE["breaker_open"], ERROR_CODE["throttled"])


@dataclasses.dataclass(frozen=True)
class ShippedCase:
    name: str
    variant: str | None
    stop_cap_s: float        # arrivals stop at this instant, or ``after_trigger_s`` past the first fault
    drain_s: float           # then the run goes on this long for the work in flight to end
    after_trigger_s: float = 10.0

    @property
    def label(self) -> str:
        return self.name if self.variant is None else f"{self.name}@{self.variant}"


def shipped_cases(with_variants: bool, stop_cap_s: float, drain_s: float,
                  after_trigger_s: float = 10.0) -> list[ShippedCase]:
    """Every shipped scenario (globbed now: others add them), optionally with its variants."""
    cases = []
    for name, path in shipped_scenarios().items():
        cases.append(ShippedCase(name, None, stop_cap_s, drain_s, after_trigger_s))
        if with_variants:
            cases += [ShippedCase(name, v, stop_cap_s, drain_s, after_trigger_s) for v in load_scenario(path).variants]
    return cases


def drained_scenario(scenario: Scenario, stop_at: float, drain_s: float, seed: int,
                     trace_dir: Path) -> tuple[Scenario, str]:
    """The scenario with its open-loop arrivals replayed up to ``stop_at`` and none after, run
    until ``stop_at + drain_s``; or the scenario cut at ``stop_at`` and the reason it cannot drain."""
    clients = dict(scenario.clients)
    for name, client in scenario.clients.items():
        load = client.load
        if load.kind != "open":
            return dataclasses.replace(scenario, duration=stop_at), f"client {name} is closed-loop"
        if load.trace:
            return dataclasses.replace(scenario, duration=stop_at), f"client {name} replays a trace"
        rng = Streams(seed, 0).generator(f"client.{name}.arrivals")
        times = np.concatenate(list(generated_arrivals(load, stop_at, rng)) or [np.zeros(0)])
        path = trace_dir / f"{name}.csv"
        path.write_text("at_s\n" + "".join(f"{t!r}\n" for t in times.tolist()), encoding="utf-8")
        clients[name] = dataclasses.replace(client, load=dataclasses.replace(load, trace=str(path)))
    return dataclasses.replace(scenario, clients=clients, duration=stop_at + drain_s), ""


def run_case(case: ShippedCase) -> list[dict[str, Any]]:
    """Run one case and return its checks as JSON dicts (picklable, for a worker process)."""
    try:
        return [c.to_json() for c in _run_case(case)]
    except HookMissing as exc:
        return [_error(case, "observer", str(exc)).to_json()]
    except Exception as exc:  # noqa: BLE001 - a crash of one case must not end the suite
        return [_error(case, "run", f"{type(exc).__name__}: {exc}").to_json()]


def _run_case(case: ShippedCase) -> list[Check]:
    scenario = load_scenario(shipped_scenarios()[case.name], variant=case.variant)
    trigger = min((f.at for f in scenario.faults), default=None)
    stop_at = min(scenario.duration, max(case.stop_cap_s, (trigger or 0.0) + case.after_trigger_s))
    with tempfile.TemporaryDirectory(prefix="stormsim-validate-") as tmp:
        run, why_not = drained_scenario(scenario, stop_at, case.drain_s, scenario.seed, Path(tmp))
        with observe() as obs:
            result = run_scenario(run, seed=scenario.seed)
        obs.close_open(result.milestones.end_at_s)
    return case_checks(case, run, result, obs, stop_at, why_not)


def case_checks(case: ShippedCase, scenario: Scenario, result: Any, obs: Any, stop_at: float,
                why_not_drained: str) -> list[Check]:
    checks: list[Check] = []
    params = {"case": case.label, "seed": result.seed, "stop_at_s": stop_at,
              "end_at_s": result.milestones.end_at_s, "requests": int(len(result.requests["error"])),
              "truncated": bool(result.milestones.truncated), "outcome": result.summary.get("outcome")}

    def add(check: str, family: str, title: str, compared: str, reference: str, source: str, problems: list[str],
            extra: dict[str, Any] | None = None, detail_ok: str = "") -> None:
        checks.append(Check(
            id=f"conservation.{case.label}.{check}", section="conservation", family=family,
            title=f"{case.label}: {title}", compared=compared, reference=reference, source=source,
            status=FAIL if problems else PASS, detail="; ".join(problems[:6]) if problems else detail_ok,
            params={**params, **(extra or {})}))

    if result.milestones.truncated:
        checks.append(_error(case, "run", f"the run was truncated by the {result.milestones.truncated_by} guard"))
        return checks
    t = np.asarray(result.levels["time_s"], dtype=float)
    levels = result.levels
    req = result.requests
    arrival = np.asarray(req["arrival_at"], dtype=float)
    end = np.asarray(req["end_at"], dtype=float)
    end = np.where(np.isnan(end), np.inf, end)

    # Little's law, client side, and per service and pool
    little_source = "sample-path Little's law (L = lambda W over a window; Stidham 1974); bound: tests/test_littles_law.py"
    stats = level_vs_intervals(t, np.asarray(levels["client_inflight"], float), arrival, end)
    add("little.client", "Little's law", "client_inflight vs the request records",
        "sampled client_inflight: pointwise, and its time-average L vs lambda W of the request records",
        "N(t) = #{arrival <= t < end}; integral of N = sum of clipped sojourns", little_source,
        stats["problems"], {"little": stats["summary"]})
    services = list(scenario.services)
    multi = len(scenario.services) > 1
    entry_service = _entry_service(scenario)
    for service in services:
        column = f"svc.{service}.inflight_requests" if multi else "inflight_requests"
        if column not in levels:
            continue
        starts, ends = _intervals(obs.handlers.get(service, []))
        stats = level_vs_intervals(t, np.asarray(levels[column], float), starts, ends)
        add(f"little.service.{service}", "Little's law", f"{column} vs the handlers of service {service}",
            f"sampled {column}: pointwise, and its time-average vs lambda W of the handlers [start, end)",
            "N(t) = handlers running at t; integral of N = sum of clipped handler times", little_source,
            stats["problems"], {"little": stats["summary"], "service": service})
    for db in sorted({c.split(".", 1)[1] for c in levels if c.startswith("db_in_use.")}):
        key = f"{entry_service}.{db}"
        for level_name, store, label in (("db_in_use", obs.holds, "connections in use"),
                                         ("db_waiters", obs.waits, "waiters for a connection")):
            starts, ends = _intervals(store.get(key, []))
            stats = level_vs_intervals(t, np.asarray(levels[f"{level_name}.{db}"], float), starts, ends)
            add(f"little.{'pool' if level_name == 'db_in_use' else 'pool_wait'}.{db}", "Little's law",
                f"{level_name}.{db} vs the pool's {label}",
                f"sampled {level_name}.{db}: pointwise, and its time-average vs lambda W of the {label}",
                f"N(t) = {label} at t", little_source, stats["problems"], {"little": stats["summary"], "pool": db})

    # attempts = first tries + retries
    add("attempts", "Attempts and outcomes", "attempts = first tries + retries",
        "attempt records, their attempt numbers, the requests' attempt counts and the retries series",
        "rows = sum of requests.attempts = first tries + retries; first tries = requests with an attempt",
        "docs/outputs.md (records, window series)", attempt_problems(result))
    add("outcomes", "Attempts and outcomes", "successes + failures + incomplete = arrivals",
        "records, window series and summary population",
        "successes + failures + incomplete = arrivals", "docs/outputs.md (populations, window series)",
        outcome_problems(result))

    # levels never negative
    negative = [f"{name} reaches {np.nanmin(v):g}" for name, v in levels.items()
                if len(v) and np.nanmin(np.asarray(v, float)) < 0]
    add("non_negative", "Accounting rules", "no level is ever negative", "every sampled level column",
        "min >= 0", "docs/outputs.md (levels)", negative)

    # the documented accounting rules at every sample
    for level, rule, source in (
            ("goroutines", "4 + connections + background readers (a request whose body was read, until its "
                           "client goes) + TimeoutHandler inner handlers (HTTP/2: + frame reader per connection "
                           "+ one per running handler)",
             "docs/model.md \"Goroutines\" and \"HTTP/2 server streams\"; semantics.md (connmem experiment)"),
            ("open_fds", "4 (stdio, listener) + accepted connections + open DB connections",
             "docs/model.md \"File descriptors\""),
            ("live_heap_mib", "baseline + goroutines x per_goroutine + connections x per_connection + "
                              "in-flight requests x per_request + handler allocations",
             "docs/outputs.md live_heap_mib; docs/model.md \"Go's garbage collector and the memory limit\"")):
        samples = [s for s in obs.rules if s.level.endswith(level)]
        tol = 1e-6 if level == "live_heap_mib" else 0.0
        bad = [s for s in samples if abs(s.sampled - s.rule) > tol]
        problems = [f"{len(bad)} of {len(samples)} samples differ; first at {bad[0].at_s:.3f} s "
                    f"({bad[0].level}): sampled {bad[0].sampled:g}, rule {bad[0].rule:g}"] if bad else []
        if not samples:
            problems = ["no sample was observed"]
        worst = max((abs(s.sampled - s.rule) for s in bad), default=0.0)
        add(f"rule.{level}", "Accounting rules", f"{level} follow the documented rule", f"sampled {level} at every sample",
            rule, source, problems, {"samples": len(samples), "mismatches": len(bad), "largest_gap": worst})
    if obs.problems:
        add("observer", "Accounting rules", "the pool hand-overs are consistent", "observed pool events",
            "every release follows a take", "sim/dbpool.py", obs.problems)

    # drained: back to rest
    add("drained", "Drain", "back to rest once every request has ended",
        "levels and live objects after the drain", "no handler, pool user or waiter; goroutines, fds and live "
        "heap at their at-rest values", "docs/model.md (accounting); design.md §4",
        *drain_problems(result, obs, why_not_drained))
    return checks


def drain_problems(result: Any, obs: Any, why_not: str) -> tuple[list[str], dict[str, Any], str]:
    """(problems, figures, text when passing) of the drain check."""
    incomplete = int(np.sum(result.requests["error"] == INCOMPLETE))
    if why_not:
        return [], {"drained": False}, f"not drained: {why_not} (nothing to check)"
    if incomplete:
        return [], {"drained": False}, (f"not drained: {incomplete} requests were still in flight at the end "
                                        f"(a fault or a hang outlives the drain; nothing to check)")
    state = obs.final_state.get("entry")
    if state is None:
        return ["no final sample was observed"], {"drained": False}, ""
    lv = {k: float(v[-1]) for k, v in result.levels.items() if len(v)}
    problems = []
    alive = lv.get("alive", 1.0)
    if state["handlers"] or lv.get("inflight_requests", 0):
        problems.append(f"{state['handlers']:g} handlers still running")
    if state["db_in_use"] or state["db_waiters"]:
        problems.append(f"pools: {state['db_in_use']:g} connections in use, {state['db_waiters']:g} waiters")
    if lv.get("accept_queue", 0):
        problems.append(f"{lv['accept_queue']:g} connections in the accept queue")
    conns = lv.get("server_connections", 0.0)
    at_rest_g = state["goroutines"]            # with no handler: 4 + conns (+ HTTP/2 frame readers)
    if lv.get("goroutines", 0.0) != at_rest_g or at_rest_g < BASE * alive + conns:
        problems.append(f"goroutines {lv.get('goroutines'):g}, at rest {at_rest_g:g}")
    fds_rest = BASE * alive + conns + state["db_open"]
    if lv.get("open_fds", 0.0) != fds_rest:
        problems.append(f"open fds {lv.get('open_fds'):g}, at rest {fds_rest:g}")
    if abs(lv.get("live_heap_mib", 0.0) - state["live_heap_mib"]) > 1e-6:
        problems.append(f"live heap {lv.get('live_heap_mib'):.6f} MiB, at rest {state['live_heap_mib']:.6f} MiB")
    figures = {"drained": True, "final_levels": {k: lv.get(k) for k in (
        "alive", "server_connections", "goroutines", "open_fds", "live_heap_mib", "memory_mib")},
        "idle_db_connections": state["db_open"]}
    if not alive:
        text = "drained: the process is dead at the end (killed, no restart pending): every level is 0"
    else:
        text = (f"drained: {alive:g} live instance(s), {conns:g} idle connections, {lv.get('goroutines', 0):g} "
                f"goroutines, {lv.get('open_fds', 0):g} fds, {state['db_open']:g} idle DB connections, live heap "
                f"{lv.get('live_heap_mib', 0):.3f} MiB at the end")
    return problems, figures, text


def request_groups(result: Any) -> list[tuple[str, np.ndarray, str]]:
    """(label, mask over the request records, window-series prefix): the entry requests (the
    unprefixed series), each edge's requests (``edge.<e>.``) and, in a graph, the requests to
    each service (``svc.<S>.``)."""
    req = result.requests
    client = np.asarray(req["client"], dtype=np.int64)
    names = list(result.client_names)
    n_entry = entry_clients(result)
    groups = [("entry requests", client < n_entry, "")]
    if is_graph_run(result):
        groups += [(f"edge {names[i]}", client == i, f"edge.{names[i]}.") for i in range(n_entry, len(names))]
        targets = np.asarray(client_targets(result), dtype=object)
        to = targets[client] if len(client) else np.zeros(0, dtype=object)
        groups += [(f"requests to {svc}", to == svc, f"svc.{svc}.") for svc in result.scenario.services]
    return groups


def attempt_problems(result: Any) -> list[str]:
    req, att = result.requests, result.attempts
    problems = []
    rows = len(att["error"])
    number = np.asarray(att["attempt"])
    first = int(np.sum(number == 0))
    retries = int(np.sum(number > 0))
    if first + retries != rows:
        problems.append(f"{rows} attempt rows != {first} first tries + {retries} retries")
    n_att = np.asarray(req["attempts"])
    if int(n_att.sum()) != rows:
        problems.append(f"sum of requests.attempts {int(n_att.sum())} != {rows} attempt rows")
    with_attempt = int(np.sum(n_att >= 1))
    if first != with_attempt:
        problems.append(f"{first} first tries != {with_attempt} requests with an attempt")
    ids_first = np.asarray(att["request_id"])[number == 0]
    if len(np.unique(ids_first)) != len(ids_first):
        problems.append("a request has two first tries")
    none = n_att == 0
    if none.any() and not np.isin(np.asarray(req["error"])[none], LOCAL_REFUSALS).all():
        problems.append(f"{int(none.sum())} requests without an attempt, not all refused locally")
    # the window series, per group: retries (entry), attempts (edges)
    order = np.argsort(np.asarray(req["request_id"]), kind="stable")
    rid_sorted = np.asarray(req["request_id"])[order]
    where = order[np.clip(np.searchsorted(rid_sorted, np.asarray(att["request_id"])), 0, max(len(order) - 1, 0))] \
        if len(order) else np.zeros(0, np.int64)
    for label, mask, prefix in request_groups(result):
        in_group = mask[where] if len(where) else np.zeros(0, bool)
        if prefix == "" and "retries" in result.windows:
            series = int(np.nansum(result.windows["retries"]))
            held = int(np.sum(in_group & (number > 0)))
            if series != held:
                problems.append(f"{label}: retries series sums to {series}, records hold {held} retries")
        if prefix.startswith("edge.") and prefix + "attempts" in result.windows:
            series = int(np.nansum(result.windows[prefix + "attempts"]))
            held = int(np.sum(in_group))
            if series != held:
                problems.append(f"{label}: attempts series sums to {series}, records hold {held} attempts")
    return problems


def outcome_problems(result: Any) -> list[str]:
    req = result.requests
    err = np.asarray(req["error"])
    problems = []
    n = len(err)
    s, f, i = int(np.sum(err == SUCCESS)), int(np.sum(err > 0)), int(np.sum(err == INCOMPLETE))
    if s + f + i != n:
        problems.append(f"records: {s} + {f} + {i} != {n}")
    finished = result.counters.get("requests_finished")
    if finished is not None and int(finished) != s + f:
        problems.append(f"requests_finished {int(finished)} != {s + f} finished records")
    w = result.windows
    for label, mask, prefix in request_groups(result):
        if prefix + "arrivals" not in w:
            continue
        n_g = int(mask.sum())
        inc_g = int(np.sum(mask & (err == INCOMPLETE)))
        arrivals, succ, fail = (int(np.nansum(w[prefix + k])) for k in ("arrivals", "successes", "failures"))
        if arrivals != n_g:
            problems.append(f"{label}: arrivals series sums to {arrivals}, records hold {n_g}")
        if succ + fail + inc_g != arrivals:
            problems.append(f"{label}: series {succ} successes + {fail} failures + {inc_g} incomplete "
                            f"!= {arrivals} arrivals")
        if prefix == "":
            by_kind = sum(int(np.nansum(w[f"failures.{k}"])) for k in ERROR_KINDS if f"failures.{k}" in w)
            if by_kind != fail:
                problems.append(f"failures by kind sum to {by_kind}, failures to {fail}")
    # the summary's population (entry requests with warmup <= arrival < end)
    summary = result.summary
    arrival = np.asarray(req["arrival_at"])
    pop = request_groups(result)[0][1] & (arrival >= result.scenario.warmup) & (arrival < result.milestones.end_at_s)
    n_pop = int(pop.sum())
    succ_pop, inc_pop = int(np.sum(pop & (err == SUCCESS))), int(np.sum(pop & (err == INCOMPLETE)))
    errors = sum(int(v) for v in (summary.get("errors") or {}).values())
    if succ_pop + errors + inc_pop != n_pop or int(summary.get("incomplete", inc_pop)) != inc_pop:
        problems.append(f"summary: {succ_pop} successes + {errors} errors + {summary.get('incomplete')} incomplete "
                        f"!= {n_pop} population")
    if n_pop and abs(float(summary["success_rate"]) - succ_pop / n_pop) > 1e-6:
        problems.append(f"summary success_rate {summary['success_rate']} != {succ_pop}/{n_pop}")
    dur = summary.get("duration_s") or 0.0
    if dur > 0 and abs(float(summary["offered_rps"]) * dur - n_pop) > 0.001 * dur + 1e-6 * n_pop:
        problems.append(f"summary offered_rps x duration = {float(summary['offered_rps']) * dur:.1f}, population {n_pop}")
    return problems


# ------------------------------------------------------------------ levels vs intervals

def level_vs_intervals(t: np.ndarray, level: np.ndarray, start: np.ndarray, end: np.ndarray) -> dict[str, Any]:
    """Pointwise agreement of a sampled level with intervals [start, end) (ties at a sample
    instant bracketed), and Little's law over [t0, t_last]: L (time-average of the level,
    right-endpoint sum) next to lambda W of the intervals (sum of their clipped lengths over
    the window's length), and the part of the gap that sampling explains (the same sum over
    the intervals' own count at the sample instants). The verdict is the pointwise one: with it,
    L equals the intervals' sampled time-average exactly, and L - lambda W is sampling error."""
    problems: list[str] = []
    a_sorted, e_sorted = np.sort(start), np.sort(end)
    lower = np.searchsorted(a_sorted, t, "left") - np.searchsorted(e_sorted, t, "right")
    upper = np.searchsorted(a_sorted, t, "right") - np.searchsorted(e_sorted, t, "left")
    bad = np.flatnonzero((level < lower) | (level > upper))
    if bad.size:
        k = bad[0]
        problems.append(f"{bad.size} of {len(t)} samples disagree; first at {t[k]:.6f} s: sampled {level[k]:g}, "
                        f"intervals say {lower[k]}..{upper[k]}")
    summary: dict[str, Any] = {}
    if len(t) >= 2:
        a, b = float(t[0]), float(t[-1])
        widths = np.diff(t)
        lhs = float(np.sum(level[1:] * widths))
        clipped = np.clip(np.minimum(end, b) - np.maximum(start, a), 0.0, None)
        rhs = float(np.sum(clipped))
        inside = (start >= a) & (start < b)
        finished = inside & np.isfinite(end)
        summary = {"L_levels": lhs / (b - a), "L_records": rhs / (b - a),
                   "lambda_per_s": float(inside.sum()) / (b - a),
                   "W_s": float(np.mean(end[finished] - start[finished])) if finished.any() else 0.0,
                   "sampling_gap": (lhs - rhs) / (b - a), "sample_interval_s": float(np.max(widths)),
                   "window_s": [a, b]}
    return {"problems": problems, "summary": summary}


def _intervals(pairs: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    if not pairs:
        return np.zeros(0), np.zeros(0)
    arr = np.asarray(pairs, dtype=float)
    return arr[:, 0], arr[:, 1]


def _entry_service(scenario: Scenario) -> str:
    first = next(iter(scenario.clients.values()), None)
    target = getattr(first, "target", "") if first is not None else ""
    return target if target in scenario.services else next(iter(scenario.services))


def _error(case: ShippedCase, what: str, message: str) -> Check:
    return Check(id=f"conservation.{case.label}.{what}", section="conservation", family="Runs",
                 title=f"{case.label}: {what}", compared="", reference="", source="", status=ERROR,
                 detail=message, params={"case": case.label})

