"""Readers: what turns images into named probabilities, so that one sweep can be judged by any of them.

A reader has ``values`` ({group: value names}) and ``read(images) -> {group: (N, n_values) probabilities}``,
each row summing to 1 within its group (a classifier over mutually exclusive values: the toy probe's factors,
or a CLIP zero-shot classifier over a vocabulary group). ``analysis.groundtruth`` measures effects as mean
changes of these probabilities; see docs/design.md, "Adding a reader".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from noiseclr_lab.errors import NoiseCLRLabError


@runtime_checkable
class Reader(Protocol):
    """Images in, named probabilities out."""

    values: Mapping[str, Sequence[str]]  # {group: names of its mutually exclusive values}

    def read(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """images (N, 3, H, W) float in [0, 1] -> {group: (N, len(values[group])) probabilities}."""
        ...


class ProbeReader:
    """The toy world's factor probe as a reader: groups are the domain's factors."""

    def __init__(self, probe):
        self.probe = probe  # a toyworld Probe (``toyworld.load_probe(domain)``)
        self.values = dict(probe.values)

    def read(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        return self.probe.predict(images).probs


def check_reading(reader: Reader, reading: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Validate one ``read`` result against ``reader.values`` for ``n`` images; returns it as float arrays."""
    out = {}
    for group, names in reader.values.items():
        if group not in reading:
            raise NoiseCLRLabError(f"{type(reader).__name__} gave no reading for group {group!r}.")
        p = np.asarray(reading[group], dtype=np.float64)
        if p.shape != (n, len(names)):
            raise NoiseCLRLabError(f"{type(reader).__name__} read group {group!r} as shape {p.shape}, "
                                   f"expected {(n, len(names))}.")
        if not np.isfinite(p).all():  # a NaN would be picked as the "strongest" scale and score as no effect
            raise NoiseCLRLabError(f"{type(reader).__name__} read group {group!r} as NaN or infinite "
                                   "probabilities; check the reader (or the images it read).")
        out[group] = p
    return out
