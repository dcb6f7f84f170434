"""Calibrated scales: per direction, the scale at which its effect reaches a common target.

The same scale is gentle for one direction and violent for another. From a direction's effect-vs-scale
curve (the analysis uses the shrunk gain of the direction's label attribute) on the side of its label's
sign (the curve is 0 at scale 0), the calibrated scale is the smallest |s|
at which the curve reaches ``target``, linearly interpolated between the measured scales; a direction whose
curve never reaches it gets its strongest measured scale on that side and ``reached`` False.
"""

from __future__ import annotations

import numpy as np

DEFAULT_TARGET = 0.25  # largest change of an attribute's probability a calibrated edit should make


def calibrated_scales(curve, scales, signs, target: float = DEFAULT_TARGET) -> tuple[np.ndarray, np.ndarray]:
    """curve (n, K) effect at each scale, scales (n,), signs (K,) +-1 -> (calibrated scale (K,), reached (K,))."""
    if not 0 < target:
        raise ValueError(f"calibration target must be positive, got {target}")
    c = np.asarray(curve, dtype=np.float64)
    s = np.asarray(scales, dtype=np.float64)
    K = c.shape[1]
    out, reached = np.zeros(K), np.zeros(K, dtype=bool)
    for k in range(K):
        sign = 1.0 if signs[k] >= 0 else -1.0
        side = np.flatnonzero(np.sign(s) == sign)
        if len(side) == 0:
            out[k] = np.nan
            continue
        order = side[np.argsort(np.abs(s[side]))]
        xs = np.concatenate([[0.0], np.abs(s[order])])
        ys = np.concatenate([[0.0], c[order, k]])
        hit = np.flatnonzero(ys >= target)
        if len(hit) == 0:
            out[k] = sign * xs[int(ys.argmax())] if ys.max() > 0 else sign * xs[-1]
            continue
        j = int(hit[0])
        x0, x1, y0, y1 = xs[j - 1], xs[j], ys[j - 1], ys[j]
        out[k] = sign * (x0 + (target - y0) / (y1 - y0) * (x1 - x0))
        reached[k] = True
    return out, reached
