"""Compare: two or more analysed runs side by side (the report's comparison table and overlaid curves)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402
from common import chart, guard, workspace  # noqa: E402

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
COLUMNS = {  # report.json key: (column, help)
    "name": ("run", None), "base_model": ("model", None), "steps": ("steps", "training steps"),
    "directions": ("directions", None),
    "active_directions": ("active", "directions whose main effect reaches the calibration target"),
    "mean_quality": ("mean quality", "the report's quality score, averaged over the directions"),
    "mean_consistency_active": ("consistency (active)", "do different seeds change the same way; mean over active ones"),
    "final_loss": ("final loss", "the training loss at the last step (smoothed)"),
    "coverage": ("factors covered", "ground truth: factors some direction moves selectively (means shrunk by one "
                 "standard error)"),
    "coverage_raw": ("covered, raw means", "the same with the raw means (no shrinkage)"),
    "modularity": ("modularity", "ground truth: how much each direction moves one factor only (shrunk means)"),
    "modularity_raw": ("modularity, raw", "the same with the raw means"),
}
st.dataframe([{COLUMNS[k][0]: r[k] for k in COLUMNS} for r in rows], hide_index=True, width="stretch",
             column_config={name: st.column_config.Column(help=tip) for name, tip in COLUMNS.values() if tip})
st.caption("Ground-truth columns are empty for runs without known factors (real models).")
chart(loss_figure([(r["name"], r["loss_steps"], r["loss"], None) for r in rows]))
chart(quality_figure([(r["name"], r["quality_sorted"]) for r in rows]))
