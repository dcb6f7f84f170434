"""CLIP analysis of a bank on any model: one sweep, read by CLIP, turned into per-direction measures.

For every direction k, scale i and seed s of a sweep (``analysis.sweep``), the CLIP image features of the
edited and unedited images give: the re-scoring matrix over a vocabulary's attributes (mean and standard
error of the zero-shot probability change), an auto-label with sign and confidence, directional CLIP
similarity, consistency of the feature changes across seeds, the effect-vs-scale curve, and preservation
(CLIP similarity and pixel RMSE to the unedited image; LPIPS when its weights are on disk). The arrays
become ``analysis.json`` (schema ``SCHEMA``) through ``noiseclr_lab.workflows.analyze``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from noiseclr_lab.analysis.clip import ClipModel, ClipReader
from noiseclr_lab.analysis.metrics.autolabel import auto_labels, directional_similarity
from noiseclr_lab.analysis.metrics.calibration import DEFAULT_TARGET, calibrated_scales
from noiseclr_lab.analysis.metrics.consistency import consistency
from noiseclr_lab.analysis.metrics.preservation import clip_similarity, pixel_rmse
from noiseclr_lab.analysis.metrics.rescoring import group_effect, rescoring, strongest_scale, target_and_off_target
from noiseclr_lab.analysis.sweep import SweepSettings, SweepSpeed, iter_sweep
from noiseclr_lab.analysis.vocab import Vocabulary
from noiseclr_lab.directions import DirectionBank
from noiseclr_lab.editing import EditPipeline
from noiseclr_lab.fileio import save_safetensors_atomic

SCHEMA = "noiseclr_lab.analysis/1"
NOISE_Z = 1.0  # standard errors subtracted from mean probability changes (as the ground truth does)
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"  # the backbone LPIPS(net="alex") loads from the torch hub cache


def lpips_status() -> dict:
    """Whether LPIPS can run offline: the ``lpips`` package and its AlexNet backbone weights on disk."""
    if importlib.util.find_spec("lpips") is None:
        return {"status": "skipped", "reason": "the lpips package is not installed (pip install lpips)"}
    ckpt = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS
    if not ckpt.is_file():
        return {"status": "skipped", "reason": f"the AlexNet weights LPIPS needs are not on disk ({ckpt})"}
    return {"status": "ok", "reason": ""}


def _lpips_model(device):
    import lpips

    return lpips.LPIPS(net="alex", verbose=False).to(device).eval()


def _features(clip: ClipModel, images: torch.Tensor, folder: Path | None, name: str) -> torch.Tensor:
    """CLIP image features of one sweep batch, cached beside its images when the sweep is cached. A feature
    file records the size and time of the image file it was computed from and is recomputed when they differ
    (the images were regenerated)."""
    if folder is None:
        return clip.encode_images(images)
    path = folder / f"{name}.safetensors"
    src = folder.parent / f"{name}.safetensors"
    stamp = f"{src.stat().st_size}:{src.stat().st_mtime_ns}" if src.is_file() else ""
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as fh:
                if (fh.metadata() or {}).get("images") == stamp:
                    return fh.get_tensor("features")
        except (SafetensorError, OSError, KeyError):
            pass  # a damaged cache entry is recomputed
    f = clip.encode_images(images)
    save_safetensors_atomic({"features": f}, path, metadata={"images": stamp})
    return f


@torch.no_grad()
def analyze_bank(pipe, bank: DirectionBank, clip: ClipModel, vocab: Vocabulary, settings: SweepSettings, *,
                 cache: Path | None = None, text_cache: Path | None = None, noise_z: float = NOISE_Z,
                 progress: bool = True, calibration_target: float = DEFAULT_TARGET) -> dict:
    """Sweep ``bank`` on ``pipe`` and measure every direction with CLIP over ``vocab``.

    Args:
        cache: the sweep's cache folder (``sweep_cache_dir``): images and CLIP features are kept there, so an
            interrupted analysis resumes and other readers reuse the images. None: in memory only.
        text_cache: folder for the vocabulary's text features (None: not cached).
        calibration_target: the shrunk attribute change a calibrated scale should reach (``calibrated_scales``).
    Returns:
        A JSON-ready dict: "attributes", "groups", "scales", "lpips" and one entry per direction (see
        docs/design.md, "Run folder", analysis.json).
    """
    reader = ClipReader(clip, vocab, cache_dir=text_cache)
    ep = EditPipeline(pipe, bank)
    n, K, S = len(settings.scales), len(bank), settings.seeds
    feat_dir = cache / f"features-{clip.fingerprint()}" if cache is not None else None
    lp = lpips_status()
    lp_model = _lpips_model(ep.device) if lp["status"] == "ok" else None
    f_base = x_base_np = x_base_lp = None
    f_ed: np.ndarray | None = None
    pix = np.zeros((n, K))
    lp_dist = np.full((n, K), np.nan)
    speed = SweepSpeed()
    for k, images in iter_sweep(ep, settings, progress, cache, speed=speed):
        f = _features(clip, images, feat_dir, "base" if k is None else f"d{k:04d}")
        if k is None:  # the unedited batch comes first: what every edited batch is compared with
            f_base, x_base = f.numpy(), images.float()
            x_base_np, x_base_lp = x_base.cpu().numpy(), x_base * 2 - 1
            f_ed = np.zeros((n, K, S, f.shape[1]))
            continue
        f_ed[:, k] = f.numpy().reshape(n, S, -1)
        edited = images.float().reshape(n, S, *images.shape[1:])
        pix[:, k] = pixel_rmse(edited.cpu().numpy(), x_base_np)
        if lp_model is not None:
            for i in range(n):
                lp_dist[i, k] = float(lp_model(edited[i] * 2 - 1, x_base_lp).mean())

    attrs = vocab.attributes
    groups_of = [gi for gi, vals in enumerate(vocab.groups.values()) for _ in vals]
    p_base = np.concatenate(list(reader.probabilities(torch.from_numpy(f_base)).values()), 1)  # (S, A)
    p_ed = np.concatenate(list(reader.probabilities(torch.from_numpy(f_ed.reshape(-1, f_ed.shape[-1]))).values()), 1)
    p_ed = p_ed.reshape(n, K, S, -1)  # (n, K, S, A)
    mean, se = rescoring(p_ed, p_base)
    geff = group_effect(mean, se, groups_of, noise_z)  # (n, K, G)
    geff_raw = group_effect(mean, se, groups_of, 0.0)
    at = strongest_scale(geff)  # (K,)
    row, row_se = mean[at, np.arange(K)], se[at, np.arange(K)]  # (K, A) at each direction's strongest scale
    tgt = target_and_off_target(row, groups_of)
    lab = auto_labels(mean, se, settings.scales, groups_of, noise_z)
    cons = consistency(f_ed, f_base)  # (n, K)
    sim = clip_similarity(f_ed, f_base)  # (n, K)
    # directional similarity: mean image-feature change at the label's scale vs each value's text change
    t_change = np.concatenate([(t - t.mean(0, keepdim=True)).numpy() for t in reader.text_features.values()])  # (A, E)
    f_change = (f_ed[lab["scale_index"], np.arange(K)] - f_base[None]).mean(1)  # (K, E)
    dsim = directional_similarity(f_change, t_change)  # (K, A)
    # calibrate on the label's own attribute: its signed gain, shrunk by the noise (what a calibrated edit raises)
    own = mean[:, np.arange(K), lab["attribute"]] - noise_z * se[:, np.arange(K), lab["attribute"]]  # (n, K)
    cal, cal_ok = calibrated_scales(np.clip(own, 0, None), settings.scales, lab["sign"], calibration_target)

    directions = []
    for k, tok in enumerate(bank.tokens):
        a = int(lab["attribute"][k])
        directions.append({
            "token": tok,
            "label": bank.labels[k],
            "suggested_label": attrs[a],
            "sign": int(lab["sign"][k]) or 1,
            "confidence": float(lab["confidence"][k]),
            "label_gain": float(lab["gain"][k]),
            "label_scale": float(settings.scales[int(lab["scale_index"][k])]),
            "directional_similarity": float(dsim[k, a]),
            "directional_best": attrs[int(dsim[k].argmax())],
            "consistency": float(cons[:, k].max()),
            "consistency_by_scale": cons[:, k].round(5).tolist(),
            "scale": float(settings.scales[int(at[k])]),
            "calibrated_scale": None if not np.isfinite(cal[k]) else round(float(cal[k]), 4),
            "calibration_reached": bool(cal_ok[k]),
            "rescoring": dict(zip(attrs, row[k].round(5).tolist())),
            "rescoring_se": dict(zip(attrs, row_se[k].round(5).tolist())),
            "group_effect": dict(zip(vocab.groups, geff[int(at[k]), k].round(5).tolist())),
            "target": attrs[int(tgt["target"][k])],
            "target_gain": float(tgt["gain"][k]),
            "off_target": float(tgt["off_target"][k]),
            "effect_curve": {
                "attribute_change": geff_raw[:, k].max(-1).round(5).tolist(),
                "attribute_change_shrunk": geff[:, k].max(-1).round(5).tolist(),
                "clip_distance": (1 - sim[:, k]).round(5).tolist(),
            },
            "preservation": {
                "clip_similarity": sim[:, k].round(5).tolist(),
                "pixel_rmse": pix[:, k].round(5).tolist(),
                "lpips": None if lp_model is None else lp_dist[:, k].round(5).tolist(),
            },
        })
    return {
        "attributes": attrs,
        "groups": {g: list(v) for g, v in vocab.groups.items()},
        "scales": list(settings.scales),
        "lpips": lp,
        "calibration_target": calibration_target,
        "rescoring_by_scale": {"mean": mean.round(5).tolist(), "se": se.round(5).tolist()},  # (n, K, A)
        "directions": directions,
        "speed": speed.summary(),  # of the images generated here (none when the sweep was read from the cache)
    }
