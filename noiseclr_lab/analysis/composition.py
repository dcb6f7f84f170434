"""Composition analysis: apply directions alone and in pairs (each at its calibrated scale) and measure
interference, additivity and locality (the measures are in ``analysis.metrics.composition``).

Every batch is S seeds of one edit (alone or a pair) through ``EditPipeline``; the unedited warm-up steps
before ``edit_start`` run once per seed and every batch continues from them, as in the sweep. Images are
decoded from the final latents, so the change maps exist both in latents and in pixels.
"""

from __future__ import annotations

import hashlib
import json
from itertools import combinations
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from noiseclr_lab.analysis.clip import ClipReader
from noiseclr_lab.analysis.metrics.composition import additivity, change_map, interference, overlap, rank_correlation
from noiseclr_lab.analysis.readers import Reader
from noiseclr_lab.analysis.sweep import SweepSettings, WarmStart, cached_batch
from noiseclr_lab.directions import DirectionBank
from noiseclr_lab.editing import EditPipeline
from noiseclr_lab.errors import NoiseCLRLabError

MAP_SIDE = 32  # locality maps stored in analysis.json are average-pooled to at most this side


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _small(m: np.ndarray) -> list:
    t = torch.from_numpy(m)[None, None].float()
    if max(t.shape[-2:]) > MAP_SIDE:
        t = F.adaptive_avg_pool2d(t, MAP_SIDE)
    return t[0, 0].numpy().round(5).tolist()


def composition_runs(bank: DirectionBank, members: list[int], scales: list[float]) -> list[tuple[str, dict | None]]:
    """The batches of a composition analysis, in order: the unedited base, each member alone, every pair."""
    tokens = [bank.tokens[m] for m in members]
    runs: list[tuple[str, dict | None]] = [("base", None)]
    runs += [(f"a{i:03d}", {t: sc}) for i, (t, sc) in enumerate(zip(tokens, scales))]
    runs += [(f"p{i:03d}_{j:03d}", {tokens[i]: scales[i], tokens[j]: scales[j]})
             for i, j in combinations(range(len(tokens)), 2)]
    return runs


def composition_cache_dir(sweep_cache: Path, bank: DirectionBank, members: list[int], scales: list[float]) -> Path:
    """<sweep cache>/composition-<hash of the members and their scales>/ (the sweep key covers the rest)."""
    key = hashlib.sha256(json.dumps([[bank.tokens[m] for m in members], [float(v) for v in scales]]).encode())
    folder = Path(sweep_cache) / f"composition-{key.hexdigest()[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class _Runner:
    """Makes (or reads from a cache folder: ``sweep.cached_batch``) the S-seed batches of one composition
    analysis, all continuing from the shared warm-up (``sweep.WarmStart``)."""

    def __init__(self, pipe, bank: DirectionBank, settings: SweepSettings, cache: Path | None, maker: str = "0/1"):
        self.ep, self.s, self.cache, self.maker = EditPipeline(pipe, bank), settings, cache, maker
        self.start = WarmStart(self.ep, settings)

    def make(self, edits: dict | None) -> dict[str, torch.Tensor]:
        z = self.ep([self.s.prompt] * self.s.seeds, edits=edits, edit_start=self.s.edit_start, output_type="latent",
                    **self.start(), **self.start.common).images
        return {"images": self.ep.decode(z, "pt").float().cpu(), "latents": z.float().cpu()}

    def get(self, name: str, edits: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (S, 3, H, W) in [0, 1], latents (S, C, h, w)); cached images are 8-bit, fresh or read."""
        path = self.cache / f"{name}.safetensors" if self.cache is not None else None
        out = cached_batch(path, lambda: self.make(edits), self.maker)
        return out["images"], out["latents"]


def fill_composition_cache(pipe, bank: DirectionBank, settings: SweepSettings, members: list[int],
                           scales: list[float], cache: Path, rank: int, world: int, progress: bool = True) -> None:
    """This process's share of a composition analysis: batch b is made by the process with rank b % world."""
    runner = _Runner(pipe, bank, settings, cache, maker=f"{rank}/{world}")
    runs = composition_runs(bank, members, scales)
    mine = [r for b, r in enumerate(runs) if b % world == rank]
    for name, edits in tqdm(mine, desc="composition", disable=not progress, leave=False):
        runner.get(name, edits)


