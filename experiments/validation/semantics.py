"""Reference semantics: the exact-timeline tests of the Go behaviours, and the policies' reference numbers.

The Go behaviours of ``shared/reference/semantics.md`` that the model implements are checked by
the unit tests ``tests/test_semantics_*.py`` (exact event timelines of small deterministic
scenarios, each docstring citing its section and experiment, ``[EXP En]``); the policies'
reference numbers (gobreaker's sixth failure, Finagle's budget, gRFC A6 tokens, Envoy's
outlier-detection example, CoDel's Fail-at-Scale timeline, ...) by the policy unit tests.
Rather than copy them, the validation runs those same tests with pytest in a child process
(``--junitxml``) and reports each one, with its docstring and the sources it cites.

This needs the ``tests/`` folder of a source checkout and pytest (``pip install -e .[test]``,
which ``make`` does); without them the section reports one ``error`` check saying so.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from experiments.validation.checks import ERROR, FAIL, INFO, PASS, Check

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
POLICY_MODULES = ("test_backoff.py", "test_retry_budget.py", "test_throttling.py", "test_hedging.py",
                  "test_breakers.py", "test_shedding.py", "test_edge_limits.py", "test_outlier_detection.py")
SOURCE_PATTERNS = (r"semantics\.md(?:,? §\s?[\d.]+(?: \"[^\"]+\")?)*", r"\[EXP [^\]]+\]",
                   r"§\s?\d[\d.]*(?: \"[^\"]+\")?", r"gRFC [A-Z]\d+", r"scenarios\.md(?: S\d+)?",
                   r"docs/policies/[\w.-]+(?: \"[^\"]+\")?", r"RFC \d+",
                   r"[\w./-]+\.(?:go|cc|java|rst)\b")


def test_files() -> list[Path]:
    semantics = sorted(TESTS.glob("test_semantics_*.py"))
    return semantics + [TESTS / m for m in POLICY_MODULES if (TESTS / m).exists()]


def run_tests(timeout_s: float = 900.0) -> dict[str, Any]:
    """Run the reference tests in a child pytest; return per-test results (picklable)."""
    files = test_files()
    if not files:
        return {"error": f"no reference tests under {TESTS} (a source checkout has them)"}
    if importlib.util.find_spec("pytest") is None:
        return {"error": "pytest is not installed: `pip install -e .[test]` (make does it)"}
    with tempfile.TemporaryDirectory(prefix="stormsim-validate-") as tmp:
        xml = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                   "-m", "not slow", "-o", "junit_family=xunit1", f"--junitxml={xml}", "-W", "ignore",
                   *[str(f.relative_to(ROOT)) for f in files]]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "XDIST_"))}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        try:
            proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, env=env)
        except subprocess.TimeoutExpired:
            return {"error": f"the reference tests did not finish in {timeout_s:g} s"}
        if not xml.exists():
            return {"error": "pytest wrote no report: " + (proc.stdout[-800:] + proc.stderr[-800:]).strip()}
        cases = parse_junit(xml.read_text(encoding="utf-8"))
    return {"cases": cases, "returncode": proc.returncode, "files": [str(f.relative_to(ROOT)) for f in files]}


def parse_junit(text: str) -> list[dict[str, Any]]:
    out = []
    for case in ET.fromstring(text).iter("testcase"):
        status = PASS
        message = ""
        for child in case:
            if child.tag in ("failure", "error"):
                status = FAIL
                message = (child.get("message") or "")[:600]
            elif child.tag == "skipped":
                status = INFO
                message = "skipped: " + (child.get("message") or "")[:300]
        out.append({"classname": case.get("classname", ""), "name": case.get("name", ""),
                    "file": case.get("file", ""), "time_s": float(case.get("time") or 0.0),
                    "status": status, "message": message})
    return out


def docstrings(path: Path) -> tuple[str, dict[str, str]]:
    """(module docstring, test function name -> docstring) of a test file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    funcs = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            funcs[node.name] = " ".join((ast.get_docstring(node) or "").split())
    return " ".join((ast.get_docstring(tree) or "").split()), funcs


def cited_sources(text: str) -> str:
    found: list[str] = []
    for pattern in SOURCE_PATTERNS:
        for m in re.findall(pattern, text):
            m = m.strip().rstrip(".")
            if m and m != "[EXP En]" and not any(m in f for f in found):
                found.append(m)
    return "; ".join(found)


FAMILIES = {
    "test_semantics_server": "Go net/http server (semantics.md §0, §1, §5)",
    "test_semantics_client": "Go http.Client / Transport (semantics.md §2, §3)",
    "test_semantics_transport": "Transport: TLS, HTTP/2, TCP, ports, loss (semantics.md §2-§5)",
    "test_semantics_policies": "Resilience policies in the engine (semantics.md §7, §8)",
    "test_backoff": "Policy reference numbers: backoff",
    "test_retry_budget": "Policy reference numbers: retry budgets",
    "test_throttling": "Policy reference numbers: adaptive throttling",
    "test_hedging": "Policy reference numbers: hedging",
    "test_breakers": "Policy reference numbers: circuit breakers",
    "test_shedding": "Policy reference numbers: load shedding",
    "test_edge_limits": "Policy reference numbers: Envoy edge limits",
    "test_outlier_detection": "Policy reference numbers: outlier detection",
}


def build_checks(outcome: dict[str, Any]) -> list[Check]:
    if "error" in outcome:
        return [Check(id="semantics.run", section="semantics", family="Reference semantics",
                      title="the reference tests could not run", compared="", reference="", source="",
                      status=ERROR, detail=outcome["error"])]
    docs: dict[str, tuple[str, dict[str, str]]] = {}
    for f in test_files():
        docs[f.stem] = docstrings(f)
    checks = []
    for case in outcome["cases"]:
        module = case["classname"].split(".")[-1] if case["classname"] else Path(case["file"]).stem
        base = case["name"].split("[", 1)[0]
        module_doc, funcs = docs.get(module, ("", {}))
        doc = funcs.get(base, "")
        family = FAMILIES.get(module, module)
        source = cited_sources(doc) or cited_sources(module_doc) or f"tests/{module}.py"
        checks.append(Check(
            id=f"semantics.{module}.{case['name']}", section="semantics", family=family,
            title=case["name"], compared="exact event timeline of a small deterministic scenario"
            if module.startswith("test_semantics") else "the policy object against its reference's numbers",
            reference=doc or module_doc.split(". ")[0], source=source, status=case["status"],
            detail=case["message"], params={"module": f"tests/{module}.py", "time_s": case["time_s"]}))
    if not checks:
        checks.append(Check(id="semantics.run", section="semantics", family="Reference semantics",
                            title="no reference test was collected", compared="", reference="", source="",
                            status=ERROR, detail=f"pytest exit status {outcome.get('returncode')}"))
    return checks
