"""The shipped scenarios and how a command-line argument names a scenario.

A scenario argument is a path to a YAML file or the name of a shipped scenario
(``seed-collapse`` for ``experiments/scenarios/seed-collapse.yaml``), optionally
followed by ``@VARIANT`` to pick one of the file's named variants.
``SEED_VARIANTS`` is the set ``make run`` compares: the S1 baseline, the
write-up's fix and the three fixes that really bound the hold.
"""

from __future__ import annotations

from pathlib import Path

from sim.scenario_loader import ScenarioError

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
DEFAULT_SCENARIO = "seed-collapse"
SEED_VARIANTS: tuple[str, ...] = (
    "seed-collapse",
    "seed-server-timeouts",
    "seed-client-timeout-ignored",
    "seed-db-deadline",
    "seed-client-timeout",
    "seed-timeouthandler",
)


def shipped_scenarios() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SCENARIO_DIR.glob("*.yaml"))}


def split_variant(argument: str) -> tuple[str, str | None]:
    """``slowloris@read-header-timeout`` -> (``slowloris``, ``read-header-timeout``)."""
    if "@" in argument and not Path(argument).is_file():
        name, variant = argument.rsplit("@", 1)
        return name, variant or None
    return argument, None


def resolve_scenario(argument: str) -> Path:
    """A path to an existing file, or the file of a shipped scenario of that name."""
    path = Path(argument)
    if path.is_file():
        return path
    shipped = shipped_scenarios()
    name = path.stem if path.suffix in (".yaml", ".yml") and path.parent == Path(".") else argument
    if name in shipped:
        return shipped[name]
    raise ScenarioError("scenario", argument,
                        f"{argument!r} is neither a file nor a shipped scenario "
                        f"(shipped: {', '.join(shipped)})")
