"""Ground-truth evaluation on the toy world: which factors does each direction move, and how cleanly?

For each direction k and scale s of a sweep, S seeds are generated with and without the edit (one batch
per direction: every scale x seed of it at once); the toy probe reads every factor of both; the effect

    E_s[k, f] = max_v | mean_seeds ( p_f(v | edited) - p_f(v | unedited) ) |     in [0, 1]

the mean change of the probe's probability of the most-moved value v: a direction must push the factor the
same way on every seed to score (random perturbations that flip a fragile factor every which way do not).
With few seeds such flips still leave a residue of about one standard error on every factor, which adds up
over the side factors and caps a perfectly clean edit's modularity near 0.5; so each mean is shrunk by
``noise_z`` standard errors before the max (``noise_z=0`` gives the raw mean change, reported as
``sweep_raw``):

    E_s[k, f] = max_v max(0, |mean_seeds(delta_v)| - noise_z * se_seeds(delta_v))

is taken at a per-direction calibrated scale: the gentlest |s| at which the direction visibly moves some
factor (max_f E_s[k, f] >= threshold), else the scale where it moves most. Metrics then come from
``noiseclr_lab.analysis.metrics``; baselines (random directions with the trained norms, the untrained
initial bank, and a supervised bank of the toy text encoder's own attribute words) are scored the same way.

Edits are applied as users apply them (the official editing pipeline's start_step, SEGA's edit warm-up): by
default from denoising step ``round(0.2 * steps)`` on, so the first steps, where the layout of the image is
decided, run unedited. ``edit_start=0`` edits every step.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from noiseclr_lab.analysis.metrics import compute_all
from noiseclr_lab.analysis.metrics.modularity import per_direction
from noiseclr_lab.directions.bank import DirectionBank, tokenizer_fingerprint
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.fileio import save_image_atomic, write_json_atomic
from noiseclr_lab.registry import Registry

DEFAULT_SCALES = (-6.0, -3.0, -1.5, 1.5, 3.0, 6.0)
CALIBRATION_THRESHOLD = 0.3
NOISE_Z = 1.0  # standard errors subtracted from every mean change (see the module docstring)
EDIT_WARMUP = 0.2  # default share of the first denoising steps without edits (SEGA's edit_warmup_steps 10 of 50)


def default_edit_start(steps: int) -> int:
    """The denoising step edits start at by default: after the first ``EDIT_WARMUP`` of ``steps``, where the
    layout is decided (the official editing pipeline's start_step; SEGA's edit warm-up)."""
    return int(round(EDIT_WARMUP * steps))


@torch.no_grad()
def effect_sweep(edit_pipe, probe, scales, seeds: int, prompt: str, guidance: float, steps: int,
                 progress: bool = True, noise_z: float = NOISE_Z, edit_start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n_scales, K, F) probe change of every direction of ``edit_pipe.bank`` at every scale: (shrunk by
    ``noise_z`` standard errors, raw mean). Edits are active from denoising step ``edit_start`` on."""
    bank = edit_pipe.bank
    factors = list(probe.values)
    n = len(scales)

    def gens():
        return [torch.Generator().manual_seed(s) for s in range(seeds)]

    common = dict(num_inference_steps=steps, guidance_scale=guidance)
    # the unedited warm-up steps are the same for every direction and scale: run them once per seed
    warm = None if edit_start == 0 else edit_pipe([prompt] * seeds, generator=gens(), stop_step=edit_start,
                                                  output_type="latent", **common).images

    def start(reps: int) -> dict:  # where a batch of reps x seeds images begins
        if warm is None:
            return {"generator": [g for _ in range(reps) for g in gens()]}
        return {"latents": warm.repeat(reps, 1, 1, 1), "start_step": edit_start}

    base = edit_pipe([prompt] * seeds, output_type="pt", **start(1), **common).images
    p0 = probe.predict(base).probs
    out, raw = np.zeros((n, len(bank), len(factors))), np.zeros((n, len(bank), len(factors)))
    for k, tok in enumerate(tqdm(bank.tokens, desc="effect sweep", disable=not progress, leave=False)):
        lam = [float(s) for s in scales for _ in range(seeds)]
        imgs = edit_pipe([prompt] * len(lam), edits={tok: lam}, edit_start=edit_start, output_type="pt",
                         **start(n), **common).images
        p1 = probe.predict(imgs).probs
        for j, f in enumerate(factors):
            out[:, k, j], raw[:, k, j] = probe_effect(p1[f].reshape(n, seeds, -1), p0[f], noise_z)
    return out, raw


