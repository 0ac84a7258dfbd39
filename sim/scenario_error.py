"""The one error a scenario can have: a dotted setting path, the bad value, and why.

Shared by the loader (types, units, bounds) and the cross-checks (names that
refer to nothing, what the model cannot simulate); the CLI turns it into one
line and exit status 2.
"""

from __future__ import annotations

import typing
from typing import Any

import yaml


class ScenarioError(ValueError):
    """A scenario problem at ``path`` (dotted, ``""`` for the file as a whole) with ``value``."""

    def __init__(self, path: str, value: Any, reason: str) -> None:
        self.path = path
        self.value = value
        self.reason = reason
        self.source: str | None = None  # the file or '<dict>', set by scenario_from_dict
        super().__init__(f"{path}: {reason}" if path else reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.path, self.value, self.reason), {"source": self.source})


def show_value(value: Any) -> str:
    """A value as the scenario file would write it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and value == value.strip() and "\n" not in value else repr(value)
    if isinstance(value, (list, tuple, dict)):
        try:
            return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
        except yaml.YAMLError:
            return repr(value)
    return str(value)


def show_quoted(value: Any) -> str:
    """Like ``show_value`` but strings keep quotes, where being a string is the problem."""
    return repr(value) if isinstance(value, str) else show_value(value)


def name_list(mapping: typing.Iterable[str]) -> str:
    return ", ".join(mapping) or "(none)"
