"""Queueing theory across a grid: the engine against closed forms, over seeded replications.

Every case is one stormsim scenario built so that it *is* a textbook queue (the mapping is
documented per kind below and in docs/validation.md), run for R replications (the same
seed, replication index 0..R-1: independent random streams, design.md §5). Per replication
the statistic is computed over the requests that arrived in [warm-up, 0.98 x end): selected
by arrival time, so the selection does not depend on the outcome, and early enough that all
of them have finished. The warm-up is 10% of the run, from an empty system.

Common to every kind: one service ``s``, one client ``c`` with Poisson arrivals at rate
lambda, one client process, no network time (``rtt: 0s``), connections always reused
(``max_idle_conns_per_host`` 100,000), no retries, no TLS, GC off, one instance.

- ``mmc`` (M/M/c, FCFS): ``cpu.cores = c``, one route whose handler is one exponential CPU
  step of mean 1/mu. Handlers queue FIFO for a core (sim/cpu.py), so the sojourn of a
  request is the M/M/c sojourn. Compared: for c = 1 the mean and P99 sojourn; for c > 1 the
  mean wait in queue, estimated as mean sojourn - 1/mu (the CI carries the service-time noise).
- ``mg1`` (M/G/1, FCFS): one core; two routes drawn per request by weight (``load.routes``),
  each one CPU step: a mixture with one CPU burst per request (two steps of one route would
  queue twice, which is not M/G/1). ``two_point``: 2 ms (90%) or 50 ms (10%), constant;
  ``hyperexp``: exponential with those means. Compared: mean wait in queue (P-K).
- ``erlang_b`` (M/M/c/c): a shedding gate with ``max_in_flight = c`` and ``queue_length 0``
  answers 503 to the (c+1)th concurrent request; the handler is an off-CPU sleep (exponential,
  or constant for the insensitivity point), so the c admitted requests never wait for each
  other. Compared: the fraction of requests answered 503 with Erlang B(c, lambda/mu).
- ``abandon`` (M/M/1+D): a shedding gate with ``max_in_flight 1``, an unbounded FIFO queue and
  ``queue_timeout D``; the handler is an exponential sleep. A queued request whose wait exceeds
  D is answered 503 (``shed_dropped``) and leaves; one that got the slot runs to its end.
  That is FCFS with deterministic patience in the queue only. Compared: the 503 fraction with
  P(abandon) of M/M/1+D.
- ``firm`` (M/M/1 with a firm deadline): the same gate without a queue timeout, a route that
  ``honours_context`` and whose work is one query (exponential, DB round trip 0, an unlimited
  pool so the pool never queues), and ``client_timeout D``. When the client gives up at D its
  connection closes, the server's background reader ends the context, and (Go semantics) a
  queued request leaves the gate's queue while a running query is cancelled and the handler
  returns: the request leaves at D wherever it is, and its work stops. Compared: the
  ``client_timeout`` fraction with the firm-deadline miss probability.

Why not a ``database/sql`` pool of size 1 as the M/M/1+D server: a released connection goes to
a waiter picked at random (``connRequestSet.TakeRandom``), not the oldest, so the pool is a
random-order queue and the FCFS closed forms do not apply to it; the gate's FIFO queue is FCFS.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from experiments.validation import analytic
from experiments.validation.checks import Check, ERROR, FAIL, interval_check
from sim.engine import run_scenario
from sim.result import ERROR_CODE
from sim.rng import Streams
from sim.scenario_loader import scenario_from_dict

BASE_SEED = 20_240_611
MEAN_SERVICE_S = 0.010
WARMUP_FRACTION = 0.10
WINDOW_END_FRACTION = 0.98

# mixtures for M/G/1: (weight, mean seconds) per route
MIXTURE = ((0.9, 0.002), (0.1, 0.050))


@dataclass(frozen=True)
class QueueCase:
    kind: str                 # mmc, mg1, erlang_b, abandon, firm
    c: int                    # servers (cores, or the gate's max_in_flight)
    rho: float                # lambda / (c mu)
    customers: int            # expected arrivals per replication
    replications: int
    dist: str = "exponential"  # service: exponential, constant, two_point, hyperexp
    deadline: float = 0.0     # D in units of the mean service time (abandon, firm)

    @property
    def id(self) -> str:
        if self.kind == "mmc":
            return f"queueing.mm1.rho{self.rho:g}" if self.c == 1 else f"queueing.mmc.c{self.c}.rho{self.rho:g}"
        if self.kind == "mg1":
            return f"queueing.mg1.{self.dist}.rho{self.rho:g}"
        if self.kind == "erlang_b":
            return f"queueing.erlang_b.c{self.c}.a{self.offered:g}.{self.dist}"
        return f"queueing.{'mm1d' if self.kind == 'abandon' else 'firm'}.rho{self.rho:g}.D{self.deadline:g}"

    @property
    def mean_service_s(self) -> float:
        if self.kind == "mg1":
            return sum(w * m for w, m in MIXTURE)
        return MEAN_SERVICE_S

    @property
    def second_moment_s2(self) -> float:
        if self.kind != "mg1":
            raise ValueError("only M/G/1 cases have a mixture")
        factor = 1.0 if self.dist == "two_point" else 2.0     # E[X^2] = m^2 or 2 m^2
        return sum(w * factor * m * m for w, m in MIXTURE)

    @property
    def lam(self) -> float:
        return self.rho * self.c / self.mean_service_s

    @property
    def offered(self) -> float:
        return self.rho * self.c

    @property
    def seed(self) -> int:
        return BASE_SEED + zlib.crc32(self.id.encode()) % 100_000

    @property
    def duration_s(self) -> float:
        return self.customers / self.lam


def scenario_data(case: QueueCase) -> dict[str, Any]:
    """The scenario that is the queue of ``case`` (see the module docstring)."""
    mean = MEAN_SERVICE_S
    duration = case.duration_s
    transport: dict[str, Any] = {"rtt": "0s", "max_idle_conns_per_host": 100_000, "max_idle_conns": 100_000}
    load: dict[str, Any] = {"rate_per_s": case.lam}
    service: dict[str, Any] = {"cpu": {"cores": case.c}}
    data: dict[str, Any] = {"name": case.id, "duration": f"{duration!r}s", "warmup": f"{duration * WARMUP_FRACTION!r}s",
                            "sample_interval": f"{max(duration / 100.0, 0.1)!r}s"}
    if case.kind == "mmc":
        service["routes"] = {"r": {"steps": [{"cpu": f"{mean!r}s", "distribution": "exponential"}]}}
    elif case.kind == "mg1":
        dist = "constant" if case.dist == "two_point" else "exponential"
        service["cpu"] = {"cores": 1}
        service["routes"] = {f"r{i}": {"steps": [{"cpu": f"{m!r}s", "distribution": dist}]}
                             for i, (_w, m) in enumerate(MIXTURE)}
        load["routes"] = {f"r{i}": w for i, (w, _m) in enumerate(MIXTURE)}
    elif case.kind == "erlang_b":
        dist = "constant" if case.dist == "constant" else "exponential"
        service["shedding"] = {"max_in_flight": case.c, "queue_length": 0}
        service["routes"] = {"r": {"steps": [{"sleep": f"{mean!r}s", "distribution": dist}]}}
    elif case.kind == "abandon":
        service["shedding"] = {"max_in_flight": 1, "queue_length": 10_000_000, "discipline": "fifo",
                               "queue_timeout": f"{case.deadline * mean!r}s"}
        service["routes"] = {"r": {"steps": [{"sleep": f"{mean!r}s", "distribution": "exponential"}]}}
    elif case.kind == "firm":
        service["shedding"] = {"max_in_flight": 1, "queue_length": 10_000_000, "discipline": "fifo"}
        service["routes"] = {"r": {"steps": [{"query": "d.t"}], "honours_context": True}}
        service["pools"] = {"d": {"max_open_conns": 0, "max_idle_conns": 2}}
        data["databases"] = {"d": {"rtt": "0s", "tables": {"t": {"query_time": f"{mean!r}s",
                                                                 "distribution": "exponential"}}}}
        transport["client_timeout"] = f"{case.deadline * mean!r}s"
    else:
        raise ValueError(f"unknown queue kind {case.kind!r}")
    data["services"] = {"s": service}
    data["clients"] = {"c": {"target": "s", "instances": 1, "load": load, "transport": transport}}
    return data


def run_replication(case: QueueCase, replication: int) -> dict[str, float]:
    """One replication of ``case``: the window's statistics (plain floats, cheap to pickle)."""
    result = run_scenario(scenario_from_dict(scenario_data(case)), seed=case.seed, replication=replication)
    req = result.requests
    end = result.milestones.end_at_s
    a, b = WARMUP_FRACTION * end, WINDOW_END_FRACTION * end
    arrival = req["arrival_at"]
    window = (arrival >= a) & (arrival < b)
    error = req["error"][window]
    sojourn = (req["end_at"] - arrival)[window]
    done = np.isfinite(sojourn)
    n = int(window.sum())
    code_5xx, code_timeout = ERROR_CODE["http_5xx"], ERROR_CODE["client_timeout"]
    expected = {"mmc": (0,), "mg1": (0,), "erlang_b": (0, code_5xx), "abandon": (0, code_5xx),
                "firm": (0, code_timeout)}[case.kind]
    ok = done & (error == 0)
    out = {
        "n": float(n),
        "incomplete": float(n - int(done.sum())),
        "unexpected_errors": float(np.sum(~np.isin(error, expected) & done)),
        "truncated": float(bool(result.milestones.truncated)),
        "mean_sojourn_s": float(sojourn[ok].mean()) if ok.any() else math.nan,
        "p99_sojourn_s": float(np.percentile(sojourn[ok], 99.0)) if ok.any() else math.nan,
        "fraction_5xx": float(np.mean(error == code_5xx)) if n else math.nan,
        "fraction_timeout": float(np.mean(error == code_timeout)) if n else math.nan,
        "wall_s": float(result.wall_s),
    }
    if case.kind in ("mmc", "mg1"):
        rank = np.searchsorted(np.sort(req["request_id"]), req["request_id"][window])   # arrival order
        service = service_times(case, replication, rank, req["route"][window])
        wait = (sojourn - service)[ok]
        out["mean_wait_s"] = float(wait.mean()) if wait.size else math.nan
        out["negative_waits"] = float(np.sum(wait < -1e-9))
    return out


