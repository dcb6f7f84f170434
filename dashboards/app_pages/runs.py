"""Runs: every run of the workspace with its status, summary and training loss; its report."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402
from common import chart, done, guard, say_done, workspace  # noqa: E402

from noiseclr_lab.reports.figures import loss_figure  # noqa: E402

st.title("Runs")
say_done()
ws = workspace()
runs = ws.runs()
if not runs:
    st.info(f"No runs in {ws.root} yet: `noiseclr-lab demo` makes one.")
    st.stop()
st.dataframe([{"run": r.name, "status": r.status, "steps": f"{r.steps_done}/{r.steps_total or '?'}",
               "model": r.base_model or "", "last loss": None if r.last_loss is None else round(r.last_loss, 4)}
              for r in runs], hide_index=True, width="stretch")
name = st.selectbox("Details of", [r.name for r in runs], key="runs_detail")
info = next(r for r in runs if r.name == name)
if info.status == "in progress":
    st.info(f"{name} is being trained ({info.steps_done}/{info.steps_total or '?'} steps); its directions and analysis "
            "appear when it is done.")
metrics = info.run.read_metrics()
steps = [m["step"] for m in metrics if "loss" in m]
if steps:
    chart(loss_figure([(name, steps, [m["loss"] for m in metrics if "loss" in m], None)]))
report = info.run.report_dir / "report.html"
c1, c2 = st.columns(2)
if report.is_file():
    c1.download_button("Download report.html", report.read_bytes(), file_name=f"{Path(name).name}-report.html",
                       mime="text/html")
    c1.caption(f"{report}")
if info.status in ("analysed", "reported") and c2.button("Build the report" if not report.is_file() else
                                                         "Rebuild the report"):
    from noiseclr_lab.workflows import report as build

    res = guard(build, info.run)
    if res is not None:
        done(f"wrote {res.html} in {res.seconds:.1f} s")
elif info.status == "trained":
    c2.caption(f"Not analysed yet: `noiseclr-lab analyze {info.run.path}` then `noiseclr-lab report {info.run.path}`.")
