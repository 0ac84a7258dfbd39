"""Policy blocks through the scenario loader, for the policy-library tests.

- ``scenario_with(block)``: the tiny scenario of ``conftest.small_scenario_data`` (service
  ``api``, client ``web``) with ``block`` put where its keys belong: client keys
  (``retry``, ``breaker``, ``hedging``, ``throttle``, ``edge_limits``, ...) into
  ``clients.web``, service keys (``shedding``, ...) into ``services.api``, top-level keys
  (``clients``, ``services``, ...) merged at the top. Loaded with
  ``sim.scenario_loader.scenario_from_dict`` (so the schema and the cross-setting checks
  apply) and checked with ``check_supported`` (so the engine could run it).
- ``client_policies(scenario)`` / ``service_shedding(scenario)``: the objects
  ``sim.policies`` builds from the loaded blocks, the way the client and server do.
- ``built_policies(scenario)``: all of them, checked to exist exactly when their block
  turns them on (a ``kind`` other than ``none``, ``enabled``, ``max_in_flight > 0``).
- ``doc_examples(page)``: the YAML blocks of ``docs/policies/<page>``, parsed.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import yaml

from conftest import small_scenario_data
from sim.hedging import HedgingPolicy
from sim.policies import (make_backoff, make_breaker, make_edge_limits, make_retry_budget, make_shedding,
                          make_throttle)
from sim.scenario_checks import check_supported
from sim.scenario_loader import scenario_from_dict
from sim.schema import ClientConfig, Scenario, ServiceConfig

ROOT = Path(__file__).resolve().parents[1]
CLIENT = "web"
SERVICE = "api"

_CLIENT_KEYS = frozenset(f.name for f in dataclasses.fields(ClientConfig))
_SERVICE_KEYS = frozenset(f.name for f in dataclasses.fields(ServiceConfig))
_TOP_KEYS = frozenset(f.name for f in dataclasses.fields(Scenario))


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: mappings key by key, anything else replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def scenario_data_with(block: dict[str, Any]) -> dict[str, Any]:
    data = small_scenario_data()
    for key, value in block.items():
        if key in _TOP_KEYS:
            data = _merge(data, {key: value})
        elif key in _CLIENT_KEYS and key not in _SERVICE_KEYS:
            data = _merge(data, {"clients": {CLIENT: {key: value}}})
        elif key in _SERVICE_KEYS and key not in _CLIENT_KEYS:
            data = _merge(data, {"services": {SERVICE: {key: value}}})
        else:
            raise AssertionError(f"{key!r}: not a top-level, client-only or service-only key")
    return data


def scenario_with(block: dict[str, Any]) -> Scenario:
    scenario = scenario_from_dict(scenario_data_with(block))
    check_supported(scenario)
    return scenario


def client_policies(scenario: Scenario, client: str = CLIENT) -> dict[str, Any]:
    """What ``sim.client`` builds for one process of ``client`` (None = that policy is off)."""
    config = scenario.clients[client]
    return {
        "backoff": make_backoff(config.retry),
        "budget": make_retry_budget(config.retry.budget),
        "breaker": make_breaker(config.breaker),
        "throttle": make_throttle(config.throttle),
        "hedging": (HedgingPolicy(config.hedging.delay, config.hedging.max_outstanding)
                    if config.hedging.enabled else None),
        "edge_limits": make_edge_limits(config.edge_limits),
    }


def service_shedding(scenario: Scenario, service: str = SERVICE) -> Any:
    return make_shedding(scenario.services[service].shedding)


def built_policies(scenario: Scenario) -> dict[str, Any]:
    built = {**client_policies(scenario), "shedding": service_shedding(scenario)}
    client = scenario.clients[CLIENT]
    on = {
        "backoff": True,
        "budget": client.retry.budget.kind != "none",
        "breaker": client.breaker.kind != "none",
        "throttle": client.throttle.enabled,
        "hedging": client.hedging.enabled,
        "edge_limits": client.edge_limits.enabled,
        "shedding": scenario.services[SERVICE].shedding.max_in_flight > 0,
    }
    for name, obj in built.items():
        assert (obj is not None) == on[name], f"{name}: built {obj!r}, configured on: {on[name]}"
    return built


def doc_examples(page: str) -> list[dict[str, Any]]:
    """Every ```yaml block of docs/policies/<page>, parsed."""
    text = (ROOT / "docs" / "policies" / page).read_text()
    blocks = [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    assert blocks, f"no YAML examples in docs/policies/{page}"
    return blocks
