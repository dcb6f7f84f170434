"""Stage ``unet``: the toy CLIP text encoder and UNet, trained together on captioned renders; pipeline assembly
and the text-fidelity check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from noiseclr_lab.fileio import save_torch_atomic
from noiseclr_lab.toyworld.domains import get_domain, list_domains
from toybuild.common import BuildConfig, cosine_floor, dataset, load_ckpt, timeboxed
from toybuild.vae import latents, load_build_vae

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
    ck = load_ckpt(ck_path)
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
        save_torch_atomic({"te": te.state_dict(), "unet": unet.state_dict(), "opt": opt.state_dict(),
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
        decay = cosine_floor(step, cfg.unet_decay_steps)
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

    step = timeboxed("unet", minutes, step, one_step, save, save_every=240.0)
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
