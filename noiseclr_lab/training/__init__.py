"""Training: config, data and latent cache, the NoiseCLR loss (both schedules), the accelerate trainer.

Names are imported lazily, so that reading a config or a preset (the CLI's argument parser) does not load
torch, diffusers and transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from noiseclr_lab._lazy import lazy_exports

_LAZY = {
    "TrainConfig": "noiseclr_lab.training.config",
    "list_presets": "noiseclr_lab.training.config",
    "load_preset": "noiseclr_lab.training.config",
    "noiseclr_loss": "noiseclr_lab.training.loss",
    "Trainer": "noiseclr_lab.training.trainer",
    "train": "noiseclr_lab.training.trainer",
    "validation_grid": "noiseclr_lab.training.trainer",
}

if TYPE_CHECKING:
    from noiseclr_lab.training.config import TrainConfig, list_presets, load_preset
    from noiseclr_lab.training.loss import noiseclr_loss
    from noiseclr_lab.training.trainer import Trainer, train, validation_grid

__all__ = ["TrainConfig", "Trainer", "list_presets", "load_preset", "noiseclr_loss", "train", "validation_grid"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
