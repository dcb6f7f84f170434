"""Invert real images into the model's noise: DDIM inversion, optionally refined by null-text inversion.

DDIM inversion (eta = 0) runs the sampler backwards under the empty prompt: from the level a_prev to
a_t it reuses eps(z_prev, t) in place of the unknown eps(z_t, t):

    x0   = (z_prev - sqrt(1 - a_prev) * eps) / sqrt(a_prev)
    z_t  = sqrt(a_t) * x0 + sqrt(1 - a_t) * eps

A v-prediction model's output is turned into eps at the current level first (as diffusers'
``DDIMInverseScheduler`` does), so zero-terminal-SNR models invert through the same loop.

That approximation makes plain sampling drift from the inverted path. Null-text inversion (Mokady et al.
2023) fixes it: at each sampling step i it optimises the base (empty-prompt) embedding null_i so that one
DDIM step from the current latent lands on the inverted latent of the next level. Two variants:

- ``"null-text"`` (ours): the path is sampled without CFG (w = 1) under null_i alone, fixed iterations and
  learning rate, the best iterate kept; editing runs with w = 1 and null_i as the base term.
- ``"null-text-p2p"`` (Prompt-to-Prompt's, which the released NoiseCLR code uses): DDIM inversion under the
  prompt, then null_i is optimised as the CFG unconditional under guidance w (7.5) with the prompt as the
  conditional, lr decaying as lr * (1 - i / 100) and early stop once the mismatch is below 1e-5 + 2e-5 * i;
  editing then runs with CFG w, null_i as the unconditional.

In both, the directions' deltas are still taken against E("").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from noiseclr_lab.editing.images import prepare_image
from noiseclr_lab.editing.pipeline import EditPipeline, Inversion, ddim_scheduler
from noiseclr_lab.errors import NoiseCLRLabError


def _alpha(sched, t: int) -> torch.Tensor:
    return sched.alphas_cumprod[t] if t >= 0 else sched.final_alpha_cumprod


def eps_from_output(sched, out: torch.Tensor, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The noise estimate from a model output at level ``a`` (alpha_bar) under the scheduler's prediction type:
    epsilon as it is; v (v = sqrt(a) eps - sqrt(1 - a) x0) as sqrt(a) v + sqrt(1 - a) z; x0 ("sample") as
    (z - sqrt(a) x0) / sqrt(1 - a)."""
    kind = sched.config.prediction_type
    if kind == "epsilon":
        return out
    if kind == "v_prediction":
        return a.sqrt() * out + (1 - a).sqrt() * z
    if kind == "sample":
        return (z - a.sqrt() * out) / (1 - a).clamp_min(1e-8).sqrt()
    raise NoiseCLRLabError(f"Inversion does not support the scheduler's prediction_type {kind!r}.")


