"""noiseclr_lab dashboard: browse, label and compose discovered directions.

    streamlit run dashboards/streamlit_app.py -- --workspace runs/
    noiseclr-lab dashboard --workspace runs/        (the same, bound to 127.0.0.1)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the pages import common.py from here

import streamlit as st  # noqa: E402
from common import workspace  # noqa: E402

st.set_page_config(page_title="noiseclr_lab", layout="wide")
ws = workspace()
st.sidebar.caption(f"Workspace: {ws.root}")
st.sidebar.text_input("Your name", key="who", placeholder="recorded with the labels you save",
                      help="Stored with each label, note and verdict in the workspace's label history.")
pages = [
    st.Page("app_pages/runs.py", title="Runs", default=True),
    st.Page("app_pages/directions.py", title="Directions"),
    st.Page("app_pages/compose.py", title="Compose"),
    st.Page("app_pages/interference.py", title="Interference"),
    st.Page("app_pages/compare.py", title="Compare"),
]
st.navigation(pages).run()
