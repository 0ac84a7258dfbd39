"""The public entry point of the model: run one scenario, get a summarised result.

``run_scenario`` builds a ``World``, runs it under the guards, attaches
provenance and fills the windows and summary (``sim.outputs``). Python's cyclic
garbage collector is tuned down for the run (long-lived objects frozen,
thresholds raised) because it otherwise dominates the cost of building a deep
backlog (design.md §7); it is restored afterwards.
"""

from __future__ import annotations

import gc
from typing import Callable

from sim.outputs import summarize
from sim.provenance import provenance
from sim.result import RunResult
from sim.schema import Scenario
from sim.world import World


def run_scenario(scenario: Scenario, seed: int | None = None, replication: int = 0,
                 trace: bool = False, progress: Callable[[float], None] | None = None) -> RunResult:
    """Run ``scenario`` once.

    ``trace=True`` keeps an event log in ``result.trace`` (tuples of instant, event kind,
    connection id, detail): for small runs and tests. ``progress`` is called with the
    simulated fraction done (0..1), at most every 1% of the run.
    """
    run_seed = scenario.seed if seed is None else int(seed)
    world = World(scenario, run_seed, replication, trace=trace, progress=progress)
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    try:
        result = world.run()
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    result.provenance = provenance(scenario, run_seed, replication)
    summarize(result)
    return result
