"""Schema-driven widgets for the settings people tune (the Tune page).

Everything a widget needs comes from ``sim.schema`` through ``sim.scenario_loader``:
the type (``setting_annotation``), the help text and bounds (the field's ``metadata``:
``doc``, ``ge``/``gt``/``le``/``lt``), the choices (``Literal`` arguments, the kinds of a
tagged union) and the default (the chosen scenario's current value). ``TUNABLE`` lists
the settings as dotted path templates; ``tunables`` resolves them against a scenario
into ``Tunable`` descriptions, ``overrides`` turns widget values into the
``path=value`` texts (``setting_text``) that differ from the scenario, and
``with_overrides`` applies them through the loader (``apply_overrides`` +
``scenario_from_dict``), so the page never builds a scenario itself.

Only ``render``/``render_group`` touch Streamlit; the rest is pure and unit-tested.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from sim.scenario_loader import (
    apply_overrides, bounds_text, member_kinds, scenario_from_dict, scenario_to_dict,
    setting_annotation, setting_text, union_members,
)
from sim.schema import Duration, Rate, Scenario, Size

MIB = 1024 * 1024

GROUPS: tuple[str, ...] = ("Client", "Retries", "Breaker", "Load", "Server", "Database pool",
                           "Memory", "Fault")

# (group, dotted path template). Placeholders: {client} the scenario's first client,
# {service} its first service, {route} each of that service's routes, {pool} each
# database the service has a pool for (or the scenario's databases), {budget} and
# {breaker} the main settings of the block's current kind (KIND_SETTINGS), {fault}
# the main settings of fault 0's kind (FAULT_SETTINGS). A template whose object is
# missing (no client, no fault) resolves to nothing.
TUNABLE: tuple[tuple[str, str], ...] = (
    ("Client", "clients.{client}.transport.client_timeout"),
    ("Client", "clients.{client}.transport.response_header_timeout"),
    ("Client", "clients.{client}.transport.dial_timeout"),
    ("Client", "clients.{client}.transport.max_conns_per_host"),
    ("Client", "clients.{client}.transport.max_idle_conns_per_host"),
    ("Retries", "clients.{client}.retry.max_attempts"),
    ("Retries", "clients.{client}.retry.backoff"),
    ("Retries", "clients.{client}.retry.backoff_base"),
    ("Retries", "clients.{client}.retry.backoff_cap"),
    ("Retries", "clients.{client}.retry.jitter"),
    ("Retries", "clients.{client}.retry.deadline"),
    ("Retries", "clients.{client}.retry.budget.kind"),
    ("Retries", "clients.{client}.retry.budget.{budget}"),
    ("Breaker", "clients.{client}.breaker.kind"),
    ("Breaker", "clients.{client}.breaker.{breaker}"),
    ("Load", "clients.{client}.load.rate_per_s"),
    ("Load", "duration"),
    ("Server", "services.{service}.server.read_timeout"),
    ("Server", "services.{service}.server.read_header_timeout"),
    ("Server", "services.{service}.server.write_timeout"),
    ("Server", "services.{service}.server.idle_timeout"),
    ("Server", "services.{service}.server.timeout_handler"),
    ("Server", "services.{service}.routes.{route}.honours_context"),
    ("Server", "services.{service}.routes.{route}.db_deadline"),
    ("Database pool", "services.{service}.pools.{pool}.max_open_conns"),
    ("Memory", "services.{service}.memory.limit"),
    ("Fault", "faults.0.at"),
    ("Fault", "faults.0.duration"),
    ("Fault", "faults.0.{fault}"),
)

# The main settings of each kind of a tagged union block (the rest keep the scenario's values).
KIND_SETTINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "budget": {
        "none": (),
        "ratio": ("ratio", "window"),
        "finagle": ("percent_can_retry", "min_retries_per_s", "ttl"),
        "linkerd": ("percent_can_retry", "min_retries_per_s", "ttl"),
        "envoy": ("budget_percent", "min_retry_concurrency"),
        "grpc": ("max_tokens", "token_ratio"),
        "aws": ("tokens", "retry_cost", "timeout_cost"),
    },
    "breaker": {
        "none": (),
        "gobreaker": ("trip_after_consecutive_failures", "timeout", "max_requests"),
        "hystrix": ("error_threshold_percentage", "request_volume_threshold", "sleep_window"),
        "resilience4j": ("failure_rate_threshold", "minimum_calls", "wait_in_open"),
        "sentinel": ("grade", "max_rt", "recovery_timeout"),
        "dual_metric": ("trip_success_rate_below", "trip_p99_above", "base_open"),
    },
}
FAULT_SETTINGS: dict[str, tuple[str, ...]] = {
    "db_lock": ("lock_wait",),
    "latency": ("delay",),
    "error_rate": ("rate",),
    "slow_clients": ("connections_per_s",),
}
# Labels where the key's own words say less than they could.
LABELS: dict[str, str] = {
    "rate_per_s": "offered load",
    "connections_per_s": "slow connections per second",
    "max_rt": "max RT",
    "trip_p99_above": "trip above P99",
    "db_deadline": "DB deadline",
    "max_conns_per_host": "max conns per host",
    "max_idle_conns_per_host": "max idle conns per host",
    "limit": "memory limit",
    "ttl": "TTL",
}
FLOAT_FORMAT = "%g"         # 30, 0.25, 352: no trailing zeros
STEPS: dict[str, float] = {"s": 1.0, "ms": 10.0, "MiB": 16.0, "req/s": 10.0, "": 0.05}
EXCLUSIVE_EPSILON = 1e-3   # a `gt`/`lt` bound of a float widget, in display units


@dataclass(frozen=True)
class Tunable:
    """One widget: which setting, how it is shown, its default (the scenario's value) and bounds.

    ``widget`` is ``float``, ``int``, ``checkbox`` or ``select``. Values are in display
    units: ``display = setting_value x factor`` (durations in s, or ms with factor 1000;
    sizes in MiB with factor 2**-20, so both directions are exact for whole MiB).
    """

    path: str
    group: str
    label: str
    help: str
    widget: Literal["float", "int", "checkbox", "select"]
    annotation: Any
    value: Any
    unit: str = ""
    factor: float = 1.0
    min_value: float | int | None = None
    max_value: float | int | None = None
    step: float | int | None = None
    format: str | None = None
    options: tuple[str, ...] = ()
    is_kind: bool = False

    def setting_value(self, display: Any) -> Any:
        """A widget value as the setting's own unit (seconds, bytes)."""
        if self.widget == "float":
            value = float(display) / self.factor
            return int(round(value)) if self.annotation == Size else value
        if self.widget == "int":
            return int(display)
        if self.widget == "checkbox":
            return bool(display)
        return str(display)

    def differs(self, display: Any) -> bool:
        """Is a widget value a change from the scenario's value?"""
        if self.widget == "float":
            new, old = self.setting_value(display), self.setting_value(self.value)
            return not math.isclose(float(new), float(old), rel_tol=1e-9, abs_tol=1e-12)
        return self.setting_value(display) != self.setting_value(self.value)

    def override(self, display: Any) -> str:
        """``path=value`` text for ``--set`` / ``apply_overrides``."""
        return f"{self.path}={setting_text(self.annotation, self.setting_value(display))}"


# ------------------------------------------------------------------ paths


_KIND_BLOCK = re.compile(r"^clients\.[^.]+\.(?:retry\.(budget)|(breaker))\.[^.]+$")


def kind_block(path: str) -> str | None:
    """``budget`` or ``breaker`` when ``path`` is a setting of a client's tagged-union block
    (``clients.web.retry.budget.ratio``, ``clients.web.breaker.kind``), else None."""
    match = _KIND_BLOCK.match(path)
    return (match.group(1) or match.group(2)) if match else None


def resolve_paths(scenario: Scenario, templates: Iterable[tuple[str, str]] = TUNABLE) -> list[tuple[str, str]]:
    """(group, dotted path) of every template resolved against ``scenario``, in template order."""
    client = next(iter(scenario.clients), None)
    service_name = next(iter(scenario.services), None)
    service = scenario.services.get(service_name) if service_name is not None else None
    out: list[tuple[str, str]] = []
    for group, template in templates:
        if "{client}" in template and client is None:
            continue
        if "{service}" in template and service is None:
            continue
        if template.startswith("faults.") and not scenario.faults:
            continue
        choices: dict[str, Sequence[str]] = {}
        if "{route}" in template:
            choices["route"] = list(service.routes) if service is not None else []
        if "{pool}" in template:
            pools = list(service.pools) if service is not None else []
            choices["pool"] = pools or list(scenario.databases)
        if "{budget}" in template:
            choices["budget"] = KIND_SETTINGS["budget"].get(scenario.clients[client].retry.budget.kind, ())
        if "{breaker}" in template:
            choices["breaker"] = KIND_SETTINGS["breaker"].get(scenario.clients[client].breaker.kind, ())
        if "{fault}" in template:
            choices["fault"] = FAULT_SETTINGS.get(scenario.faults[0].kind, ())
        paths = [template.format(client=client, service=service_name, route="{route}", pool="{pool}",
                                 budget="{budget}", breaker="{breaker}", fault="{fault}")]
        for name, values in choices.items():
            paths = [p.replace("{" + name + "}", str(v)) for p in paths for v in values]
        out.extend((group, path) for path in paths)
    return out


def value_at(scenario: Scenario, path: str) -> Any:
    """The current value of the setting at ``path`` (a map entry that is missing: its defaults)."""
    obj: Any = scenario
    segments = path.split(".")
    for depth, segment in enumerate(segments):
        if dataclasses.is_dataclass(obj):
            obj = getattr(obj, segment)
        elif isinstance(obj, dict):
            if segment in obj:
                obj = obj[segment]
            else:  # e.g. a pool the file leaves to the defaults
                entry_type = setting_annotation(".".join(segments[:depth + 1]))
                obj = entry_type()
        elif isinstance(obj, (tuple, list)):
            obj = obj[int(segment)]
        else:
            raise KeyError(path)
    return obj


def field_at(scenario: Scenario, path: str) -> dataclasses.Field:
    """The dataclass field of the setting at ``path`` (its ``metadata`` holds doc and bounds)."""
    parent_path, _, name = path.rpartition(".")
    parent = value_at(scenario, parent_path) if parent_path else scenario
    fields = {f.name: f for f in dataclasses.fields(parent)}
    return fields[name]


def union_kinds(block_path: str) -> tuple[str, ...]:
    """Every ``kind`` a tagged-union block (``clients.web.breaker``) accepts, in schema order."""
    return tuple(kind for member in union_members(setting_annotation(block_path))
                 for kind in member_kinds(member))


# ------------------------------------------------------------------ description


def _label(path: str, unit: str) -> str:
    """``Client timeout (s)``; a route's or pool's name first (``report: DB deadline (s)``)."""
    parts = path.split(".")
    name = parts[-1]
    words = LABELS.get(name, name.replace("_", " "))
    if parts[0] == "services" and len(parts) >= 5 and parts[2] == "routes":
        words = f"/{parts[3]}: {words}"
    elif parts[0] == "services" and len(parts) >= 5 and parts[2] == "pools":
        words = f"{parts[3]} pool: {words}"
    elif name == "kind" and kind_block(path):
        words = f"{parts[-2]} kind"
    elif parts[0] == "faults":
        words = f"fault {words}"
    elif parts[0] == "duration":
        words = "simulated duration"
    text = words[:1].upper() + words[1:]
    return f"{text} ({unit})" if unit else text


def _help(path: str, metadata: Mapping[str, Any], annotation: Any, extra: str = "") -> str:
    parts = [str(metadata.get("doc", "")).strip()]
    bounds = bounds_text(metadata, annotation)
    if bounds:
        parts.append(f"Must be {bounds}.")
    if extra:
        parts.append(extra)
    parts.append(f"Setting: `{path}`")
    return "\n\n".join(part for part in parts if part)


def _display_bounds(metadata: Mapping[str, Any], factor: float, integer: bool) -> tuple[Any, Any]:
    """The schema bounds in display units; a strict bound moves by one (int) or EXCLUSIVE_EPSILON."""
    low = high = None
    if metadata.get("ge") is not None:
        low = metadata["ge"] * factor
    if metadata.get("gt") is not None:
        low = metadata["gt"] + 1 if integer else metadata["gt"] * factor + EXCLUSIVE_EPSILON
    if metadata.get("le") is not None:
        high = metadata["le"] * factor
    if metadata.get("lt") is not None:
        high = metadata["lt"] - 1 if integer else metadata["lt"] * factor - EXCLUSIVE_EPSILON
    if integer:
        return (None if low is None else int(math.ceil(low)), None if high is None else int(math.floor(high)))
    return (None if low is None else float(low), None if high is None else float(high))


def describe(scenario: Scenario, path: str, group: str = "") -> Tunable:
    """The widget for the setting at ``path``, its default the value in ``scenario``."""
    current = value_at(scenario, path)
    name = path.rpartition(".")[2]
    if name == "kind" and kind_block(path):
        block = path.rpartition(".")[0]
        kinds = union_kinds(block)
        doc = field_at(scenario, block).metadata.get("doc", "")
        return Tunable(path=path, group=group, label=_label(path, ""), is_kind=True,
                       help=_help(path, {"doc": doc}, str,
                                  "Changing the kind resets the kind's settings to their defaults."),
                       widget="select", annotation=str, value=str(current), options=kinds)
    annotation = setting_annotation(path)
    metadata = field_at(scenario, path).metadata
    common = dict(path=path, group=group, annotation=annotation)
    if get_origin(annotation) is Literal:
        options = tuple(str(arg) for arg in get_args(annotation))
        return Tunable(label=_label(path, ""), help=_help(path, metadata, annotation), widget="select",
                       value=str(current), options=options, **common)
    if annotation is bool:
        return Tunable(label=_label(path, ""), help=_help(path, metadata, annotation), widget="checkbox",
                       value=bool(current), **common)
    if annotation is int:
        low, high = _display_bounds(metadata, 1.0, integer=True)
        return Tunable(label=_label(path, ""), help=_help(path, metadata, annotation), widget="int",
                       value=int(current), min_value=low, max_value=high, step=1, **common)
    if annotation == Duration:
        unit, factor = ("ms", 1000.0) if 0 < float(current) < 1 else ("s", 1.0)
    elif annotation == Size:
        unit, factor = "MiB", 1.0 / MIB
    elif annotation == Rate:
        unit, factor = ("req/s" if name == "rate_per_s" else "/s"), 1.0
    elif annotation is float:
        unit, factor = "", 1.0
    else:
        raise TypeError(f"{path}: no widget for settings typed {annotation!r}")
    low, high = _display_bounds(metadata, factor, integer=False)
    value = float(current) * factor
    low = None if low is None else min(low, value)     # a value just above a `gt` bound stays valid
    high = None if high is None else max(high, value)
    return Tunable(label=_label(path, unit), help=_help(path, metadata, annotation), widget="float",
                   value=value, unit=unit, factor=factor, min_value=low, max_value=high,
                   step=STEPS.get(unit, 1.0), format=FLOAT_FORMAT, **common)


def tunables(scenario: Scenario, kinds: Mapping[str, str] | None = None,
             group: str | None = None) -> list[Tunable]:
    """Every tunable of ``scenario`` (or of one ``group``), with ``kinds`` chosen for its union blocks.

    A kind that differs from the scenario's is applied first (through the loader, so the
    kind's settings show the values it would run with); the kind widgets keep the
    scenario's own kind as their default, so choosing it back is no change.
    """
    kind_overrides = [f"{path}={kind}" for path, kind in (kinds or {}).items()
                      if str(value_at(scenario, path)) != kind]
    resolved = with_overrides(scenario, kind_overrides) if kind_overrides else scenario
    out = []
    for grp, path in resolve_paths(resolved):
        if group is not None and grp != group:
            continue
        tunable = describe(resolved, path, grp)
        if tunable.is_kind:
            tunable = dataclasses.replace(tunable, value=str(value_at(scenario, path)))
        out.append(tunable)
    return out


def overrides(items: Sequence[Tunable], values: Mapping[str, Any]) -> list[str]:
    """``path=value`` texts for the widget ``values`` (path -> display value) that differ from
    the scenario; kinds first, so a kind's own settings apply to the new kind."""
    changed = [t for t in items if t.path in values and t.differs(values[t.path])]
    ordered = [t for t in changed if t.is_kind] + [t for t in changed if not t.is_kind]
    return [t.override(values[t.path]) for t in ordered]


def with_overrides(scenario: Scenario, texts: Sequence[str], source: str = "<dashboard>") -> Scenario:
    """``scenario`` with ``path=value`` texts applied and validated by ``sim.scenario_loader``.

    Raises ``ScenarioError`` (one line, naming the setting) when the result is invalid.
    """
    if not texts:
        return scenario
    return scenario_from_dict(apply_overrides(scenario_to_dict(scenario), list(texts)), source=source)


def defaults(scenario: Scenario) -> dict[str, Any]:
    """path -> the widget default (display units) of every tunable of ``scenario``."""
    return {t.path: t.value for t in tunables(scenario)}


# ------------------------------------------------------------------ Streamlit


def render(tunable: Tunable, key_prefix: str) -> Any:
    """Draw one widget; returns its value in display units."""
    import streamlit as st

    key = f"{key_prefix}:{tunable.path}"
    if tunable.widget == "select":
        options = list(tunable.options)
        index = options.index(tunable.value) if tunable.value in options else 0
        return st.selectbox(tunable.label, options, index=index, help=tunable.help, key=key)
    if tunable.widget == "checkbox":
        return st.checkbox(tunable.label, value=bool(tunable.value), help=tunable.help, key=key)
    if tunable.widget == "int":
        return st.number_input(tunable.label, min_value=tunable.min_value, max_value=tunable.max_value,
                               value=int(tunable.value), step=int(tunable.step or 1), help=tunable.help,
                               key=key)
    return st.number_input(tunable.label, min_value=tunable.min_value, max_value=tunable.max_value,
                           value=float(tunable.value), step=float(tunable.step or 1.0),
                           format=tunable.format, help=tunable.help, key=key)


def render_group(scenario: Scenario, group: str, key_prefix: str) -> tuple[list[Tunable], dict[str, Any]]:
    """The widgets of one group, in order; a kind is drawn before its settings, which follow
    the kind chosen. Returns the tunables drawn and path -> widget value (display units)."""
    items: list[Tunable] = []
    values: dict[str, Any] = {}
    chosen: dict[str, str] = {}
    for item in tunables(scenario, group=group):
        if item.is_kind:
            chosen[item.path] = values[item.path] = render(item, key_prefix)
            items.append(item)
            block = item.path[: -len("kind")]
            for sub in tunables(scenario, chosen, group=group):
                if sub.path.startswith(block) and not sub.is_kind:
                    values[sub.path] = render(sub, f"{key_prefix}:{chosen[item.path]}")
                    items.append(sub)
        elif not kind_block(item.path):
            values[item.path] = render(item, key_prefix)
            items.append(item)
    return items, values


def render_all(scenario: Scenario, key_prefix: str, container: Any = None,
               expanded: Sequence[str] = ("Client", "Retries")) -> tuple[list[Tunable], dict[str, Any]]:
    """Every tunable of ``scenario``, one expander per group (in ``container``, e.g. the sidebar)."""
    import streamlit as st

    place = container if container is not None else st
    items: list[Tunable] = []
    values: dict[str, Any] = {}
    for group in GROUPS:
        if not any(grp == group for grp, _ in resolve_paths(scenario)):
            continue
        with place.expander(group, expanded=group in expanded):
            group_items, group_values = render_group(scenario, group, key_prefix)
        items += group_items
        values.update(group_values)
    return items, values
