"""Consistency: does a direction move every seed the same way in CLIP space?

    c[i, k] = mean_{s != s'} cos(f(edited, s) - f(base, s), f(edited, s') - f(base, s'))

A semantic edit changes every image along the same feature direction (c near 1); a direction that only
perturbs (re-rolls details) moves each seed somewhere else (c near 0). It needs no labels, so it ranks and
selects directions on any model. ``ranking_auc`` scores such a ranking against known labels.
"""

from __future__ import annotations

import numpy as np

MIN_CHANGE = 1e-5  # feature changes shorter than this (unit features) are float noise of batching, not an edit


def consistency(f_edited, f_base) -> np.ndarray:
    """f_edited (n, K, S, E), f_base (S, E) -> (n, K) mean pairwise cosine of the per-seed feature changes
    (a seed whose change is shorter than ``MIN_CHANGE`` counts as no change: cosine 0)."""
    d = np.asarray(f_edited, dtype=np.float64) - np.asarray(f_base, dtype=np.float64)[None, None]
    norm = np.linalg.norm(d, axis=-1, keepdims=True)
    d = np.where(norm > MIN_CHANGE, d / np.maximum(norm, MIN_CHANGE), 0.0)
    S = d.shape[2]
    if S < 2:
        return np.zeros(d.shape[:2])
    gram = np.einsum("nkse,nkte->nkst", d, d)
    off = gram.sum((-1, -2)) - np.trace(gram, axis1=-2, axis2=-1)
    return off / (S * (S - 1))


def ranking_auc(scores, positive) -> float:
    """Probability that a random positive outranks a random negative (ties count half); nan without both."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)
