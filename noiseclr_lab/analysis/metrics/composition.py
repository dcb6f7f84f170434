"""Composition measures: does adding direction j change what direction i does, are effects additive, and do
directions change the same places?

With p_a the probability of direction i's own (label) attribute a_i, averaged over seeds:

    own_i      = p_a(i alone) - p_a(unedited)                 what i does to its attribute
    own_i|j    = p_a(i and j) - p_a(j alone)                  what i does once j is there too
    I[i, j]    = |own_i|j - own_i| / max(|own_i|, eps)        interference (0: j leaves i's effect intact)

Additivity compares CLIP feature changes: cos(f(i+j) - f(0), (f(i) - f(0)) + (f(j) - f(0))), averaged over
seeds (1: the composed edit is the sum of the two). Locality maps m_i (mean absolute change per position,
over seeds and channels) overlap as the histogram intersection sum(min(m_i / sum m_i, m_j / sum m_j)).
"""

from __future__ import annotations

import numpy as np

EPS = 1e-3  # an own effect smaller than this is no effect: interference relative to it is not meaningful


def interference(p_base, p_alone, p_pair, own_attr) -> np.ndarray:
    """p_base (S, A), p_alone (K, S, A), p_pair (K, K, S, A) with p_pair[i, j] = p_pair[j, i] the composed
    images (diagonal unused), own_attr (K,) -> (K, K) interference I[i, j] (nan on the diagonal)."""
    base, alone, pair = (np.asarray(x, dtype=np.float64) for x in (p_base, p_alone, p_pair))
    K = alone.shape[0]
    out = np.full((K, K), np.nan)
    for i in range(K):
        a = int(own_attr[i])
        own = (alone[i, :, a] - base[:, a]).mean()
        for j in range(K):
            if i != j:
                with_j = (pair[i, j, :, a] - alone[j, :, a]).mean()
                out[i, j] = abs(with_j - own) / max(abs(own), EPS)
    return out


def additivity(f_base, f_alone, f_pair) -> np.ndarray:
    """f_base (S, E), f_alone (K, S, E), f_pair (K, K, S, E) -> (K, K) mean cosine between the composed change
    and the sum of the single changes (nan on the diagonal)."""
    base, alone, pair = (np.asarray(x, dtype=np.float64) for x in (f_base, f_alone, f_pair))
    K = alone.shape[0]
    out = np.full((K, K), np.nan)
    for i in range(K):
        for j in range(K):
            if i != j:
                pred = (alone[i] - base) + (alone[j] - base)
                got = pair[i, j] - base
                den = np.linalg.norm(pred, axis=-1) * np.linalg.norm(got, axis=-1)
                out[i, j] = float(np.mean(np.where(den > 1e-12, (pred * got).sum(-1) / np.maximum(den, 1e-12), 0.0)))
    return out


def change_map(x_edited, x_base) -> np.ndarray:
    """x_edited, x_base (S, C, H, W) -> (H, W) mean absolute change over seeds and channels."""
    return np.abs(np.asarray(x_edited, dtype=np.float64) - np.asarray(x_base, dtype=np.float64)).mean((0, 1))


def overlap(maps) -> np.ndarray:
    """maps (K, H, W) -> (K, K) histogram intersection of the maps normalised to sum 1 (1 on the diagonal
    for any non-zero map; 0 between maps that change disjoint places)."""
    m = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    total = m.sum(1, keepdims=True)
    m = np.divide(m, total, out=np.zeros_like(m), where=total > 0)
    return np.minimum(m[:, None], m[None]).sum(-1)


def rank_correlation(x, y) -> float:
    """Spearman correlation of two equal-length arrays (nan entries dropped; nan when fewer than 3 remain)."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")

    def ranks(v):
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for val in np.unique(v):  # average ranks of ties
            tie = v == val
            r[tie] = r[tie].mean()
        return r

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])