def service_times(case: QueueCase, replication: int, rank: np.ndarray, route: np.ndarray) -> np.ndarray:
    """Each request's CPU work, rebuilt from the engine's named stream (a control variate).

    The handler of the i-th request to arrive (``rank`` i; with no network time handlers start
    in arrival order) multiplies the i-th unit exponential of ``service.s.steps`` by its
    step's mean; a constant step takes its value. ``mean sojourn - mean of these`` estimates the
    mean wait in queue without the service-time noise. Should the engine draw in another order,
    the draws used are still i.i.d. with the right mean, so the estimate stays unbiased, only
    noisier; ``negative_waits`` (a request leaving before its own work was done) tells which.
    """
    if case.kind == "mg1":
        means = np.array([m for _w, m in MIXTURE])[np.asarray(route, dtype=np.int64)]
        if case.dist == "two_point":
            return means
    else:
        means = np.full(len(rank), MEAN_SERVICE_S)
    n = int(rank.max()) + 1 if len(rank) else 0
    draws = Streams(case.seed, replication).generator("service.s.steps").standard_exponential(n)
    return means * draws[np.asarray(rank, dtype=np.int64)]


FAMILIES: dict[str, tuple[str, str]] = {
    # family -> (formula, source), in the report's order
    "M/M/1 sojourn": ("W = 1 / (mu - lambda); P99 = ln(100) / (mu - lambda)", "Kleinrock, Queueing Systems vol. 1 (1975) §3.2"),
    "M/M/c mean wait (Erlang C)": ("Wq = C(c, a) / (c mu - lambda), C = Erlang C", "Kleinrock §3.5; Gross & Harris §2.3"),
    "M/M/c/c blocking (Erlang B)": ("B(c, a) = (a^c / c!) / sum_k a^k / k!", "Erlang (1917); insensitivity: Sevastyanov (1957)"),
    "M/G/1 mean wait (Pollaczek-Khinchine)": ("Wq = lambda E[S^2] / (2 (1 - rho))", "Kleinrock §5.6"),
    "M/M/1+D abandonment": ("P = rho (1 - rho) e^-theta / (1 - rho^2 e^-theta), theta = (mu - lambda) D",
                            "Baccelli, Boyer & Hebuterne (1984); derivation in experiments/validation/analytic.py"),
    "M/M/1 with a firm deadline": ("P = (1 - rho) e^-theta / (1 - rho e^-theta), theta = (mu - lambda) D",
                                   "level crossing (Brill & Posner 1977); derivation in experiments/validation/analytic.py"),
}


