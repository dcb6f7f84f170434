"""The effect matrix every ground-truth metric reads: E[k, f] >= 0, how much direction k moves factor f (the
largest change of one of f's value probabilities, so at most 1), K directions x F factors."""

from __future__ import annotations

import numpy as np

from noiseclr_lab.errors import NoiseCLRLabError


def as_effect(effect) -> np.ndarray:
    """``effect`` as a float (K, F) array with negative entries set to 0; a matrix of another rank or with
    NaN / infinite entries is refused (a metric of it would be NaN or silently wrong)."""
    e = np.asarray(effect, dtype=np.float64)
    if e.ndim != 2:
        raise NoiseCLRLabError(f"An effect matrix is (directions, factors); got an array of shape {e.shape}.")
    if not np.isfinite(e).all():
        raise NoiseCLRLabError("The effect matrix holds NaN or infinite entries; its metrics would be meaningless.")
    return np.clip(e, 0, None)
