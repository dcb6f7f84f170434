"""Stages ``unet-zsnr`` and ``export-zsnr`` (and their ``-ordered`` continuation, below): the toy UNet
fine-tuned to a schedule that destroys layout at T.

On a 16x16 latent SD's scaled-linear schedule leaves a signal-to-noise ratio of about 0.005 at t = 999: the
low frequencies of z_T still say where things are, so the shipped (epsilon) model learned layout from the
noise and ignores position words (text fidelity 0.48 / 0.52 for position in scenes / shapes). Here the
schedule's betas are rescaled to zero terminal SNR (Lin et al. 2024, "Common Diffusion Noise Schedules and
Sample Steps are Flawed"; diffusers ``rescale_betas_zero_snr``), so z_T holds nothing of the image, and the
model predicts v (an epsilon model cannot be asked for anything at SNR 0). Sampling uses DDIM with
``timestep_spacing="trailing"`` so the first step is t = 999. Every one of these settings goes into the
exported pipeline's scheduler config, so ``load_pipeline`` / ``EditPipeline`` / the trainer use them as they
are.

The fine-tune starts from the shipped text encoder and UNet (``noiseclr_lab/assets/toy/pipeline``) and keeps
the shipped VAE and its latents' scaling factor; it needs no other stage's work folder. Loss: min-SNR-5
weighting in v space (weight min(SNR, 5) / (SNR + 1)), EMA 0.999. ``export-zsnr`` writes the EMA pipeline to
``--out`` (a staging folder unless you point it at the assets) and records the measured text fidelity in
the work folder's build log under ``unet_zsnr``; the shipped model stays until the fidelity bars hold.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from noiseclr_lab.fileio import write_json_atomic
from noiseclr_lab.toyworld import ASSET_DIR, load_probe, load_toy_pipeline
from noiseclr_lab.toyworld.domains import get_domain, list_domains
from toybuild.common import BuildConfig, cosine_floor, dataset, load_ckpt, timeboxed, to_tensor
from toybuild.unet import _EMA, JointState, text_fidelity, training_caption

SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
            "rescale_betas_zero_snr": True, "prediction_type": "v_prediction"}
# steps_offset is unused under "trailing" spacing (the same timesteps for DDIM, DDPM, Euler and DPM-Solver at
# 4-50 steps); 1 keeps diffusers' pipelines from warning that the config is outdated (the model was exported with 0).
SAMPLER = {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "trailing"}
CKPT = "unet_zsnr.pt"
LR = 3e-4
DECAY_STEPS = 6000
# From PANEL_FROM on, the scenes' shape panel (latent columns >= PANEL_COL: x >= 44 of 64 px) weighs
# 1 + PANEL_WEIGHT in the loss: there a small shape's place (top / bottom) is the only thing the caption
# decides that the rest of the image does not, and at 1566 steps its text fidelity was still at chance (0.44)
# while the shapes domain's four quadrants had reached 0.92. (First run: from step 1703; the second run, which
# started over after the first one's checkpoint was lost at ~3400 steps, weights the panel from step 0.)
PANEL_FROM, PANEL_COL, PANEL_WEIGHT = 0, 11, 4.0
# From SHUFFLE_FROM on, half of the captions that name attributes list them in a random order. At 3308 steps
# the text encoder's states for "... shape at the top" and "... shape at the bottom" (a full scenes caption,
# the position word at token 37) differed by 9% at that token and ~0 after it, against 70-116% for a shapes
# caption: token positions past ~35 occur only at the end of full scenes captions, so the encoder hardly
# tells words apart there. Shuffled phrases put every word at every position. (First run: from step 3308;
# the second run shuffles from step 0.)
SHUFFLE_FROM, SHUFFLE_P = 0, 0.5
# From TERMINAL_FROM on (second run): the rows forced to t = 999 are every 8th row of the batch, so every domain
# gets them; before, they were the batch's first eighth, which (rows come domain by domain) were all faces.
# And in scenes rows at SNR < LATE_SNR (t >= ~715: the small shape's place can no longer be read from z_t), the
# shape panel's error weighs LATE_PANEL_WEIGHT times more. At step 1338 of the second run the UNet's t = 999
# estimate for a scenes caption changed by 3e-5 (relative, in the panel) between "shape at the top" and
# "... bottom", against 4e-2 between "a circle form" and "a star form" and 4e-2 for top / bottom in shapes:
# the model draws the shape's blurred mean at both places and the noise picks one.
# Measured at step 2440 (EMA): terminal_sensitivity for scenes position 0.40 (was 6e-6 at 1322); text fidelity
# for position 1.00 in scenes and shapes, every face factor 1.00, but scenes shape 0.69 and colour 0.90;
# at 3106: position 1.00 / 1.00, scenes shape 0.75, colour 0.92.
TERMINAL_FROM, LATE_SNR, LATE_PANEL_WEIGHT = 1322, 0.05, 10.0
# From DETAIL_FROM on (second run): in scenes rows at SNR > DETAIL_SNR (t < ~330), the shape panel's error weighs
# DETAIL_PANEL_WEIGHT times more. At step 3259 (EMA) the scenes shape's fidelity was 0.75: 8 of 18 squares were
# read as circles (small squares drawn as round blobs, 1-2 latent pixels wide), every other form 0.85-1.00; a
# shape's corners are fine detail, settled at high SNR, where min-SNR-5 weighs the error least.
DETAIL_FROM, DETAIL_SNR, DETAIL_PANEL_WEIGHT = 3259, 1.0, 4.0
# Stage ``unet-zsnr-ordered``: the shipped rebuild trained on, from the step it was exported at (toy_assets.json
# ``unet_zsnr.steps``), with every caption's phrases in the fixed order of the default model (no shuffling), the
# other weights as at the export, the lr continuing the run's cosine after a fresh optimiser's ORDERED_WARMUP
# steps. Why: a shuffled phrase order leaves a colour word alone ("blue") with no factor of its own. Run once
# from the 4160-step export: 1394 steps in order held every fidelity bar (scenes shape 0.96) and moved the covered
# face factors on training seeds 0-4 from 4, 3, 2, 4, 4 to 5, 3, 3, 4, 3 and the words from 2 to 3 of 6: within
# seed noise, so that export was not shipped (README, "The toy world").
ORDERED_WARMUP, CKPT_ORDERED = 50, "unet_zsnr_ordered.pt"


def _stage(ordered: bool) -> str:
    return "unet-zsnr-ordered" if ordered else "unet-zsnr"


def _checkpoint(cfg: BuildConfig, ordered: bool) -> Path:
    return Path(cfg.work) / (CKPT_ORDERED if ordered else CKPT)


def shipped_rebuild_step() -> int:
    """The training step the shipped zero-SNR rebuild was exported at (toy_assets.json ``unet_zsnr.steps``)."""
    from noiseclr_lab.toyworld import toy_assets_info

    return int(toy_assets_info()["unet_zsnr"]["steps"])


def shuffled_caption(dom, record, rng, cfg) -> str:
    """``training_caption``, with its attribute phrases in a random order with probability SHUFFLE_P."""
    cap = training_caption(dom, record, rng, cfg)
    head = f"{dom.prefix} with "
    if rng.random() < SHUFFLE_P:
        body, start = (cap[len(head):], head) if cap.startswith(head) else (cap, "")
        phrases = body.split(", ")
        if len(phrases) > 1:
            cap = start + ", ".join(phrases[i] for i in rng.permutation(len(phrases)))
    return cap


def zsnr_scheduler(kind: str = "ddpm"):
    from diffusers import DDIMScheduler, DDPMScheduler

    if kind == "ddpm":
        return DDPMScheduler(**SCHEDULE, clip_sample=False)
    return DDIMScheduler(**SCHEDULE, **SAMPLER)


def _shipped(dtype=torch.float32):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(ASSET_DIR / "pipeline", torch_dtype=dtype, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)
    return pipe.to(dtype)


@torch.no_grad()
def shipped_latents(cfg: BuildConfig, vae) -> dict:
    """Posterior means (unscaled, float16) of the rendered training images under the shipped VAE, cached."""
    work = Path(cfg.work)
    out = {}
    for name, d in dataset(cfg).items():
        path = work / f"latents_shipped_{name}_{len(d['images'])}.npy"
        if not path.exists():
            zs = [vae.encode(b).latent_dist.mean.half() for b in tqdm(to_tensor(d["images"]).split(128),
                                                                       desc=f"encode {name}", leave=False)]
            tmp = work / f"{path.stem}.tmp.npy"
            np.save(tmp, torch.cat(zs).numpy())
            os.replace(tmp, path)
        out[name] = np.load(path)
    return out


def train_unet_zsnr(cfg: BuildConfig, minutes: float, ordered: bool = False) -> dict:
    dev = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    Path(cfg.work).mkdir(parents=True, exist_ok=True)
    ck_path = _checkpoint(cfg, ordered)
    # the ordered stage starts from the shipped rebuild (EMA weights; its own checkpoint afterwards)
    pipe = load_toy_pipeline("faces", torch.float32, "zsnr") if ordered and not ck_path.exists() else _shipped()
    sf = float(pipe.vae.config.scaling_factor)
    data, lat = dataset(cfg), shipped_latents(cfg, pipe.vae)
    z_all = {n: torch.from_numpy(lat[n]) for n in list_domains()}
    te, unet = pipe.text_encoder.to(dev).train(), pipe.unet.to(dev).train()
    te.requires_grad_(True)
    unet.requires_grad_(True)
    st = JointState(cfg, te, unet, LR, ck_path, sf)
    if ordered and st.start is None:  # a fresh run, or a checkpoint from before the start was saved with it
        st.start = min(shipped_rebuild_step(), st.step or math.inf)
        st.step = st.step or st.start
    start = st.start if ordered else 0
    sched = zsnr_scheduler("ddpm")
    acp = sched.alphas_cumprod.to(dev)
    snr = acp / (1 - acp)
    rng = np.random.default_rng([cfg.seed, 17, st.step])
    g = torch.Generator().manual_seed(cfg.seed + 17 + st.step)
    doms = list(z_all)  # the batch's rows come domain by domain, as JointState.batch makes them
    per = [cfg.unet_batch // len(doms) + (i < cfg.unet_batch % len(doms)) for i in range(len(doms))]
    side = z_all[doms[0]].shape[-1]
    late_map = torch.zeros(cfg.unet_batch, 1, side, side, device=dev)  # 1 on the scenes rows' shape panel
    row = sum(per[: doms.index("scenes")])
    late_map[row : row + per[doms.index("scenes")], :, :, PANEL_COL:] = 1.0
    panel_map = 1.0 + PANEL_WEIGHT * late_map
    panel_norm = panel_map / panel_map.mean(dim=(1, 2, 3), keepdim=True)

    def one_step(step):
        z, caps = st.batch(z_all, data, rng, shuffled_caption if step >= SHUFFLE_FROM and not ordered else None)
        z0 = z.to(dev) * sf
        noise = torch.randn(z0.shape, generator=g).to(dev)
        t = torch.randint(0, 1000, (len(z0),), generator=g).to(dev)
        if step >= TERMINAL_FROM:  # the terminal step, where only the caption says what goes where, is seen often
            t[::8] = 999
        else:
            t[: len(t) // 8] = 999
        zt = sched.add_noise(z0, noise, t)
        target = sched.get_velocity(z0, noise, t)
        warm = (step - start + 1) / (ORDERED_WARMUP if ordered else 100)
        lr = LR * min(1.0, warm) * cosine_floor(step, DECAY_STEPS)
        for pg in st.opt.param_groups:
            pg["lr"] = lr
        cond = te(st.ids_of(caps).to(dev))[0]
        pred = unet(zt, t, encoder_hidden_states=cond).sample
        w = torch.clamp(snr[t], max=5.0) / (snr[t] + 1)  # min-SNR-5 in v space (Hang et al. 2023)
        w = torch.where(snr[t] == 0, torch.ones_like(w), w)  # SNR 0 (t = 999) would get weight 0: 1, as diffusers
        err = (pred - target).pow(2)
        if step >= PANEL_FROM:
            err = err * panel_norm
        if step >= TERMINAL_FROM:
            late = (snr[t] < LATE_SNR).float().view(-1, 1, 1, 1) * late_map
            err = err * (1.0 + (LATE_PANEL_WEIGHT - 1.0) * late)
        if step >= DETAIL_FROM:
            fine = (snr[t] > DETAIL_SNR).float().view(-1, 1, 1, 1) * late_map
            err = err * (1.0 + (DETAIL_PANEL_WEIGHT - 1.0) * fine)
        loss = (w * err.flatten(1).mean(1)).mean()
        st.update(loss, step)
        return {"loss": f"{loss.item():.4f}", "lr": f"{lr:.1e}"}

    step = timeboxed(_stage(ordered), minutes, st.step, one_step, st.save, save_every=240.0)
    shuffled = {"from_step": SHUFFLE_FROM, "p": SHUFFLE_P}
    if ordered:
        shuffled |= {"until_step": start, "ordered_warmup": ORDERED_WARMUP}
    return {"steps": step, "scaling_factor": sf, "schedule": SCHEDULE | SAMPLER,
            "scenes_panel": {"from_step": PANEL_FROM, "latent_col": PANEL_COL, "extra_weight": PANEL_WEIGHT},
            "shuffled_phrases": shuffled,
            "late_scenes_panel": {"from_step": TERMINAL_FROM, "snr_below": LATE_SNR, "weight": LATE_PANEL_WEIGHT,
                                  "terminal_rows": "every 8th"},
            "detail_scenes_panel": {"from_step": DETAIL_FROM, "snr_above": DETAIL_SNR, "weight": DETAIL_PANEL_WEIGHT}}


def assemble_zsnr(cfg: BuildConfig, use_ema: bool = True, ordered: bool = False):
    """The shipped pipeline with the fine-tuned text encoder and UNet (EMA) and the zero-terminal-SNR sampler."""
    pipe = _shipped()
    ck = load_ckpt(_checkpoint(cfg, ordered))
    if ck is None:
        stage = _stage(ordered)
        raise FileNotFoundError(f"No {stage} checkpoint in {cfg.work}: run --stage {stage} first.")
    pipe.text_encoder.load_state_dict(ck["te"])
    pipe.unet.load_state_dict(ck["unet"])
    if use_ema:
        ema = _EMA([pipe.text_encoder, pipe.unet], 0.999)
        ema.load_state_dict(ck["ema"])
        ema.copy_to()
    pipe.scheduler = zsnr_scheduler("ddim")
    pipe.text_encoder.eval()
    pipe.unet.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def terminal_sensitivity(pipe, n: int = 16, seed: int = 0) -> dict:
    """How much the t = 999 estimate (the caption's conditional mean: x0 = -v at SNR 0) moves where a caption's
    position word changes, relative to the estimate's size, in the region that word is about: the scenes shape
    panel (latent columns >= PANEL_COL; "shape at the top" vs "... bottom") and the shapes image ("at the top
    right" vs "at the bottom right"); plus, for scale, the scenes panel's change between two forms. Seconds to
    compute, against a minute for ``text_fidelity``; ~0 means the model ignores the word."""
    te, unet, tok = pipe.text_encoder, pipe.unet, pipe.tokenizer
    dev = unet.device
    z = torch.randn(n, 4, unet.config.sample_size, unet.config.sample_size, generator=torch.Generator().manual_seed(seed))
    t = torch.full((n,), 999, device=dev)

    def x0(caps, col):
        ids = tok(caps, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.to(dev)
        return -unet(z.to(dev, unet.dtype), t, encoder_hidden_states=te(ids)[0]).sample[..., col:].float()

    def change(caps_a, caps_b, col):
        xa, xb = x0(caps_a, col), x0(caps_b, col)
        return float((xa - xb).pow(2).mean() / xa.pow(2).mean())

    def captions(name):
        dom = get_domain(name)
        recs = dom.sample(np.random.default_rng(seed), n)
        return [dom.caption(r) for r in recs], recs

    def ending(name, col, a, b):  # the captions' last phrase (the position) set to a, then to b
        heads = [c.rsplit(", ", 1)[0] for c in captions(name)[0]]
        return change([h + a for h in heads], [h + b for h in heads], col)

    caps, recs = captions("scenes")
    other = {"circle": "star", "square": "triangle", "triangle": "square", "star": "circle"}
    swap = [c.replace(f"a {r['shape']} form", f"a {other[r['shape']]} form") for c, r in zip(caps, recs)]
    return {"terminal/scenes/position": ending("scenes", PANEL_COL, ", shape at the top", ", shape at the bottom"),
            "terminal/shapes/position": ending("shapes", 0, ", at the top right", ", at the bottom right"),
            "terminal/scenes/shape": change(caps, swap, PANEL_COL)}


def measure_zsnr(cfg: BuildConfig, ordered: bool = False, pipe=None) -> dict:
    """Text fidelity and terminal sensitivity of the stage's EMA pipeline (``pipe``: one already assembled)."""
    probes = {n: load_probe(n) for n in list_domains()}
    pipe = pipe if pipe is not None else assemble_zsnr(cfg, ordered=ordered)
    return text_fidelity(pipe, probes) | terminal_sensitivity(pipe)


def strip_build_paths(folder: Path) -> list[Path]:
    """Drop ``_name_or_path`` (the build machine's path to the pipeline it loaded) from the JSON configs under
    ``folder``; returns the files changed."""
    changed = []
    for cfg_file in sorted(folder.rglob("*.json")):
        conf = json.loads(cfg_file.read_text())
        if isinstance(conf, dict) and conf.pop("_name_or_path", None) is not None:
            cfg_file.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
            changed.append(cfg_file)
    return changed


def export_zsnr(cfg: BuildConfig, out: Path, ordered: bool = False) -> dict:
    """Write the fine-tuned pipeline (fp16) to ``out``/pipeline, atomically; returns its measured fidelity."""
    pipe = assemble_zsnr(cfg, ordered=ordered)
    res = measure_zsnr(cfg, ordered, pipe)
    out.mkdir(parents=True, exist_ok=True)
    tmp, old = out / "pipeline.tmp", out / "pipeline.old"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.to(torch.float16).save_pretrained(tmp)
    strip_build_paths(tmp)
    if (out / "pipeline").exists():  # the old folder stays until the new one is in place
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out / "pipeline", old)
    os.replace(tmp, out / "pipeline")
    shutil.rmtree(old, ignore_errors=True)
    write_json_atomic(out / "unet_zsnr_fidelity.json", res)
    return res
