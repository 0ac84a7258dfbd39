"""Closed forms the validation suite compares the engine with (pure functions, no SimPy).

Notation: arrival rate ``lam``, service rate ``mu`` (mean service 1/mu), ``c`` servers,
offered load ``a = lam / mu``, utilisation ``rho = a / c``.

- M/M/1 sojourn ~ Exponential(mu - lam): mean 1/(mu - lam), q-quantile -ln(1 - q)/(mu - lam)
  (Kleinrock, *Queueing Systems* vol. 1, 1975, §3.2).
- Erlang B, M/M/c/c blocking (insensitive to the service distribution beyond its mean:
  Sevastyanov 1957), through the stable recursion B(k) = a B(k-1) / (k + a B(k-1)).
- Erlang C, P(wait) in M/M/c = c B / (c - a (1 - B)); mean wait in queue C / (c mu - lam)
  (Kleinrock §3.5; Gross & Harris, *Fundamentals of Queueing Theory*, §2.3).
- Pollaczek-Khinchine, M/G/1 mean wait in queue lam E[S^2] / (2 (1 - rho)) (Kleinrock §5.6).
- M/M/1+D, FCFS, deterministic patience D *in the queue* (a customer whose service has not
  started D after its arrival leaves; one whose service started stays to the end):
  P(abandon) = rho (1 - rho) e^{-theta} / (1 - rho^2 e^{-theta}), theta = (mu - lam) D,
  valid for any rho (also rho >= 1). Baccelli, Boyer & Hebuterne, "Single-server queues
  with impatient customers", Adv. Appl. Prob. 16 (1984) 887-905; derivation below.
- M/M/1 with a *firm* deadline D on the whole sojourn, FCFS (a customer still in the
  system D after its arrival leaves, from the queue or from service, and the work of its
  service stops): P(miss) = (1 - rho) e^{-theta} / (1 - rho e^{-theta}); derivation below.

Both deadline results come from the stationary density f of the virtual waiting time V
(the work in the system that will be done) by level crossing (Brill & Posner, "Level
crossings in point processes applied to queues: single-server case", Oper. Res. 25 (1977)
662-674): V falls at rate 1, so the down-crossing rate of level v is f(v); an arrival that
sees V = u brings work that crosses v with probability P(S > v - u) = e^{-mu (v - u)}.

- Queue abandonment: only arrivals with u < D join (the others leave at their deadline
  without adding work). For 0 < v <= D, f(v) = lam P0 e^{-mu v} + lam int_0^v f(u)
  e^{-mu (v-u)} du, whose solution is f(v) = lam P0 e^{-(mu - lam) v}; for v > D,
  f(v) = f(D) e^{-mu (v - D)}. Normalising gives P0 = (1 - rho) / (1 - rho^2 e^{-theta}),
  and by PASTA P(abandon) = P(V > D) = rho P0 e^{-theta}.
- Firm deadline: an arrival that sees u adds min(S, D - u), so V <= D and every arrival
  joins; f(v) = lam P0 e^{-(mu - lam) v} on (0, D), P0 = (1 - rho) / (1 - rho e^{-theta}),
  and P(miss) = P(V + S > D) = P0 e^{-mu D} + int_0^D f(v) e^{-mu (D - v)} dv
  = P0 e^{-theta}.

Limits (checked in tests/test_validate.py, with an independent Lindley-recursion simulation
of both queues): D -> infinity gives 0; D = 0 gives rho / (1 + rho) (Erlang B, c = 1) for
abandonment and 1 for the firm deadline.
"""

from __future__ import annotations

import math


def mm1_sojourn_mean_s(lam: float, mu: float) -> float:
    _stable(lam, mu, 1)
    return 1.0 / (mu - lam)


def mm1_sojourn_quantile_s(lam: float, mu: float, q: float) -> float:
    """The q-quantile of the M/M/1 sojourn time (FCFS): Exponential(mu - lam)."""
    _stable(lam, mu, 1)
    return -math.log1p(-q) / (mu - lam)


def erlang_b(c: int, a: float) -> float:
    """Blocking probability of M/G/c/c with offered load a (Erlang B)."""
    if c < 0 or a < 0:
        raise ValueError(f"Erlang B needs c >= 0 and a >= 0, got c={c}, a={a}")
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


def erlang_c(c: int, a: float) -> float:
    """P(an arrival waits) in M/M/c with offered load a < c (Erlang C)."""
    if not 0 <= a < c:
        raise ValueError(f"offered load {a} must be in [0, {c})")
    b = erlang_b(c, a)
    return c * b / (c - a * (1.0 - b))


def mmc_wait_mean_s(c: int, lam: float, mu: float) -> float:
    """Mean wait in queue of M/M/c, FCFS: C(c, a) / (c mu - lam)."""
    _stable(lam, mu, c)
    return erlang_c(c, lam / mu) / (c * mu - lam)


def mg1_wait_mean_s(lam: float, mean_s: float, second_moment_s2: float) -> float:
    """Pollaczek-Khinchine: mean wait in queue of M/G/1 (any work-conserving order that does
    not look at service times; FCFS here)."""
    rho = lam * mean_s
    if not 0 <= rho < 1:
        raise ValueError(f"M/G/1 needs rho < 1, got {rho}")
    return lam * second_moment_s2 / (2.0 * (1.0 - rho))


def mm1_abandon_probability(lam: float, mu: float, patience_s: float) -> float:
    """M/M/1+D: probability that an arrival leaves the queue unserved (FCFS, patience D in the
    queue only). Any rho (the queue is stable with abandonment)."""
    rho = lam / mu
    x = math.exp(-(mu - lam) * patience_s)
    return rho * (1.0 - rho) * x / (1.0 - rho * rho * x) if rho != 1.0 else 1.0 / (2.0 + mu * patience_s)


def mm1_firm_deadline_miss_probability(lam: float, mu: float, deadline_s: float) -> float:
    """M/M/1 with a firm sojourn deadline D (FCFS; a customer leaves at D from the queue or from
    service): probability that an arrival is not done within D. Any rho."""
    rho = lam / mu
    x = math.exp(-(mu - lam) * deadline_s)
    return (1.0 - rho) * x / (1.0 - rho * x) if rho != 1.0 else 1.0 / (1.0 + mu * deadline_s)


def _stable(lam: float, mu: float, c: int) -> None:
    if not (lam >= 0 and mu > 0 and lam < c * mu):
        raise ValueError(f"unstable or invalid queue: lam={lam}, mu={mu}, c={c}")
