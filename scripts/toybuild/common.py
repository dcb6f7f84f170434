"""Shared pieces of the toy-asset build: the build config, checkpoints, time boxes and the rendered data."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from noiseclr_lab.toyworld.domains import get_domain, list_domains


@dataclass
class BuildConfig:
    """Everything that decides the toy assets; stored in toy_assets.json."""

    work: str = str(Path.home() / ".cache" / "noiseclr_lab" / "toy_build")  # checkpoints and caches
    device: str = "cpu"  # where to train
    seed: int = 0  # master seed: training data use seed, evaluation data seed + 1000
    n_train: int = 12000  # rendered training images per domain
    vae_channels: tuple[int, ...] = (32, 64, 64)  # AutoencoderKL block widths; 2 downsamples: 64 px -> 16x16x4
    vae_crop: int = 32  # VAE trains on random crops (it is fully convolutional; 3x cheaper than 64 px)
    vae_batch: int = 32
    vae_lr: float = 2e-3
    vae_kl: float = 1e-6  # KL weight: tiny, the latent only needs to be roughly normal
    text_hidden: int = 64  # CLIPTextModel hidden size (= UNet cross-attention dim)
    text_layers: int = 2
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_batch: int = 64
    unet_lr: float = 1e-3
    unet_decay_steps: int = 7000  # cosine decay of the UNet lr to 10% over this many steps (constant after)
    unet_layout_from: int = 7334  # from this step on, high-noise steps get extra weight in x0 space (below)
    unet_layout_weight: float = 0.5  # extra loss weight * min(1/SNR, 10) for t >= 400: the epsilon loss scales a
    # layout error by the SNR (~0.02 at t = 900), so where a shape goes is barely trained without it
    unet_layout_lr_from: int = 8573  # from this step on the lr is unet_layout_lr (constant) instead of the decayed one
    unet_layout_lr: float = 3e-4
    caption_dropout: float = 0.1  # share of empty captions, so that CFG and the empty prompt work
    domain_only: float = 0.1  # share of captions reduced to the domain head ("a cartoon face")
    phrase_keep: float = 0.7  # in partial captions, each factor phrase is kept with this probability
    partial: float = 0.3  # share of partial captions (the rest name every factor)
    bare: float = 0.1  # share of bare captions: one or two attribute phrases without the domain head ("red hair");
    # they make a lone token a meaningful prompt, which is how NoiseCLR applies a direction ("<d3>" alone)
    probe_batch: int = 128
    clip_batch: int = 128
    clip_width: int = 128  # open_clip tower widths
    clip_counterfactual: float = 0.5  # share of a CLIP batch made of pairs that differ in one factor only
    clip_decay_from: int = 2121  # CLIP lr is constant until this step, then decays (cosine) to 10% over
    clip_decay_steps: int = 1500  # this many steps; from clip_decay_from on, every other batch is a scenes batch
    # (a face and a shape each fill a quarter of a scene, so their small attributes need the most steps)
    clip_focus_from: int = 3430  # focus phase: lr restarts at clip_focus_lr and decays (cosine, to 10%) over
    clip_focus_steps: int = 1300  # this many steps; a third of the plain captions name one attribute only, and
    clip_focus_lr: float = 2e-4  # counterfactual twins differ in a factor of clip_twin_focus three times as often
    clip_twin_focus: tuple[str, ...] = ("shape", "expression")
    clip_shape_from: int = 4840  # second focus phase: lr restarts at clip_focus_lr, decays over clip_focus_steps;
    # three of every four batches are scenes and twins differ in the shape kind three times as often as before
    clip_embed: int = 64


def _log(msg: str) -> None:
    print(f"[build {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_ckpt(path: Path) -> dict | None:
    return torch.load(path, weights_only=True, map_location="cpu") if path.exists() else None  # any device's


def cosine_floor(done: float, total: float) -> float:
    """Cosine decay factor from 1 to 0.1 over ``total`` steps (0.1 after), used by every builder's lr schedule."""
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(done, total) / total))


def timeboxed(name: str, minutes: float, step: int, one_step, save, save_every: float = 180.0) -> int:
    """Run ``one_step(step) -> postfix dict`` until ``minutes`` pass (at least one step: every call makes
    progress), calling ``save(step)`` every ``save_every`` seconds and at the end; returns the step count
    reached."""
    t0 = last = time.time()
    bar = tqdm(desc=name, unit="step")
    while True:
        postfix = one_step(step)
        step += 1
        bar.update(1)
        bar.set_postfix(**postfix)
        if time.time() - t0 >= minutes * 60:
            break
        if time.time() - last > save_every:
            save(step)
            last = time.time()
    bar.close()
    save(step)
    return step


# --------------------------------------------------------------------------- data


def dataset(cfg: BuildConfig, split: str = "train") -> dict:
    """Rendered images and labels of every domain, cached as uint8 arrays in the work folder.

    Returns {domain: {"images": (N, 64, 64, 3) uint8, "records": list, "labels": {factor: (N,)}}}.
    """
    work = Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    n = cfg.n_train if split == "train" else 1000
    seed = cfg.seed if split == "train" else cfg.seed + 1000
    out = {}
    for i, name in enumerate(list_domains()):
        path = work / f"data_{split}_{name}_{n}_{seed}.npz"
        dom = get_domain(name)
        if path.exists():
            z = np.load(path, allow_pickle=False)
            images, records = z["images"], json.loads(str(z["records"]))
        else:
            records = dom.sample(np.random.default_rng([seed, i]), n)
            images = np.stack([np.asarray(im) for im in tqdm(dom.render(records), desc=f"render {name}", leave=False)])
            tmp = work / f"{path.stem}.tmp.npz"
            np.savez(tmp, images=images, records=json.dumps(records))
            os.replace(tmp, path)
        out[name] = {"images": images, "records": records, "labels": dom.labels(records)}
    return out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR in dB of images in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).flatten(1).mean(1)
    return float((-10 * torch.log10(mse.clamp_min(1e-10))).mean())