@torch.no_grad()
def composition_analysis(pipe, bank: DirectionBank, reader: Reader, settings: SweepSettings,
                         members: list[int], scales: list[float], own_attr: list[int] | None = None,
                         progress: bool = True, cache: Path | None = None, return_arrays: bool = False) -> dict:
    """Interference, additivity and locality of the directions ``members`` of ``bank``.

    Args:
        scales: the scale each member is applied at (its calibrated scale).
        reader: a ``ClipReader`` (additivity then compares CLIP features) or any ``Reader`` (the toy probe, to
            check composition against ground truth; additivity is then left out).
        own_attr: index (into the reader's attributes, groups flattened in order) of each member's own
            attribute (its label); None: the attribute each member changes most when applied alone.
        return_arrays: also return the raw readings under "arrays" (numpy, not JSON): p_base (S, A),
            p_alone (K, S, A), p_pair (K, K, S, A).
        cache: a folder (``composition_cache_dir``) holding the batches (8-bit images and latents): batches
            already there (made by other processes, ``fill_composition_cache``) are read, missing ones made.
    Returns:
        JSON-ready {"tokens", "scales", "interference", "additivity", "additivity_points", "overlap_pixels",
        "overlap_latents", "overlap_predicts_interference", "locality_pixels", "locality_latents"}; K x K
        matrices over the members (diagonals null).
    """
    if len(members) < 2:
        raise NoiseCLRLabError("Composition needs at least two directions.")
    runner = _Runner(pipe, bank, settings, cache)
    runs = composition_runs(bank, members, scales)
    tokens = [bank.tokens[m] for m in members]
    K, S = len(members), settings.seeds
    pairs = list(combinations(range(K), 2))
    out = {name: runner.get(name, edits) for name, edits in tqdm(runs, desc="composition", disable=not progress,
                                                                  leave=False)}
    x0, z0 = out["base"]
    alone = [out[f"a{i:03d}"] for i in range(K)]
    pair_out = {(i, j): out[f"p{i:03d}_{j:03d}"] for i, j in pairs}

    clip = reader.clip if isinstance(reader, ClipReader) else None

    def probs_and_feats(x: torch.Tensor):
        if clip is None:
            return np.concatenate([np.asarray(v) for v in reader.read(x).values()], 1), np.zeros((len(x), 1))
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
    if own_attr is None:
        own_attr = [int(np.abs((pa[i] - p0).mean(0)).argmax()) for i in range(K)]
    inter = interference(p0, pa, pp, own_attr)
    add = additivity(f0, fa, fp) if clip is not None else np.full((K, K), np.nan)
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

    out = {
        "tokens": tokens,
        "scales": [float(v) for v in scales],
        "interference": mat(inter),
        "additivity": mat(add),
        "additivity_points": points,
        "overlap_pixels": mat(np.where(np.eye(K, dtype=bool), np.nan, ov_px)),
        "overlap_latents": mat(np.where(np.eye(K, dtype=bool), np.nan, ov_z)),
        "overlap_predicts_interference": {  # null with fewer than 3 pairs
            "spearman_pixels": _finite(rank_correlation(ov_px[iu], sym[iu])),
            "spearman_latents": _finite(rank_correlation(ov_z[iu], sym[iu])),
        },
        "locality_pixels": [_small(m) for m in maps_px],
        "locality_latents": [_small(m) for m in maps_z],
    }
    if return_arrays:
        out["arrays"] = {"p_base": p0, "p_alone": pa, "p_pair": pp, "own_attr": list(own_attr)}
    return out
