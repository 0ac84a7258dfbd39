"""The Tune page: schema-driven widgets (pure parts without Streamlit) and the page under AppTest.

The page tests share one process-wide ``st.cache_data``, so a configuration run once
(seed-collapse, seed 1) is cheap for the tests after it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1 import app_test as app_test_module
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from dashboards import common, runs, widgets
from experiments.catalog import shipped_scenarios
from sim.scenario_loader import dump_scenario_yaml, load_scenario, scenario_from_dict
from sim.schema import GoBreakerConfig, Scenario

PAGE = str(Path(__file__).resolve().parents[1] / "dashboards" / "tune_page.py")
TIMEOUT_S = 60
CLIENT_TIMEOUT = "clients.web.transport.client_timeout"
MAX_ATTEMPTS = "clients.web.retry.max_attempts"
BREAKER_KIND = "clients.web.breaker.kind"


@pytest.fixture(scope="module")
def seed_collapse() -> Scenario:
    return load_scenario(shipped_scenarios()["seed-collapse"])


def by_path(items: list[widgets.Tunable]) -> dict[str, widgets.Tunable]:
    return {t.path: t for t in items}


# ------------------------------------------------------------------ widgets, pure


def test_paths_resolve_against_the_scenario(seed_collapse):
    paths = [path for _, path in widgets.resolve_paths(seed_collapse)]
    assert paths[0] == CLIENT_TIMEOUT
    for route in ("report", "orders", "users"):
        assert f"services.api.routes.{route}.honours_context" in paths
        assert f"services.api.routes.{route}.db_deadline" in paths
    assert "services.api.pools.main.max_open_conns" in paths
    assert "services.api.memory.limit" in paths
    assert ["faults.0.at", "faults.0.duration", "faults.0.lock_wait"] == [p for p in paths if p.startswith("faults.")]
    # kind none: no settings of a budget or breaker kind, just the kind
    assert [p for p in paths if ".breaker." in p] == [BREAKER_KIND]
    assert [p for p in paths if ".budget." in p] == ["clients.web.retry.budget.kind"]
    assert {group for group, _ in widgets.resolve_paths(seed_collapse)} == set(widgets.GROUPS)


def test_paths_without_faults_or_databases():
    bare = scenario_from_dict({"services": {"api": {"routes": {"r": {"steps": [{"cpu": "1ms"}]}}}},
                               "clients": {"c": {"target": "api"}}})
    paths = [path for _, path in widgets.resolve_paths(bare)]
    assert not any(p.startswith("faults.") or ".pools." in p for p in paths)
    assert "clients.c.transport.client_timeout" in paths
    assert "services.api.routes.r.db_deadline" in paths
    assert "duration" in paths
    assert {group for group, _ in widgets.resolve_paths(bare)} == set(widgets.GROUPS) - {"Fault", "Database pool"}


def test_defaults_are_the_scenario_values(seed_collapse):
    items = by_path(widgets.tunables(seed_collapse))
    assert items[CLIENT_TIMEOUT].value == 30.0 and items[CLIENT_TIMEOUT].unit == "s"
    assert items[CLIENT_TIMEOUT].label == "Client timeout (s)"
    assert items[MAX_ATTEMPTS].value == 3 and items[MAX_ATTEMPTS].widget == "int"
    assert items["services.api.memory.limit"].value == 352.0 and items["services.api.memory.limit"].unit == "MiB"
    assert items["services.api.pools.main.max_open_conns"].value == 100
    assert items["clients.web.load.rate_per_s"].value == 320.0
    assert items["faults.0.lock_wait"].value == 15.0
    # a duration under 1 s shows in milliseconds
    assert items["clients.web.retry.backoff_base"].unit == "ms" and items["clients.web.retry.backoff_base"].value == 100.0
    assert items["services.api.routes.report.honours_context"].widget == "checkbox"
    assert items["services.api.routes.report.honours_context"].value is False
    assert items["clients.web.retry.backoff"].options == ("none", "constant", "exponential")
    assert items["clients.web.retry.backoff"].value == "none"
    assert items[BREAKER_KIND].options == ("none", "gobreaker", "hystrix", "resilience4j", "sentinel", "dual_metric")
    assert items["clients.web.retry.budget.kind"].options[:3] == ("none", "ratio", "finagle")
    assert widgets.defaults(seed_collapse)[CLIENT_TIMEOUT] == 30.0


def test_help_and_bounds_come_from_the_schema(seed_collapse):
    items = by_path(widgets.tunables(seed_collapse, {BREAKER_KIND: "hystrix",
                                                     "clients.web.retry.budget.kind": "finagle"}))
    assert items[CLIENT_TIMEOUT].help.startswith("http.Client Timeout: one deadline")
    assert f"`{CLIENT_TIMEOUT}`" in items[CLIENT_TIMEOUT].help
    assert items[CLIENT_TIMEOUT].min_value == 0.0 and items[CLIENT_TIMEOUT].max_value is None
    assert items[MAX_ATTEMPTS].min_value == 1                             # ge=1
    assert (items["clients.web.breaker.error_threshold_percentage"].min_value,
            items["clients.web.breaker.error_threshold_percentage"].max_value) == (0.0, 100.0)
    assert (items["clients.web.retry.budget.ttl"].min_value,
            items["clients.web.retry.budget.ttl"].max_value) == (1.0, 60.0)
    assert "Must be >= 1s and <= 1m" in items["clients.web.retry.budget.ttl"].help
    sleep = items["clients.web.breaker.sleep_window"]                    # gt=0: strictly positive
    assert 0 < sleep.min_value < 0.01 and sleep.value == 5.0
    assert items["duration"].min_value > 0                               # Scenario.duration gt=0


def test_overrides_only_for_changed_values(seed_collapse):
    items = widgets.tunables(seed_collapse)
    values = widgets.defaults(seed_collapse)
    assert widgets.overrides(items, values) == []
    values.update({CLIENT_TIMEOUT: 3.0, "services.api.memory.limit": 512.0,
                   "clients.web.retry.backoff_base": 250.0, "services.api.routes.report.honours_context": True,
                   "clients.web.retry.backoff": "exponential"})
    texts = widgets.overrides(items, values)
    assert texts == [f"{CLIENT_TIMEOUT}=3s", "clients.web.retry.backoff=exponential",
                     "clients.web.retry.backoff_base=250ms", "services.api.routes.report.honours_context=true",
                     "services.api.memory.limit=536870912"]
    tuned = widgets.with_overrides(seed_collapse, texts)
    assert tuned.clients["web"].transport.client_timeout == 3.0
    assert tuned.clients["web"].retry.backoff_base == 0.25
    assert tuned.services["api"].memory.limit == 512 * 1024 * 1024
    assert tuned.services["api"].routes["report"].honours_context is True
    # the tuned scenario's own defaults give no overrides: moving a widget back is no change
    assert widgets.overrides(widgets.tunables(tuned), widgets.defaults(tuned)) == []


def test_changing_a_kind_brings_its_settings(seed_collapse):
    items = widgets.tunables(seed_collapse, {BREAKER_KIND: "gobreaker"})
    paths = by_path(items)
    assert paths[BREAKER_KIND].value == "none"          # the default stays the scenario's kind
    gob = paths["clients.web.breaker.timeout"]
    assert gob.value == 60.0 and "open -> half-open" in gob.help
    values = {t.path: t.value for t in items}
    values.update({BREAKER_KIND: "gobreaker", "clients.web.breaker.timeout": 5.0})
    texts = widgets.overrides(items, values)
    assert texts == [f"{BREAKER_KIND}=gobreaker", "clients.web.breaker.timeout=5s"]   # kind first
    tuned = widgets.with_overrides(seed_collapse, texts)
    assert tuned.clients["web"].breaker == GoBreakerConfig(timeout=5.0)


def test_every_shipped_configuration_has_widgets_and_no_spurious_override():
    for option in runs.scenario_options():
        scenario = runs.scenario_from_yaml(runs.shipped_yaml(option))
        items = widgets.tunables(scenario)
        assert items, option
        assert widgets.overrides(items, widgets.defaults(scenario)) == [], option
        for item in items:
            if item.widget in ("float", "int") and item.min_value is not None:
                assert item.min_value <= item.value, (option, item.path)


def test_variant_options_and_their_kind_settings():
    options = runs.scenario_options()
    assert options[:1] != [] and "seed-collapse" in options and "policy-storm@budget-grpc" in options
    scenario = runs.scenario_from_yaml(runs.shipped_yaml("policy-storm@budget-grpc"))
    assert scenario.name == "policy-storm@budget-grpc"          # named like `stormsim run NAME@VARIANT`
    items = by_path(widgets.tunables(scenario))
    assert items["clients.web.retry.budget.kind"].value == "grpc"
    assert items["clients.web.retry.budget.max_tokens"].value == 10.0
    assert items["clients.web.retry.budget.token_ratio"].value == 0.1


def test_invalid_upload_is_one_line():
    scenario, problem = common.scenario_from_upload(b"duration: -1s\n", "bad.yaml")
    assert scenario is None and "duration" in problem and "\n" not in problem
    scenario, problem = common.scenario_from_upload(b"a: [1,\n", "broken.yaml")
    assert scenario is None and "invalid YAML" in problem and "\n" not in problem


# ------------------------------------------------------------------ the page


class _Recording(MemoryMediaFileStorage):
    """The media storage of AppTest's mock runtime, remembered so a download's bytes can be read."""

    last: "_Recording | None" = None

    def __init__(self, media_endpoint: str) -> None:
        super().__init__(media_endpoint)
        _Recording.last = self


def downloaded(at: AppTest, key: str) -> bytes:
    button = next(b for b in at.get("download_button") if b.proto.id.endswith(key))
    file_name = button.proto.url.rsplit("/", 1)[1]
    assert _Recording.last is not None
    return _Recording.last.get_file(file_name).content


@pytest.fixture
def page(monkeypatch) -> AppTest:
    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", _Recording)
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT_S)
    return at.run()


def widget(at: AppTest, path: str):
    found = [w for kind in ("number_input", "selectbox", "checkbox") for w in at.get(kind)
             if w.key and w.key.endswith(f":{path}")]
    assert len(found) == 1, (path, [w.key for w in found])
    return found[0]


def metrics(at: AppTest) -> dict[str, tuple[str, str]]:
    return {m.label: (m.value, m.proto.delta) for m in at.metric}


def test_page_loads_with_defaults_kpis_and_chart(page):
    assert not page.exception
    assert not page.error
    assert widget(page, CLIENT_TIMEOUT).value == 30.0
    assert widget(page, MAX_ATTEMPTS).value == 3
    assert widget(page, "services.api.memory.limit").value == 352.0
    assert widget(page, BREAKER_KIND).value == "none"
    assert [n.label for n in page.number_input][:2] == ["Seed", "Replications"]
    assert page.selectbox(key="tune.scenario").value == "seed-collapse"
    shown = metrics(page)
    assert len(shown) == len(runs.KPIS)
    assert shown["Outcome"][0] == "crashed"
    assert all(delta == "" for _, delta in shown.values())   # the run is the baseline
    assert len(page.get("plotly_chart")) == 1
    assert any(c.value.startswith("Updated in ") for c in page.caption)
    assert {e.label for e in page.expander} >= set(widgets.GROUPS)


def test_changing_a_timeout_changes_the_kpis_and_back_is_cached(page):
    before = metrics(page)
    widget(page, CLIENT_TIMEOUT).set_value(3.0)
    page.run()
    assert not page.exception
    after = metrics(page)
    assert after["P99 latency"][0] != before["P99 latency"][0]
    assert after["P99 latency"][1].startswith("-")           # a delta against the scenario as loaded
    assert "clients.web.transport.client_timeout=3s" in page.session_state["tune.request"]["overrides"]
    widget(page, CLIENT_TIMEOUT).set_value(30.0)
    page.run()
    assert metrics(page) == before
    assert page.session_state["tune.timing"]["run_s"] < 0.5   # from the cache


def test_breaker_kind_shows_its_settings(page):
    widget(page, BREAKER_KIND).set_value("gobreaker")
    page.run()
    assert not page.exception
    assert widget(page, "clients.web.breaker.timeout").value == 60.0
    assert widget(page, "clients.web.breaker.trip_after_consecutive_failures").value == 6
    assert page.session_state["tune.request"]["overrides"] == [f"{BREAKER_KIND}=gobreaker"]
    assert "Breaker trips" not in metrics(page)   # KPIs stay the same list


def test_run_button_when_auto_run_is_off_and_pin_baseline(page):
    before = metrics(page)
    page.toggle(key="tune.auto").set_value(False)
    widget(page, MAX_ATTEMPTS).set_value(1)
    page.run()
    assert metrics(page) == before                            # not run yet
    assert any("press **Run**" in i.value for i in page.info)
    page.button(key="tune.run").click()
    page.run()
    changed = metrics(page)
    assert changed["Attempts per request"][0] == "1 ×"
    assert changed["Attempts per request"][1].startswith("-")
    page.button(key="tune.pin").click()
    page.run()
    assert all(delta == "" for _, delta in metrics(page).values())   # now the baseline itself
    page.button(key="tune.unpin").click()
    page.run()
    assert metrics(page)["Attempts per request"][1].startswith("-")


def test_invalid_upload_shows_an_error_not_a_traceback(page):
    page.file_uploader(key="tune.upload").set_value(("bad.yaml", b"services: {api: {fd_limit: 2}}\n",
                                                      "application/x-yaml"))
    page.run()
    assert not page.exception
    [error] = page.error
    assert "fd_limit" in error.value and "\n" not in error.value.strip()
    assert len(page.metric) == len(runs.KPIS)                 # the shipped scenario is still shown
    data = yaml.safe_load(dump_scenario_yaml(load_scenario(shipped_scenarios()["seed-collapse"])))
    data["services"]["api"]["routes"]["report"]["steps"][0] = {"call": "nowhere"}     # an unknown callee
    two = yaml.safe_dump(data)
    page.file_uploader(key="tune.upload").set_value(("two.yaml", two.encode(), "application/x-yaml"))
    page.run()
    assert not page.exception
    [error] = page.error
    assert "services.api.routes.report.steps.0.call" in error.value and "nowhere" in error.value


def test_replications_show_mean_and_range(page):
    page.number_input(key="tune.replications").set_value(2)
    page.run()
    assert not page.exception
    p99 = next(m for m in page.metric if m.label == "P99 latency")
    assert "Mean of 2 replications, range" in p99.help
    assert "mean of 2 replications" in " ".join(c.value for c in page.caption)


def test_upload_and_export_round_trip(page, tmp_path):
    data = dump_scenario_yaml(load_scenario(shipped_scenarios()["seed-collapse"],
                                            overrides=["duration=30s", "name=uploaded"]))
    page.file_uploader(key="tune.upload").set_value(("mine.yaml", data.encode(), "application/x-yaml"))
    page.run()
    assert not page.exception and not page.error
    widget(page, CLIENT_TIMEOUT).set_value(5.0)
    page.run()
    request = page.session_state["tune.request"]
    assert request["source"].startswith("upload:mine.yaml:")
    ran = runs.scenario_from_yaml(request["yaml"])
    assert ran.duration == 30.0 and ran.clients["web"].transport.client_timeout == 5.0

    exported = downloaded(page, "tune.export.yaml")
    assert scenario_from_dict(yaml.safe_load(exported)) == ran
    path = tmp_path / "exported.yaml"
    path.write_bytes(exported)
    from experiments.cli import main as stormsim
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = stormsim(["run", str(path), "--json", "--seed", str(request["seed"]), "--out", str(tmp_path / "run")])
    assert code == 0
    summary = json.loads(out.getvalue())
    assert summary["outcome"] == metrics(page)["Outcome"][0]
    csv = downloaded(page, "tune.export.csv").decode()
    assert csv.splitlines()[0].startswith("kpi,key,unit,value")