@torch.no_grad()
def encode_images(pipe, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> scaled latents (B, C, h, w) (posterior means: deterministic)."""
    vae = pipe.vae
    return vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mean * vae.config.scaling_factor


METHODS = ("ddim", "null-text", "null-text-p2p")


def p2p_args(method: str, prompt: str, guidance_scale: float) -> dict:
    """``invert`` keyword arguments of a job's edit settings: null-text-p2p inverts under the job's prompt and CFG
    scale (the edits then run with both); the other methods invert under the empty prompt."""
    return {"prompt": prompt, "guidance_scale": guidance_scale} if method == "null-text-p2p" else {"prompt": ""}


P2P_GUIDANCE = 7.5  # Prompt-to-Prompt's null-text inversion guidance scale


def invert(pipe, image, num_inference_steps: int = 50, method: str = "ddim", prompt: str = "",
           null_text_iters: int = 10, null_text_lr: float = 1e-2, progress: bool = True,
           guidance_scale: float = P2P_GUIDANCE) -> Inversion:
    """Invert ``image`` (a path, PIL image, array, or a list of them) into an ``Inversion``.

    Images of any size and mode are converted, centre-cropped and resized to the model's resolution
    (``Inversion.notes`` says what was done). ``method``: "ddim", "null-text" (slower, closer round trip) or
    "null-text-p2p" (Prompt-to-Prompt's variant under CFG ``guidance_scale`` with ``prompt``; see the module
    docstring). The inversion records the guidance its edits must run with.
    """
    if method not in METHODS:
        raise NoiseCLRLabError(f"Unknown inversion method {method!r}; use one of {', '.join(METHODS)}.")
    if method == "null-text-p2p" and not guidance_scale > 1.0:
        raise NoiseCLRLabError(f"null-text-p2p optimises the CFG unconditional: guidance_scale must be > 1, got {guidance_scale}.")
    if method == "null-text-p2p" and not prompt:
        raise NoiseCLRLabError("null-text-p2p inverts under CFG with a prompt: give the prompt that describes the image.")
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise NoiseCLRLabError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}.")
    helper = EditPipeline(pipe)
    items = image if isinstance(image, (list, tuple)) else [image]
    prepared = [prepare_image(im, helper.resolution) for im in items]
    pil = [p[0] for p in prepared]
    notes = [n for p in prepared for n in p[1]]
    x = pipe.image_processor.preprocess(pil)
    B = x.shape[0]
    z = encode_images(pipe, x).to(pipe.unet.dtype)

    sched = ddim_scheduler(pipe)
    sched.set_timesteps(num_inference_steps, device=z.device)
    timesteps = sched.timesteps  # noisiest first
    step = sched.config.num_train_timesteps // num_inference_steps
    emb = helper.encode([prompt] * B)
    unet = pipe.unet
    levels = [z]
    with torch.no_grad():
        for t in tqdm(timesteps.flip(0), desc="DDIM inversion", disable=not progress, leave=False):
            a_prev, a_t = _alpha(sched, int(t) - step), _alpha(sched, int(t))
            eps = eps_from_output(sched, unet(z, t, encoder_hidden_states=emb).sample, z, a_prev)
            x0 = (z - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
            z = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
            levels.append(z)
    latents = torch.stack(levels)  # (N + 1, B, C, h, w)

    nulls = losses = None
    w = 1.0
    if method == "null-text":
        nulls, losses = _null_text(unet, sched, latents, timesteps, emb, null_text_iters, null_text_lr, progress)
    elif method == "null-text-p2p":
        w = float(guidance_scale)
        nulls, losses = _null_text_p2p(unet, sched, latents, timesteps, emb, helper.encode([""] * B), w,
                                       null_text_iters, null_text_lr, progress)
    return Inversion(latents=latents, timesteps=timesteps.cpu(), null_embeddings=nulls, method=method,
                     image=pil if isinstance(image, (list, tuple)) else pil[0], notes=notes, null_losses=losses,
                     guidance_scale=w, prompt=prompt)


def _null_text(unet, sched, latents, timesteps, emb, iters, lr, progress) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sampling step, the base embedding that best lands one DDIM step on the inverted path.

    Returns (nulls (N, B, L, D), losses (N, 2): the step's mismatch with E("") carried over and after optimising).
    The best iterate is kept, so a step never ends worse than it started.
    """
    n = len(timesteps)
    z = latents[-1]
    null = emb.clone().float()
    out, losses = [], []

    def mismatch(e, t, target):
        eps = unet(z, t, encoder_hidden_states=e.to(z.dtype)).sample
        return F.mse_loss(sched.step(eps, t, z).prev_sample.float(), target.float())

    for i, t in enumerate(tqdm(timesteps, desc="null-text inversion", disable=not progress, leave=False)):
        target = latents[n - i - 1]
        null = null.detach().clone().requires_grad_(True)  # a copy: the stored previous step must not move
        opt = torch.optim.Adam([null], lr=lr)
        best, best_loss, first = null.detach().clone(), float("inf"), None
        with torch.enable_grad():
            for _ in range(iters + 1):
                loss = mismatch(null, t, target)
                value = loss.item()
                first = value if first is None else first
                if value < best_loss:
                    best, best_loss = null.detach().clone(), value
                if value < 1e-8:
                    break
                (grad,) = torch.autograd.grad(loss, [null])  # no .grad left on the frozen UNet
                null.grad = grad
                opt.step()
        null = best
        out.append(null)
        losses.append((first, best_loss))
        with torch.no_grad():
            z = sched.step(unet(z, t, encoder_hidden_states=null.to(z.dtype)).sample, t, z).prev_sample
    return torch.stack(out), torch.tensor(losses)


def _null_text_p2p(unet, sched, latents, timesteps, cond, empty, w, iters, lr, progress) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt-to-Prompt's null-text inversion: per sampling step i, the CFG unconditional null_i (started from
    the previous step's, first from E("")) that makes one guided DDIM step land on the inverted path; Adam with
    lr * (1 - i' / 100), at most ``iters`` iterations, stopping once the mismatch is below 1e-5 + 2e-5 * i', with
    i' = 50 i / N the step index on Prompt-to-Prompt's 50-step schedule (i' = i at N = 50); the last iterate is
    kept. Returns (nulls (N, B, L, D), losses (N, 2): mismatch before / after)."""
    n = len(timesteps)
    z = latents[-1]
    null = empty.clone().float()
    out, losses = [], []
    for i, t in enumerate(tqdm(timesteps, desc="null-text inversion (P2P)", disable=not progress, leave=False)):
        target = latents[n - i - 1].float()
        with torch.no_grad():
            eps_c = unet(z, t, encoder_hidden_states=cond).sample
        null = null.detach().clone().requires_grad_(True)  # a copy: the stored previous step must not move
        frac = i / n * 50  # Prompt-to-Prompt's step index on its 50-step schedule
        opt = torch.optim.Adam([null], lr=lr * (1.0 - frac / 100.0))
        first = last = None
        with torch.enable_grad():
            for _ in range(iters):
                eps_u = unet(z, t, encoder_hidden_states=null.to(z.dtype)).sample
                eps = eps_u + w * (eps_c - eps_u)
                loss = F.mse_loss(sched.step(eps, t, z).prev_sample.float(), target)
                last = loss.item()
                first = last if first is None else first
                (grad,) = torch.autograd.grad(loss, [null])
                null.grad = grad
                opt.step()
                if last < 1e-5 + frac * 2e-5:
                    break
        null = null.detach()
        with torch.no_grad():
            eps_u = unet(z, t, encoder_hidden_states=null.to(z.dtype)).sample
            z = sched.step(eps_u + w * (eps_c - eps_u), t, z).prev_sample
            after = F.mse_loss(z.float(), target).item()
        out.append(null)
        losses.append((first if first is not None else after, after))
    return torch.stack(out), torch.tensor(losses)
