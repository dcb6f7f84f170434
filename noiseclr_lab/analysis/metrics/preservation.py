"""Preservation: how much of the unedited image an edit keeps.

    clip_similarity[i, k] = mean_s cos(f(edited, s), f(base, s))        1 = the same picture to CLIP
    pixel_rmse[i, k]      = mean_s sqrt(mean_pixels (x_edited - x_base)^2)   images in [0, 1]
"""

from __future__ import annotations

import numpy as np


def clip_similarity(f_edited, f_base) -> np.ndarray:
    """f_edited (n, K, S, E), f_base (S, E), unit features -> (n, K) mean cosine to the unedited image."""
    return np.einsum("nkse,se->nks", np.asarray(f_edited, dtype=np.float64),
                     np.asarray(f_base, dtype=np.float64)).mean(-1)


def pixel_rmse(x_edited, x_base) -> np.ndarray:
    """x_edited (N, S, ...) and x_base (S, ...) images in [0, 1] -> (N,) mean over seeds of the per-image RMSE."""
    a, b = np.asarray(x_edited, dtype=np.float64), np.asarray(x_base, dtype=np.float64)[None]
    err = (a - b).reshape(a.shape[0], a.shape[1], -1)
    return np.sqrt((err**2).mean(-1)).mean(-1)
