"""What every page of the dashboard shares: the workspace, the run picker, cached pipelines and the label
store. The app holds no method logic: it calls noiseclr_lab's public API (workflows, reports, store,
workspace, directions.labels, recipe)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import streamlit as st

from noiseclr_lab.directions.labels import LabelStore
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.workspace import Workspace

MAX_UPLOAD_MB = 10  # also server.maxUploadSize in .streamlit/config.toml


def workspace() -> Workspace:
    """The workspace: session state (tests), else `-- --workspace DIR` after the script, else
    $NOISECLR_WORKSPACE, else ./runs."""
    root = st.session_state.get("workspace")
    if root is None:
        p = argparse.ArgumentParser(add_help=False)
        p.add_argument("--workspace", default=os.environ.get("NOISECLR_WORKSPACE", "runs"))
        root = p.parse_known_args(sys.argv[1:])[0].workspace
        st.session_state["workspace"] = root
    try:
        return Workspace(root)
    except NoiseCLRLabError as e:
        st.error(str(e))
        st.stop()


def pick_run(ws: Workspace, key: str = "run", ready_only: bool = True):
    """A run chosen in the sidebar (shared by the pages); None when there is none to show."""
    runs = ws.runs()
    shown = [r for r in runs if not ready_only or (r.status in ("stopped", "trained", "analysed", "reported")
                                                   and r.run.directions_path.is_file())]
    busy = [r for r in runs if r.status == "in progress"]
    if busy:
        st.sidebar.info("In progress: " + ", ".join(f"{r.name} ({r.steps_done}/{r.steps_total or '?'} steps)"
                                                    for r in busy))
    if not shown:
        st.info(f"No finished run in {ws.root} yet (train one: `noiseclr-lab demo` or `noiseclr-lab train`).")
        return None
    names = [r.name for r in shown]
    current = st.session_state.get("selected_run")
    index = names.index(current) if current in names else 0
    name = st.sidebar.selectbox("Run", names, index=index, key=key)
    st.session_state["selected_run"] = name
    return shown[names.index(name)]


@st.cache_resource(show_spinner="Loading the model ...")
def pipeline(spec: str):
    from noiseclr_lab.models import load_pipeline

    return load_pipeline(spec, device="cpu" if os.environ.get("NOISECLR_DEVICE") == "cpu" else None)


def labels(ws: Workspace) -> LabelStore:
    if "label_store" not in st.session_state:
        st.session_state["label_store"] = LabelStore(ws.labels_db)
    return st.session_state["label_store"]


def who() -> str:
    return st.session_state.get("who") or os.environ.get("USER", "") or "dashboard"


def guard(fn, *args, **kwargs):
    """Call a library function; a NoiseCLRLabError becomes one message on the page, not a crash."""
    try:
        return fn(*args, **kwargs)
    except NoiseCLRLabError as e:
        st.error(str(e))
        return None


def done(message: str) -> None:
    """Rerun the page now (so everything on it shows the change just made) and say ``message`` at the top."""
    st.session_state["done_message"] = message
    st.rerun()


def say_done() -> None:
    """The message of the last ``done``, once."""
    message = st.session_state.pop("done_message", None)
    if message:
        st.success(message)


def chart(fig, **kwargs):
    """``st.plotly_chart`` at the page's width with the report's toolbar (no logo, no "Share chart" upload)."""
    from noiseclr_lab.reports.figures import PLOTLY_CONFIG

    return st.plotly_chart(fig, width="stretch", config=PLOTLY_CONFIG, **kwargs)


def here() -> Path:
    return Path(__file__).resolve().parent
