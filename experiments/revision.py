"""The git revision of the checkout stormsim runs from, recorded in every run's provenance."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from sim.result import RunResult


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """HEAD of the checkout (with '+dirty' when tracked files changed), or None outside git."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def attach_git_revision(result: RunResult) -> RunResult:
    revision = git_revision()
    result.provenance["git_revision"] = revision
    if isinstance(result.summary.get("provenance"), dict):
        result.summary["provenance"]["git_revision"] = revision
    return result
