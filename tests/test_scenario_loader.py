"""Scenario loading: typing, validation messages, variants, overrides and round trips."""

from __future__ import annotations

import dataclasses
import pickle
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.scenario_loader import (
    ScenarioError,
    dump_scenario_yaml,
    load_scenario,
    scenario_from_dict,
    scenario_to_dict,
)


SCENARIO_YAML = textwrap.dedent("""\
    name: demo
    duration: 2m
    services:
      api:
        server: {read_timeout: 5s}
        memory: {limit: 512MiB}
        routes:
          report:
            method: POST
            steps:
              - cpu: 5ms
              - query: main.orders
          health: {steps: [{cpu: 100us}]}
        pools: {main: {max_open_conns: 10}}
    databases:
      main:
        tables: {orders: {query_time: 20ms}}
    clients:
      web:
        target: api
        load: {rate_per_s: 200, routes: {report: 1, health: 3}}
        transport: {client_timeout: 3s, tls: {enabled: true, version: "1.2"}}
        retry: {max_attempts: 3, backoff: exponential}
    faults:
      - {kind: db_lock, at: 10s, duration: 20s, target: main.orders}
      - {kind: latency, target: api, routes: [report], delay: 2s}
    variants:
      fast:
        services.api.cpu.cores: 8
        clients.web.transport.client_timeout: 500ms
    """)


@pytest.fixture()
def scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(SCENARIO_YAML)
    return path


def base_data() -> dict:
    return yaml.safe_load(SCENARIO_YAML)


def error_for(data: dict) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        scenario_from_dict(data)
    return caught.value


def set_in(data: dict, path: str, value: object) -> None:
    """Set a dotted path in raw data, creating mappings on the way."""
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    node[int(last) if isinstance(node, list) else last] = value


def assert_names(error: ScenarioError, path: str, value: str) -> None:
    message = str(error)
    assert error.path == path, message
    assert message.startswith(f"{path}: "), message
    assert value in message, message
    assert "\n" not in message


# ------------------------------------------------------------------- typing


def test_loads_typed_values(scenario_file: Path):
    scenario = load_scenario(scenario_file)
    api = scenario.services["api"]
    assert scenario.duration == 120.0
    assert api.server.read_timeout == 5.0
    assert api.memory.limit == 512 * 1024**2
    assert api.routes["report"].steps[0].cpu == 0.005
    assert api.routes["report"].steps[1].query == "main.orders"
    assert api.routes["health"].steps[0].cpu == pytest.approx(100e-6)
    assert api.cpu.cores == 2  # default
    web = scenario.clients["web"]
    assert web.load.rate_per_s == 200.0 and isinstance(web.load.rate_per_s, float)
    assert web.transport.tls.version == "1.2"
    assert web.retry.max_attempts == 3
    assert isinstance(scenario.faults, tuple) and scenario.faults[0].at == 10.0
    assert scenario.faults[1].routes == ("report",)


def test_unknown_key_names_path_and_valid_keys():
    data = base_data()
    data["services"]["api"]["server"]["read_timout"] = "5s"
    error = error_for(data)
    assert_names(error, "services.api.server.read_timout", "read_timout")
    assert "read_timeout" in str(error) and "write_timeout" in str(error)


def test_negative_timeout():
    data = base_data()
    data["services"]["api"]["server"]["read_timeout"] = "-5s"
    error = error_for(data)
    assert str(error) == ("services.api.server.read_timeout: -5s is not a valid duration "
                          "(durations are never negative)")
    assert error.value == "-5s"


def test_parsecs_are_not_a_duration():
    data = base_data()
    data["clients"]["web"]["transport"]["client_timeout"] = "5 parsecs"
    error = error_for(data)
    assert_names(error, "clients.web.transport.client_timeout", "5 parsecs")
    assert "expected a duration like 250ms or 1m30s" in str(error)


def test_bare_number_duration_is_an_error_but_zero_is_fine():
    data = base_data()
    data["services"]["api"]["server"]["write_timeout"] = 0
    assert scenario_from_dict(data).services["api"].server.write_timeout == 0.0
    data["services"]["api"]["server"]["write_timeout"] = 30
    error = error_for(data)
    assert_names(error, "services.api.server.write_timeout", "30")
    assert "expected a duration like 250ms or 1m30s" in str(error)


