"""Interference: the K x K heat map of the run's composition analysis; picking a cell (click, or the two
selectors) shows i, j and i+j on the same seeds."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402
from common import chart, guard, pick_run, workspace  # noqa: E402

from noiseclr_lab.reports.collect import collect, composition_pair, fmt  # noqa: E402
from noiseclr_lab.reports.figures import heatmap_figure  # noqa: E402
from noiseclr_lab.store import RunDir  # noqa: E402

st.title("Interference")
ws = workspace()
info = pick_run(ws)
if info is None:
    st.stop()
if not (info.run.analysis_dir / RunDir.ANALYSIS_JSON).is_file():
    st.info(f"No analysis yet: `noiseclr-lab analyze {info.run.path}`.")
    st.stop()
col = guard(collect, info.run, with_images=False)
if col is None:
    st.stop()
comp = col.data["composition"]
if not comp["available"]:
    st.info(f"No composition: {comp['reason']}. Make it with `{comp['make_with']}`.")
    st.stop()
tokens = comp["tokens"]
fig = heatmap_figure(comp["interference"], tokens, tokens, "Interference: change of row i's own effect when column j "
                     "is added", "interference", hover="i=%{y}, j=%{x}: %{z:.3f}", clickable=True)
heat = f"heat@{info.name}"


def picked() -> None:
    """A click on a cell picks its pair. Run only when the selection changes (a callback): the chart keeps its
    selection across reruns, so copying it on every rerun would undo any later change of the selectors."""
    state = st.session_state.get(heat)
    selection = state.get("selection", {}) if isinstance(state, dict) else getattr(state, "selection", None) or {}
    points = selection.get("points", []) if isinstance(selection, dict) else getattr(selection, "points", []) or []
    if points:
        st.session_state[f"pair_i@{info.name}"], st.session_state[f"pair_j@{info.name}"] = points[0]["y"], points[0]["x"]


chart(fig, on_select=picked, selection_mode="points", key=heat)
c1, c2 = st.columns(2)
i = c1.selectbox("i (row)", tokens, key=f"pair_i@{info.name}")
j = c2.selectbox("j (column)", tokens, index=min(1, len(tokens) - 1), key=f"pair_j@{info.name}")
if i == j:
    st.caption("Pick two different directions.")
else:
    a, b = tokens.index(i), tokens.index(j)
    st.markdown(f"interference of {i} by {j}: **{fmt(comp['interference'][a][b])}**, of {j} by {i}: "
                f"**{fmt(comp['interference'][b][a])}**")
    png = composition_pair(info.run, i, j)
    if png is None:
        st.info("The composition images are not cached in this run (analyze without --no-cache keeps them).")
    else:
        st.image(png, caption="unedited, each alone, and both, on the same seeds (columns as labelled)")
