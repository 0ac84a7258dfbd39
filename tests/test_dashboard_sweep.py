"""The Sweep page (dashboards/sweep_page.py) and its background jobs (dashboards/background.py).

``background`` is tested without Streamlit: a tiny sweep runs to the end as a child
process; a long one is cancelled (its pid and process group are gone, the runs that
finished are kept); one past its maximum wall time is ended; a bad sweep file fails
with its one-line error; a boundary search's JSON is read. The page is driven by
AppTest: it loads with its widgets, a sweep started on it finishes and its figures
show, Cancel ends one, and the tipping-point finder shows its points. The scenario is
conftest's tiny 2 s healthy service (~0.1 s a run). Every job a test starts is ended,
by its pid, in the fixture's teardown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from conftest import small_scenario_data, write_scenario_yaml
from dashboards import background, common
from experiments.sweep_store import SweepStore

PAGE = str(Path(__file__).resolve().parents[1] / "dashboards" / "sweep_page.py")
TIMEOUT = "clients.web.transport.client_timeout"
RATE = "clients.web.load.rate_per_s"


@pytest.fixture(autouse=True)
def end_jobs():
    """Whatever a test started is ended here (by pid), pass or fail."""
    yield
    background.end_all(grace_s=2.0)


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_scenario_yaml(tmp_path / "tiny.yaml", small_scenario_data(duration="2s"))


def sweep_file(tmp_path: Path, name: str, points: int, replications: int, **factors) -> Path:
    factors = factors or {RATE: {"range": {"from": 20, "to": 80, "n": points}}}
    data = {"name": name, "scenario": "tiny.yaml", "factors": factors, "replications": replications,
            "seed": 1, "metrics": ["goodput_rps"]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def wait_for(predicate, timeout_s: float = 40.0, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"not within {timeout_s} s: {predicate}")


def ended(job: background.Job) -> background.JobStatus | None:
    """The job's status once it no longer runs, else None."""
    status = background.poll(job)
    return None if status.running else status


def gone(pid: int) -> bool:
    """Neither the process nor any member of the group it led is left."""
    for probe in (os.kill, os.killpg):
        try:
            probe(pid, 0)
            return False
        except ProcessLookupError:
            pass
    return True


# ------------------------------------------------------------------ background jobs


def test_a_tiny_sweep_runs_in_the_background_to_the_end(tmp_path, tiny):
    job = background.start_sweep(sweep_file(tmp_path, "small", 2, 2), tmp_path / "out", jobs=1)
    assert job.cli_command.startswith("stormsim sweep ") and "--jobs 1" in job.cli_command
    assert background.poll(job).state in ("running", "finished")
    status = wait_for(lambda: ended(job))
    assert status.state == "finished" and status.returncode == 0 and status.ok
    progress = background.sweep_progress(job)
    assert (progress.total, progress.done, progress.failed, progress.fraction) == (4, 4, 0, 1.0)
    assert "4/4 done" in progress.line
    folder = Path(job.folder)
    assert {"manifest.json", "runs.jsonl", "cells.csv", background.STDOUT_FILE, background.STDERR_FILE,
            background.JOB_FILE} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / background.JOB_FILE).read_text())["pid"] == job.pid
    assert gone(job.pid)


def test_cancel_ends_the_process_group_and_keeps_the_finished_runs(tmp_path, tiny):
    job = background.start_sweep(sweep_file(tmp_path, "long", 40, 10), tmp_path / "out", jobs=2)
    with pytest.raises(background.JobError, match="a sweep is already running"):
        background.start_sweep(sweep_file(tmp_path, "other", 2, 1), tmp_path / "other", jobs=1)
    assert background.running_jobs("sweep") == [job]
    wait_for(lambda: background.sweep_progress(job).done >= 3)
    assert background.poll(job).state == "running"
    stored_before = len(SweepStore(job.folder).read_rows())
    background.cancel(job, grace_s=5.0)
    assert gone(job.pid)                                        # the sweep and its two workers
    status = background.poll(job)
    assert status.state == "cancelled" and "stored" in status.detail
    rows = SweepStore(job.folder).read_rows()
    assert len(rows) >= stored_before and all(r["status"] == "ok" for r in rows)
    progress = background.sweep_progress(job)
    assert progress.total == 400 and progress.done == len({r["run_key"] for r in rows}) < 400
    assert json.loads((Path(job.folder) / background.JOB_FILE).read_text())["ended_by"] == "cancelled"
    assert background.running_jobs() == []
    background.cancel(job)                                      # a second cancel is a no-op


