"""What one validation check is, how its confidence interval is computed, and the known limitations.

A ``Check`` compares one output of the engine with a reference (a closed form, an identity
of the model, a property, or a Go behaviour from semantics.md) and ends in one status:

- ``pass`` / ``fail``: the comparison held or did not;
- ``known_limitation``: it did not, for a reason the model knows about (``KNOWN_LIMITATIONS``,
  also listed in docs/validation.md); it does not fail the suite, and its numbers are shown;
- ``error``: the check could not run (an exception, a hook the engine no longer has);
- ``info``: a measurement without a verdict (the convergence tables).

Analytic checks carry an estimate with a two-sided Student-t confidence interval over R
seeded replications (``CONFIDENCE``, 99%) and pass when the reference lies inside it.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
from scipy import stats

CONFIDENCE = 0.99

PASS = "pass"
FAIL = "fail"
KNOWN = "known_limitation"
ERROR = "error"
INFO = "info"
STATUSES = (PASS, FAIL, KNOWN, ERROR, INFO)

SECTIONS: dict[str, str] = {
    "queueing": "Queueing theory",
    "conservation": "Conservation and consistency on the shipped scenarios",
    "monotonicity": "Monotonicity",
    "semantics": "Reference semantics",
    "convergence": "Convergence",
}

# Known limitations of the model that checks find. A check that fails for one of these reasons
# names it in ``Check.limitation`` (the check itself decides that the failure is exactly this
# one) or matches its ``ids`` pattern; it is then reported as known_limitation, with its numbers,
# instead of fail. Every entry is explained in docs/validation.md ("Known limitations").
KNOWN_LIMITATIONS: dict[str, dict[str, str]] = {
    # none today. The last, "h2-handler-goroutines" (HTTP/2 handler goroutines were not counted),
    # was fixed in sim/server.py (_h2_run / _h2_handler_returned); an entry looks like
    # {"ids": r"^rule\.goroutines$", "reason": "...", "repro": "...", "owner": "sim/..."}
}


@dataclass
class Check:
    id: str
    section: str
    family: str
    title: str
    compared: str
    reference: str
    source: str
    status: str
    estimate: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    reference_value: float | None = None
    relative_error: float | None = None
    replications: int | None = None
    n_per_replication: float | None = None
    analytic: bool = False
    detail: str = ""
    figure: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    limitation: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: _plain(v) for k, v in asdict(self).items()}


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """(mean, low, high, half-width) of the two-sided Student-t interval of the mean."""
    x = np.asarray(list(values), dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2.0, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half, half


def interval_check(values: Iterable[float], reference_value: float, **fields: Any) -> Check:
    """An analytic check: pass when ``reference_value`` lies in the CI of the replication values."""
    x = [float(v) for v in values]
    mean, lo, hi, _half = t_interval(x)
    ok = bool(lo <= reference_value <= hi)
    rel = abs(mean - reference_value) / abs(reference_value) if reference_value else None
    return Check(status=PASS if ok else FAIL, estimate=mean, ci_low=lo, ci_high=hi,
                 reference_value=reference_value, relative_error=rel, replications=len(x),
                 analytic=True, **fields)


def apply_known_limitations(checks: list[Check],
                            limitations: dict[str, dict[str, str]] | None = None) -> list[Check]:
    """Failing checks that name a known limitation, or whose id matches one, become
    ``known_limitation``; a passing check keeps its status and forgets the name."""
    table = KNOWN_LIMITATIONS if limitations is None else limitations
    for check in checks:
        if check.status != FAIL:
            check.limitation = None
            continue
        key = check.limitation if check.limitation in table else next(
            (k for k, v in table.items() if re.match(v["ids"], check.id)), None)
        if key is not None:
            check.status = KNOWN
            check.limitation = key
    return checks


def _plain(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN and infinities to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    return value
