"""MIG-style gap (after Chen et al. 2018): is each factor moved by one direction far more than by any other?

    gap_f = (e1_f - e2_f) / e1_f   when e1_f >= min_effect (0.2, modularity's visible-effect bar), else 0

with e1 >= e2 the two largest effects on factor f over the directions; the mean over factors. Chen et al.
divide the gap in mutual information by the factor's entropy, the most a code can know of it; the
analogue here would divide by 1, the largest possible effect, and so mix the size of the control into
its exclusiveness. Dividing by e1 keeps the gap a pure exclusiveness score, and the visibility bar keeps
factors that nothing visibly moves at 0 (otherwise a factor nudged by 0.01 by one direction alone would
score a perfect 1). How large the effects are is what coverage and the calibrated scales report.
Duplicated directions drive it to 0.
"""

from __future__ import annotations

import numpy as np

from noiseclr_lab.analysis.metrics.effect import as_effect
from noiseclr_lab.analysis.metrics.modularity import MIN_EFFECT


def _compute_mig(effect: np.ndarray, min_effect: float = MIN_EFFECT) -> dict[str, float]:
    e = np.sort(as_effect(effect), axis=0)[::-1]  # (K, F), descending per factor
    if e.size == 0:
        return {"mig_style": 0.0}
    e1 = e[0]
    e2 = e[1] if e.shape[0] > 1 else np.zeros_like(e1)
    gap = np.divide(e1 - e2, e1, out=np.zeros_like(e1), where=e1 >= min_effect)
    return {"mig_style": float(gap.mean())}


def compute_mig(effect, min_effect: float = MIN_EFFECT) -> dict[str, float]:
    """Mean normalised gap between the best and second-best direction per factor (0 for a factor no
    direction moves by ``min_effect``)."""
    return _compute_mig(effect, min_effect)