@pytest.mark.parametrize(("path", "value", "shown"), [
    ("services.api.cpu.cores", "four", "four"),
    ("services.api.cpu.cores", True, "true"),
    ("services.api.cpu.cores", 2.0, "2.0"),
    ("services.api.routes.report.honours_context", "yes", "yes"),
    ("clients.web.load.rate_per_s", "200", "200"),
    ("name", 7, "7"),
    ("services.api.cpu", 4, "4"),
    ("faults", {"kind": "db_lock"}, "db_lock"),
    ("services.api.memory.limit", 1.5, "1.5"),
])
def test_wrong_type(path, value, shown):
    data = base_data()
    set_in(data, path, value)
    assert_names(error_for(data), path, shown)


def test_null_is_an_error():
    data = base_data()
    data["clients"]["web"]["transport"]["dial_timeout"] = None
    error = error_for(data)
    assert_names(error, "clients.web.transport.dial_timeout", "null")


def test_bad_literal_lists_allowed_values():
    data = base_data()
    data["clients"]["web"]["load"]["kind"] = "opne"
    error = error_for(data)
    assert_names(error, "clients.web.load.kind", "opne")
    assert "open, closed" in str(error)


def test_numeric_literal_text_is_taken():
    data = base_data()
    data["clients"]["web"]["transport"]["tls"]["version"] = 1.3  # YAML `version: 1.3`
    assert scenario_from_dict(data).clients["web"].transport.tls.version == "1.3"


@pytest.mark.parametrize(("path", "value", "shown", "rule"), [
    ("services.api.cpu.cores", 0, "0", ">= 1"),
    ("outcome.collapse_fraction", 1.5, "1.5", "> 0 and <= 1"),
    ("duration", "0s", "0s", "> 0s"),
    ("services.api.server.header_bytes", 0, "0", ">= 1"),
    ("faults.1.status", 200, "200", ">= 400 and <= 599"),
])
def test_bound_violation(path, value, shown, rule):
    data = base_data()
    set_in(data, path, value)
    error = error_for(data)
    assert_names(error, path, shown)
    assert rule in str(error)


def test_mapping_keys_must_be_strings():
    data = base_data()
    data["services"]["api"]["routes"][404] = {}
    assert_names(error_for(data), "services.api.routes.404", "404")


# ------------------------------------------------------------- cross checks


def test_unknown_client_target():
    data = base_data()
    data["clients"]["web"]["target"] = "apii"
    error = error_for(data)
    assert_names(error, "clients.web.target", "apii")
    assert "api" in error.reason


def test_step_with_two_kinds():
    data = base_data()
    data["services"]["api"]["routes"]["report"]["steps"][1]["sleep"] = "10ms"
    error = error_for(data)
    assert str(error).startswith(
        "services.api.routes.report.steps.1: set exactly one of cpu, query, sleep, alloc")
    assert_names(error, "services.api.routes.report.steps.1", "10ms")


@pytest.mark.parametrize(("edit", "path", "value"), [
    (lambda d: d["clients"]["web"]["load"]["routes"].update(nope=1), "clients.web.load.routes.nope", "nope"),
    (lambda d: d["clients"]["web"]["load"]["routes"].update(report=-1), "clients.web.load.routes.report", "-1"),
    (lambda d: d["clients"]["web"]["load"].update(routes={"report": 0}), "clients.web.load.routes", "report: 0"),
    (lambda d: d["services"]["api"]["routes"]["report"]["steps"][1].update(query="orders"),
     "services.api.routes.report.steps.1.query", "orders"),
    (lambda d: d["services"]["api"]["routes"]["report"]["steps"][1].update(query="other.orders"),
     "services.api.routes.report.steps.1.query", "other.orders"),
    (lambda d: d["services"]["api"]["routes"]["report"]["steps"][1].update(query="main.users"),
     "services.api.routes.report.steps.1.query", "main.users"),
    (lambda d: d["faults"][0].update(target="main.users"), "faults.0.target", "main.users"),
    (lambda d: d["faults"][1].update(target="db"), "faults.1.target", "db"),
    (lambda d: d["faults"][1].update(routes=["report", "admin"]), "faults.1.routes.1", "admin"),
    (lambda d: d.update(edges=[{"caller": "api", "callee": "auth"}]), "edges.0.callee", "auth"),
    (lambda d: d["clients"]["web"]["load"].update(kind="closed"), "clients.web.load.users", "0"),
    (lambda d: d["clients"]["web"]["load"].update(profile={"kind": "ramp", "at": "10s", "until": "5s"}),
     "clients.web.load.profile.until", "5s"),
    (lambda d: d["clients"]["web"]["retry"].update(retry_on=["eof", "timeout"]),
     "clients.web.retry.retry_on.1", "timeout"),
    (lambda d: d["clients"]["web"]["load"].update(trace="missing.csv"), "clients.web.load.trace", "missing.csv"),
    (lambda d: d["services"]["api"]["pools"].update(replica={}), "services.api.pools.replica", "replica"),
    (lambda d: d.update(clients={}), "clients", "no clients"),
    (lambda d: d.update(services={}), "services", "no services"),
])
def test_cross_field_checks(edit, path, value):
    data = base_data()
    edit(data)
    assert_names(error_for(data), path, value)