def family(case: QueueCase) -> str:
    return {"mmc": "M/M/1 sojourn" if case.c == 1 else "M/M/c mean wait (Erlang C)",
            "mg1": "M/G/1 mean wait (Pollaczek-Khinchine)",
            "erlang_b": "M/M/c/c blocking (Erlang B)",
            "abandon": "M/M/1+D abandonment",
            "firm": "M/M/1 with a firm deadline"}[case.kind]


def build_checks(case: QueueCase, reps: list[dict[str, float]]) -> list[Check]:
    """The checks of one case from its replications."""
    mu = 1.0 / MEAN_SERVICE_S
    lam = case.lam
    params = {"kind": case.kind, "c": case.c, "rho": case.rho, "lambda_per_s": lam, "dist": case.dist,
              "deadline_s": case.deadline * MEAN_SERVICE_S, "mean_service_s": case.mean_service_s,
              "customers": case.customers, "seed": case.seed}
    if case.kind == "mg1":
        params["second_moment_s2"] = case.second_moment_s2
    common = dict(section="queueing", family=family(case), params=params)
    n_mean = float(np.mean([r["n"] for r in reps]))
    sanity = _sanity(reps)
    checks: list[Check] = []

    def add(suffix: str, title: str, compared: str, values: list[float], ref: float, reference: str,
            source: str) -> None:
        if sanity:
            checks.append(Check(id=f"{case.id}.{suffix}", title=title, compared=compared, reference=reference,
                                source=source, status=FAIL, reference_value=ref, detail=sanity,
                                replications=len(reps), n_per_replication=n_mean, analytic=True, **common))
            return
        check = interval_check(values, ref, id=f"{case.id}.{suffix}", title=title, compared=compared,
                               reference=reference, source=source, **common)
        check.n_per_replication = n_mean
        checks.append(check)

    kleinrock = "Kleinrock, Queueing Systems vol. 1 (1975)"
    if case.kind == "mmc" and case.c == 1:
        add("mean", f"M/M/1 mean sojourn, rho = {case.rho:g}", "mean latency of the window's requests (s)",
            [r["mean_sojourn_s"] for r in reps], analytic.mm1_sojourn_mean_s(lam, mu), "W = 1 / (mu - lambda)",
            kleinrock + " §3.2")
        add("p99", f"M/M/1 P99 sojourn, rho = {case.rho:g}", "P99 latency of the window's requests (s)",
            [r["p99_sojourn_s"] for r in reps], analytic.mm1_sojourn_quantile_s(lam, mu, 0.99),
            "P99 = ln(100) / (mu - lambda) (sojourn ~ Exponential(mu - lambda))", kleinrock + " §3.2")
    elif case.kind == "mmc":
        add("wq", f"M/M/{case.c} mean wait in queue, rho = {case.rho:g}",
            "mean of (latency - own CPU work) over the window's requests (s)",
            [r["mean_wait_s"] for r in reps], analytic.mmc_wait_mean_s(case.c, lam, mu),
            f"Wq = C(c, a) / (c mu - lambda), Erlang C = {analytic.erlang_c(case.c, lam / mu):.4f}",
            kleinrock + " §3.5; Gross & Harris, Fundamentals of Queueing Theory §2.3")
    elif case.kind == "mg1":
        es, es2 = case.mean_service_s, case.second_moment_s2
        scv = es2 / es ** 2 - 1.0
        add("wq", f"M/G/1 mean wait in queue, {case.dist.replace('_', '-')} service (SCV {scv:.2f}), "
                  f"rho = {case.rho:g}", "mean of (latency - own CPU work) over the window's requests (s)",
            [r["mean_wait_s"] for r in reps], analytic.mg1_wait_mean_s(lam, es, es2),
            f"Wq = lambda E[S^2] / (2 (1 - rho)), E[S] = {es * 1e3:g} ms, E[S^2] = {es2 * 1e6:.4g} ms^2",
            kleinrock + " §5.6 (Pollaczek-Khinchine)")
    elif case.kind == "erlang_b":
        a = lam * MEAN_SERVICE_S
        add("blocking", f"M/{'D' if case.dist == 'constant' else 'M'}/{case.c}/{case.c} blocking, a = {a:g}",
            "fraction of the window's requests answered 503 by the shedding gate",
            [r["fraction_5xx"] for r in reps], analytic.erlang_b(case.c, a), "Erlang B(c, a)",
            "Erlang (1917); insensitivity to the service distribution: Sevastyanov (1957)")
    elif case.kind == "abandon":
        d = case.deadline * MEAN_SERVICE_S
        add("abandon", f"M/M/1+D abandonment, rho = {case.rho:g}, D = {case.deadline:g}/mu",
            "fraction of the window's requests shed from the queue (503 after queue_timeout)",
            [r["fraction_5xx"] for r in reps], analytic.mm1_abandon_probability(lam, mu, d),
            "P = rho (1 - rho) e^-theta / (1 - rho^2 e^-theta), theta = (mu - lambda) D",
            "Baccelli, Boyer & Hebuterne, Adv. Appl. Prob. 16 (1984) 887-905; derivation in "
            "experiments/validation/analytic.py")
    elif case.kind == "firm":
        d = case.deadline * MEAN_SERVICE_S
        add("miss", f"M/M/1 firm deadline miss, rho = {case.rho:g}, D = {case.deadline:g}/mu",
            "fraction of the window's requests failed with client_timeout",
            [r["fraction_timeout"] for r in reps], analytic.mm1_firm_deadline_miss_probability(lam, mu, d),
            "P = (1 - rho) e^-theta / (1 - rho e^-theta), theta = (mu - lambda) D",
            "level-crossing derivation (Brill & Posner, Oper. Res. 25 (1977)) in "
            "experiments/validation/analytic.py")
    return checks


