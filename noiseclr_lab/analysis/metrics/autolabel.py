"""Auto-labels: the attribute a direction explains best, with its sign and a confidence margin.

For direction k, every (scale i, attribute a) scores the shrunk gain g = R[i, k, a] - z * SE[i, k, a] (how
surely the edit raises p_a). The label is the best-scoring attribute; its sign is the sign of the scale at
which it is gained; the confidence is its gain minus the best gain of any attribute of another group (a
direction that raises "smiling" and "blond hair" alike is not confidently either). Directional CLIP
similarity (the cosine between the mean image-feature change and the label's text-feature change, value
minus its group's mean) is reported beside it as a second, independent opinion.
"""

from __future__ import annotations

import numpy as np


def auto_labels(mean, se, scales, groups: list[int], noise_z: float = 1.0) -> dict[str, np.ndarray]:
    """mean, se (n, K, A), scales (n,) -> {"attribute" (K,), "sign" (K,) +-1, "gain" (K,), "confidence" (K,),
    "scale_index" (K,)}."""
    m, s = np.asarray(mean, dtype=np.float64), np.asarray(se, dtype=np.float64)
    gain = m - noise_z * s  # (n, K, A)
    n, K, A = gain.shape
    best_over_scales = gain.max(0)  # (K, A)
    attr = best_over_scales.argmax(1)
    scale_idx = gain[:, np.arange(K), attr].argmax(0)
    groups = np.asarray(groups)
    other = groups[None, :] != groups[attr][:, None]  # (K, A)
    runner_up = np.where(other, best_over_scales, -np.inf).max(1)
    top = best_over_scales[np.arange(K), attr]
    confidence = top - np.where(np.isfinite(runner_up), runner_up, 0.0)
    sign = np.sign(np.asarray(scales, dtype=np.float64)[scale_idx])
    return {"attribute": attr, "sign": sign, "gain": top, "confidence": confidence, "scale_index": scale_idx}


def directional_similarity(feature_change, text_change) -> np.ndarray:
    """feature_change (..., E) mean image-feature change, text_change (A, E) -> (..., A) cosines."""
    f = np.asarray(feature_change, dtype=np.float64)
    t = np.asarray(text_change, dtype=np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=-1, keepdims=True), 1e-12)
    t = t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
    return f @ t.T
