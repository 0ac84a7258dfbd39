"""Scenario files: YAML to a typed, validated ``Scenario`` and back.

This module owns reading a scenario: YAML syntax, ``extends``, variants,
``--set`` overrides, and the type, unit and bound checks of every setting
against the dataclasses of ``sim.schema``, including its tagged unions (a
``Union`` of dataclasses whose ``kind`` field picks the member); the checks
across settings live in ``sim.scenario_checks``. Every problem is a
``ScenarioError`` naming the dotted path of the setting
(``services.api.server.read_timeout``) and the bad value. It also writes a
scenario back out as complete, explicit data (``scenario_to_dict``,
``dump_scenario_yaml``) that loads back to an equal value.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import operator
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from sim.scenario_checks import check_references
from sim.scenario_error import ScenarioError, show_quoted, show_value
from sim.schema import Duration, Rate, Scenario, Size
from sim.units import format_duration, format_size, parse_duration, parse_size


_BOUND_CHECKS = (("ge", ">=", operator.ge), ("gt", ">", operator.gt),
                 ("le", "<=", operator.le), ("lt", "<", operator.lt))


# ------------------------------------------------------------------ public API


def load_scenario(path: str | Path, overrides: Sequence[str] = (),
                  variant: str | None = None) -> Scenario:
    """Read a scenario file, apply ``variant`` then ``overrides`` (``dotted.path=value``), validate.

    A file may start from another with ``extends: other.yaml`` (relative to its own folder):
    the other file's data is taken first and this file's keys are merged over it, mappings key by
    key, lists and values replaced whole.
    """
    file_path = Path(path)
    data = _read_with_bases(file_path, ())
    try:
        if variant is not None:
            data = apply_variant(data, variant)
        data = apply_overrides(data, overrides)
    except ScenarioError as error:
        error.source = str(file_path)
        raise
    return scenario_from_dict(data, source=str(file_path))


def _read_yaml(file_path: Path) -> Any:
    try:
        text = file_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError("", str(file_path),
                            f"cannot read scenario file {file_path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = (f"{file_path}, line {mark.line + 1}, column {mark.column + 1}"
                 if mark is not None else str(file_path))
        problem = getattr(exc, "problem", None) or str(exc).replace("\n", " ")
        error = ScenarioError("", str(file_path), f"{where}: invalid YAML: {problem}")
        error.source = str(file_path)
        raise error from None
    try:
        _require_top_mapping(data, str(file_path))
    except ScenarioError as error:
        error.source = str(file_path)
        raise
    return data


def _read_with_bases(file_path: Path, seen: tuple[Path, ...]) -> dict:
    resolved = file_path.resolve()
    if resolved in seen:
        chain = " -> ".join(str(p) for p in (*seen, resolved))
        raise ScenarioError("extends", str(file_path), f"scenario files extend each other in a cycle: {chain}")
    data = _read_yaml(file_path)
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    if not isinstance(base_name, str) or not base_name:
        error = ScenarioError("extends", base_name, f"{show_value(base_name)} is not a file name")
        error.source = str(file_path)
        raise error
    base_path = file_path.parent / base_name
    if not base_path.exists():
        error = ScenarioError("extends", base_name, f"{show_value(base_name)}: no such file next to {file_path}")
        error.source = str(file_path)
        raise error
    return _merged(_read_with_bases(base_path, (*seen, resolved)), data)


def _merged(base: Any, top: Any) -> Any:
    """``top`` over ``base``: mappings merge key by key; anything else is replaced."""
    if isinstance(base, dict) and isinstance(top, dict):
        out = dict(base)
        for key, value in top.items():
            out[key] = _merged(base[key], value) if key in base else value
        return out
    return top


def scenario_from_dict(data: dict, source: str = "<dict>") -> Scenario:
    """Validate plain data (as ``yaml.safe_load`` gives it) into a ``Scenario``.

    ``source`` names the file in messages; a relative trace path is resolved
    against its folder (against the current folder when ``source`` is ``<...>``).
    """
    base_dir = Path.cwd() if source.startswith("<") else Path(source).resolve().parent
    try:
        _require_top_mapping(data, source)
        scenario = _build(Scenario, data, "")
        return check_references(scenario, base_dir)
    except ScenarioError as error:
        error.source = source
        raise


def scenario_to_dict(scenario: Scenario) -> dict:
    """Every setting of ``scenario`` as plain YAML-able data with Go-style durations and sizes."""
    return _to_plain(scenario, Scenario)


def dump_scenario_yaml(scenario: Scenario) -> str:
    """``scenario`` as a complete, explicit YAML scenario file."""
    return yaml.safe_dump(scenario_to_dict(scenario), sort_keys=False, allow_unicode=True,
                          default_flow_style=False, width=100)


def apply_variant(data: dict, name: str) -> dict:
    """A copy of raw scenario ``data`` with the settings of ``variants.<name>`` applied."""
    data = copy.deepcopy(data)
    variants = data.get("variants", {})
    if not isinstance(variants, dict):
        raise ScenarioError("variants", variants,
                            f"{show_value(variants)} is {_kind(variants)}, expected a mapping of variant names")
    if name not in variants:
        known = ", ".join(str(key) for key in variants) or "(none defined)"
        raise ScenarioError("variants", name, f"unknown variant {name!r}; known variants: {known}")
    settings = variants[name]
    if not isinstance(settings, dict):
        raise ScenarioError(f"variants.{name}", settings,
                            f"{show_value(settings)} is {_kind(settings)}, expected a mapping of dotted.path: value")
    for dotted, value in settings.items():
        if not isinstance(dotted, str):
            raise ScenarioError(f"variants.{name}.{dotted}", dotted,
                                f"key {show_value(dotted)} is {_kind(dotted)}, expected a dotted.path string")
        _set_path(data, dotted, copy.deepcopy(value), f"variant {name!r}")
    return data


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """A copy of raw scenario ``data`` with each ``dotted.path=value`` applied in order.

    The value is read as YAML (``4`` is an int, ``3s`` a string). A path through a
    mapping creates or edits that entry; a path through a list indexes it (the
    index one past the end appends). In a block with a ``kind`` (``breaker``,
    ``retry.budget``) a key must belong to the block's current kind; setting
    ``kind`` drops the settings of the previous kind that the new one lacks.
    """
    data = copy.deepcopy(data)
    for override in overrides:
        dotted, equals, value_text = override.partition("=")
        dotted = dotted.strip()
        if not equals or not dotted:
            raise ScenarioError(dotted or override, override,
                                f"--set {override}: expected dotted.path=value")
        try:
            value = yaml.safe_load(value_text)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).replace("\n", " ")
            raise ScenarioError(dotted, value_text,
                                f"--set {override}: the value is not valid YAML ({problem})") from None
        _set_path(data, dotted, value, f"--set {override}")
    return data


def bounds_text(metadata: typing.Mapping[str, Any], annotation: Any) -> str:
    """The numeric bounds of a field, e.g. ``>= 1`` or ``> 0 and <= 1`` (``""`` if none)."""
    parts = []
    for key, symbol, _ in _BOUND_CHECKS:
        bound = metadata.get(key)
        if bound is not None:
            parts.append(f"{symbol} {_format_bound(bound, annotation)}")
    return " and ".join(parts)


def union_members(annotation: Any) -> tuple[type, ...]:
    """The members of a tagged union (a ``Union`` of dataclasses, each with a ``kind``); ``()`` for other types."""
    if get_origin(annotation) not in (typing.Union, types.UnionType):
        return ()
    members = get_args(annotation)
    if all(dataclasses.is_dataclass(member) and "kind" in _hints(member) for member in members):
        return members
    return ()


def member_kinds(member: type) -> tuple[str, ...]:
    """The ``kind`` values that pick ``member`` (the arguments of its ``Literal``)."""
    return get_args(_hints(member)["kind"])


def setting_annotation(dotted: str) -> Any:
    """The schema type of the setting at ``dotted`` (``clients.web.transport.client_timeout``
    is ``Duration``); map keys (service, client, route names) and list indexes match any name.

    Inside a block with a ``kind`` the first kind that has the key decides. Raises
    ``ScenarioError`` naming the path when no setting is there.
    """
    annotation: Any = Scenario
    segments = dotted.split(".")
    for depth, segment in enumerate(segments):
        here = ".".join(segments[:depth])
        members = union_members(annotation)
        if members:
            annotation = next((m for m in members if segment in {f.name for f in dataclasses.fields(m)}),
                              members[0])
        if dataclasses.is_dataclass(annotation):
            fields = {f.name: f for f in dataclasses.fields(annotation)}
            if segment not in fields:
                raise ScenarioError(dotted, segment, _unknown_key(segment, fields, here))
            annotation = _hints(annotation)[segment]
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        elif get_origin(annotation) is tuple:
            if not segment.isdigit():
                raise ScenarioError(dotted, segment, f"{segment!r} is not an index of the list {here}")
            annotation = get_args(annotation)[0]
        else:
            raise ScenarioError(dotted, segment, f"{here} is a single setting ({_describe(annotation)}); "
                                                 f"it has no {segment!r}")
    return annotation


def setting_text(annotation: Any, value: Any) -> str:
    """``value`` (seconds for a duration, bytes for a size) as ``--set`` text for a setting typed
    ``annotation``: ``3.0`` -> ``3s`` for a Duration, a whole number for an int."""
    if annotation == Duration:
        return format_duration(float(value))
    if annotation == Size:
        return str(int(round(float(value))))
    if annotation is int:
        return str(int(round(float(value))))
    if annotation is bool:
        return "true" if value else "false"
    if annotation is float or annotation == Rate:
        return repr(float(value))
    return str(value)


# ------------------------------------------------------------- typed building


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _require_top_mapping(data: Any, source: str) -> None:
    if not isinstance(data, dict):
        what = "empty" if data is None else f"{show_value(data)} ({_kind(data)})"
        raise ScenarioError("", data, f"{source}: a scenario is a mapping of settings, got {what}")


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _build(cls: type, raw: Any, path: str) -> Any:
    """An instance of dataclass ``cls`` from mapping ``raw``; missing keys take the defaults."""
    if not isinstance(raw, dict):
        raise ScenarioError(path, raw, f"{show_quoted(raw)} is {_kind(raw)}, "
                                       f"expected {_describe(cls)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = _hints(cls)
    values = {}
    for key, value in raw.items():
        child = _join(path, key)
        if not isinstance(key, str):
            raise ScenarioError(child, key, f"key {show_value(key)} is {_kind(key)}, expected a string")
        if key not in fields:
            raise ScenarioError(child, key, _unknown_key(key, fields, path))
        typed = _convert(value, hints[key], child)
        _check_bounds(typed, value, fields[key].metadata, hints[key], child)
        values[key] = typed
    return cls(**values)


def _convert(value: Any, annotation: Any, path: str) -> Any:
    """``value`` checked and converted to ``annotation``'s type."""
    if annotation is Any:
        return value
    if value is None:
        raise ScenarioError(path, None, f"null is not allowed here, expected {_describe(annotation)}")
    if annotation == Duration or annotation == Size:
        parse = parse_duration if annotation == Duration else parse_size
        try:
            return parse(value)
        except ValueError as exc:
            raise ScenarioError(path, value, str(exc)) from None
    if annotation == Rate:
        annotation = float
    origin = get_origin(annotation)
    if origin is Literal:
        return _convert_literal(value, get_args(annotation), path)
    if origin is tuple:
        return _convert_tuple(value, get_args(annotation), path)
    if origin is dict:
        return _convert_dict(value, get_args(annotation), path)
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, path)
    members = union_members(annotation)
    if members:
        return _convert_union(value, members, path)
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ScenarioError(path, value, f"{show_value(value)} is not a finite number")
        return float(value)
    if annotation is str and isinstance(value, str):
        return value
    if annotation in (bool, int, float, str):
        raise ScenarioError(path, value, f"{show_quoted(value)} is {_kind(value)}, "
                                         f"expected {_describe(annotation)}")
    raise TypeError(f"sim.schema: cannot validate {path} typed {annotation!r}")


