"""Stage ``vae``: the toy AutoencoderKL (64 px -> 16x16x4) and the latent cache every later stage reads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from noiseclr_lab.fileio import save_torch_atomic
from toybuild.common import BuildConfig, cosine_floor, dataset, load_ckpt, psnr, timeboxed, to_tensor

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
    ck = load_ckpt(ck_path)
    step = 0
    if ck:
        vae.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
    g = torch.Generator().manual_seed(cfg.seed + step)
    vae.train()

    def one_step(step):
        idx = torch.randint(len(images), (cfg.vae_batch,), generator=g).numpy()
        x = to_tensor(images[idx])
        c = cfg.vae_crop
        oy, ox = torch.randint(0, 64 - c + 1, (2,), generator=g).tolist()
        x = x[:, :, oy : oy + c, ox : ox + c]
        # cosine decay over a nominal 6000 steps, floor at 10%
        lr = cfg.vae_lr * cosine_floor(step, 6000)
        for pg in opt.param_groups:
            pg["lr"] = lr
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.vae_kl * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": f"{loss.item():.4f}", "lr": f"{lr:.1e}"}

    def save(step):
        save_torch_atomic({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, ck_path)

    step = timeboxed("vae", minutes, step, one_step, save)
    return evaluate_vae(cfg, vae) | {"steps": step}


@torch.no_grad()
def evaluate_vae(cfg: BuildConfig, vae=None) -> dict:
    """PSNR of reconstructions (posterior mean) on fresh evaluation renders, and the latent std."""
    vae = load_build_vae(cfg) if vae is None else vae.eval()
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


# --------------------------------------------------------------------------- latents


@torch.no_grad()
def latents(cfg: BuildConfig, split: str = "train", n_recon: int = 3000) -> dict:
    """VAE posterior means of every image (unscaled) and reconstructions of the first ``n_recon`` images.

    Cached per VAE checkpoint step. Returns {domain: {"latents": (N, 4, 16, 16) float16, "recon": (n, 64, 64, 3) uint8}}.
    """
    work = Path(cfg.work)
    step = torch.load(work / "vae.pt", weights_only=True)["step"]
    data = dataset(cfg, split)
    vae = None
    out = {}
    for name, d in data.items():
        path = work / f"latents_{split}_{name}_vae{step}.npz"
        if not path.exists():
            vae = vae or load_build_vae(cfg)
            x = to_tensor(d["images"])
            zs, recs = [], []
            for i, b in enumerate(tqdm(x.split(128), desc=f"encode {name}", leave=False)):
                z = vae.encode(b).latent_dist.mean
                zs.append(z.half())
                if i * 128 < n_recon:
                    r = vae.decode(z).sample.clamp(-1, 1)
                    recs.append(((r + 1) * 127.5).round().byte().permute(0, 2, 3, 1))
            tmp = work / f"{path.stem}.tmp.npz"
            np.savez(tmp, latents=torch.cat(zs).numpy(), recon=torch.cat(recs)[:n_recon].numpy())
            os.replace(tmp, path)
        z = np.load(path)
        out[name] = {"latents": z["latents"], "recon": z["recon"]}
    return out