def test_trace_path_is_resolved_relative_to_the_scenario_file(tmp_path: Path):
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "arrivals.csv").write_text("at_s\n0.5\n")
    data = base_data()
    data["clients"]["web"]["load"]["trace"] = "traces/arrivals.csv"
    path = tmp_path / "with_trace.yaml"
    path.write_text(yaml.safe_dump(data))
    scenario = load_scenario(path)
    assert scenario.clients["web"].load.trace == str((tmp_path / "traces" / "arrivals.csv").resolve())
    assert scenario_from_dict(scenario_to_dict(scenario)) == scenario


# ------------------------------------------------------ overrides, variants


def test_override_edits_typed_values(scenario_file: Path):
    scenario = load_scenario(scenario_file, overrides=[
        "services.api.cpu.cores=4", "clients.web.transport.client_timeout=3s", "seed=9"])
    assert scenario.services["api"].cpu.cores == 4
    assert scenario.clients["web"].transport.client_timeout == 3.0
    assert scenario.seed == 9


def test_override_into_a_dict_entry(scenario_file: Path):
    scenario = load_scenario(scenario_file, overrides=[
        "services.api.routes.report.db_deadline=2s",
        "services.api.routes.slow.steps=[{sleep: 1s}]",
        "databases.main.tables.users.query_time=1ms",
    ])
    routes = scenario.services["api"].routes
    assert routes["report"].db_deadline == 2.0 and len(routes["report"].steps) == 2
    assert routes["slow"].steps[0].sleep == 1.0
    assert scenario.databases["main"].tables["users"].query_time == 0.001
    assert scenario.databases["main"].tables["orders"].query_time == 0.02


def test_override_into_a_list_element(scenario_file: Path):
    scenario = load_scenario(scenario_file, overrides=[
        "faults.0.at=5s", "services.api.routes.report.steps.0.cpu=7ms",
        "faults.2.kind=error_rate", "faults.2.target=api", "faults.2.rate=0.5",
        "clients.web.retry.retry_on.0=eof"])
    assert scenario.faults[0].at == 5.0 and scenario.faults[0].duration == 20.0
    assert scenario.services["api"].routes["report"].steps[0].cpu == 0.007
    assert scenario.faults[2].kind == "error_rate" and scenario.faults[2].rate == 0.5
    assert scenario.clients["web"].retry.retry_on[0] == "eof"
    assert scenario.clients["web"].retry.retry_on[1] == "dial_timeout"


@pytest.mark.parametrize(("override", "path"), [
    ("services.api.nope=1", "services.api.nope"),
    ("nope=1", "nope"),
    ("faults.7.at=1s", "faults.7.at"),
    ("faults.x.at=1s", "faults.x.at"),
    ("services.api.cpu.cores.more=1", "services.api.cpu.cores.more"),
    ("clients.web.load.profile.kinds=ramp", "clients.web.load.profile.kinds"),
])
def test_bad_override_path(scenario_file: Path, override: str, path: str):
    with pytest.raises(ScenarioError) as caught:
        load_scenario(scenario_file, overrides=[override])
    assert_names(caught.value, path, override)


def test_override_values_are_validated(scenario_file: Path):
    with pytest.raises(ScenarioError) as caught:
        load_scenario(scenario_file, overrides=["services.api.cpu.cores=-2"])
    assert_names(caught.value, "services.api.cpu.cores", "-2")


def test_override_without_equals(scenario_file: Path):
    with pytest.raises(ScenarioError, match="expected dotted.path=value"):
        load_scenario(scenario_file, overrides=["services.api.cpu.cores"])


def test_variant_then_overrides(scenario_file: Path):
    scenario = load_scenario(scenario_file, variant="fast")
    assert scenario.services["api"].cpu.cores == 8
    assert scenario.clients["web"].transport.client_timeout == 0.5
    overridden = load_scenario(scenario_file, variant="fast", overrides=["services.api.cpu.cores=3"])
    assert overridden.services["api"].cpu.cores == 3
    assert load_scenario(scenario_file).services["api"].cpu.cores == 2


