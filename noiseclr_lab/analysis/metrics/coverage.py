"""Coverage: how many factors have a direction of their own (main factor f, modularity >= 0.7, effect >= 0.2)."""

from __future__ import annotations

import numpy as np

from noiseclr_lab.analysis.metrics.effect import as_effect
from noiseclr_lab.analysis.metrics.modularity import MIN_EFFECT, per_direction

MIN_MODULARITY = 0.7


def covered_factors(effect: np.ndarray, min_modularity: float = MIN_MODULARITY, min_effect: float = MIN_EFFECT) -> list[int]:
    """Indices of the factors that some clean, active direction moves most."""
    mod, main, active = per_direction(effect, min_effect)
    return sorted({int(main[k]) for k in range(len(mod)) if active[k] and mod[k] >= min_modularity})


def _compute_coverage(effect: np.ndarray, min_modularity: float = MIN_MODULARITY, min_effect: float = MIN_EFFECT) -> dict[str, float]:
    cov = covered_factors(effect, min_modularity, min_effect)
    return {"coverage": float(len(cov)), "coverage_frac": len(cov) / effect.shape[1] if effect.shape[1] else 0.0}


def compute_coverage(effect, min_modularity: float = MIN_MODULARITY, min_effect: float = MIN_EFFECT) -> dict[str, float]:
    """Covered factor count and fraction."""
    return _compute_coverage(as_effect(effect), min_modularity, min_effect)

