"""CLIP re-scoring (the paper's Table 1 protocol) and effect size: how an edit changes zero-shot probabilities.

    delta[i, k, s, a] = p_a(edited by direction k at scale i, seed s) - p_a(unedited, seed s)
    R[i, k, a]        = mean_s delta,   SE[i, k, a] = std_s delta / sqrt(S)

For a direction, its target is the attribute it raises most; its off-target change is the mean, over the
other groups, of the group's largest |mean change|. Per group (factor) the effect is

    E[i, k, g] = max_{a in g} max(0, |R[i, k, a]| - z * SE[i, k, a])

the same statistic the ground-truth probe effect uses, so the two matrices are comparable.
"""

from __future__ import annotations

import numpy as np


def rescoring(p_edited, p_base) -> tuple[np.ndarray, np.ndarray]:
    """p_edited (n, K, S, A), p_base (S, A) -> (mean change (n, K, A), standard error over seeds (n, K, A))."""
    d = np.asarray(p_edited, dtype=np.float64) - np.asarray(p_base, dtype=np.float64)[None, None]
    S = d.shape[2]
    se = d.std(2, ddof=1) / np.sqrt(S) if S > 1 else np.zeros_like(d[:, :, 0])
    return d.mean(2), se


def group_effect(mean, se, groups: list[int], noise_z: float = 1.0) -> np.ndarray:
    """mean, se (..., A); groups[a] = group index of attribute a -> (..., G) largest shrunk |change| per group."""
    mean, se = np.asarray(mean, dtype=np.float64), np.asarray(se, dtype=np.float64)
    shrunk = np.clip(np.abs(mean) - noise_z * se, 0, None)
    groups = np.asarray(groups)
    return np.stack([shrunk[..., groups == g].max(-1) for g in range(int(groups.max()) + 1)], -1)


def strongest_scale(effect) -> np.ndarray:
    """effect (n, K, G) -> (K,) index of the scale where each direction's largest group effect peaks."""
    return np.asarray(effect).max(-1).argmax(0)


def target_and_off_target(mean, groups: list[int]) -> dict[str, np.ndarray]:
    """mean (K, A) change at one scale per direction -> target attribute (K,), its gain (K,), and the mean over
    the other groups of their largest |change| (K,)."""
    m = np.asarray(mean, dtype=np.float64)
    groups = np.asarray(groups)
    target = m.argmax(1)
    K, G = m.shape[0], int(groups.max()) + 1
    per_group = np.stack([np.abs(m[:, groups == g]).max(1) for g in range(G)], 1)  # (K, G)
    others = np.ones((K, G), dtype=bool)
    others[np.arange(K), groups[target]] = False
    off = (per_group * others).sum(1) / np.maximum(others.sum(1), 1)
    return {"target": target, "gain": m[np.arange(K), target], "off_target": off}
