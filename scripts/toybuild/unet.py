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
        self.shadow = [t.to(p.device, copy=True) for t, p in zip(sd["shadow"], self.params)]

    @torch.no_grad()
    def copy_to(self):
        for p, s in zip(self.params, self.shadow):
            p.copy_(s)


class JointState:
    """Text encoder + UNet trained together: optimiser, EMA, the resumable checkpoint, caption ids and the
    domain-mixed batches. Shared by the ``unet`` and ``unet-zsnr`` stages."""

    def __init__(self, cfg: BuildConfig, te, unet, lr: float, ck_path: Path, scaling_factor: float):
        from noiseclr_lab.tokenizer import build_clip_tokenizer

        self.cfg, self.te, self.unet, self.ck_path, self.sf = cfg, te, unet, ck_path, scaling_factor
        self.params = list(te.parameters()) + list(unet.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=0.0)
        self.ema = _EMA([te, unet], 0.999)
        self.tok = build_clip_tokenizer()
        self.cache: dict[str, torch.Tensor] = {}
        self.step = 0
        self.start = None  # the step a continued run started from (the ordered zero-SNR stage); saved with it
        ck = load_ckpt(ck_path)
        if ck:
            te.load_state_dict(ck["te"])
            unet.load_state_dict(ck["unet"])
            self.opt.load_state_dict(ck["opt"])
            self.ema.load_state_dict(ck["ema"])
            self.step = ck["step"]
            self.start = ck.get("start")

    def save(self, step: int) -> None:
        save_torch_atomic({"te": self.te.state_dict(), "unet": self.unet.state_dict(), "opt": self.opt.state_dict(),
                           "ema": self.ema.state_dict(), "step": step, "scaling_factor": self.sf,
                           "start": self.start}, self.ck_path)

    def ids_of(self, captions: list[str]) -> torch.Tensor:
        missing = [c for c in set(captions) if c not in self.cache]
        if missing:
            enc = self.tok(missing, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            self.cache.update(zip(missing, enc))
        return torch.stack([self.cache[c] for c in captions])

    def batch(self, z_all: dict, data: dict, rng: np.random.Generator,
              caption=None) -> tuple[torch.Tensor, list[str]]:
        """Unscaled latents and captions of one batch that mixes every domain equally (``caption(dom, record,
        rng, cfg)`` makes each caption; default ``training_caption``)."""
        caption = caption or training_caption
        doms = list(z_all)
        n_b = self.cfg.unet_batch
        per = [n_b // len(doms) + (i < n_b % len(doms)) for i in range(len(doms))]
        zs, caps = [], []
        for n, k in zip(doms, per):
            idx = rng.integers(len(z_all[n]), size=k)
            zs.append(z_all[n][idx].float())
            dom = get_domain(n)
            caps += [caption(dom, data[n]["records"][i], rng, self.cfg) for i in idx]
        return torch.cat(zs), caps

    def update(self, loss: torch.Tensor, step: int) -> None:
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss at step {step}; last good checkpoint kept in {self.ck_path}")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.ema.update(step)


def train_unet(cfg: BuildConfig, minutes: float) -> dict:
    """Train text encoder + UNet jointly on cached latents of all domains, with min-SNR weighting and EMA."""
    dev = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    data, lat = dataset(cfg), latents(cfg)
    sf = 1.0 / float(json.loads((Path(cfg.work) / "build_log.json").read_text())["vae"]["latent_std"])
    z_all = {n: torch.from_numpy(lat[n]["latents"]) for n in list_domains()}
    te, unet = make_text_encoder(cfg).to(dev), make_unet(cfg).to(dev)
    st = JointState(cfg, te, unet, cfg.unet_lr, Path(cfg.work) / "unet.pt", sf)
    sched = make_scheduler("ddpm")
    acp = sched.alphas_cumprod.to(dev)
    snr = acp / (1 - acp)
    rng = np.random.default_rng([cfg.seed, 11, st.step])
    g = torch.Generator().manual_seed(cfg.seed + 11 + st.step)
    te.train()
    unet.train()

    def one_step(step):
        z, caps = st.batch(z_all, data, rng)
        z0 = z.to(dev) * sf
        noise = torch.randn(z0.shape, generator=g).to(dev)
        t = torch.randint(0, 1000, (len(z0),), generator=g).to(dev)
        zt = sched.add_noise(z0, noise, t)
        decay = cosine_floor(step, cfg.unet_decay_steps)
        lr = cfg.unet_lr * min(1.0, (step + 1) / 200) * decay
        if step >= cfg.unet_layout_lr_from:
            lr = cfg.unet_layout_lr
        for pg in st.opt.param_groups:
            pg["lr"] = lr
        cond = te(st.ids_of(caps).to(dev))[0]
        pred = unet(zt, t, encoder_hidden_states=cond).sample
        w = torch.clamp(snr[t], max=5.0) / snr[t]  # min-SNR-5 weighting (Hang et al. 2023)
        if step >= cfg.unet_layout_from and cfg.unet_layout_weight:
            w = w + cfg.unet_layout_weight * torch.clamp(1.0 / snr[t], max=10.0) * (t >= 400)
        loss = (w * (pred - noise).pow(2).flatten(1).mean(1)).mean()
        st.update(loss, step)
        return {"loss": f"{loss.item():.4f}"}

    step = timeboxed("unet", minutes, st.step, one_step, st.save, save_every=240.0)
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
