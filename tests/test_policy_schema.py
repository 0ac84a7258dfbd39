"""Policy blocks of a scenario: the tagged unions (`breaker`, `retry.budget`) and the policy checks.

Loading each kind from YAML, the default when `kind` is missing, errors for an unknown kind or a
key of another kind, the round trip through ``scenario_to_dict``, ``--set`` and variants into a
union block, the cross-setting checks of retries, hedging and shedding, and the CLI's one-line
rejection of a bad kind.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from sim.scenario_loader import (
    ScenarioError,
    apply_overrides,
    apply_variant,
    dump_scenario_yaml,
    load_scenario,
    scenario_from_dict,
    scenario_to_dict,
)
from sim.schema import (
    POLICY_REJECTION_KINDS,
    AwsRetryQuotaConfig,
    BreakerConfig,
    DualMetricBreakerConfig,
    EnvoyRetryBudgetConfig,
    FinagleRetryBudgetConfig,
    GoBreakerConfig,
    GrpcRetryThrottlingConfig,
    HystrixBreakerConfig,
    NoBreakerConfig,
    NoRetryBudgetConfig,
    RatioRetryBudgetConfig,
    Resilience4jBreakerConfig,
    RetryBudgetConfig,
    SentinelBreakerConfig,
)

BASE_YAML = textwrap.dedent("""\
    name: policies
    duration: 3s
    services:
      api:
        routes: {home: {steps: [{cpu: 2ms}]}}
    clients:
      web:
        target: api
        load: {rate_per_s: 50}
    """)

BREAKER_CLASSES: tuple[type, ...] = typing.get_args(BreakerConfig)
BUDGET_CLASSES: tuple[type, ...] = typing.get_args(RetryBudgetConfig)

MEMBERS: list[Any] = [
    NoBreakerConfig(), GoBreakerConfig(max_requests=2), HystrixBreakerConfig(n_buckets=5),
    Resilience4jBreakerConfig(automatic_transition=True), SentinelBreakerConfig(grade="error_count"),
    DualMetricBreakerConfig(max_open=600.0), NoRetryBudgetConfig(), RatioRetryBudgetConfig(window=30.0),
    FinagleRetryBudgetConfig(min_retries_per_s=1.0), FinagleRetryBudgetConfig(kind="linkerd", ttl=15.0),
    EnvoyRetryBudgetConfig(min_retry_concurrency=1), GrpcRetryThrottlingConfig(token_ratio=0.25),
    AwsRetryQuotaConfig(timeout_cost=7),
]
"""A value of every member of both unions, most with a setting off its default."""


def base_data() -> dict[str, Any]:
    return yaml.safe_load(BASE_YAML)


def load_text(client_yaml: str) -> Any:
    """The scenario of ``BASE_YAML`` with ``client_yaml`` (indented keys) added to client web."""
    text = BASE_YAML + textwrap.indent(textwrap.dedent(client_yaml), " " * 4)
    return scenario_from_dict(yaml.safe_load(text))


def error_for(data: dict[str, Any], overrides: tuple[str, ...] = ()) -> ScenarioError:
    with pytest.raises(ScenarioError) as caught:
        scenario_from_dict(apply_overrides(data, overrides))
    return caught.value


def assert_names(error: ScenarioError, path: str, *shown: str) -> None:
    message = str(error)
    assert error.path == path, message
    assert message.startswith(f"{path}: "), message
    for text in shown:
        assert text in message, message
    assert "\n" not in message


# ------------------------------------------------------------- loading kinds


@pytest.mark.parametrize("client_yaml, expected", [
    ("breaker: {kind: none}", NoBreakerConfig()),
    ("breaker: {kind: gobreaker, timeout: 30s, max_requests: 3}",
     GoBreakerConfig(timeout=30.0, max_requests=3)),
    ("breaker: {kind: hystrix, sleep_window: 2500ms}", HystrixBreakerConfig(sleep_window=2.5)),
    ("breaker: {kind: resilience4j, wait_in_open: 1m30s, sliding_window_type: time}",
     Resilience4jBreakerConfig(wait_in_open=90.0, sliding_window_type="time")),
    ("breaker: {kind: sentinel, grade: error_ratio, max_rt: 200ms}",
     SentinelBreakerConfig(grade="error_ratio", max_rt=0.2)),
    ("breaker: {kind: dual_metric, base_open: 2m, probe_interval: 10s}",
     DualMetricBreakerConfig(base_open=120.0, probe_interval=10.0)),
], ids=lambda value: getattr(value, "kind", None))
def test_each_breaker_kind_loads(client_yaml: str, expected: Any):
    assert load_text(client_yaml).clients["web"].breaker == expected


def test_every_member_is_covered():
    assert {type(member) for member in MEMBERS} == {*BREAKER_CLASSES, *BUDGET_CLASSES}


@pytest.mark.parametrize("client_yaml, expected", [
    ("retry: {budget: {kind: none}}", NoRetryBudgetConfig()),
    ("retry: {budget: {kind: ratio, ratio: 0.2, window: 1m}}", RatioRetryBudgetConfig(ratio=0.2, window=60.0)),
    ("retry: {budget: {kind: finagle, ttl: 30s}}", FinagleRetryBudgetConfig(ttl=30.0)),
    ("retry: {budget: {kind: linkerd, ttl: 1m, percent_can_retry: 0.5}}",
     FinagleRetryBudgetConfig(kind="linkerd", ttl=60.0, percent_can_retry=0.5)),
    ("retry: {budget: {kind: envoy, budget_percent: 30}}", EnvoyRetryBudgetConfig(budget_percent=30.0)),
    ("retry: {budget: {kind: grpc, max_tokens: 100, token_ratio: 0.5}}",
     GrpcRetryThrottlingConfig(max_tokens=100.0, token_ratio=0.5)),
    ("retry: {budget: {kind: aws, tokens: 100, increment_on_retry_success: false}}",
     AwsRetryQuotaConfig(tokens=100, increment_on_retry_success=False)),
], ids=["none", "ratio", "finagle", "linkerd", "envoy", "grpc", "aws"])
def test_each_budget_kind_loads(client_yaml: str, expected: Any):
    budget = load_text(client_yaml).clients["web"].retry.budget
    assert budget == expected
    assert type(budget) is type(expected)


def test_budget_numbers_are_typed():
    budget = load_text("retry: {budget: {kind: envoy, budget_percent: 30}}").clients["web"].retry.budget
    assert isinstance(budget.budget_percent, float)


def test_missing_kind_means_none():
    web = load_text("breaker: {}\nretry: {budget: {}}").clients["web"]
    assert web.breaker == NoBreakerConfig() and web.retry.budget == NoRetryBudgetConfig()
    web = load_text("retry: {max_attempts: 2}").clients["web"]
    assert web.breaker == NoBreakerConfig() and web.retry.budget == NoRetryBudgetConfig()


def test_a_kind_alone_takes_that_kinds_defaults():
    web = load_text("breaker: {kind: hystrix}\nretry: {budget: {kind: ratio}}").clients["web"]
    assert web.breaker == HystrixBreakerConfig() and web.retry.budget == RatioRetryBudgetConfig()


def test_edges_take_unions_too():
    data = base_data()
    data["edges"] = [{"caller": "api", "callee": "api", "breaker": {"kind": "gobreaker", "interval": "5s"},
                      "retry": {"budget": {"kind": "aws"}}}]
    edge = scenario_from_dict(data).edges[0]
    assert edge.breaker == GoBreakerConfig(interval=5.0)
    assert edge.retry.budget == AwsRetryQuotaConfig()


# ------------------------------------------------------------------ errors


def test_unknown_kind_lists_the_kinds():
    data = base_data()
    data["clients"]["web"]["breaker"] = {"kind": "hystrx"}
    error = error_for(data)
    assert_names(error, "clients.web.breaker.kind", "hystrx", "none, gobreaker, hystrix, resilience4j",
                 "dual_metric")


def test_unknown_budget_kind_lists_the_kinds():
    data = base_data()
    data["clients"]["web"]["retry"] = {"budget": {"kind": "linkerd2"}}
    assert_names(error_for(data), "clients.web.retry.budget.kind", "linkerd2",
                 "none, ratio, finagle, linkerd, envoy, grpc, aws")


def test_kind_must_be_a_string():
    data = base_data()
    data["clients"]["web"]["breaker"] = {"kind": 3}
    assert_names(error_for(data), "clients.web.breaker.kind", "3", "hystrix")


def test_key_of_another_kind_names_the_kind_and_valid_keys():
    data = base_data()
    data["clients"]["web"]["breaker"] = {"kind": "gobreaker", "sleep_window": "1s"}
    error = error_for(data)
    assert_names(error, "clients.web.breaker.sleep_window", "sleep_window", "kind gobreaker",
                 "valid keys: kind, max_requests")
    assert "hystrix" in str(error)  # the kind that has it


def test_key_without_kind_names_the_default_kind():
    data = base_data()
    data["clients"]["web"]["retry"] = {"budget": {"ratio": 0.2}}
    error = error_for(data)
    assert_names(error, "clients.web.retry.budget.ratio", "ratio", "kind none", "the default")


def test_misspelt_key_suggests_the_close_one():
    data = base_data()
    data["clients"]["web"]["breaker"] = {"kind": "hystrix", "sleep_windows": "1s"}
    assert_names(error_for(data), "clients.web.breaker.sleep_windows", "sleep_windows",
                 "did you mean sleep_window?")


def test_union_block_must_be_a_mapping():
    data = base_data()
    data["clients"]["web"]["breaker"] = "hystrix"
    assert_names(error_for(data), "clients.web.breaker", "'hystrix'", "a mapping with kind: one of none")


def test_member_values_are_checked():
    data = base_data()
    data["clients"]["web"]["breaker"] = {"kind": "hystrix", "sleep_window": "5 parsecs"}
    assert_names(error_for(data), "clients.web.breaker.sleep_window", "5 parsecs")
    data["clients"]["web"]["breaker"] = {"kind": "hystrix", "error_threshold_percentage": 150}
    assert_names(error_for(data), "clients.web.breaker.error_threshold_percentage", "150", "<= 100")


# -------------------------------------------------------------- round trip


@pytest.mark.parametrize("member", MEMBERS, ids=lambda member: member.kind)
def test_round_trip_through_dict_and_yaml(member: Any):
    scenario = scenario_from_dict(base_data())
    web = scenario.clients["web"]
    is_breaker = type(member) in BREAKER_CLASSES
    if is_breaker:
        web = dataclasses.replace(web, breaker=member)
    else:
        web = dataclasses.replace(web, retry=dataclasses.replace(web.retry, budget=member))
    scenario = dataclasses.replace(scenario, clients={"web": web})
    plain = scenario_to_dict(scenario)
    exported = plain["clients"]["web"]["breaker" if is_breaker else "retry"]
    exported = exported if is_breaker else exported["budget"]
    assert exported["kind"] == member.kind
    assert list(exported) == [f.name for f in dataclasses.fields(member)]
    assert scenario_from_dict(plain) == scenario
    assert scenario_from_dict(yaml.safe_load(dump_scenario_yaml(scenario))) == scenario


def test_export_writes_durations_as_go_durations():
    scenario = load_text("breaker: {kind: hystrix, sleep_window: 2500ms}")
    exported = scenario_to_dict(scenario)["clients"]["web"]["breaker"]
    assert exported["sleep_window"] == "2.5s" and exported["health_snapshot_interval"] == "500ms"


# ------------------------------------------------------- --set and variants


def test_set_kind_then_a_key_of_that_kind():
    data = apply_overrides(base_data(), ["clients.web.breaker.kind=hystrix",
                                         "clients.web.breaker.sleep_window=2s"])
    assert scenario_from_dict(data).clients["web"].breaker == HystrixBreakerConfig(sleep_window=2.0)


def test_set_into_a_budget_the_file_omits():
    data = apply_overrides(base_data(), ["clients.web.retry.budget.kind=envoy",
                                         "clients.web.retry.budget.budget_percent=30"])
    assert scenario_from_dict(data).clients["web"].retry.budget == EnvoyRetryBudgetConfig(budget_percent=30.0)


def test_set_a_key_of_another_kind_is_an_error_naming_the_path():
    with pytest.raises(ScenarioError) as caught:
        apply_overrides(base_data(), ["clients.web.retry.budget.ratio=0.2"])
    assert_names(caught.value, "clients.web.retry.budget.ratio", "ratio", "kind none",
                 "clients.web.retry.budget.kind=ratio", "--set clients.web.retry.budget.ratio=0.2")


def test_set_an_unknown_kind_is_an_error():
    with pytest.raises(ScenarioError) as caught:
        apply_overrides(base_data(), ["clients.web.breaker.kind=bogus"])
    assert_names(caught.value, "clients.web.breaker.kind", "bogus", "gobreaker, hystrix")


def test_set_kind_drops_the_settings_of_the_previous_kind():
    data = base_data()
    data["clients"]["web"]["breaker"] = {"kind": "gobreaker", "max_requests": 3, "timeout": "10s"}
    data = apply_overrides(data, ["clients.web.breaker.kind=hystrix"])
    assert data["clients"]["web"]["breaker"] == {"kind": "hystrix"}
    assert scenario_from_dict(data).clients["web"].breaker == HystrixBreakerConfig()


def test_set_kind_to_a_kind_of_the_same_class_keeps_the_settings():
    data = base_data()
    data["clients"]["web"]["retry"] = {"budget": {"kind": "finagle", "ttl": "20s"}}
    data = apply_overrides(data, ["clients.web.retry.budget.kind=linkerd"])
    assert scenario_from_dict(data).clients["web"].retry.budget == FinagleRetryBudgetConfig(kind="linkerd", ttl=20.0)


def test_set_a_key_of_the_files_kind():
    data = base_data()
    data["clients"]["web"]["breaker"] = {"kind": "sentinel"}
    data = apply_overrides(data, ["clients.web.breaker.max_rt=250ms"])
    assert scenario_from_dict(data).clients["web"].breaker == SentinelBreakerConfig(max_rt=0.25)


def test_set_the_whole_block():
    data = apply_overrides(base_data(), ["clients.web.breaker={kind: gobreaker, timeout: 5s}"])
    assert scenario_from_dict(data).clients["web"].breaker == GoBreakerConfig(timeout=5.0)


def test_set_into_an_edge_union():
    data = base_data()
    data["edges"] = [{"caller": "api", "callee": "api"}]
    data = apply_overrides(data, ["edges.0.retry.budget.kind=grpc", "edges.0.retry.budget.max_tokens=20"])
    assert scenario_from_dict(data).edges[0].retry.budget == GrpcRetryThrottlingConfig(max_tokens=20.0)


def test_variant_switches_the_kind():
    data = base_data()
    data["clients"]["web"]["breaker"] = {"kind": "gobreaker", "max_requests": 2}
    data["variants"] = {"hystrix": {"clients.web.breaker.kind": "hystrix",
                                    "clients.web.breaker.request_volume_threshold": 5}}
    breaker = scenario_from_dict(apply_variant(data, "hystrix")).clients["web"].breaker
    assert breaker == HystrixBreakerConfig(request_volume_threshold=5)


def test_variant_with_a_key_of_another_kind_names_the_variant():
    data = base_data()
    data["variants"] = {"bad": {"clients.web.breaker.sleep_window": "1s"}}
    with pytest.raises(ScenarioError) as caught:
        apply_variant(data, "bad")
    assert_names(caught.value, "clients.web.breaker.sleep_window", "sleep_window", "variant 'bad'")


def test_load_scenario_with_overrides_into_a_union(tmp_path: Path):
    path = tmp_path / "policies.yaml"
    path.write_text(BASE_YAML)
    scenario = load_scenario(path, ["clients.web.retry.budget.kind=linkerd",
                                    "clients.web.retry.budget.ttl=45s"])
    assert scenario.clients["web"].retry.budget == FinagleRetryBudgetConfig(kind="linkerd", ttl=45.0)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path, ["clients.web.breaker.kind=hystrix", "clients.web.breaker.timeout=1s"])
    assert_names(caught.value, "clients.web.breaker.timeout", "timeout", "kind hystrix")
    assert caught.value.source == str(path)


# ------------------------------------------------------------------ checks


def _client(data: dict[str, Any]) -> dict[str, Any]:
    return data["clients"]["web"]


def _edge(data: dict[str, Any]) -> dict[str, Any]:
    data["edges"] = [{"caller": "api", "callee": "api"}]
    return data["edges"][0]


def _shedding(data: dict[str, Any]) -> dict[str, Any]:
    return data["services"]["api"].setdefault("shedding", {})


# id -> (edit of the raw data, path of the error, text the message shows)
CHECKS: dict[str, tuple[Callable[[dict[str, Any]], None], str, str]] = {
    "retry-on-policy-rejection": (
        lambda d: _client(d).update(retry={"retry_on": ["client_timeout", "breaker_open"]}),
        "clients.web.retry.retry_on.1", "breaker_open"),
    "edge-retry-on-policy-rejection": (
        lambda d: _edge(d).update(retry={"retry_on": ["deadline_exceeded"]}),
        "edges.0.retry.retry_on.0", "deadline_exceeded"),
    "backoff-base-above-cap": (
        lambda d: _client(d).update(retry={"backoff_base": "20s", "backoff_cap": "10s"}),
        "clients.web.retry.backoff_base", "20s"),
    "edge-backoff-base-above-cap": (
        lambda d: _edge(d).update(retry={"backoff_base": "2s", "backoff_cap": "1s"}),
        "edges.0.retry.backoff_base", "2s"),
    "decorrelated-without-exponential": (
        lambda d: _client(d).update(retry={"jitter": "decorrelated", "backoff": "constant"}),
        "clients.web.retry.jitter", "decorrelated"),
    "status-below-400": (
        lambda d: _client(d).update(retry={"retry_on_status": [503, 302]}),
        "clients.web.retry.retry_on_status.1", "302"),
    "status-above-599": (
        lambda d: _edge(d).update(retry={"retry_on_status": [600]}),
        "edges.0.retry.retry_on_status.0", "600"),
    "codel-target-above-interval": (
        lambda d: _shedding(d).update(max_in_flight=10, discipline="codel", codel_target="200ms",
                                      codel_interval="100ms"),
        "services.api.shedding.codel_target", "200ms"),
    "queue-timeout-with-codel": (
        lambda d: _shedding(d).update(max_in_flight=10, discipline="codel", queue_timeout="1s"),
        "services.api.shedding.queue_timeout", "1s"),
    "queue-without-limit": (
        lambda d: _shedding(d).update(queue_length=50),
        "services.api.shedding.queue_length", "50"),
    "discipline-without-limit": (
        lambda d: _shedding(d).update(discipline="lifo"),
        "services.api.shedding.discipline", "lifo"),
    "hedging-without-attempts": (
        lambda d: _client(d).update(hedging={"enabled": True}),
        "clients.web.hedging.enabled", "true"),
    "edge-hedging-without-attempts": (
        lambda d: _edge(d).update(hedging={"enabled": True}, retry={"max_attempts": 1}),
        "edges.0.hedging.enabled", "true"),
}


@pytest.mark.parametrize("case", list(CHECKS))
def test_policy_checks_name_the_path_and_value(case: str):
    edit, path, shown = CHECKS[case]
    data = base_data()
    edit(data)
    assert_names(error_for(data), path, shown)


@pytest.mark.parametrize("kind", POLICY_REJECTION_KINDS)
def test_no_policy_rejection_is_retried(kind: str):
    data = base_data()
    _client(data)["retry"] = {"retry_on": [kind]}
    assert_names(error_for(data), "clients.web.retry.retry_on.0", kind, "never retried")


@pytest.mark.parametrize("retry, hedging, shedding", [
    ({"retry_on": ["http_4xx", "http_5xx"], "retry_on_status": [400, 429, 503, 599]}, {}, {}),
    ({"backoff_base": "1s", "backoff_cap": "1s", "backoff": "exponential", "jitter": "decorrelated"}, {}, {}),
    ({"max_attempts": 2}, {"enabled": True}, {}),
    ({}, {}, {"max_in_flight": 8, "queue_length": 16, "discipline": "lifo", "queue_timeout": "1s"}),
    ({}, {}, {"max_in_flight": 8, "queue_length": 16, "discipline": "codel", "codel_target": "100ms",
              "codel_interval": "100ms"}),
    ({}, {}, {"queue_timeout": "1s", "retry_after": "2s"}),
], ids=["statuses", "decorrelated", "hedging", "lifo", "codel", "fifo-unlimited"])
def test_consistent_policies_pass(retry: dict, hedging: dict, shedding: dict):
    data = base_data()
    _client(data).update(retry=retry, hedging=hedging)
    data["services"]["api"]["shedding"] = shedding
    scenario_from_dict(data)


# --------------------------------------------------------------------- CLI


def test_cli_rejects_a_bad_kind_in_one_line(tmp_path: Path):
    script = Path(sys.executable).with_name("stormsim")
    if not script.exists():
        pytest.skip("the stormsim console script is not installed")
    path = tmp_path / "policies.yaml"
    path.write_text(BASE_YAML)
    proc = subprocess.run([str(script), "run", str(path), "--set", "clients.web.breaker.kind=bogus",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "clients.web.breaker.kind" in lines[0] and "bogus" in lines[0]
    assert not (tmp_path / "out").exists()