def _convert_literal(value: Any, allowed: tuple[Any, ...], path: str) -> Any:
    if isinstance(value, str) and value in allowed:
        return value
    # YAML reads `version: 1.3` as a number; take it when its text is an allowed value.
    if isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in allowed:
        return str(value)
    raise ScenarioError(path, value, f"{show_value(value)} is not one of {', '.join(map(str, allowed))}")


def _convert_tuple(value: Any, args: tuple[Any, ...], path: str) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ScenarioError(path, value, f"{show_quoted(value)} is {_kind(value)}, expected a list")
    return tuple(_convert(item, args[0], _join(path, index)) for index, item in enumerate(value))


def _convert_dict(value: Any, args: tuple[Any, ...], path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(path, value, f"{show_quoted(value)} is {_kind(value)}, "
                                         f"expected {_describe(dict[str, args[1]])}")
    typed = {}
    for key, item in value.items():
        child = _join(path, key)
        if not isinstance(key, str):
            raise ScenarioError(child, key, f"key {show_value(key)} is {_kind(key)}, expected a string")
        typed[key] = _convert(item, args[1], child)
    return typed


def _convert_union(value: Any, members: tuple[type, ...], path: str) -> Any:
    """The member of a tagged union that ``value["kind"]`` names, built from ``value``."""
    if not isinstance(value, dict):
        raise ScenarioError(path, value, f"{show_quoted(value)} is {_kind(value)}, "
                                         f"expected {_describe(typing.Union[members])}")
    kind = value.get("kind", _default_kind(members))
    member = _member_of(members, kind)
    if member is None:
        kind = _convert_literal(kind, _union_kinds(members), _join(path, "kind"))
        member = _member_of(members, kind)
    fields = [f.name for f in dataclasses.fields(member)]
    for key in value:
        if isinstance(key, str) and key not in fields:
            raise ScenarioError(_join(path, key), key,
                                _unknown_union_key(key, members, kind, "kind" not in value, path))
    return _build(member, value, path)


def _union_kinds(members: tuple[type, ...]) -> tuple[str, ...]:
    return tuple(kind for member in members for kind in member_kinds(member))


def _default_kind(members: tuple[type, ...]) -> str:
    """The kind of a union block that does not say: the first member's default kind."""
    return next(f.default for f in dataclasses.fields(members[0]) if f.name == "kind")


def _member_of(members: tuple[type, ...], kind: Any) -> type | None:
    """The member that ``kind`` picks, or None when it picks none."""
    if not isinstance(kind, str):
        return None
    return next((member for member in members if kind in member_kinds(member)), None)


def _check_bounds(typed: Any, raw: Any, metadata: typing.Mapping[str, Any], annotation: Any,
                  path: str) -> None:
    if isinstance(typed, bool) or not isinstance(typed, (int, float)):
        return
    for key, _, holds in _BOUND_CHECKS:
        bound = metadata.get(key)
        if bound is not None and not holds(typed, bound):
            raise ScenarioError(path, raw, f"{show_value(raw)} is out of range: must be "
                                           f"{bounds_text(metadata, annotation)}")


def _format_bound(bound: float, annotation: Any) -> str:
    if annotation == Duration:
        return format_duration(bound)
    if annotation == Size:
        return format_size(int(bound))
    return f"{bound:g}" if isinstance(bound, float) else str(bound)


# ------------------------------------------------------- variants and --set


def _set_path(data: dict, dotted: str, value: Any, origin: str) -> None:
    """Set ``dotted`` in raw scenario ``data``, checking each step against the schema."""
    segments = dotted.split(".")
    container: Any = data
    annotation: Any = Scenario
    for depth, segment in enumerate(segments):
        here = ".".join(segments[:depth])
        last = depth == len(segments) - 1
        members = union_members(annotation)
        if members:  # a tagged union: the member that the block's kind (or the kind being set) picks
            annotation = _member_for_set(members, container, segment, value, last, dotted, here, origin)
        origin_type = get_origin(annotation)
        if dataclasses.is_dataclass(annotation):
            fields = {f.name: f for f in dataclasses.fields(annotation)}
            if segment not in fields:
                raise ScenarioError(dotted, value, f"{_unknown_key(segment, fields, here)} (in {origin})")
            key: Any = segment
            child_annotation = _hints(annotation)[segment]
            missing = _plain_default(fields[segment], child_annotation)
        elif origin_type is dict:
            child_annotation = get_args(annotation)[1]
            if child_annotation is Any:  # a variant's {dotted.path: value}: the rest is one key
                container[".".join(segments[depth:])] = value
                return
            key = segment
            missing = {}
        elif origin_type is tuple:
            child_annotation = get_args(annotation)[0]
            if not segment.isdigit() or int(segment) > len(container):
                raise ScenarioError(dotted, value, f"{segment!r} is not an index of {here}: it has "
                                                   f"{len(container)} entries, {len(container)} "
                                                   f"appends one (in {origin})")
            key = int(segment)
            if key == len(container):
                container.append({} if _is_mapping(child_annotation) else None)
            missing = None
        else:
            raise ScenarioError(dotted, value, f"{here} is a single setting "
                                               f"({_describe(annotation)}); it has no {segment!r} "
                                               f"(in {origin})")
        if last:
            container[key] = value
            return
        if isinstance(container, dict) and key not in container:
            container[key] = missing
        child = container[key]
        wanted = list if get_origin(child_annotation) is tuple else dict
        if not isinstance(child, wanted) and (_is_mapping(child_annotation)
                                              or get_origin(child_annotation) is tuple):
            raise ScenarioError(dotted, value, f"cannot set inside {_join(here, segment)}, which is "
                                               f"{show_value(child)}, not a "
                                               f"{'list' if wanted is list else 'mapping'} (in {origin})")
        container = child
        annotation = child_annotation


def _member_for_set(members: tuple[type, ...], container: dict, segment: str, value: Any, last: bool,
                    dotted: str, here: str, origin: str) -> type:
    """The union member through which ``segment`` of a union block ``container`` is set.

    Setting ``kind`` picks the member named by the new value and drops the settings of the
    previous kind that the new one does not have; any other key must belong to the member
    of the block's current kind.
    """
    current_kind = container.get("kind", _default_kind(members))
    current = _member_of(members, current_kind)
    if segment == "kind" and last:
        member = _member_of(members, value)
        if member is None:
            raise ScenarioError(dotted, value, f"{show_value(value)} is not one of "
                                               f"{', '.join(_union_kinds(members))} (in {origin})")
        if current is not None and current is not member:
            kept = {f.name for f in dataclasses.fields(member)}
            for f in dataclasses.fields(current):
                if f.name not in kept:
                    container.pop(f.name, None)
        return member
    if current is None:
        raise ScenarioError(dotted, value, f"cannot set {segment!r}: {_join(here, 'kind')} is "
                                           f"{show_value(current_kind)}, not one of "
                                           f"{', '.join(_union_kinds(members))} (in {origin})")
    if segment not in {f.name for f in dataclasses.fields(current)}:
        reason = _unknown_union_key(segment, members, current_kind, "kind" not in container, here,
                                    setting_path=True)
        raise ScenarioError(dotted, value, f"{reason} (in {origin})")
    return current


def _is_mapping(annotation: Any) -> bool:
    """Is ``annotation`` written as a mapping in files (a dataclass, a map or a tagged union)?"""
    return (dataclasses.is_dataclass(annotation) or get_origin(annotation) is dict
            or bool(union_members(annotation)))


def _plain_default(field: dataclasses.Field, annotation: Any) -> Any:
    """The raw (file) form of a field's default, to edit in place when the file omits it."""
    if _is_mapping(annotation):
        return {}
    if field.default_factory is not dataclasses.MISSING:
        return _to_plain(field.default_factory(), annotation)
    return _to_plain(field.default, annotation)


# ------------------------------------------------------------------- export


def _to_plain(value: Any, annotation: Any) -> Any:
    if annotation is Any:
        return copy.deepcopy(value)
    if annotation == Duration:
        return format_duration(value)
    if annotation == Size:
        text = format_size(value)
        return int(text) if text.isdigit() else text
    if annotation == Rate or annotation is float:
        return float(value)
    if union_members(annotation) and dataclasses.is_dataclass(value):
        annotation = type(value)  # a tagged union: its concrete member, whose kind is exported
    if dataclasses.is_dataclass(annotation):
        hints = _hints(annotation)
        return {f.name: _to_plain(getattr(value, f.name), hints[f.name])
                for f in dataclasses.fields(annotation)}
    origin = get_origin(annotation)
    if origin is tuple:
        return [_to_plain(item, get_args(annotation)[0]) for item in value]
    if origin is dict:
        return {key: _to_plain(item, get_args(annotation)[1]) for key, item in value.items()}
    return value


# --------------------------------------------------------------- messages


def _unknown_key(key: str, fields: typing.Iterable[str], path: str) -> str:
    where = f" in {path}" if path else ""
    close = difflib.get_close_matches(key, list(fields), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown setting {key!r}{where}{hint}; valid keys: {', '.join(fields)}"


def _unknown_union_key(key: str, members: tuple[type, ...], kind: Any, kind_omitted: bool,
                       path: str, setting_path: bool = False) -> str:
    """A key that the chosen member of a union block does not have, e.g. a setting of another kind.

    ``setting_path``: the key comes from a variant or ``--set`` (where the order of settings matters).
    """
    block = path.rpartition(".")[2] or "block"
    fields = [f.name for f in dataclasses.fields(_member_of(members, kind))]
    owners = [member_kinds(member)[0] for member in members
              if key in {f.name for f in dataclasses.fields(member)}]
    notes = ["the default"] if kind_omitted else []
    if owners:
        notes.append(f"{key} is a setting of kind {' or '.join(owners)}")
        if setting_path:
            notes.append(f"set {_join(path, 'kind')}={owners[0]} first")
    else:
        close = difflib.get_close_matches(key, fields, n=1)
        notes += [f"did you mean {close[0]}?"] if close else []
    shown_notes = f" ({'; '.join(notes)})" if notes else ""
    return (f"unknown setting {key!r} for {block} kind {show_value(kind)}{shown_notes}; "
            f"valid keys: {', '.join(fields)}")


def _describe(annotation: Any) -> str:
    """A type as error messages name it."""
    if annotation == Duration:
        return "a duration like 250ms or 1m30s"
    if annotation == Size:
        return "a size like 4KiB or 512MiB"
    if annotation == Rate or annotation is float:
        return "a number"
    origin = get_origin(annotation)
    if origin is Literal:
        return f"one of {', '.join(map(str, get_args(annotation)))}"
    if origin is tuple:
        return "a list"
    if origin is dict:
        return f"a mapping of name -> {_describe(get_args(annotation)[1])}"
    if dataclasses.is_dataclass(annotation):
        return f"a mapping of {annotation.__name__} settings"
    members = union_members(annotation)
    if members:
        return f"a mapping with kind: one of {', '.join(_union_kinds(members))}"
    return {bool: "true or false", int: "an integer", str: "a string"}.get(annotation, "a value")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for kinds, name in ((int, "an integer"), (float, "a number"), (str, "a string"),
                        ((list, tuple), "a list"), (dict, "a mapping")):
        if isinstance(value, kinds):
            return name
    return f"a {type(value).__name__}"
