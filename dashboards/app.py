"""The stormsim dashboard: ``make ui`` or ``stormsim ui`` (Streamlit on 127.0.0.1).

Four pages over ``sim`` and ``experiments`` (no model logic here, design.md §1):
Tune (move a setting, run, see the change against a pinned baseline), Compare
(configurations side by side on common random numbers), Sweep (one or two factors in
the background, tipping points) and Results (open a sweep's output folder).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="stormsim", page_icon=":material/thunderstorm:", layout="wide")
navigation = st.navigation([
    st.Page(str(HERE / "tune_page.py"), title="Tune", icon=":material/tune:", default=True),
    st.Page(str(HERE / "compare_page.py"), title="Compare", icon=":material/compare:"),
    st.Page(str(HERE / "sweep_page.py"), title="Sweep", icon=":material/grid_on:"),
    st.Page(str(HERE / "results_page.py"), title="Results", icon=":material/folder_open:"),
])
navigation.run()