def test_cancel_leaves_a_process_it_did_not_start_alone(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        job = background.Job(kind="sweep", pid=other.pid, command=("sleep",), folder=str(tmp_path),
                             stdout="", stderr="", started_at=time.time(), max_wall_s=1.0)
        background.cancel(job, grace_s=0.5)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_job_past_its_maximum_wall_time_is_ended(tmp_path, tiny):
    job = background.start_sweep(sweep_file(tmp_path, "slow", 40, 10), tmp_path / "out", jobs=1, max_wall_s=1.0)
    status = wait_for(lambda: ended(job), timeout_s=30)
    assert status.state == "timed out" and "maximum wall time" in status.detail
    assert status.elapsed_s < 15 and gone(job.pid)


def test_a_bad_sweep_file_fails_with_its_one_line_error(tmp_path, tiny):
    bad = sweep_file(tmp_path, "bad", 2, 1, **{TIMEOUT: {"values": ["5 parsecs"]}})
    job = background.start_sweep(bad, tmp_path / "out", jobs=1)
    status = wait_for(lambda: ended(job))
    assert status.state == "failed" and status.returncode == 2
    assert "5 parsecs" in status.detail and "Traceback" not in status.detail


def test_start_refuses_bad_arguments(tmp_path):
    with pytest.raises(background.JobError, match="jobs"):
        background.start_sweep(tmp_path / "x.yaml", tmp_path / "out", jobs=3)
    with pytest.raises(background.JobError, match="does not exist"):
        background.start_sweep(tmp_path / "x.yaml", tmp_path / "out", jobs=1)


def test_a_boundary_search_runs_in_the_background_and_its_json_is_read(tmp_path, tiny):
    job = background.start_boundary(str(tiny), RATE, "10", "50", tmp_path / "b", reps=2, seed=1, jobs=1)
    assert "--json" in job.command and job.cli_command.startswith("stormsim boundary ")
    assert background.boundary_result(job) is None or background.poll(job).state == "finished"
    status = wait_for(lambda: ended(job))
    assert status.state == "finished"
    result = background.boundary_result(job)
    assert result["status"] == "no_crossing" and result["param"] == RATE
    assert [p["text"] for p in result["points"]] == ["10", "50"]


# ------------------------------------------------------------------ the page


def open_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def run_until(at: AppTest, predicate, timeout_s: float = 45.0) -> AppTest:
    """Re-run the page (as the fragment's 1 s refresh would) until ``predicate(at)`` holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        at.run()
        assert not at.exception, at.exception
        if predicate(at):
            return at
        time.sleep(0.3)
    raise AssertionError(f"the page did not get there in {timeout_s} s: "
                         f"{[e.value for e in (*at.error, *at.warning, *at.info, *at.success)]}")


@pytest.fixture
def tiny_page(tmp_path, tiny, monkeypatch):
    """The page offering only the tiny scenario, writing under tmp_path/out/dashboard."""
    monkeypatch.setattr(common, "shipped", lambda: {"tiny": tiny})
    monkeypatch.chdir(tmp_path)
    return open_page()


def number(at: AppTest, prefix: str):
    found = [w for w in at.number_input if w.key and w.key.startswith(prefix)]
    assert len(found) == 1, (prefix, [w.key for w in at.number_input])
    return found[0]


def test_the_page_loads_with_its_widgets():
    at = open_page()
    assert not at.error
    scenario = at.selectbox(key="sweep_scenario")
    assert "seed-collapse" in scenario.options and "policy-storm@breaker-hystrix" in scenario.options
    assert [w.label for w in at.selectbox if w.key.startswith("sweep_f")] == ["Factor 1", "Factor 2"]
    factor = at.selectbox(key=f"sweep_f0_setting:{scenario.value}")
    assert factor.value == TIMEOUT and "now 3s" in factor.format_func(factor.value)
    assert {"from (s)", "to (s)", "points", "replications", "seed", "worker processes"} <= {w.label for w in at.number_input}
    assert at.button(key="sweep_start").disabled is False and at.button(key="boundary_start")
    at.radio(key="sweep_n_factors").set_value(1).run()
    assert [w.label for w in at.selectbox if w.key.startswith("sweep_f")] == ["Factor 1"]
    at.selectbox(key="sweep_scenario").set_value("policy-storm@breaker-hystrix").run()
    options = at.selectbox(key="sweep_f0_setting:policy-storm@breaker-hystrix").options
    assert any("request volume threshold" in o for o in options)       # the variant's breaker
    assert not at.exception and not at.error


def test_a_bad_range_is_one_error_and_starts_nothing(tiny_page):
    at = tiny_page
    number(at, "sweep_to:0:tiny:").set_value(number(at, "sweep_from:0:tiny:").value).run()
    at.button(key="sweep_start").click().run()
    assert len(at.error) == 1 and "range.to" in at.error[0].value
    assert background.running_jobs() == [] and "sweep_job" not in at.session_state
    assert not list((Path.cwd() / "out" / "dashboard" / "sweeps").iterdir())   # its folder is removed


def test_a_sweep_started_on_the_page_finishes_and_shows_its_figures(tiny_page, tmp_path):
    at = tiny_page
    number(at, "sweep_from:0:tiny:").set_value(0.05)
    number(at, "sweep_to:0:tiny:").set_value(1.0)
    number(at, "sweep_n:0:tiny:").set_value(2)
    number(at, "sweep_from:1:tiny:").set_value(1)
    number(at, "sweep_to:1:tiny:").set_value(2)
    number(at, "sweep_n:1:tiny:").set_value(2)
    at.number_input(key="sweep_reps").set_value(1)
    at.number_input(key="sweep_jobs").set_value(1)
    at.button(key="sweep_start").click().run()
    assert not at.exception and not at.error
    job = at.session_state["sweep_job"]
    assert Path(job.folder).parent == tmp_path / "out" / "dashboard" / "sweeps"
    spec = yaml.safe_load(Path(job.sweep_file).read_text())
    assert spec["scenario"] == str(tmp_path / "tiny.yaml")
    assert spec["factors"][TIMEOUT]["range"] == {"from": "50ms", "to": "1s", "n": 2, "scale": "linear"}
    run_until(at, lambda a: any("Sweep finished" in s.value for s in a.success))
    assert "4/4 runs" in at.success[0].value
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert len(specs) == 2 and '"type":"heatmap"' in specs[0] and "P(collapse)" in specs[1]
    assert any(c.value == f"stormsim sweep {job.sweep_file}" for c in at.code)
    assert {"sweep_yaml_download", "sweep_cells_csv"} <= {b.key for b in at.get("download_button")}
    assert at.button(key="sweep_start").disabled is False                # a new one may start


def test_cancel_on_the_page_ends_the_sweep(tiny_page):
    at = tiny_page
    at.radio(key="sweep_n_factors").set_value(1).run()
    at.selectbox(key="sweep_f0_setting:tiny").set_value(RATE).run()
    number(at, "sweep_n:0:tiny:").set_value(15)
    at.number_input(key="sweep_reps").set_value(50)
    at.number_input(key="sweep_jobs").set_value(1)
    at.button(key="sweep_start").click().run()
    job = at.session_state["sweep_job"]
    assert at.button(key="sweep_start").disabled is True
    run_until(at, lambda a: len(a.get("plotly_chart")) == 2)            # lines fill in from the first runs
    assert any("runs done" in (p.proto.text or "") for p in at.get("progress"))
    at.button(key="sweep_cancel").click().run()
    run_until(at, lambda a: any("cancelled" in w.value for w in a.warning))
    assert gone(job.pid) and background.poll(job).state == "cancelled"
    assert len(SweepStore(job.folder).read_rows()) >= 1


def test_the_tipping_point_finder_shows_its_points(tiny_page):
    at = tiny_page
    assert at.selectbox(key="boundary_setting:tiny").value == RATE
    number(at, "boundary_lo:").set_value(10.0)
    number(at, "boundary_hi:").set_value(50.0)
    at.number_input(key="boundary_reps").set_value(2)
    at.number_input(key="boundary_jobs").set_value(1)
    at.button(key="boundary_start").click().run()
    assert not at.error
    run_until(at, lambda a: any("no crossing" in i.value for i in a.info))
    (points,) = [d.value for d in at.dataframe if "judged" in d.value.columns]
    assert list(points["value"]) == ["10", "50"] and list(points["judged"]) == ["below", "below"]
    assert any(c.value.startswith("stormsim boundary ") and "--json" in c.value for c in at.code)
