"""The import arrows of design.md §1 and the randomness rules of §5, enforced by an AST walk.

- ``sim/`` imports only the standard library, simpy, numpy, scipy, yaml and itself;
  never streamlit, plotly, kaleido, pandas, experiments or dashboards.
- ``experiments/`` never imports streamlit or dashboards.
- ``sim/`` draws random numbers only from its own seeded ``numpy.random.Generator``s:
  no ``random`` module, no ``np.random.seed``, no global ``np.random.<dist>(...)``, no
  unseeded ``default_rng()``, and no builtin ``hash()`` (salted per process; design.md §5
  wants a stable digest).

Every import counts, wherever it is (module level, inside a function, under
``TYPE_CHECKING``), and so do ``importlib.import_module("x")`` and ``__import__("x")``
with a literal name. The checker is tested on small snippets first, so a checker that
sees nothing cannot pass silently.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "experiments", "dashboards")

SIM_ALLOWED_THIRD_PARTY = frozenset({"simpy", "numpy", "scipy", "yaml"})
SIM_FORBIDDEN = frozenset({"streamlit", "plotly", "kaleido", "pandas", "experiments", "dashboards", "random"})
EXPERIMENTS_FORBIDDEN = frozenset({"streamlit", "dashboards"})
STDLIB = frozenset(sys.stdlib_module_names)

NUMPY_RANDOM_ALLOWED = frozenset({
    # explicit, seedable generator machinery: what sim.rng is built from
    "Generator", "SeedSequence", "BitGenerator", "PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937",
    "default_rng",   # only with an argument (checked separately)
})


@dataclass(frozen=True)
class Import:
    module: str      # absolute dotted name ('' for an unresolvable relative import)
    lineno: int

    @property
    def top(self) -> str:
        return self.module.split(".", 1)[0]


# ------------------------------------------------------------------ the checker


def _package_of(path: Path, root: Path) -> list[str]:
    """Dotted package of a file, e.g. sim/sub/x.py -> ['sim', 'sub']."""
    return list(path.relative_to(root).parent.parts)


def imports_of(tree: ast.AST, package: list[str]) -> list[Import]:
    """Every module ``tree`` imports, relative imports resolved against ``package``."""
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level - 1 <= len(package) else []
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from pkg import name` may import the submodule pkg.name; record each name
            found.extend(Import(f"{module}.{alias.name}" if module else alias.name, node.lineno)
                         for alias in node.names)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = _dotted(node.func)
            if name in ("importlib.import_module", "import_module", "__import__"):
                found.append(Import(node.args[0].value, node.lineno))
    return found


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> fully qualified name, from the module's imports."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".", 1)[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def randomness_violations(tree: ast.AST) -> list[str]:
    """Uses of global or unseeded randomness, and of the salted builtin ``hash()``."""
    aliases = _aliases(tree)
    problems: list[str] = []
    seen: set[tuple[int, int]] = set()

    def qualified(node: ast.AST) -> str | None:
        dotted = _dotted(node)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        if head not in aliases:
            return None
        return aliases[head] + ("." + rest if rest else "")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = qualified(node.func)
            if name == "numpy.random.default_rng" and not node.args and not node.keywords:
                problems.append(f"line {node.lineno}: default_rng() without a seed draws from OS entropy")
            if isinstance(node.func, ast.Name) and node.func.id == "hash" and "hash" not in aliases:
                problems.append(f"line {node.lineno}: builtin hash() is salted per process; use a stable digest")
        if isinstance(node, (ast.Attribute, ast.Name)) and isinstance(node.ctx, ast.Load):
            name = qualified(node)
            if name is None or not name.startswith("numpy.random."):
                continue
            member = name[len("numpy.random."):].split(".", 1)[0]
            key = (node.lineno, node.col_offset)
            if member not in NUMPY_RANDOM_ALLOWED and key not in seen:
                seen.add(key)
                what = "global seeding" if member == "seed" else "the global (legacy) numpy generator"
                problems.append(f"line {node.lineno}: numpy.random.{member} uses {what}; "
                                "draw from a Generator of sim.rng.Streams")
    return problems


def layer_violations(layer: str, imports: list[Import]) -> list[str]:
    problems = []
    for imp in imports:
        top = imp.top
        if layer == "sim":
            if top in SIM_FORBIDDEN:
                problems.append(f"line {imp.lineno}: sim must not import {imp.module}")
            elif top not in STDLIB and top not in SIM_ALLOWED_THIRD_PARTY and top != "sim":
                problems.append(f"line {imp.lineno}: sim may import only the stdlib, simpy, numpy, scipy, "
                                f"yaml and itself, not {imp.module or '(relative import above sim)'}")
        elif layer == "experiments" and top in EXPERIMENTS_FORBIDDEN:
            problems.append(f"line {imp.lineno}: experiments must not import {imp.module}")
    return problems


def check_source(source: str, layer: str, package: list[str] | None = None) -> list[str]:
    tree = ast.parse(source)
    problems = layer_violations(layer, imports_of(tree, package or [layer]))
    if layer == "sim":
        problems += randomness_violations(tree)
    return problems


def _files(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


# ------------------------------------------------------------------ the checker on snippets


@pytest.mark.parametrize("layer, source", [
    ("sim", "import pandas as pd"),
    ("sim", "def f():\n    import plotly.graph_objects as go\n"),
    ("sim", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from experiments.cli import main\n"),
    ("sim", "from dashboards import app"),
    ("sim", "import streamlit"),
    ("sim", "import kaleido"),
    ("sim", "import requests"),
    ("sim", "import importlib\nimportlib.import_module('pandas')\n"),
    ("sim", "from .. import experiments"),
    ("sim", "import random"),
    ("sim", "from random import random"),
    ("sim", "import numpy as np\nnp.random.seed(3)\n"),
    ("sim", "import numpy as np\nx = np.random.exponential(1.0, 10)\n"),
    ("sim", "import numpy\nx = numpy.random.normal()\n"),
    ("sim", "from numpy import random as npr\nnpr.uniform()\n"),
    ("sim", "import numpy.random as npr\nnpr.poisson(3)\n"),
    ("sim", "from numpy.random import choice\nchoice([1, 2])\n"),
    ("sim", "import numpy as np\nrs = np.random.RandomState(1)\n"),
    ("sim", "import numpy as np\ng = np.random.default_rng()\n"),
    ("sim", "key = hash('service.api') % 1000\n"),
    ("experiments", "import streamlit as st"),
    ("experiments", "from dashboards.app import main"),
    ("experiments", "def ui():\n    __import__('streamlit')\n"),
])
def test_checker_flags(layer, source):
    assert check_source(source, layer), f"{layer}: {source!r} should be a violation"


@pytest.mark.parametrize("layer, source", [
    ("sim", "import numpy as np\nimport simpy\nimport scipy.stats\nimport yaml\nimport zlib, heapq\n"),
    ("sim", "from sim.schema import Scenario\nfrom . import rng\nfrom .units import parse_duration\n"),
    ("sim", "import numpy as np\n"
            "s = np.random.SeedSequence(1, spawn_key=(0, 2))\n"
            "g = np.random.Generator(np.random.PCG64(s))\n"
            "h = np.random.default_rng(s)\n"
            "def f(rng: np.random.Generator) -> float:\n    return rng.exponential()\n"),
    ("sim", "class K:\n    def __hash__(self):\n        return 1\n"),
    ("experiments", "import pandas as pd\nimport plotly.graph_objects as go\nfrom sim.engine import run_scenario\n"),
    ("dashboards", "import streamlit as st\nfrom experiments.figures import timeseries_figure\n"),
])
def test_checker_accepts(layer, source):
    assert check_source(source, layer) == []


def test_relative_imports_resolve_against_the_package():
    tree = ast.parse("from . import rng\nfrom ..experiments import cli\nfrom .sub import x\n")
    assert [i.module for i in imports_of(tree, ["sim"])] == ["sim.rng", "experiments.cli", "sim.sub.x"]
    assert [i.module for i in imports_of(tree, ["sim", "sub"])] == ["sim.sub.rng", "sim.experiments.cli",
                                                                    "sim.sub.sub.x"]
    # above the top package: the imported name is the module
    assert [i.module for i in imports_of(ast.parse("from .. import experiments"), ["sim"])] == ["experiments"]


# ------------------------------------------------------------------ the real packages


def test_the_walk_sees_the_packages():
    files = {layer: _files(layer) for layer in PACKAGES}
    assert len(files["sim"]) >= 10 and len(files["experiments"]) >= 5 and files["dashboards"]
    sim_imports = {imp.top for path in files["sim"]
                   for imp in imports_of(ast.parse(path.read_text(encoding="utf-8")), _package_of(path, ROOT))}
    assert {"simpy", "numpy", "sim"} <= sim_imports


@pytest.mark.parametrize("layer", PACKAGES)
def test_layer_imports_follow_design(layer):
    problems = []
    for path in _files(layer):
        source = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        problems += [f"{rel}: {p}" for p in check_source(source, layer, _package_of(path, ROOT))]
    assert not problems, "design.md §1/§5 violated:\n" + "\n".join(problems)
