"""The generated scenario reference is current and covers every setting."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from sim.schema import Scenario
from sim.schema_docs import reachable_dataclasses, render_scenario_docs

DOCS_PATH = Path(__file__).resolve().parents[1] / "docs" / "scenario.md"
REGENERATE = "regenerate it with: .venv/bin/python -m sim.schema_docs > docs/scenario.md"


def test_docs_file_is_current():
    assert DOCS_PATH.exists(), f"docs/scenario.md is missing; {REGENERATE}"
    assert DOCS_PATH.read_text(encoding="utf-8") == render_scenario_docs(), (
        f"docs/scenario.md is out of date with sim/schema.py; {REGENERATE}")


def test_every_field_of_every_reachable_dataclass_is_documented():
    docs = render_scenario_docs()
    sections = {}
    for chunk in docs.split("\n## ")[1:]:
        title, _, body = chunk.partition("\n")
        sections[title.split(" (")[0].strip()] = body  # "HystrixBreakerConfig (breaker kind `hystrix`)"
    classes = reachable_dataclasses()
    assert classes[0] is Scenario
    assert len(classes) == len(set(classes))
    for cls in classes:
        assert cls.__name__ in sections, f"no section for {cls.__name__}"
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in sections[cls.__name__], f"{cls.__name__}.{f.name} missing"


def test_reachable_dataclasses_include_nested_containers():
    names = {cls.__name__ for cls in reachable_dataclasses()}
    assert {"ServiceConfig", "RouteConfig", "StepConfig", "TlsConfig", "FaultConfig",
            "EdgeConfig", "TableConfig", "ProfileConfig"} <= names


def test_defaults_use_units():
    docs = render_scenario_docs()
    assert "| `baseline` | size | `32MiB` |" in docs
    assert "| `dial_timeout` | duration | `30s` | >= 0s |" in docs
    assert "| `duration` | duration | `1m` | > 0s |" in docs


def test_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "sim.schema_docs"], capture_output=True, check=True)
    assert result.stdout.decode("utf-8") == render_scenario_docs()
