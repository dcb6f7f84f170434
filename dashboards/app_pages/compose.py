"""Compose: directions, scales (calibrated by default), step windows, a prompt and seed or an uploaded image;
the edited image, and a recipe JSON that `noiseclr-lab edit --recipe FILE` replays to the same pixels."""

import hashlib
import io
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import streamlit as st  # noqa: E402
from common import MAX_UPLOAD_MB, guard, labels, pick_run, pipeline, workspace  # noqa: E402

from noiseclr_lab.directions import DirectionBank  # noqa: E402
from noiseclr_lab.editing.images import decode_upload  # noqa: E402
from noiseclr_lab.recipe import Recipe, file_sha256  # noqa: E402
from noiseclr_lab.workflows import apply_recipe, default_prompt  # noqa: E402

st.title("Compose")
ws = workspace()
info = pick_run(ws)
if info is None:
    st.stop()
bank = DirectionBank.load(info.run.require_directions())


saved = labels(ws).current(bank.content_hash())  # labels saved on the Directions page, exported or not


def name_of(k: int) -> str:
    tok = bank.tokens[k]
    label = saved.get(tok, {}).get("label", bank.labels[k])
    return f"{tok} · {label}" if label else f"{tok} · suggested {bank.suggestions[k]}" if bank.suggestions[k] else tok


calibrated_ok = any(v is not None for v in bank.calibrated_scales)
left, right = st.columns([3, 2], gap="large")
with left:
    chosen = st.multiselect("Directions", list(range(len(bank))), format_func=name_of, key=f"compose_dirs::{info.name}")
    calibrated = st.checkbox("Scales are multiples of each direction's calibrated scale", value=calibrated_ok,
                             disabled=not calibrated_ok, key=f"compose_calibrated::{info.name}",
                             help="the calibrated scale (from `analyze`) is the edit that reaches a common attribute "
                                  "change") and calibrated_ok
    prompt = st.text_input("Prompt", value=default_prompt(bank), key="compose_prompt")
    c2, c3, c4, c5 = st.columns(4)
    seed = c2.number_input("Seed", value=0, step=1, key="compose_seed")
    steps = c3.number_input("Steps", min_value=2, max_value=200, value=15, step=1, key="compose_steps")
    guidance = c4.number_input("Guidance", min_value=0.0, max_value=30.0, value=3.0, step=0.5, key="compose_guidance")
    rescale = c5.number_input("Guidance rescale", min_value=0.0, max_value=1.0, value=0.0, step=0.1,
                              key="compose_rescale", help="0.7 for zero-terminal-SNR models such as toy-zsnr (0: none)")

    edits, windows = {}, {}
    for k in chosen:
        tok = bank.tokens[k]
        usable = calibrated and bank.calibrated_scales[k] is not None
        a, b = st.columns([3, 2])
        edits[tok] = a.slider(f"{name_of(k)} " + ("(x calibrated scale)" if usable else "(scale)"),
                              -3.0 if usable else -10.0, 3.0 if usable else 10.0, 1.0 if usable else 3.0, 0.1,
                              key=f"scale_{k}_{int(usable)}@{info.name}")
        lo, hi = b.slider(f"{tok} active on steps", 0, int(steps), (0, int(steps)), key=f"window_{k}@{info.name}")
        if (lo, hi) != (0, int(steps)):
            windows[tok] = [lo, hi]
    if calibrated and any(bank.calibrated_scales[bank.tokens.index(t)] is None for t in edits):
        st.warning("Some chosen directions have no calibrated scale; untick the calibrated option to use raw scales.")

    upload = st.file_uploader(f"Or edit an image (PNG/JPEG, at most {MAX_UPLOAD_MB} MB)", type=["png", "jpg", "jpeg"],
                              key="compose_upload")
    inversion = st.radio("Inversion", ["ddim", "null-text", "null-text-p2p"], horizontal=True, key="compose_inversion")


def save_upload(file) -> Path | None:
    """The upload decoded safely (size and pixel limits) and stored in the workspace as PNG, named by its
    content hash; None, with a message, when it is refused."""
    img = guard(decode_upload, file.getvalue(), file.name, MAX_UPLOAD_MB * 1024 * 1024)
    if img is None:
        return None
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    path = ws.uploads / f"{hashlib.sha256(buf.getvalue()).hexdigest()[:16]}.png"
    if not path.is_file():
        path.write_bytes(buf.getvalue())
    return path


with left:
    if st.button("Compose", type="primary", disabled=not edits):
        image_path = save_upload(upload) if upload is not None else None
        if upload is not None and image_path is None:  # refused (said above): no older result beside the message
            st.session_state.pop(f"composed::{info.name}", None)
        else:
            recipe = guard(Recipe, model=bank.base_model, bank=str(info.run.directions_path), edits=edits,
                           windows=windows, calibrated=calibrated, prompt=prompt, steps=int(steps), guidance=float(guidance),
                           guidance_rescale=float(rescale), seed=int(seed), image=str(image_path) if image_path else None, inversion=inversion,
                           bank_hash=bank.content_hash(), image_sha256=file_sha256(image_path) if image_path else None)
            if recipe is not None:
                t0 = time.perf_counter()
                with st.spinner("Editing ..."):
                    res = guard(apply_recipe, recipe, pipe=pipeline(bank.base_model), progress=False)
                if res is not None:
                    st.session_state[f"composed::{info.name}"] = (res, time.perf_counter() - t0)

with right:
    if f"composed::{info.name}" in st.session_state:
        res, seconds = st.session_state[f"composed::{info.name}"]
        shown = st.columns(2) if res.recipe.image else [st.container()]
        if res.recipe.image:  # an edited upload: the image it started from beside the result
            shown[0].image(res.recipe.image, caption="input", width=320)
        shown[-1].image(res.image, caption=", ".join(f"{t} {v['scale']:+.2f}" for t, v in res.edits.items())
                        + f" · {seconds:.1f} s", width=320)
        for note in res.notes:
            st.caption(note)
        buf = io.BytesIO()
        res.image.save(buf, format="PNG")
        d1, d2 = st.columns(2)
        d1.download_button("Download the image", buf.getvalue(), file_name="edit.png", mime="image/png")
        import json

        d2.download_button("Download the recipe", json.dumps(res.recipe.as_dict(), indent=1), file_name="recipe.json",
                           mime="application/json")
        st.caption("Replay: `noiseclr-lab edit --recipe recipe.json --out edit.png`")
