"""Ground-truth scoring: which factors does each direction move, and how cleanly?

A sweep (``analysis.sweep``) applies every direction k at every scale s to S seeds; a ``Reader`` (the toy
probe on the toy world, any reader with known factors elsewhere) reads every factor of the edited and the
unedited images. The effect

    E_s[k, f] = max_v | mean_seeds ( p_f(v | edited) - p_f(v | unedited) ) |     in [0, 1]

is the mean change of the reader's probability of the most-moved value v: a direction must push the factor
the same way on every seed to score (random perturbations that flip a fragile factor every which way do not).
With few seeds such flips still leave a residue of about one standard error on every factor, which adds up
over the side factors and caps a perfectly clean edit's modularity near 0.5; so each mean is shrunk by
``noise_z`` standard errors before the max (``noise_z=0`` gives the raw mean change, reported as
``sweep_raw``):

    E_s[k, f] = max_v max(0, |mean_seeds(delta_v)| - noise_z * se_seeds(delta_v))

is taken at a per-direction calibrated scale: the gentlest |s| at which the direction visibly moves some
factor (max_f E_s[k, f] >= threshold), else the scale where it moves most. Metrics then come from the table
in ``noiseclr_lab.analysis.metrics``; baselines (random directions with the trained norms, the untrained
initial bank, and a supervised bank of the toy text encoder's own attribute words) are scored the same way.

Edits start after an unedited warm-up (``editing.default_edit_start``: the first 20% of the steps, where the
layout of the image is decided), for every bank alike. The run-level workflow (load a run, score it and its
baselines, write ``analysis/gt_metrics.json``) is ``noiseclr_lab.workflows.evaluate_gt``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from noiseclr_lab.analysis.metrics import compute_all
from noiseclr_lab.analysis.metrics.modularity import per_direction
from noiseclr_lab.analysis.metrics.rescoring import group_effect, rescoring
from noiseclr_lab.analysis.readers import Reader
from noiseclr_lab.analysis.sweep import SweepReading, SweepSettings, read_sweep
from noiseclr_lab.directions.bank import DirectionBank, tokenizer_fingerprint
from noiseclr_lab.editing import EditPipeline, label_font
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.models import toy_model_domain
from noiseclr_lab.registry import Registry
from noiseclr_lab.store import RunDir
from noiseclr_lab.toyworld import get_domain

GT_SCHEMA = "noiseclr_lab.gt/2"  # gt_metrics.json (2: settings say guidance_scale / num_inference_steps; reader; cache_sweeps)
DEFAULT_SCALES = (-6.0, -3.0, -1.5, 1.5, 3.0, 6.0)
CALIBRATION_THRESHOLD = 0.3
NOISE_Z = 1.0  # standard errors subtracted from every mean change (see the module docstring)


def bank_domain(bank: DirectionBank) -> str | None:
    """The toy domain a bank's directions were learned on: its training data's when that was a toy domain
    (``toy:scenes``; one toy model serves every domain), else its model spec's (``toy:faces``,
    ``toy-zsnr:faces``); None off the toy world."""
    data = str(bank.training_config.get("data", ""))
    return (data[4:] if data.startswith("toy:") else None) or toy_model_domain(bank.base_model)


def effect_from_reading(reading: SweepReading, noise_z: float = NOISE_Z) -> tuple[np.ndarray, np.ndarray]:
    """(n_scales, K, F) effect of every direction on every factor (group) of ``reading``: (shrunk by
    ``noise_z`` standard errors, raw mean); see the module docstring."""
    groups = list(reading.values)
    n, K = reading.edited[groups[0]].shape[:2]
    out, raw = np.zeros((n, K, len(groups))), np.zeros((n, K, len(groups)))
    for k in range(K):
        for j, f in enumerate(groups):
            out[:, k, j], raw[:, k, j] = probe_effect(reading.edited[f][:, k], reading.base[f], noise_z)
    return out, raw


def probe_effect(p_edited: np.ndarray, p_base: np.ndarray, noise_z: float = NOISE_Z) -> tuple[np.ndarray, np.ndarray]:
    """Effect of an edit on one factor from the probe's value probabilities, per scale.

    p_edited (n_scales, seeds, n_values), p_base (seeds, n_values) -> (shrunk (n_scales,), raw (n_scales,)):
    the largest |mean over seeds of the signed change| of a value's probability, and the same minus
    ``noise_z`` standard errors of that mean (floored at 0). A random perturbation that flips the factor
    different ways on different seeds averages out; a semantic edit pushes it the same way on every seed.
    """
    # the CLIP analysis's statistic on one group of values (metrics.rescoring): one formula for both matrices
    mean, se = rescoring(np.asarray(p_edited, dtype=np.float64)[:, None], p_base)  # (n_scales, 1, n_values)
    one = [0] * mean.shape[-1]
    return group_effect(mean, se, one, noise_z)[:, 0, 0], group_effect(mean, se, one, 0.0)[:, 0, 0]


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


def calibrated_effects(sweep: np.ndarray, raw: np.ndarray, scales, threshold: float = CALIBRATION_THRESHOLD
                       ) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """(K, F) shrunk and raw effect rows at each direction's calibrated scale (chosen on the shrunk sweep), and
    the chosen scales."""
    eff, chosen = calibrate(sweep, scales, threshold)
    idx = [list(scales).index(c) for c in chosen]
    return eff, raw[idx, np.arange(raw.shape[1])], chosen


# --------------------------------------------------------------------------- baselines

_BASELINES: Registry[Callable] = Registry("baseline")


def register_baseline(name: str, fn: Callable) -> Callable:
    """``fn(trained_bank, run: RunDir, pipe, domain) -> DirectionBank``."""
    return _BASELINES.register(name, fn)


def list_baselines() -> list[str]:
    return _BASELINES.names()


def _random_bank(bank: DirectionBank, run: RunDir, pipe, domain: str | None) -> DirectionBank:
    g = torch.Generator().manual_seed(1234)
    r = torch.randn(bank.embeddings.shape, generator=g)
    r = r / r.norm(dim=1, keepdim=True) * bank.embeddings.norm(dim=1, keepdim=True)
    return DirectionBank(r, [f"<r{i + 1}>" for i in range(len(bank))], base_model=bank.base_model,
                         tokenizer_fingerprint=bank.tokenizer_fingerprint)


def _init_bank(bank: DirectionBank, run: RunDir, pipe, domain: str | None) -> DirectionBank:
    path = run.initial_directions_path
    if not path.is_file():
        raise NoiseCLRLabError(f"{path} is missing; the 'init' baseline needs a run trained by noiseclr_lab.")
    init = DirectionBank.load(path)
    if len(init) != len(bank) and set(bank.tokens) <= set(init.tokens):  # a run that kept a selection
        init = init.subset(bank.tokens)
    return DirectionBank(init.embeddings, [f"<i{i + 1}>" for i in range(len(init))], base_model=init.base_model,
                         tokenizer_fingerprint=init.tokenizer_fingerprint)


def _supervised_bank(bank: DirectionBank, run: RunDir, pipe, domain: str | None) -> DirectionBank:
    """One direction per factor: the input embedding of a word naming one of its values ('smiling', 'glasses')."""
    if domain is None:
        raise NoiseCLRLabError("The 'supervised' baseline names a toy domain's factor values; give a domain.")
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


def check_baselines(names) -> None:
    """Unknown baseline names fail before any work, listing the known ones."""
    for name in names:
        _BASELINES.get(name)


def make_baseline(name: str, bank: DirectionBank, run: RunDir, pipe, domain: str | None) -> DirectionBank:
    """The bank of baseline ``name`` for a run's trained ``bank``."""
    return _BASELINES.get(name)(bank, run, pipe, domain)


