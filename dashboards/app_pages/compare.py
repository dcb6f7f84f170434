"""Compare: two or more analysed runs side by side (the report's comparison table and overlaid curves)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402
from common import guard, workspace  # noqa: E402

from noiseclr_lab.reports.collect import collect, comparison  # noqa: E402
from noiseclr_lab.reports.figures import loss_figure, quality_figure  # noqa: E402

st.title("Compare")
ws = workspace()
ready = [r for r in ws.runs() if r.status in ("analysed", "reported")]
if len(ready) < 2:
    st.info("Comparing needs two analysed runs in the workspace (`noiseclr-lab analyze RUN`).")
    st.stop()
names = st.multiselect("Runs", [r.name for r in ready], default=[r.name for r in ready][:2], key="compare_runs")
if len(names) < 2:
    st.caption("Pick two or more runs.")
    st.stop()
collected = [guard(collect, next(r for r in ready if r.name == n).run, with_images=False) for n in names]
if any(c is None for c in collected):
    st.stop()
rows = comparison(collected)["runs"]
for r, n in zip(rows, names):
    r["name"] = n
st.dataframe([{k: r[k] for k in ("name", "base_model", "steps", "directions", "active_directions", "mean_quality",
                                  "mean_consistency_active", "final_loss", "coverage", "coverage_raw", "modularity",
                                  "modularity_raw")} for r in rows], hide_index=True, width="stretch")
st.plotly_chart(loss_figure([(r["name"], r["loss_steps"], r["loss"], None) for r in rows]), width="stretch")
st.plotly_chart(quality_figure([(r["name"], r["quality_sorted"]) for r in rows]), width="stretch")
