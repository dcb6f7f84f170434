"""DCI-style disentanglement and completeness (after Eastwood & Williams 2018) on the effect matrix.

    P[k] = E[k] / sum_f E[k]      D_k = 1 - H(P[k]) / log F    D = sum_k rho_k D_k,  rho_k = k's share of all effect
    Q[f] = E[:, f] / sum_k E[:, f] C_f = 1 - H(Q[f]) / log K    C = sum_f pi_f C_f,   pi_f = f's share of all effect

The effect matrix stands in for the importance matrix of a regressor; both sums are weighted by the share
of all effect, as disentanglement_lib weights them (a factor that only noise moves barely counts).
"""

from __future__ import annotations

import numpy as np

from noiseclr_lab.analysis.metrics.effect import as_effect


def _entropy(p: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=axis)


def _compute_dci(effect: np.ndarray) -> dict[str, float]:
    e = as_effect(effect)
    K, F = e.shape
    total = e.sum()
    if total <= 0:
        return {"dci_disentanglement": 0.0, "dci_completeness": 0.0}
    row = e.sum(1)
    p = np.divide(e, row[:, None], out=np.zeros_like(e), where=row[:, None] > 0)
    d = 1 - _entropy(p, 1) / np.log(F) if F > 1 else np.ones(K)
    dis = float((row / total * d).sum())
    col = e.sum(0)
    q = np.divide(e, col[None], out=np.zeros_like(e), where=col[None] > 0)
    c = 1 - _entropy(q, 0) / np.log(K) if K > 1 else np.ones(F)
    comp = float((col / total * c).sum())
    return {"dci_disentanglement": dis, "dci_completeness": comp}


def compute_dci(effect) -> dict[str, float]:
    """Effect-weighted disentanglement of directions and completeness of factors, each in [0, 1]."""
    return _compute_dci(effect)

