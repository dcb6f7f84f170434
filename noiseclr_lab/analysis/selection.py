"""Keep the strongest distinct directions of an over-complete bank, without labels (docs/design.md,
"Selection"; the measures are ``analysis.metrics.selection``).

Every direction is applied at -scale and +scale to S seeds (one sweep, edits after the usual warm-up); a
CLIP model reads the images; directions are ranked by the length of their mean CLIP feature change and
kept greedily unless they repeat an edit already kept. A training run with ``select = N`` does this after
training (``workflows.train``): the run's ``directions.safetensors`` then holds the N kept directions (their
original tokens), ``directions_all.safetensors`` all K, ``selection.json`` every direction's scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from noiseclr_lab.analysis.clip import ClipModel
from noiseclr_lab.analysis.metrics.selection import MAX_SIMILARITY, edit_signature, greedy_select
from noiseclr_lab.analysis.sweep import SweepSettings, iter_sweep
from noiseclr_lab.directions import DirectionBank
from noiseclr_lab.editing import EditPipeline
from noiseclr_lab.errors import NoiseCLRLabError

SELECTION_SCHEMA = "noiseclr_lab.selection/1"


@dataclass
class Selection:
    """Which directions were kept and why."""

    kept: list[int]  # indices into the full bank, in selection order (strongest first)
    tokens: list[str]  # the full bank's tokens
    strength: np.ndarray  # (K,) length of the mean CLIP feature change at the stronger scale
    duplicates: list[int | None]  # per direction: the kept direction whose edit it repeats, or None
    settings: SweepSettings
    clip: str  # the CLIP model's fingerprint
    max_similarity: float

    bank: str = ""  # the content hash of the bank selected from (DirectionBank.content_hash)

    def as_dict(self) -> dict:
        return {
            "schema": SELECTION_SCHEMA, "bank": self.bank, "settings": self.settings.as_dict(), "clip": self.clip,
            "max_similarity": self.max_similarity, "kept": [self.tokens[k] for k in self.kept],
            "directions": [{"token": t, "strength": round(float(self.strength[k]), 5), "kept": k in self.kept,
                            "rank": (self.kept.index(k) + 1) if k in self.kept else None,
                            "repeats": None if self.duplicates[k] is None else self.tokens[self.duplicates[k]]}
                           for k, t in enumerate(self.tokens)],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Selection:
        """The selection ``as_dict`` wrote (``selection.json``)."""
        tokens = [r["token"] for r in d["directions"]]
        return cls(kept=[tokens.index(t) for t in d["kept"]], tokens=tokens,
                   strength=np.array([r["strength"] for r in d["directions"]]),
                   duplicates=[None if r["repeats"] is None else tokens.index(r["repeats"]) for r in d["directions"]],
                   settings=SweepSettings.from_dict(d["settings"]), clip=d["clip"],
                   max_similarity=float(d["max_similarity"]), bank=d.get("bank", ""))


@torch.no_grad()
def select_directions(pipe, bank: DirectionBank, clip: ClipModel, keep: int, settings: SweepSettings,
                      max_similarity: float = MAX_SIMILARITY, progress: bool = True, observe=None) -> Selection:
    """Rank ``bank``'s directions by their consistent CLIP effect over ``settings`` (scales and seeds) and keep
    ``keep`` distinct ones (see the module docstring). ``observe(k, images)`` (optional) sees every batch of the
    sweep as ``analysis.sweep.iter_sweep`` yields it (k None: the unedited images), e.g. to draw a grid from them."""
    if not 1 <= keep <= len(bank):
        raise NoiseCLRLabError(f"Cannot keep {keep} of {len(bank)} directions; choose 1 to {len(bank)}.")
    if settings.seeds < 2:
        raise NoiseCLRLabError(f"Selection needs at least 2 seeds, got {settings.seeds}.")
    n, S = len(settings.scales), settings.seeds
    f_base, f_edited = None, None
    for k, images in iter_sweep(EditPipeline(pipe, bank), settings, progress):
        if observe is not None:
            observe(k, images)
        f = clip.encode_images(images).double().numpy()
        if k is None:
            f_base = f
            f_edited = np.zeros((n, len(bank), S, f.shape[-1]))
        else:
            f_edited[:, k] = f.reshape(n, S, -1)
    strength, axis = edit_signature(f_edited, f_base, settings.scales)
    kept, dup = greedy_select(strength, axis, keep, max_similarity)
    return Selection(kept=kept, tokens=list(bank.tokens), strength=strength, duplicates=dup, settings=settings,
                     clip=clip.fingerprint(), max_similarity=max_similarity, bank=bank.content_hash())