def probe_effect(p_edited: np.ndarray, p_base: np.ndarray, noise_z: float = NOISE_Z) -> tuple[np.ndarray, np.ndarray]:
    """Effect of an edit on one factor from the probe's value probabilities, per scale.

    p_edited (n_scales, seeds, n_values), p_base (seeds, n_values) -> (shrunk (n_scales,), raw (n_scales,)):
    the largest |mean over seeds of the signed change| of a value's probability, and the same minus
    ``noise_z`` standard errors of that mean (floored at 0). A random perturbation that flips the factor
    different ways on different seeds averages out; a semantic edit pushes it the same way on every seed.
    """
    delta = np.asarray(p_edited, dtype=np.float64) - np.asarray(p_base, dtype=np.float64)[None]
    seeds = delta.shape[1]
    mean = np.abs(delta.mean(1))
    se = delta.std(1, ddof=1) / np.sqrt(seeds) if seeds > 1 else np.zeros_like(mean)
    return np.clip(mean - noise_z * se, 0, None).max(1), mean.max(1)


def calibrate(sweep: np.ndarray, scales, threshold: float = CALIBRATION_THRESHOLD) -> tuple[np.ndarray, list[float]]:
    """Per direction, the effect row at its calibrated scale; returns ((K, F) effect, chosen scales)."""
    order = np.argsort(np.abs(np.asarray(scales, dtype=float)), kind="stable")
    K = sweep.shape[1]
    eff = np.zeros(sweep.shape[1:])
    chosen = []
    for k in range(K):
        peak = sweep[:, k].max(1)  # (n_scales,)
        hits = [i for i in order if peak[i] >= threshold]
        i = hits[0] if hits else int(peak.argmax())
        eff[k] = sweep[i, k]
        chosen.append(float(scales[i]))
    return eff, chosen


# --------------------------------------------------------------------------- baselines

_BASELINES: Registry[Callable] = Registry("baseline")


def register_baseline(name: str, fn: Callable) -> Callable:
    """``fn(trained_bank, run_dir, pipe, domain) -> DirectionBank``."""
    return _BASELINES.register(name, fn)


def list_baselines() -> list[str]:
    return _BASELINES.names()


def _random_bank(bank: DirectionBank, run_dir, pipe, domain) -> DirectionBank:
    g = torch.Generator().manual_seed(1234)
    r = torch.randn(bank.embeddings.shape, generator=g)
    r = r / r.norm(dim=1, keepdim=True) * bank.embeddings.norm(dim=1, keepdim=True)
    return DirectionBank(r, [f"<r{i + 1}>" for i in range(len(bank))], base_model=bank.base_model,
                         tokenizer_fingerprint=bank.tokenizer_fingerprint)


def _init_bank(bank: DirectionBank, run_dir, pipe, domain) -> DirectionBank:
    path = Path(run_dir) / "initial_directions.safetensors"
    if not path.is_file():
        raise NoiseCLRLabError(f"{path} is missing; the 'init' baseline needs a run trained by noiseclr_lab.")
    init = DirectionBank.load(path)
    return DirectionBank(init.embeddings, [f"<i{i + 1}>" for i in range(len(init))], base_model=init.base_model,
                         tokenizer_fingerprint=init.tokenizer_fingerprint)


def _supervised_bank(bank: DirectionBank, run_dir, pipe, domain) -> DirectionBank:
    """One direction per factor: the input embedding of a word naming one of its values ('smiling', 'glasses')."""
    from noiseclr_lab.toyworld import get_domain

    tok = pipe.tokenizer
    weight = pipe.text_encoder.get_input_embeddings().weight.detach().float().cpu()
    rows, tokens, labels = [], [], []
    for f in get_domain(domain).factors:
        word = f.values[0]
        ids = tok(word, add_special_tokens=False).input_ids
        rows.append(weight[ids[0]])
        tokens.append(f"<w_{f.name}>")
        labels.append(f"{f.name}={word}")
    return DirectionBank(torch.stack(rows), tokens, labels=labels, base_model=bank.base_model,
                         tokenizer_fingerprint=tokenizer_fingerprint(tok))


register_baseline("random", _random_bank)
register_baseline("init", _init_bank)
register_baseline("supervised", _supervised_bank)


# --------------------------------------------------------------------------- evaluation


