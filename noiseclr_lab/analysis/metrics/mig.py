"""MIG-style gap (after Chen et al. 2018): is each factor moved by one direction far more than by any other?

    gap_f = (e1_f - e2_f) / e1_f, e1 >= e2 the two largest effects on factor f over directions

Averaged over factors (0 for a factor nothing moves). Duplicated directions drive it to 0.
"""

from __future__ import annotations

import numpy as np


def _compute_mig(effect: np.ndarray) -> dict[str, float]:
    e = np.sort(np.asarray(effect, dtype=np.float64), axis=0)[::-1]  # (K, F), descending per factor
    if e.shape[0] < 2:
        return {"mig_style": float((e[0] > 0).mean())}
    e1, e2 = e[0], e[1]
    gap = np.divide(e1 - e2, e1, out=np.zeros_like(e1), where=e1 > 0)
    return {"mig_style": float(gap.mean())}


def compute_mig(effect) -> dict[str, float]:
    """Mean normalised gap between the best and second-best direction per factor."""
    return _compute_mig(np.asarray(effect))

