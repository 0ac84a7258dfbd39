"""Building the testbed's Go programs: ``tbserver`` and ``tbload`` (standard library only).

``ensure_built`` compiles them with the Go toolchain on the PATH into
``experiments/testbed/bin/`` when a binary is missing or older than a Go source. Nothing
is fetched: the module has no requirements and the build runs with ``GOFLAGS=-mod=mod``,
``GOPROXY=off`` and ``GOTOOLCHAIN=local``. Without Go it raises ``GoMissing`` with the fix
(the set-up, ``scripts/ensure-go.sh``, installs Debian's golang-go where it can).
``python -m experiments.testbed.build`` builds them and prints the Go version.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN_DIR = HERE / "bin"
PROGRAMS = ("tbserver", "tbload")


class GoMissing(RuntimeError):
    """No usable Go toolchain: the testbed cannot run here."""


def go_binary() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    for candidate in ("/usr/lib/go/bin/go", "/usr/local/go/bin/go"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def build_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0",
                "GOWORK": "off"})
    if "HOME" not in env and "GOCACHE" not in env:
        env["GOCACHE"] = str(BIN_DIR / ".gocache")
    return env


def go_version() -> str:
    go = go_binary()
    if go is None:
        raise GoMissing(no_go_message())
    out = subprocess.run([go, "version"], capture_output=True, text=True, timeout=30, env=build_env())
    return out.stdout.strip()


def no_go_message() -> str:
    return ("the testbed needs a Go toolchain and none was found: run the set-up (`make setup`, which "
            "installs Debian's golang-go as root) or install it, e.g. 'sudo apt-get install golang-go'")


def _sources() -> list[Path]:
    return [p for p in HERE.rglob("*.go") if "bin" not in p.parts] + [HERE / "go.mod"]


def _stale(binary: Path) -> bool:
    if not binary.exists():
        return True
    built = binary.stat().st_mtime
    return any(src.stat().st_mtime > built for src in _sources())


def ensure_built(force: bool = False) -> dict[str, Path]:
    """Paths of the two binaries, built first if needed."""
    binaries = {name: BIN_DIR / name for name in PROGRAMS}
    if not force and not any(_stale(b) for b in binaries.values()):
        return binaries
    go = go_binary()
    if go is None:
        raise GoMissing(no_go_message())
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    # one build at a time (test workers, two commands), each binary moved into place whole,
    # so a program already running from it is never disturbed
    with open(BIN_DIR / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name, binary in binaries.items():
            if not force and not _stale(binary):
                continue              # another process built it while we waited
            tmp = BIN_DIR / f".{name}.{os.getpid()}.tmp"
            done = subprocess.run([go, "build", "-o", str(tmp), f"./cmd/{name}"], cwd=HERE, env=build_env(),
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise RuntimeError(f"go build ./cmd/{name} failed:\n{done.stderr.strip()}")
            os.replace(tmp, binary)
    return binaries


def main() -> int:
    try:
        print(f"testbed: {go_version()}")
        paths = ensure_built(force="--force" in sys.argv)
    except GoMissing as exc:
        print(f"testbed: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"testbed: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"testbed: built {name} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