def _sanity(reps: list[dict[str, float]]) -> str:
    """Why the replications cannot be compared with the closed form ('' if they can)."""
    problems = []
    if any(r["truncated"] for r in reps):
        problems.append("a run was truncated by a guard")
    inc = sum(r["incomplete"] for r in reps)
    if inc:
        problems.append(f"{inc:g} requests of the windows never finished")
    bad = sum(r["unexpected_errors"] for r in reps)
    if bad:
        problems.append(f"{bad:g} requests of the windows failed with an error kind the queue cannot produce")
    negative = sum(r.get("negative_waits", 0.0) for r in reps)
    if negative:
        problems.append(f"{negative:g} requests finished before their own CPU work was done: the engine no "
                        f"longer draws service times in arrival order from service.s.steps "
                        f"(experiments/validation/queueing.py, service_times)")
    return "; ".join(problems)


def error_check(case: QueueCase, message: str) -> Check:
    return Check(id=f"{case.id}.run", section="queueing", family=family(case), title=f"{case.id}: run failed",
                 compared="", reference="", source="", status=ERROR, detail=message, analytic=True)


# --------------------------------------------------------------------- the grids

def quick_cases() -> list[QueueCase]:
    """Loads up to rho = 0.8 for queues without abandonment (and one overloaded point of each
    deadline queue, which stays stable); fixed seeds, 10 replications; ~4 M customers."""
    r = 10
    cases = [QueueCase("mmc", 1, rho, n, r) for rho, n in ((0.3, 10_000), (0.5, 15_000), (0.7, 20_000), (0.8, 30_000))]
    cases += [QueueCase("mmc", c, rho, 20_000, r) for c in (2, 4, 8) for rho in (0.6, 0.8)]
    cases += [QueueCase("mg1", 1, rho, n, r, dist) for dist in ("two_point", "hyperexp")
              for rho, n in ((0.5, 20_000), (0.8, 40_000))]
    cases += [QueueCase("erlang_b", c, rho, 10_000, r, dist) for c, rho, dist in
              ((1, 0.5, "exponential"), (2, 0.75, "exponential"), (5, 0.8, "exponential"),
               (10, 0.8, "exponential"), (5, 0.8, "constant"))]
    cases += [QueueCase("abandon", 1, rho, 10_000, r, deadline=2.0) for rho in (0.5, 0.8, 1.2)]
    cases += [QueueCase("firm", 1, rho, 10_000, r, deadline=3.0) for rho in (0.5, 0.8, 1.2)]
    return cases


