"""Figures derived from a run for people comparing runs, beyond the summary's own keys.

``untouched_goodput_rps``: what the traffic no fault acted on still got through, per
second, over a stretch of the run (by default from the warm-up; the comparisons use
the trigger, so a calm first minute does not flatter a service that then died).
"""

from __future__ import annotations

import numpy as np

from sim.result import RunResult


def untouched_goodput_rps(result: RunResult, from_s: float | None = None) -> float | None:
    """Successes of untouched requests per second from ``from_s`` (default: the warm-up) to the end.

    Judged like collapse: on all traffic when nothing arrived untouched in that stretch. Falls
    back to a ``goodput_untouched_rps`` summary key if the windows are missing.
    """
    win = result.windows
    start_s = float(result.scenario.warmup) if from_s is None else float(from_s)
    if "time_s" in win and "successes_untouched" in win:
        t = np.asarray(win["time_s"], dtype=float)
        after = t > start_s
        untouched_arrivals = np.asarray(win.get("arrivals_untouched", np.zeros_like(t)), dtype=float)
        key = "successes_untouched" if untouched_arrivals[after].sum() > 0 else "successes"
        end_s = float(result.milestones.end_at_s) or float(result.scenario.duration)
        span_s = end_s - start_s
        if key in win and span_s > 0:
            return float(np.asarray(win[key], dtype=float)[after].sum()) / span_s
    value = result.summary.get("goodput_untouched_rps")
    return None if value is None else float(value)
