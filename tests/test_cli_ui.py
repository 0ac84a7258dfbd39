"""`stormsim ui`: Streamlit as a child process on 127.0.0.1, ended with its parent."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from experiments.cli import main

PROJECT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_ui_serves_on_localhost_and_stops_with_its_parent(how):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "experiments.cli", "ui", "--port", str(port)], cwd=PROJECT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    assert response.read().decode().strip() == "ok"
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.3)
        else:
            pytest.fail("the dashboard did not answer within 60 s")
        proc.send_signal(how)
        assert proc.wait(timeout=30) in (0, 130, -how)
        with pytest.raises(OSError):          # the Streamlit child is gone with its parent
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_ui_rejects_a_bad_port(capsys):
    assert main(["ui", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
