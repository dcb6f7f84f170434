"""Modularity: does each direction move one factor only?

    m_k = E[k, f*] / sum_f E[k, f],   f* = argmax_f E[k, f]

the share of a direction's effect that lands on its main factor: 1 for a direction that moves a single
factor, 0.5 for one that moves two equally, 1/F when it moves all equally. (Ridgeway & Zemel's (2018)
squared-ratio modularity is more lenient: it scores a direction moving two factors equally 1 - 1/(F-1),
0.8 for six factors, which would pass our 0.7 bar.) Directions whose largest effect is below
``min_effect`` are inactive and score 0.
"""

from __future__ import annotations

import numpy as np

from noiseclr_lab.analysis.metrics.effect import as_effect

MIN_EFFECT = 0.2  # a direction that moves no factor by this much (the largest change of one value's
# probability, as the effect matrix holds it) does nothing visible


def per_direction(effect: np.ndarray, min_effect: float = MIN_EFFECT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(modularity (K,), main factor index (K,), active mask (K,))."""
    e = as_effect(effect)
    K = e.shape[0]
    if e.size == 0:
        return np.zeros(K), np.zeros(K, dtype=int), np.zeros(K, dtype=bool)
    main = e.argmax(1)
    top = e[np.arange(K), main]
    total = e.sum(1)
    mod = np.divide(top, total, out=np.zeros_like(top), where=total > 0)
    active = top >= min_effect
    return np.where(active, mod, 0.0), main, active


def _compute_modularity(effect: np.ndarray, min_effect: float = MIN_EFFECT) -> dict[str, float]:
    mod, _, active = per_direction(effect, min_effect)
    return {
        "modularity_mean": float(mod[active].mean()) if active.any() else 0.0,
        "modularity_all": float(mod.mean()) if mod.size else 0.0,
        "active_directions": float(active.sum()),
    }


def compute_modularity(effect, min_effect: float = MIN_EFFECT) -> dict[str, float]:
    """Mean modularity of the active directions (and of all, inactive as 0), and the active count."""
    return _compute_modularity(effect, min_effect)