def full_cases() -> list[QueueCase]:
    """Loads up to rho = 0.95 (and overloaded deadline queues), longer runs, 20 replications;
    ~4 M customers per replication."""
    r = 20
    cases = [QueueCase("mmc", 1, rho, n, r) for rho, n in
             ((0.3, 30_000), (0.5, 40_000), (0.7, 60_000), (0.8, 100_000), (0.9, 200_000), (0.95, 400_000))]
    cases += [QueueCase("mmc", c, rho, n, r) for c in (2, 4, 8, 16)
              for rho, n in ((0.5, 40_000), (0.8, 80_000), (0.95, 250_000))]
    cases += [QueueCase("mg1", 1, rho, n, r, dist) for dist in ("two_point", "hyperexp")
              for rho, n in ((0.3, 30_000), (0.5, 50_000), (0.8, 150_000), (0.9, 300_000))]
    cases += [QueueCase("erlang_b", c, rho, 30_000, r, dist) for c, rho, dist in
              ((1, 0.5, "exponential"), (2, 0.75, "exponential"), (5, 0.5, "exponential"), (5, 0.8, "exponential"),
               (10, 0.8, "exponential"), (10, 1.2, "exponential"), (20, 0.9, "exponential"), (5, 0.8, "constant"),
               (10, 1.2, "constant"))]
    cases += [QueueCase(kind, 1, rho, 20_000, r, deadline=d) for kind in ("abandon", "firm") for d in (1.0, 4.0)
              for rho in (0.5, 0.8, 0.95, 1.2, 2.0)]
    return cases
