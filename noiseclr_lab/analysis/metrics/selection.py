"""Unsupervised selection: which of an over-complete bank's directions make a strong, consistent, distinct edit?

From CLIP features of S seeds, unedited (f_base) and edited at each scale i (f_edited), with
df[i, k, s] = f(edited, i, k, s) - f(base, s):

    strength[k] = max_i sqrt(max(0, || mean_s df[i, k, s] ||^2 - tr(cov_s df[i, k, s]) / S))
                  the length of the consistent part of the change: an edit that moves every seed the same way
                  keeps its length in the mean, one that re-rolls each seed differently leaves only the
                  ||mean||^2 a mean of S random changes has by chance, tr(cov) / S, which is subtracted
                  (the unbiased estimate of the squared length of the expected change)
    axis[k]     = sum_i sign(scale_i) mean_s df[i, k, s]   (unit) what the edit does, signed with its scale

Greedy selection walks the directions by strength and keeps one unless its axis is within
``max_similarity`` (|cosine|) of an axis already kept (the same edit, either sign); when fewer than ``keep``
are distinct, the strongest of the rest fill up. No labels are used anywhere.
"""

from __future__ import annotations

import numpy as np

MAX_SIMILARITY = 0.7  # |cos| of two edit axes above which they count as the same edit (45 degrees; at 0.8 a
# direction the probe calls inactive and one that repeats another face factor's edit at |cos| 0.75 each took a
# slot, and seed 0's glasses direction, 18th by strength, was left out)


def edit_signature(f_edited, f_base, scales) -> tuple[np.ndarray, np.ndarray]:
    """f_edited (n, K, S, E), f_base (S, E), scales (n,) -> (strength (K,), unit axis (K, E))."""
    d = np.asarray(f_edited, dtype=np.float64) - np.asarray(f_base, dtype=np.float64)[None, None]
    S = d.shape[2]
    if S < 2:
        raise ValueError(f"the edit signature needs at least 2 seeds, got {S}")
    m = d.mean(2)  # (n, K, E)
    chance = d.var(2, ddof=1).sum(-1) / S  # (n, K) the expected ||mean||^2 of S changes with no common part
    strength = np.sqrt(np.clip((m * m).sum(-1) - chance, 0, None)).max(0)
    sign = np.sign(np.asarray(scales, dtype=np.float64))
    axis = np.einsum("n,nke->ke", sign, m)
    norm = np.linalg.norm(axis, axis=-1, keepdims=True)
    return strength, np.divide(axis, norm, out=np.zeros_like(axis), where=norm > 0)


def greedy_select(strength, axis, keep: int, max_similarity: float = MAX_SIMILARITY) -> tuple[list[int], list[int | None]]:
    """(kept indices in selection order, per direction the kept direction it duplicates or None)."""
    strength, axis = np.asarray(strength, dtype=np.float64), np.asarray(axis, dtype=np.float64)
    K = len(strength)
    if not 1 <= keep <= K:
        raise ValueError(f"keep must be in [1, {K}], got {keep}")
    order = [int(k) for k in np.argsort(-strength, kind="stable")]
    kept: list[int] = []
    dup: list[int | None] = [None] * K

    def repeats(k: int, among: list[int]) -> int | None:
        """The direction of ``among`` whose axis is closest to k's, when within max_similarity; else None."""
        sims = [abs(float(axis[k] @ axis[j])) for j in among]
        return among[int(np.argmax(sims))] if sims and max(sims) > max_similarity else None

    for k in order:
        if len(kept) == keep:
            break
        dup[k] = repeats(k, kept)
        if dup[k] is None:
            kept.append(k)
    distinct = list(kept)
    for k in order:  # fewer distinct edits than keep: the strongest duplicates fill up
        if len(kept) == keep:
            break
        if k not in kept:
            kept.append(k)
    for k in range(K):  # every direction not kept as distinct: which distinct kept edit it repeats, if any
        if k not in distinct and dup[k] is None:
            dup[k] = repeats(k, distinct)
    return kept, dup
