"""The factor probe: a small CNN with one classification head per factor of a toy domain.

It is the ground truth reader of the toy world: apply a direction, and the probe says which factors moved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.toyworld.domains import RESOLUTION, get_domain


class FactorProbe(nn.Module):
    """CNN trunk (64 px -> 4x4x128, position kept by flattening) + one linear head per factor."""

    def __init__(self, factor_sizes: dict[str, int], width: int = 32):
        super().__init__()
        w = width
        self.trunk = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
            nn.Conv2d(w, w, 3, stride=2, padding=1), nn.GroupNorm(8, w), nn.SiLU(),  # 32
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(),  # 16
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * w), nn.SiLU(),  # 8
            nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * w), nn.SiLU(),  # 4
            nn.Flatten(), nn.Linear(4 * w * 16, 256), nn.SiLU(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(256, n) for name, n in factor_sizes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (N, 3, 64, 64) in [-1, 1] -> {factor: (N, n_values) logits}."""
        h = self.trunk(x)
        return {name: head(h) for name, head in self.heads.items()}


def images_to_tensor(images) -> torch.Tensor:
    """PIL images, a (N, H, W, 3) uint8 array, or a (N, 3, H, W) float tensor in [0, 1] -> (N, 3, 64, 64) in [-1, 1]."""
    if isinstance(images, torch.Tensor):
        x = images.float()
        if x.ndim != 4 or x.shape[1] != 3:
            raise NoiseCLRLabError(f"Expected images of shape (N, 3, H, W), got {tuple(x.shape)}.")
        x = x * 2 - 1
    elif isinstance(images, np.ndarray):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    else:
        arr = [np.asarray(im.convert("RGB").resize((RESOLUTION, RESOLUTION), Image.Resampling.BILINEAR)
                          if isinstance(im, Image.Image) else im) for im in images]
        x = torch.from_numpy(np.stack(arr)).permute(0, 3, 1, 2).float() / 127.5 - 1
    if x.shape[-1] != RESOLUTION or x.shape[-2] != RESOLUTION:
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True, align_corners=False)
    return x


@dataclass
class ProbeReading:
    """What the probe reads from N images, per factor."""

    labels: dict[str, np.ndarray]  # {factor: (N,) int index into values}
    probs: dict[str, np.ndarray]  # {factor: (N, n_values) softmax probabilities}
    values: dict[str, tuple[str, ...]]  # {factor: value names}

    def named(self) -> list[dict[str, str]]:
        """Per image {factor: value name}."""
        n = len(next(iter(self.labels.values())))
        return [{f: self.values[f][int(self.labels[f][i])] for f in self.labels} for i in range(n)]

    def __getitem__(self, factor: str) -> dict:
        return {"labels": self.labels[factor], "probs": self.probs[factor]}


class Probe:
    """A trained FactorProbe for one domain, with ``predict`` on images."""

    def __init__(self, domain: str, model: FactorProbe, device: str | torch.device = "cpu"):
        self.domain = domain
        self.values = {f.name: f.values for f in get_domain(domain).factors}
        self.model = model.eval().to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def predict(self, images, batch_size: int = 256) -> ProbeReading:
        """Read every factor: images as PIL list, uint8 array (N, H, W, 3) or float tensor (N, 3, H, W) in [0, 1]."""
        x = images_to_tensor(images)
        probs: dict[str, list] = {f: [] for f in self.values}
        for chunk in x.split(batch_size):
            for f, logits in self.model(chunk.to(self.device)).items():
                probs[f].append(logits.float().softmax(-1).cpu())
        p = {f: torch.cat(v).numpy() for f, v in probs.items()}
        return ProbeReading(labels={f: v.argmax(-1) for f, v in p.items()}, probs=p, values=self.values)


def load_probe_from(folder: Path, domain: str, device: str | torch.device = "cpu") -> Probe:
    """Load ``probe_<domain>`` from ``folder``."""
    from safetensors.torch import load_file

    cfg_path = folder / f"probe_{domain}.json"
    if not cfg_path.is_file():
        raise NoiseCLRLabError(f"No factor probe for domain {domain!r} in {folder}.")
    info = json.loads(cfg_path.read_text())
    model = FactorProbe({f: len(v) for f, v in info["factors"].items()}, width=info["width"])
    state = load_file(str(folder / f"probe_{domain}.safetensors"))
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return Probe(domain, model, device)
