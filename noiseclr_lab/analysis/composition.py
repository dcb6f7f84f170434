"""Composition analysis: apply directions alone and in pairs (each at its calibrated scale) and measure
interference, additivity and locality (the measures are in ``analysis.metrics.composition``).

Every batch is S seeds of one edit (alone or a pair) through ``EditPipeline``; the unedited warm-up steps
before ``edit_start`` run once per seed and every batch continues from them, as in the sweep. Images are
decoded from the final latents, so the change maps exist both in latents and in pixels.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from noiseclr_lab.analysis.clip import ClipReader
from noiseclr_lab.analysis.metrics.composition import additivity, change_map, interference, overlap, rank_correlation
from noiseclr_lab.analysis.sweep import SweepSettings
from noiseclr_lab.directions import DirectionBank
from noiseclr_lab.editing import EditPipeline
from noiseclr_lab.errors import NoiseCLRLabError

MAP_SIDE = 32  # locality maps stored in analysis.json are average-pooled to at most this side


def _small(m: np.ndarray) -> list:
    t = torch.from_numpy(m)[None, None].float()
    if max(t.shape[-2:]) > MAP_SIDE:
        t = F.adaptive_avg_pool2d(t, MAP_SIDE)
    return t[0, 0].numpy().round(5).tolist()


@torch.no_grad()
def composition_analysis(pipe, bank: DirectionBank, reader: ClipReader, settings: SweepSettings,
                         members: list[int], scales: list[float], own_attr: list[int], progress: bool = True) -> dict:
    """Interference, additivity and locality of the directions ``members`` of ``bank``.

    Args:
        scales: the scale each member is applied at (its calibrated scale).
        own_attr: index (into the reader's vocabulary attributes) of each member's own attribute (its label).
    Returns:
        JSON-ready {"tokens", "scales", "interference", "additivity", "additivity_points", "overlap_pixels",
        "overlap_latents", "overlap_predicts_interference", "locality_pixels", "locality_latents"}; K x K
        matrices over the members (diagonals null).
    """
    if len(members) < 2:
        raise NoiseCLRLabError("Composition needs at least two directions.")
    ep = EditPipeline(pipe, bank)
    s, S = settings, settings.seeds
    common = dict(num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale)

    def gens():
        return [torch.Generator().manual_seed(i) for i in range(S)]

    warm = None if s.edit_start == 0 else ep([s.prompt] * S, generator=gens(), stop_step=s.edit_start,
                                             output_type="latent", **common).images

    def run(edits: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
        kw = {"latents": warm.clone(), "start_step": s.edit_start} if warm is not None else {"generator": gens()}
        z = ep([s.prompt] * S, edits=edits, edit_start=s.edit_start, output_type="latent", **kw, **common).images
        return ep.decode(z, "pt").float().cpu(), z.float().cpu()

    tokens = [bank.tokens[m] for m in members]
    K = len(members)
    x0, z0 = run(None)
    pairs = list(combinations(range(K), 2))
    bar = tqdm(total=K + len(pairs), desc="composition", disable=not progress, leave=False)
    alone = []
    for t, sc in zip(tokens, scales):
        alone.append(run({t: sc}))
        bar.update(1)
    pair_out = {}
    for i, j in pairs:
        pair_out[i, j] = run({tokens[i]: scales[i], tokens[j]: scales[j]})
        bar.update(1)
    bar.close()

    clip = reader.clip

    def probs_and_feats(x: torch.Tensor):
        f = clip.encode_images(x)
        return np.concatenate(list(reader.probabilities(f).values()), 1), f.numpy()

    p0, f0 = probs_and_feats(x0)
    pa, fa = zip(*(probs_and_feats(x) for x, _ in alone))
    A, E = p0.shape[1], f0.shape[1]
    pp, fp = np.zeros((K, K, S, A)), np.zeros((K, K, S, E))
    for (i, j), (x, _) in pair_out.items():
        p, f = probs_and_feats(x)
        pp[i, j] = pp[j, i] = p
        fp[i, j] = fp[j, i] = f
    pa, fa = np.stack(pa), np.stack(fa)
    inter = interference(p0, pa, pp, own_attr)
    add = additivity(f0, fa, fp)
    maps_px = np.stack([change_map(x.numpy(), x0.numpy()) for x, _ in alone])
    maps_z = np.stack([change_map(z.numpy(), z0.numpy()) for _, z in alone])
    ov_px, ov_z = overlap(maps_px), overlap(maps_z)
    iu = np.triu_indices(K, 1)
    sym = (inter + inter.T) / 2
    points = []  # own attribute of i: sum of the single changes against the composed change
    for i in range(K):
        a = own_attr[i]
        for j in range(K):
            if i != j:
                pred = (pa[i, :, a] - p0[:, a]).mean() + (pa[j, :, a] - p0[:, a]).mean()
                got = (pp[i, j, :, a] - p0[:, a]).mean()
                points.append({"i": tokens[i], "j": tokens[j], "sum_of_singles": float(pred), "composed": float(got)})

    def mat(m):
        return [[None if not np.isfinite(v) else round(float(v), 5) for v in row] for row in m]

    return {
        "tokens": tokens,
        "scales": [float(v) for v in scales],
        "interference": mat(inter),
        "additivity": mat(add),
        "additivity_points": points,
        "overlap_pixels": mat(np.where(np.eye(K, dtype=bool), np.nan, ov_px)),
        "overlap_latents": mat(np.where(np.eye(K, dtype=bool), np.nan, ov_z)),
        "overlap_predicts_interference": {
            "spearman_pixels": rank_correlation(ov_px[iu], sym[iu]),
            "spearman_latents": rank_correlation(ov_z[iu], sym[iu]),
        },
        "locality_pixels": [_small(m) for m in maps_px],
        "locality_latents": [_small(m) for m in maps_z],
    }
