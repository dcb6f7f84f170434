"""Builders of the shipped toy models: data, VAE, text encoder + UNet, open_clip CLIP, factor probe.

Every stage is seeded, resumable (a checkpoint every few minutes, written atomically into the work
folder) and time-boxed, so a long build can be spread over several sessions. ``scripts/build_toy_assets.py``
is the command-line front end; it exports finished stages into ``noiseclr_lab/assets/toy``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from noiseclr_lab.fileio import atomic_target, write_json_atomic
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


def atomic_save(obj: dict, path: Path) -> None:
    """torch.save to a temporary file, then rename: a kill never leaves a half-written checkpoint."""
    with atomic_target(path) as tmp:
        torch.save(obj, tmp)


def _load_ckpt(path: Path) -> dict | None:
    return torch.load(path, weights_only=True) if path.exists() else None


def _cosine_floor(done: float, total: float) -> float:
    """Cosine decay factor from 1 to 0.1 over ``total`` steps (0.1 after), used by every builder's lr schedule."""
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(done, total) / total))


def _timeboxed(name: str, minutes: float, step: int, one_step, save, save_every: float = 180.0) -> int:
    """Run ``one_step(step) -> postfix dict`` until ``minutes`` pass, calling ``save(step)`` every
    ``save_every`` seconds and at the end; returns the step count reached."""
    t0 = last = time.time()
    bar = tqdm(desc=name, unit="step")
    while time.time() - t0 < minutes * 60:
        postfix = one_step(step)
        step += 1
        bar.update(1)
        bar.set_postfix(**postfix)
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
    vae.train()

    def one_step(step):
        idx = torch.randint(len(images), (cfg.vae_batch,), generator=g).numpy()
        x = to_tensor(images[idx])
        c = cfg.vae_crop
        oy, ox = torch.randint(0, 64 - c + 1, (2,), generator=g).tolist()
        x = x[:, :, oy : oy + c, ox : ox + c]
        # cosine decay over a nominal 6000 steps, floor at 10%
        lr = cfg.vae_lr * _cosine_floor(step, 6000)
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
        atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step}, ck_path)

    step = _timeboxed("vae", minutes, step, one_step, save)
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


# --------------------------------------------------------------------------- probe


def train_probe(cfg: BuildConfig, minutes: float) -> dict:
    """Train the three domain probes round-robin on renders and VAE reconstructions (so that they read
    decoded images the way they read clean renders)."""
    from noiseclr_lab.toyworld.probe import FactorProbe

    torch.manual_seed(cfg.seed)
    data, lat = dataset(cfg), latents(cfg)
    doms = list_domains()
    models = {n: FactorProbe({f.name: len(f.values) for f in get_domain(n).factors}) for n in doms}
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=1e-4) for n, m in models.items()}
    ck_path = Path(cfg.work) / "probe.pt"
    ck = _load_ckpt(ck_path)
    step = 0
    if ck:
        for n in doms:
            models[n].load_state_dict(ck["model"][n])
            opts[n].load_state_dict(ck["opt"][n])
        step = ck["step"]
    g = torch.Generator().manual_seed(cfg.seed + 7 + step)

    def save(step):
        atomic_save({"model": {n: m.state_dict() for n, m in models.items()},
                     "opt": {n: o.state_dict() for n, o in opts.items()}, "step": step}, ck_path)

    def one_step(step):
        name = doms[step % len(doms)]
        d, rec = data[name], lat[name]["recon"]
        half = cfg.probe_batch // 2
        i_img = torch.randint(len(d["images"]), (half,), generator=g).numpy()
        i_rec = torch.randint(len(rec), (cfg.probe_batch - half,), generator=g).numpy()
        x = torch.cat([to_tensor(d["images"][i_img]), to_tensor(rec[i_rec])])
        x = x + 0.03 * torch.randn(x.shape, generator=g)
        idx = np.concatenate([i_img, i_rec])
        out = models[name](x)
        loss = sum(F.cross_entropy(out[f], torch.from_numpy(d["labels"][f][idx])) for f in out)
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()
        return {"loss": f"{loss.item():.3f}", "domain": name}

    step = _timeboxed("probe", minutes, step, one_step, save)
    return evaluate_probe(cfg, models) | {"steps": step}


