"""Training: config, data and latent cache, the NoiseCLR loss (both schedules), the accelerate trainer."""

from noiseclr_lab.training.config import TrainConfig, list_presets, load_preset
from noiseclr_lab.training.loss import noiseclr_loss
from noiseclr_lab.training.trainer import Trainer, train

__all__ = ["TrainConfig", "Trainer", "list_presets", "load_preset", "noiseclr_loss", "train"]
