"""Builders of the shipped toy models: data, VAE, text encoder + UNet, open_clip CLIP, factor probe.

Every stage is seeded, resumable (a checkpoint every few minutes, written atomically into the work
folder) and time-boxed, so a long build can be spread over several sessions. ``scripts/build_toy_assets.py``
is the command-line front end; it exports finished stages into ``noiseclr_lab/assets/toy``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from noiseclr_lab.toyworld.domains import get_domain, list_domains

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "toy"


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
    caption_dropout: float = 0.1  # share of empty captions, so that CFG and the empty prompt work
    domain_only: float = 0.1  # share of captions reduced to the domain head ("a cartoon face")
    phrase_keep: float = 0.7  # in partial captions, each factor phrase is kept with this probability
    partial: float = 0.3  # share of partial captions (the rest name every factor)
    probe_batch: int = 128
    clip_batch: int = 128
    clip_width: int = 128  # open_clip tower widths
    clip_embed: int = 64
    minutes: dict = field(default_factory=dict)  # CPU minutes spent per stage (filled while building)


def _log(msg: str) -> None:
    print(f"[build {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def atomic_save(obj: dict, path: Path) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a half-written checkpoint."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load_ckpt(path: Path) -> dict | None:
    return torch.load(path, weights_only=True) if path.exists() else None


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


# --------------------------------------------------------------------------- VAE


def make_vae(cfg: BuildConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=64,
    )


def train_vae(cfg: BuildConfig, minutes: float) -> dict:
    """Train (or continue) the VAE for ``minutes``; returns its measured quality."""
    torch.manual_seed(cfg.seed)
    data = dataset(cfg)
    images = np.concatenate([d["images"] for d in data.values()])
    vae = make_vae(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    ck_path = Path(cfg.work) / "vae.pt"
    ck = _load_ckpt(ck_path)
    step = 0
    if ck:
        vae.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
    g = torch.Generator().manual_seed(cfg.seed + step)
    t0 = last = time.time()
    bar = tqdm(desc="vae", unit="step")
    vae.train()
    while time.time() - t0 < minutes * 60:
        idx = torch.randint(len(images), (cfg.vae_batch,), generator=g).numpy()
        x = to_tensor(images[idx])
        c = cfg.vae_crop
        oy, ox = torch.randint(0, 64 - c + 1, (2,), generator=g).tolist()
        x = x[:, :, oy : oy + c, ox : ox + c]
        # cosine decay over a nominal 6000 steps, floor at 10%
        lr = cfg.vae_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, 6000) / 6000)))
        for pg in opt.param_groups:
            pg["lr"] = lr
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.vae_kl * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.1e}")
        if time.time() - last > 180:
            atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, ck_path)
            last = time.time()
    bar.close()
    atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, ck_path)
    cfg.minutes["vae"] = cfg.minutes.get("vae", 0) + minutes
    return evaluate_vae(cfg, vae) | {"steps": step}


@torch.no_grad()
def evaluate_vae(cfg: BuildConfig, vae=None) -> dict:
    """PSNR of reconstructions (posterior mean) on fresh evaluation renders, and the latent std."""
    if vae is None:
        vae = make_vae(cfg)
        vae.load_state_dict(torch.load(Path(cfg.work) / "vae.pt", weights_only=True)["model"])
    vae.eval()
    res, stds = {}, []
    for name, d in dataset(cfg, "eval").items():
        x = to_tensor(d["images"][:256])
        z = torch.cat([vae.encode(b).latent_dist.mean for b in x.split(64)])
        rec = torch.cat([vae.decode(b).sample for b in z.split(64)])
        res[f"psnr_{name}"] = psnr(rec, x)
        stds.append(z.std().item())
    res["latent_std"] = float(np.mean(stds))
    res["psnr"] = float(np.mean([v for k, v in res.items() if k.startswith("psnr_")]))
    return res


def load_build_vae(cfg: BuildConfig):
    vae = make_vae(cfg)
    vae.load_state_dict(torch.load(Path(cfg.work) / "vae.pt", weights_only=True)["model"])
    return vae.eval().requires_grad_(False)


# --------------------------------------------------------------------------- stages

STAGES = ("vae", "probe", "unet", "clip", "export")


def _record(cfg: BuildConfig, stage: str, result: dict) -> None:
    """Merge a stage's measured result into the work folder's build log (exported as toy_assets.json)."""
    path = Path(cfg.work) / "build_log.json"
    log = json.loads(path.read_text()) if path.exists() else {}
    entry = log.setdefault(stage, {"minutes": 0.0})
    entry["minutes"] = entry["minutes"] + result.pop("minutes", 0.0)
    entry.update(result)
    entry["config"] = {k: v for k, v in asdict(cfg).items() if k not in ("work", "minutes")}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(log, indent=2))
    os.replace(tmp, path)


def run_stage(cfg: BuildConfig, stage: str, minutes: float) -> dict:
    """Train ``stage`` for ``minutes`` (or export), log its measured quality and return it."""
    if stage == "vae":
        result = train_vae(cfg, minutes)
    else:
        raise ValueError(stage)
    result["minutes"] = minutes
    _record(cfg, stage, dict(result))
    return result