@torch.no_grad()
def evaluate_probe(cfg: BuildConfig, models: dict | None = None) -> dict:
    """Per-factor accuracy on fresh renders and on their VAE reconstructions."""
    from noiseclr_lab.toyworld.probe import Probe

    if models is None:
        models = {n: p.model for n, p in build_probes(cfg).items()}
    data, lat = dataset(cfg, "eval"), latents(cfg, "eval", n_recon=1000)
    res = {}
    for n, m in models.items():
        probe = Probe(n, m)
        for kind, imgs in (("render", data[n]["images"]), ("recon", lat[n]["recon"])):
            reading = probe.predict(imgs)
            for f, lab in reading.labels.items():
                res[f"acc_{kind}/{n}/{f}"] = float((lab == data[n]["labels"][f][: len(imgs)]).mean())
        m.train()
    res["min_acc_render"] = min(v for k, v in res.items() if k.startswith("acc_render"))
    res["min_acc_recon"] = min(v for k, v in res.items() if k.startswith("acc_recon"))
    return res


# --------------------------------------------------------------------------- text encoder + UNet


def make_text_encoder(cfg: BuildConfig):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=cfg.text_hidden, intermediate_size=4 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers, num_attention_heads=4, max_position_embeddings=77,
        projection_dim=cfg.text_hidden, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))


def make_unet(cfg: BuildConfig):
    from diffusers import UNet2DConditionModel

    n = len(cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=tuple(cfg.unet_channels),
        down_block_types=("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1),
        cross_attention_dim=cfg.text_hidden, attention_head_dim=4, norm_num_groups=16,
    )


def make_scheduler(kind: str = "ddpm"):
    from diffusers import DDIMScheduler, DDPMScheduler

    common = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
    if kind == "ddpm":
        return DDPMScheduler(**common, clip_sample=False)
    return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def training_caption(dom, record: dict, rng: np.random.Generator, cfg: BuildConfig) -> str:
    """Caption with dropout: empty, domain head only, bare phrases, partial, or full (see BuildConfig)."""
    u = rng.random()
    if u < cfg.caption_dropout:
        return ""
    if u < cfg.caption_dropout + cfg.domain_only:
        return dom.prefix
    u -= cfg.caption_dropout + cfg.domain_only
    if u < cfg.bare:
        phrases = dom.phrases(record)
        pick = rng.choice(len(phrases), size=1 + int(rng.random() < 0.3), replace=False)
        return ", ".join(phrases[i] for i in sorted(pick))
    if u < cfg.bare + cfg.partial:
        return dom.caption(record, rng, keep=cfg.phrase_keep)
    return dom.caption(record)


class _EMA:
    def __init__(self, modules: list, decay: float):
        self.decay = decay
        self.params = [p for m in modules for p in m.parameters()]
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int):
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    def state_dict(self):
        return {"shadow": self.shadow}

    def load_state_dict(self, sd):
        self.shadow = [t.clone() for t in sd["shadow"]]

    @torch.no_grad()
    def copy_to(self):
        for p, s in zip(self.params, self.shadow):
            p.copy_(s)


