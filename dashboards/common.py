"""What every dashboard page shares: export buttons and the scenario picker's sources.

The dashboard is a thin shell over ``sim`` and ``experiments`` (design.md §1): this
module holds Streamlit glue only. Export: a figure as HTML (always) and PNG/SVG
(kaleido with a Chrome/Chromium; without one the button is replaced by a one-line
reason), a table as CSV, a scenario as a YAML file that ``stormsim run`` accepts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from experiments.catalog import shipped_scenarios
from sim.scenario_checks import check_supported
from sim.scenario_loader import ScenarioError, dump_scenario_yaml, scenario_from_dict
from sim.schema import Scenario

PROJECT_DIR = Path(__file__).resolve().parent.parent


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text`` (scenario names carry '@')."""
    return re.sub(r"[^A-Za-z0-9_.@-]+", "-", text).strip("-") or "stormsim"


def _browser() -> str | None:
    """A Chrome or Chromium for kaleido, or None."""
    import shutil
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


NO_BROWSER = ("{fmt} export needs Chrome or Chromium for kaleido: run `make setup` (it installs Debian's "
              "chromium) or `sudo apt-get install chromium`; HTML works without it.")


def figure_downloads(fig: go.Figure, name: str, key: str, formats: tuple[str, ...] = ("html", "png", "svg")) -> None:
    """Download buttons for one figure. Each file is built only when its button is pressed
    (an HTML file carries plotly's 4.7 MB script; a PNG takes kaleido a few seconds)."""
    columns = st.columns(len(formats))
    browser = _browser()
    for column, fmt in zip(columns, formats):
        with column:
            if fmt != "html" and browser is None:
                st.caption(NO_BROWSER.format(fmt=fmt.upper()))
                continue
            if fmt == "html":
                def data(fig: go.Figure = fig) -> bytes:
                    return fig.to_html(include_plotlyjs=True, full_html=True).encode("utf-8")
            else:
                def data(fig: go.Figure = fig, fmt: str = fmt) -> bytes:
                    return fig.to_image(format=fmt, width=1200, scale=1)
            st.download_button(f"{fmt.upper()}", data=data, file_name=f"{safe_name(name)}.{fmt}",
                               mime={"html": "text/html", "png": "image/png", "svg": "image/svg+xml"}[fmt],
                               key=f"{key}-{fmt}", on_click="ignore")


def table_download(frame: pd.DataFrame, name: str, key: str, label: str = "CSV") -> None:
    st.download_button(label, data=frame.to_csv(index=False).encode("utf-8"),
                       file_name=f"{safe_name(name)}.csv", mime="text/csv", key=key)


def scenario_download(scenario: Scenario, key: str, label: str = "Scenario YAML") -> None:
    """The configuration as a complete scenario file (``stormsim run FILE`` accepts it unchanged)."""
    st.download_button(label, data=dump_scenario_yaml(scenario).encode("utf-8"),
                       file_name=f"{safe_name(scenario.name)}.yaml", mime="application/x-yaml", key=key)


def shipped() -> dict[str, Path]:
    """Shipped scenario name -> file."""
    return shipped_scenarios()


def scenario_from_upload(data: bytes, file_name: str) -> tuple[Scenario | None, str | None]:
    """An uploaded YAML scenario, or the one-line reason it is not one (never a traceback)."""
    import yaml
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError:
        return None, f"{file_name}: not a text file"
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        return None, f"{file_name}{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}"
    if isinstance(raw, dict) and "extends" in raw:
        return None, f"{file_name}: `extends` needs the base file next to it; upload a complete scenario " \
                     f"(`stormsim run` writes one, and the Export button here too)"
    try:
        scenario = scenario_from_dict(raw if isinstance(raw, dict) else raw, source=file_name)
        check_supported(scenario)
        return scenario, None
    except ScenarioError as error:
        return None, str(error)


def show_error(message: str) -> None:
    st.error(message, icon="⚠️")


def as_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