def score_bank(pipe, bank: DirectionBank, reader: Reader, scales=DEFAULT_SCALES, seeds: int = 12, prompt: str = "",
               guidance_scale: float = 3.0, num_inference_steps: int = 15, threshold: float = CALIBRATION_THRESHOLD,
               progress: bool = True, noise_z: float = NOISE_Z, edit_start: int | None = None,
               cache: Path | None = None, guidance_rescale: float = 0.0) -> dict:
    """Sweep, calibrate and score one bank: metrics, per-direction details and the (K, F) effect matrix
    (``metrics_raw``: the same scored on raw mean changes, at the same calibrated scales). Edits are applied
    from denoising step ``edit_start`` on (None: ``editing.default_edit_start(num_inference_steps)``).

    Args:
        pipe: a loaded StableDiffusionPipeline (``models.load_pipeline``).
        bank: the K directions to score.
        reader: what reads the factors (``ProbeReader(toyworld.load_probe(domain))`` on the toy world).
        cache: a folder to keep the sweep's images in (``analysis.sweep.sweep_cache_dir``); None: in memory.
    Returns:
        {"metrics", "metrics_raw", "effect" (K x F), "sweep" / "sweep_raw" (n_scales x K x F), "directions"}.
    """
    if seeds < 2:
        raise NoiseCLRLabError(f"ground-truth scoring needs at least 2 seeds (got {seeds}).")
    settings = SweepSettings(scales=tuple(scales), seeds=seeds, prompt=prompt, num_inference_steps=num_inference_steps,
                             guidance_scale=guidance_scale, edit_start=edit_start, guidance_rescale=guidance_rescale)
    reading = read_sweep(EditPipeline(pipe, bank), reader, settings, progress, cache)
    sweep, raw = effect_from_reading(reading, noise_z)
    eff, eff_raw, chosen = calibrated_effects(sweep, raw, scales, threshold)
    mod, main, active = per_direction(eff)
    factors = list(reader.values)
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


def effect_heatmap(results: dict, factors: list[str], cell: int = 26) -> Image.Image:
    """Side-by-side K x F heat maps (white = no effect, dark blue = the factor flips), one per bank."""
    font = label_font(11)
    label_w, head_h, gap = 110, 118, 20
    panels = []
    for name, res in results.items():
        eff = np.asarray(res["effect"])
        K, F = eff.shape
        img = Image.new("RGB", (label_w + F * cell, head_h + K * cell), "white")
        d = ImageDraw.Draw(img)
        m = res["metrics"]
        d.text((4, 4), f"{name}: coverage {m['coverage']:.0f}/{F}, modularity {m['modularity_mean']:.2f}", fill="black", font=font)
        if "metrics_raw" in res:  # the raw means beside the shrunk ones
            r = res["metrics_raw"]
            d.text((4, 18), f"raw means: {r['coverage']:.0f}/{F}, {r['modularity_mean']:.2f}", fill="black", font=font)
        for j, f in enumerate(factors):  # factor names written upwards above their column
            txt = Image.new("RGB", (head_h - 38, cell), "white")
            ImageDraw.Draw(txt).text((2, cell // 2), f[:12], fill="black", anchor="lm", font=font)
            img.paste(txt.rotate(90, expand=True), (label_w + j * cell, 36))
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