def train_unet(cfg: BuildConfig, minutes: float) -> dict:
    """Train text encoder + UNet jointly on cached latents of all domains, with min-SNR weighting and EMA."""
    from noiseclr_lab.tokenizer import build_clip_tokenizer

    dev = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    data, lat = dataset(cfg), latents(cfg)
    sf = 1.0 / float(json.loads((Path(cfg.work) / "build_log.json").read_text())["vae"]["latent_std"])
    doms = list_domains()
    z_all = {n: torch.from_numpy(lat[n]["latents"]) for n in doms}
    tok = build_clip_tokenizer()
    te, unet = make_text_encoder(cfg).to(dev), make_unet(cfg).to(dev)
    params = list(te.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.0)
    ema = _EMA([te, unet], 0.999)
    sched = make_scheduler("ddpm")
    acp = sched.alphas_cumprod.to(dev)
    snr = acp / (1 - acp)
    ck_path = Path(cfg.work) / "unet.pt"
    ck = _load_ckpt(ck_path)
    step = 0
    if ck:
        te.load_state_dict(ck["te"])
        unet.load_state_dict(ck["unet"])
        opt.load_state_dict(ck["opt"])
        ema.load_state_dict(ck["ema"])
        step = ck["step"]
    rng = np.random.default_rng([cfg.seed, 11, step])
    g = torch.Generator().manual_seed(cfg.seed + 11 + step)
    cache: dict[str, torch.Tensor] = {}

    def ids_of(captions):
        missing = [c for c in set(captions) if c not in cache]
        if missing:
            enc = tok(missing, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            cache.update(zip(missing, enc))
        return torch.stack([cache[c] for c in captions])

    def save(step):
        atomic_save({"te": te.state_dict(), "unet": unet.state_dict(), "opt": opt.state_dict(),
                     "ema": ema.state_dict(), "step": step, "scaling_factor": sf}, ck_path)

    te.train()
    unet.train()

    def one_step(step):
        # every batch mixes the domains
        per = [cfg.unet_batch // len(doms) + (i < cfg.unet_batch % len(doms)) for i in range(len(doms))]
        zs, caps = [], []
        for n, k in zip(doms, per):
            idx = rng.integers(len(z_all[n]), size=k)
            zs.append(z_all[n][idx].float())
            dom = get_domain(n)
            caps += [training_caption(dom, data[n]["records"][i], rng, cfg) for i in idx]
        z0 = torch.cat(zs).to(dev) * sf
        noise = torch.randn(z0.shape, generator=g).to(dev)
        t = torch.randint(0, 1000, (len(z0),), generator=g).to(dev)
        zt = sched.add_noise(z0, noise, t)
        decay = _cosine_floor(step, cfg.unet_decay_steps)
        lr = cfg.unet_lr * min(1.0, (step + 1) / 200) * decay
        if step >= cfg.unet_layout_lr_from:
            lr = cfg.unet_layout_lr
        for pg in opt.param_groups:
            pg["lr"] = lr
        cond = te(ids_of(caps).to(dev))[0]
        pred = unet(zt, t, encoder_hidden_states=cond).sample
        w = torch.clamp(snr[t], max=5.0) / snr[t]  # min-SNR-5 weighting (Hang et al. 2023)
        if step >= cfg.unet_layout_from and cfg.unet_layout_weight:
            w = w + cfg.unet_layout_weight * torch.clamp(1.0 / snr[t], max=10.0) * (t >= 400)
        loss = (w * (pred - noise).pow(2).flatten(1).mean(1)).mean()
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss at step {step}; last good checkpoint kept in {ck_path}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        return {"loss": f"{loss.item():.4f}"}

    step = _timeboxed("unet", minutes, step, one_step, save, save_every=240.0)
    return {"steps": step, "scaling_factor": sf}


# --------------------------------------------------------------------------- export + fidelity


def assemble_pipeline(cfg: BuildConfig, use_ema: bool = True):
    """The StableDiffusionPipeline made of the current build checkpoints (EMA weights by default)."""
    from diffusers import StableDiffusionPipeline

    from noiseclr_lab.tokenizer import build_clip_tokenizer

    ck = torch.load(Path(cfg.work) / "unet.pt", weights_only=True)
    te, unet = make_text_encoder(cfg), make_unet(cfg)
    te.load_state_dict(ck["te"])
    unet.load_state_dict(ck["unet"])
    if use_ema:
        ema = _EMA([te, unet], 0.999)
        ema.load_state_dict(ck["ema"])
        ema.copy_to()
    vae = load_build_vae(cfg)
    vae.register_to_config(scaling_factor=float(ck["scaling_factor"]))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=te.eval(), tokenizer=build_clip_tokenizer(), unet=unet.eval(),
        scheduler=make_scheduler("ddim"), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def text_fidelity(pipe, probes: dict, n: int = 48, seed: int = 1234, steps: int = 25, cfg_scale: float = 5.0,
                  batch: int = 48) -> dict:
    """Generate from captions that fix every factor; the share of factor values the probe reads back.

    Also samples with the domain head alone ("a cartoon face") and reports which factor values appear.
    Returns {"fidelity/<domain>": float, "fidelity/<domain>/<factor>": float, "coverage/<domain>": float}.
    """
    res = {}
    for i, (name, probe) in enumerate(probes.items()):
        dom = get_domain(name)
        recs = dom.sample(np.random.default_rng([seed, i]), n)
        imgs = []
        for s in range(0, n, batch):
            part = recs[s : s + batch]
            gen = torch.Generator().manual_seed(seed + s)
            out = pipe([dom.caption(r) for r in part], num_inference_steps=steps, guidance_scale=cfg_scale,
                       generator=gen, output_type="pt")
            imgs.append(out.images)
        reading = probe.predict(torch.cat(imgs))
        labels = dom.labels(recs)
        per = {f: float((reading.labels[f] == labels[f]).mean()) for f in labels}
        res.update({f"fidelity/{name}/{f}": v for f, v in per.items()})
        res[f"fidelity/{name}"] = float(np.mean(list(per.values())))
        gen = torch.Generator().manual_seed(seed + 99)
        out = pipe([dom.prefix] * n, num_inference_steps=steps, guidance_scale=1.0, generator=gen, output_type="pt")
        seen = probe.predict(out.images).labels
        cov = [len(set(seen[f.name].tolist())) / len(f.values) for f in dom.factors]
        res[f"coverage/{name}"] = float(np.mean(cov))
        res[f"coverage_min/{name}"] = float(min(cov))
    res["fidelity_min"] = min(v for k, v in res.items() if k.count("/") == 1 and k.startswith("fidelity/"))
    return res


def build_probes(cfg: BuildConfig) -> dict:
    from noiseclr_lab.toyworld.probe import FactorProbe, Probe

    ck = torch.load(Path(cfg.work) / "probe.pt", weights_only=True)
    out = {}
    for n in list_domains():
        m = FactorProbe({f.name: len(f.values) for f in get_domain(n).factors})
        m.load_state_dict(ck["model"][n])
        out[n] = Probe(n, m)
    return out


def export_assets(cfg: BuildConfig, out: Path = ASSET_DIR) -> dict:
    """Write the finished assets into ``out`` (the package's assets by default; fp16 weights) + toy_assets.json."""
    from noiseclr_lab.toyworld.probe import save_probe

    out.mkdir(parents=True, exist_ok=True)
    written = {}
    work = Path(cfg.work)
    if (work / "unet.pt").exists():
        pipe = assemble_pipeline(cfg)
        tmp = out / "pipeline.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        pipe.to(torch.float16).save_pretrained(tmp)
        shutil.rmtree(out / "pipeline", ignore_errors=True)
        os.replace(tmp, out / "pipeline")
        written["pipeline"] = True
    if (work / "probe.pt").exists():
        for n, probe in build_probes(cfg).items():
            save_probe(probe.model, n, out)
        written["probe"] = True
    if (work / "clip.pt").exists():
        export_clip(cfg, out)
        written["clip"] = True
    log = json.loads((work / "build_log.json").read_text()) if (work / "build_log.json").exists() else {}
    write_json_atomic(out / "toy_assets.json", log)
    return written


# --------------------------------------------------------------------------- open_clip CLIP

CLIP_NAME = "toy-clip"


def clip_model_config(cfg: BuildConfig) -> dict:
    """open_clip model config of the toy CLIP (a ViT over 8 px patches of 64 px images; CLIP's BPE text tower)."""
    return {
        "embed_dim": cfg.clip_embed,
        "vision_cfg": {"image_size": 64, "layers": 4, "width": cfg.clip_width, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3},
    }


def make_clip(cfg: BuildConfig):
    import open_clip

    return open_clip.CLIP(**clip_model_config(cfg))


def zero_shot_prompts(dom, factor: str) -> list[str]:
    """One prompt per value of ``factor``, naming that factor alone ("a cartoon face with red hair")."""
    j = [f.name for f in dom.factors].index(factor)
    base = dom.sample(np.random.default_rng(0), 1)[0]
    return [dom.join([dom.phrases(base | {factor: v})[j]]) for v in dom.factor(factor).values]


def _clip_pixels(images_uint8: np.ndarray) -> torch.Tensor:
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _clip_caption(dom, record: dict, rng: np.random.Generator, focus: bool) -> str:
    """Half partial (each phrase kept with p = 0.5), half full; in the focus phase a third name one attribute."""
    u = rng.random()
    if focus and u < 1 / 3:
        phrases = dom.phrases(record)
        return dom.join([phrases[rng.integers(len(phrases))]])
    return dom.caption(record, rng, keep=0.5) if u < (2 / 3 if focus else 0.5) else dom.caption(record)


def train_clip(cfg: BuildConfig, minutes: float) -> dict:
    """Contrastive training on (render or VAE reconstruction, caption) pairs, one domain per batch
    (in-domain negatives teach the attribute words; half the captions are partial)."""
    import open_clip

    torch.manual_seed(cfg.seed)
    data, lat = dataset(cfg), latents(cfg)
    doms = list_domains()
    model = make_clip(cfg)
    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # the same BPE ids as every CLIP
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    ck_path = Path(cfg.work) / "clip.pt"
    ck = _load_ckpt(ck_path)
    step = 0
    if ck:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
    rng = np.random.default_rng([cfg.seed, 13, step])

    def save(step):
        atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, ck_path)

    model.train()

    late = [d for n in doms if n != "scenes" for d in (n, "scenes")]  # faces, scenes, shapes, scenes

    def one_step(step):
        focus = step >= cfg.clip_focus_from
        if step < cfg.clip_decay_from:
            name = doms[step % len(doms)]
            lr = 5e-4 * min(1.0, (step + 1) / 200)
        elif not focus:
            name = late[step % len(late)]
            lr = 5e-4 * _cosine_floor(step - cfg.clip_decay_from, cfg.clip_decay_steps)
        else:
            shape_phase = step >= cfg.clip_shape_from
            name = ("scenes" if step % 4 else doms[(step // 4) % len(doms)]) if shape_phase else late[step % len(late)]
            start = cfg.clip_shape_from if shape_phase else cfg.clip_focus_from
            lr = cfg.clip_focus_lr * _cosine_floor(step - start, cfg.clip_focus_steps)
        dom, d, rec = get_domain(name), data[name], lat[name]["recon"]
        n_pairs = int(cfg.clip_batch * cfg.clip_counterfactual) // 2
        n_plain = cfg.clip_batch - 2 * n_pairs
        idx = rng.integers(len(rec), size=n_plain)  # the reconstructed subset, shown as render or recon
        use_rec = rng.random(n_plain) < 0.5
        imgs = np.where(use_rec[:, None, None, None], rec[idx], d["images"][idx])
        caps = [_clip_caption(dom, d["records"][i], rng, focus) for i in idx]
        if n_pairs:
            # hard negatives: a record and its twin with one factor changed, both with full captions, so the
            # only thing that tells the two captions apart is the one attribute that differs in the images
            base = [dict(d["records"][i]) for i in rng.integers(len(d["records"]), size=n_pairs)]
            twins = []
            weights = np.array([3.0 if focus and f.name in cfg.clip_twin_focus else 1.0 for f in dom.factors])
            if step >= cfg.clip_shape_from:
                weights *= np.array([3.0 if f.name == "shape" else 1.0 for f in dom.factors])
            for r in base:
                f = dom.factors[rng.choice(len(dom.factors), p=weights / weights.sum())]
                others = [v for v in f.values if v != r[f.name]]
                twins.append(r | {f.name: others[rng.integers(len(others))]})
            pair_imgs = np.stack([np.asarray(im) for im in dom.render(base + twins)])
            imgs = np.concatenate([imgs, pair_imgs])
            caps += [dom.caption(r) for r in base + twins]
        # identical captions in a batch are positives of each other, not negatives
        same = torch.tensor([[a == b for b in caps] for a in caps], dtype=torch.float32)
        target = same / same.sum(1, keepdim=True)
        for pg in opt.param_groups:
            pg["lr"] = lr
        img_f, txt_f, scale = model(_clip_pixels(imgs), tokenizer(caps))
        logits = scale * img_f @ txt_f.T
        loss = 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean() + torch.sum(-target * logits.T.log_softmax(1), 1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        return {"loss": f"{loss.item():.3f}", "domain": name}

    step = _timeboxed("clip", minutes, step, one_step, save)
    return evaluate_clip(cfg, model) | {"steps": step}


@torch.no_grad()
def evaluate_clip(cfg: BuildConfig, model=None) -> dict:
    """Zero-shot factor accuracy on fresh renders: prompts name one factor value each."""
    import open_clip

    if model is None:
        model = make_clip(cfg)
        model.load_state_dict(torch.load(Path(cfg.work) / "clip.pt", weights_only=True)["model"])
    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    res = {}
    for name, d in dataset(cfg, "eval").items():
        dom = get_domain(name)
        img_f = torch.cat([model.encode_image(_clip_pixels(b), normalize=True) for b in np.array_split(d["images"][:500], 4)])
        for f in dom.factors:
            txt_f = model.encode_text(tokenizer(zero_shot_prompts(dom, f.name)), normalize=True)
            pred = (img_f @ txt_f.T).argmax(1).numpy()
            res[f"zeroshot/{name}/{f.name}"] = float((pred == d["labels"][f.name][:500]).mean())
    res["zeroshot_min"] = min(res.values())
    model.train()
    return res


def export_clip(cfg: BuildConfig, out: Path = ASSET_DIR) -> None:
    from noiseclr_lab.directions.bank import atomic_save_file

    folder = out / "clip"
    folder.mkdir(parents=True, exist_ok=True)
    sd = torch.load(Path(cfg.work) / "clip.pt", weights_only=True)["model"]
    atomic_save_file({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, folder / f"{CLIP_NAME}.safetensors")
    (folder / f"{CLIP_NAME}.json").write_text(json.dumps(clip_model_config(cfg), indent=2))


# --------------------------------------------------------------------------- stages

STAGES = ("vae", "probe", "unet", "clip", "export")


def _record(cfg: BuildConfig, stage: str, result: dict) -> None:
    """Merge a stage's measured result into the work folder's build log (exported as toy_assets.json)."""
    path = Path(cfg.work) / "build_log.json"
    log = json.loads(path.read_text()) if path.exists() else {}
    entry = log.setdefault(stage, {"minutes": 0.0})
    entry["minutes"] = entry["minutes"] + result.pop("minutes", 0.0)
    entry.update(result)
    entry["config"] = {k: v for k, v in asdict(cfg).items() if k != "work"}
    write_json_atomic(path, log)


def run_stage(cfg: BuildConfig, stage: str, minutes: float, out: Path = ASSET_DIR) -> dict:
    """Train ``stage`` for ``minutes`` (or export), log its measured quality and return it."""
    if stage == "vae":
        result = train_vae(cfg, minutes)
    elif stage == "probe":
        result = train_probe(cfg, minutes)
    elif stage == "unet":
        result = train_unet(cfg, minutes)
        result |= text_fidelity(assemble_pipeline(cfg), build_probes(cfg))
    elif stage == "clip":
        result = train_clip(cfg, minutes)
    elif stage == "export":
        return export_assets(cfg, out)
    else:
        raise ValueError(stage)
    result["minutes"] = minutes
    _record(cfg, stage, dict(result))
    return result
