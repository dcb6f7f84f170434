"""Directions: cards sorted and filtered by quality, label and consistency; seeds x scales strips; labels,
notes and good/bad verdicts (SQLite in the workspace), exported into the bank on request."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402
from common import done, guard, labels, pick_run, pipeline, say_done, who, workspace  # noqa: E402

from noiseclr_lab.directions import DirectionBank  # noqa: E402
from noiseclr_lab.reports.collect import collect  # noqa: E402
from noiseclr_lab.store import RunDir  # noqa: E402
from noiseclr_lab.workflows import preview_strip_path  # noqa: E402

st.title("Directions")
say_done()
ws = workspace()
info = pick_run(ws)
if info is None:
    st.stop()
run = info.run
bank = DirectionBank.load(run.require_directions())
bank_hash = bank.content_hash()
store = labels(ws)
current = store.current(bank_hash)

analysed = (run.analysis_dir / RunDir.ANALYSIS_JSON).is_file()
cards = None
if analysed:
    col = guard(collect, run)
    cards = col.data["directions"] if col is not None else None
    images = col.images if col is not None else {}
if cards is None:
    st.warning(f"{info.name} has no analysis: quality, auto-labels and strips come from `noiseclr-lab analyze "
               f"{run.path}`. Strips can be generated here.")
    cards = [{"index": k, "token": t, "label": bank.labels[k], "suggested_label": bank.suggestions[k] or "",
              "quality": None, "consistency": None, "active": True, "calibrated_scale": bank.calibrated_scales[k],
              "confidence": None, "strip": None} for k, t in enumerate(bank.tokens)]
    images = {}

f1, f2, f3, f4 = st.columns(4)
no_scores = cards[0]["quality"] is None if cards else True  # no analysis: nothing to sort or filter by but names
sort = f1.selectbox("Sort by", ["label", "token"] if no_scores else ["quality", "consistency", "label", "token"],
                    key="sort" + ("_plain" if no_scores else ""))
text = f2.text_input("Filter (token or label)", key="filter")
min_cons = f3.slider("Minimum consistency", 0.0, 1.0, 0.0, 0.05, key="min_consistency", disabled=no_scores,
                     help="consistency: do different seeds change the same way (CLIP feature changes, 0 to 1)")
active_only = f4.checkbox("Active only", value=False, key="active_only", disabled=no_scores,
                          help="active: the direction's main effect reaches the calibration target of `analyze` "
                               "(it has a calibrated scale)") and not no_scores


def human(c) -> str:
    return current.get(c["token"], {}).get("label", c["label"] or "")


shown = [c for c in cards if (not active_only or c["active"])
         and (c["consistency"] is None or c["consistency"] >= min_cons)
         and (not text or text.lower() in (c["token"] + " " + human(c) + " " + c["suggested_label"]).lower())]
keyf = {"quality": lambda c: -(c["quality"] or 0), "consistency": lambda c: -(c["consistency"] or 0),
        "label": lambda c: (human(c) or "~", c["index"]), "token": lambda c: c["index"]}[sort]
shown.sort(key=keyf)
st.caption(f"{len(shown)} of {len(cards)} directions")

for c in shown:
    tok, k = c["token"], c["index"]
    mine = current.get(tok, {})
    with st.container(border=True):
        head = f"**{tok}**" + (f" · {human(c)}" if human(c) else "") + (f" — suggested `{c['suggested_label']}`"
                                                                          if c["suggested_label"] else "")
        st.markdown(head + ("" if c["active"] else " *(inactive)*"))
        left, right = st.columns([2, 3])
        with left:
            if c["quality"] is not None:
                m1, m2, m3 = st.columns(3)
                m1.metric("quality", f"{c['quality']:.3f}")
                m2.metric("consistency", f"{c['consistency']:.3f}")
                m3.metric("calibrated scale", "n/a" if c["calibrated_scale"] is None else f"{c['calibrated_scale']:.2f}")
            with st.form(f"label-{k}@{info.name}"):
                label = st.text_input("Label", value=mine.get("label", c["label"] or ""), key=f"label_{k}@{info.name}")
                notes = st.text_area("Notes", value=mine.get("notes", ""), key=f"notes_{k}@{info.name}", height=68)
                verdicts = ["", "good", "bad"]
                verdict = st.radio("Verdict", verdicts, index=verdicts.index(mine.get("verdict", "")), horizontal=True,
                                   format_func=lambda v: v or "unmarked", key=f"verdict_{k}@{info.name}")
                if st.form_submit_button("Save"):
                    saved = [guard(store.set, bank_hash, tok, field, value, who(),
                                   baseline=bank.labels[k] if field == "label" else "")
                             for field, value in (("label", label), ("notes", notes), ("verdict", verdict))]
                    if None not in saved:  # every field stored: show the card as it is now
                        done(f"saved {tok}")
        with right:
            made = None if c["strip"] is not None else guard(preview_strip_path, run, tok, bank=bank)
            if c["strip"] is not None and c["strip"]["image"] in images:
                st.image(images[c["strip"]["image"]], caption="seeds x scales (cached sweep)")
            elif made is not None and made.is_file():
                st.image(str(made), caption="seeds x scales (generated)")
            else:
                if st.button("Generate the seeds x scales strip", key=f"strip_{k}@{info.name}"):
                    from noiseclr_lab.workflows import preview_strip

                    bar = st.progress(0.0, text=f"generating {tok}")
                    path = guard(preview_strip, run, tok, pipe=pipeline(bank.base_model),
                                 on_progress=lambda f, bar=bar, tok=tok: bar.progress(f, text=f"generating {tok}"))
                    if path is not None:
                        st.image(str(path), caption="seeds x scales (generated)")

st.divider()
if st.button("Export the labels into the bank"):
    n = guard(store.export, run.directions_path)
    if n is not None:
        done(f"{n} label(s) written into {run.directions_path}")
with st.expander("Label history"):
    from datetime import datetime

    st.dataframe([h | {"at": datetime.fromtimestamp(h["at"]).strftime("%Y-%m-%d %H:%M:%S")}
                  for h in store.history(bank_hash)], hide_index=True, width="stretch")