def score_bank(pipe, bank: DirectionBank, probe, scales=DEFAULT_SCALES, seeds: int = 12, prompt: str = "",
               guidance: float = 3.0, steps: int = 15, threshold: float = CALIBRATION_THRESHOLD,
               progress: bool = True, noise_z: float = NOISE_Z, edit_start: int | None = None) -> dict:
    """Sweep, calibrate and score one bank: metrics, per-direction details and the (K, F) effect matrix
    (``metrics_raw``: the same scored on raw mean changes, at the same calibrated scales). Edits are applied
    from denoising step ``edit_start`` on (None: ``default_edit_start(steps)``)."""
    from noiseclr_lab.editing import EditPipeline

    if seeds < 2:
        raise NoiseCLRLabError(f"ground-truth scoring needs at least 2 seeds (got {seeds}).")
    if edit_start is None:
        edit_start = default_edit_start(steps)
    if not 0 <= edit_start < steps:
        raise NoiseCLRLabError(f"edit_start must be a denoising step in [0, {steps}), got {edit_start}.")
    ep = EditPipeline(pipe, bank)
    sweep, raw = effect_sweep(ep, probe, scales, seeds, prompt, guidance, steps, progress, noise_z, edit_start)
    eff, chosen = calibrate(sweep, scales, threshold)
    idx = [list(scales).index(c) for c in chosen]
    eff_raw = raw[idx, np.arange(len(bank))]
    mod, main, active = per_direction(eff)
    factors = list(probe.values)
    return {
        "metrics": compute_all(eff),
        "metrics_raw": compute_all(eff_raw),
        "effect": eff.round(4).tolist(),
        "sweep": sweep.round(4).tolist(),
        "sweep_raw": raw.round(4).tolist(),
        "directions": [
            {"token": t, "label": bank.labels[k], "main_factor": factors[int(main[k])], "modularity": float(mod[k]),
             "effect": float(eff[k].max()), "active": bool(active[k]), "scale": chosen[k]}
            for k, t in enumerate(bank.tokens)
        ],
    }


def evaluate_gt(run_dir: str | os.PathLike, domain: str, *, seeds: int = 12, scales=DEFAULT_SCALES, steps: int = 15,
                prompt: str | None = None, guidance: float = 3.0, baselines=("random", "init", "supervised"),
                device=None, progress: bool = True, noise_z: float = NOISE_Z, edit_start: int | None = None) -> dict:
    """Score a run's directions and the baselines against the toy probe; writes analysis/gt_metrics.json and
    analysis/gt_effects.png. Returns the JSON content."""
    from noiseclr_lab.models import load_pipeline
    from noiseclr_lab.toyworld import get_domain, load_probe

    run = Path(run_dir)
    bank_path = run / "directions.safetensors"
    if not bank_path.is_file():
        raise NoiseCLRLabError(f"{run} is not a run folder (no directions.safetensors).")
    for b in baselines:
        _BASELINES.get(b)
    dom = get_domain(domain)
    bank = DirectionBank.load(bank_path)
    model = bank.base_model or "toy:" + domain
    pipe = load_pipeline(model, device=device)
    pipe.noiseclr_spec = model
    probe = load_probe(domain, device=pipe.device)
    prompt = dom.prefix if prompt is None else prompt
    edit_start = default_edit_start(steps) if edit_start is None else edit_start
    kw = dict(scales=list(scales), seeds=seeds, prompt=prompt, guidance=guidance, steps=steps, progress=progress,
              noise_z=noise_z, edit_start=edit_start)
    results = {"trained": score_bank(pipe, bank, probe, **kw)}
    for b in baselines:
        results[b] = score_bank(pipe, _BASELINES.get(b)(bank, run, pipe, domain), probe, **kw)
    out = {"domain": domain, "factors": list(probe.values), "model": model, "settings": kw | {"threshold": CALIBRATION_THRESHOLD},
           "banks": results}
    folder = run / "analysis"
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "gt_metrics.json", out)
    save_image_atomic(effect_heatmap(results, list(probe.values)), folder / "gt_effects.png")
    return out


def effect_heatmap(results: dict, factors: list[str], cell: int = 26) -> Image.Image:
    """Side-by-side K x F heat maps (white = no effect, dark blue = the factor flips), one per bank."""
    from noiseclr_lab.editing.grid import _font

    font = _font(11)
    label_w, head_h, gap = 110, 104, 20
    panels = []
    for name, res in results.items():
        eff = np.asarray(res["effect"])
        K, F = eff.shape
        img = Image.new("RGB", (label_w + F * cell, head_h + K * cell), "white")
        d = ImageDraw.Draw(img)
        m = res["metrics"]
        d.text((4, 4), f"{name}: coverage {m['coverage']:.0f}/{F}, modularity {m['modularity_mean']:.2f}", fill="black", font=font)
        for j, f in enumerate(factors):  # factor names written upwards above their column
            txt = Image.new("RGB", (head_h - 24, cell), "white")
            ImageDraw.Draw(txt).text((2, cell // 2), f[:12], fill="black", anchor="lm", font=font)
            img.paste(txt.rotate(90, expand=True), (label_w + j * cell, 22))
        for k, row in enumerate(res["directions"]):
            d.text((4, head_h + k * cell + cell // 2), (row["token"] + " " + row["label"])[:16], fill="black", anchor="lm", font=font)
            for j in range(F):
                v = float(np.clip(eff[k, j], 0, 1))
                col = (int(255 - 225 * v), int(255 - 185 * v), int(255 - 80 * v))
                d.rectangle([label_w + j * cell, head_h + k * cell, label_w + (j + 1) * cell - 2, head_h + (k + 1) * cell - 2], fill=col)
        panels.append(img)
    w = sum(p.width for p in panels) + gap * (len(panels) - 1)
    h = max(p.height for p in panels)
    out = Image.new("RGB", (w, h), "white")
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    return out