def test_unknown_variant_lists_known_ones(scenario_file: Path):
    with pytest.raises(ScenarioError) as caught:
        load_scenario(scenario_file, variant="slow")
    assert_names(caught.value, "variants", "slow")
    assert "fast" in str(caught.value)


def test_variant_with_bad_path(tmp_path: Path):
    data = base_data()
    data["variants"]["broken"] = {"services.api.cpu.coers": 4}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path, variant="broken")
    assert_names(caught.value, "services.api.cpu.coers", "coers")
    assert "broken" in str(caught.value)


def test_variants_must_be_a_mapping_of_mappings():
    data = base_data()
    data["variants"]["odd"] = ["services.api.cpu.cores=4"]
    assert_names(error_for(data), "variants.odd", "services.api.cpu.cores=4")


# ----------------------------------------------------------------- files


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: demo\nservices:\n  api: {server: [\n")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert str(path) in message and "line 4" in message and "invalid YAML" in message


def test_missing_file_is_a_scenario_error(tmp_path: Path):
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        load_scenario(tmp_path / "nope.yaml")


def test_empty_file_is_an_error(tmp_path: Path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(ScenarioError, match="empty"):
        load_scenario(path)


def test_error_pickles():
    error = ScenarioError("a.b", "-5s", "bad")
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.path, clone.value, str(clone)) == ("a.b", "-5s", "a.b: bad")


# ------------------------------------------------------------ round trips


def test_round_trip_through_dict_and_yaml(scenario_file: Path):
    scenario = load_scenario(scenario_file)
    plain = scenario_to_dict(scenario)
    assert scenario_from_dict(plain) == scenario
    assert scenario_from_dict(yaml.safe_load(dump_scenario_yaml(scenario))) == scenario
    assert plain["services"]["api"]["memory"]["limit"] == "512MiB"
    assert plain["services"]["api"]["server"]["read_timeout"] == "5s"
    assert plain["duration"] == "2m"


def test_export_is_complete(scenario_file: Path):
    scenario = load_scenario(scenario_file)

    def check(plain: dict, value: object) -> None:
        assert list(plain) == [f.name for f in dataclasses.fields(value)]
        for f in dataclasses.fields(value):
            child = getattr(value, f.name)
            if dataclasses.is_dataclass(child):
                check(plain[f.name], child)

    check(scenario_to_dict(scenario), scenario)
    check(scenario_to_dict(scenario)["services"]["api"], scenario.services["api"])
    check(scenario_to_dict(scenario)["faults"][0], scenario.faults[0])


durations_s = st.one_of(
    st.just(0.0),
    st.floats(min_value=1e-9, max_value=1e7, allow_nan=False, allow_infinity=False),
    st.builds(lambda n, unit: n * unit, st.integers(1, 10**6), st.sampled_from([1e-6, 1e-3, 1.0, 60.0])),
)
sizes_bytes = st.one_of(st.integers(0, 2**50), st.builds(lambda n, k: n * 1024**k,
                                                         st.integers(1, 4096), st.integers(0, 3)))


@settings(max_examples=60, deadline=None)
@given(read_timeout=durations_s, client_timeout=durations_s, think_time=durations_s,
       limit=sizes_bytes, per_connection=sizes_bytes, rate=st.floats(0, 1e6, allow_nan=False),
       cores=st.integers(1, 256), fraction=st.floats(0, 0.999, allow_nan=False))
def test_round_trip_random_values(read_timeout, client_timeout, think_time, limit, per_connection,
                                  rate, cores, fraction):
    base = scenario_from_dict(base_data())
    api = base.services["api"]
    web = base.clients["web"]
    scenario = dataclasses.replace(
        base,
        services={"api": dataclasses.replace(
            api,
            server=dataclasses.replace(api.server, read_timeout=read_timeout),
            memory=dataclasses.replace(api.memory, limit=limit, per_connection=per_connection),
            cpu=dataclasses.replace(api.cpu, cores=cores),
            gc=dataclasses.replace(api.gc, background_fraction=max(fraction, 0.001)))},
        clients={"web": dataclasses.replace(
            web,
            transport=dataclasses.replace(web.transport, client_timeout=client_timeout),
            load=dataclasses.replace(web.load, rate_per_s=rate, think_time=think_time))},
    )
    assert scenario_from_dict(scenario_to_dict(scenario)) == scenario
    assert scenario_from_dict(yaml.safe_load(dump_scenario_yaml(scenario))) == scenario
