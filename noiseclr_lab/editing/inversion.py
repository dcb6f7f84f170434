"""Invert real images into the model's noise: DDIM inversion, optionally refined by null-text inversion.

DDIM inversion (eta = 0) runs the sampler backwards under the empty prompt: from the level a_prev to
a_t it reuses eps(z_prev, t) in place of the unknown eps(z_t, t):

    x0   = (z_prev - sqrt(1 - a_prev) * eps) / sqrt(a_prev)
    z_t  = sqrt(a_t) * x0 + sqrt(1 - a_t) * eps

That approximation makes plain sampling drift from the inverted path. Null-text inversion (Mokady et al.
2023) fixes it: at each sampling step i it optimises the base (empty-prompt) embedding null_i so that one
DDIM step from the current latent lands on the inverted latent of the next level. Editing then runs with
w = 1 and null_i as the base term, the directions' deltas still taken against E("").
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


@torch.no_grad()
def encode_images(pipe, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> scaled latents (B, C, h, w) (posterior means: deterministic)."""
    vae = pipe.vae
    return vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mean * vae.config.scaling_factor


def invert(pipe, image, num_inference_steps: int = 50, method: str = "ddim", prompt: str = "",
           null_text_iters: int = 10, null_text_lr: float = 1e-2, progress: bool = True) -> Inversion:
    """Invert ``image`` (a path, PIL image, array, or a list of them) into an ``Inversion``.

    Images of any size and mode are converted, centre-cropped and resized to the model's resolution
    (``Inversion.notes`` says what was done). ``method``: "ddim", or "null-text" (slower, closer round trip).
    """
    if method not in ("ddim", "null-text"):
        raise NoiseCLRLabError(f"Unknown inversion method {method!r}; use 'ddim' or 'null-text'.")
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
            eps = unet(z, t, encoder_hidden_states=emb).sample
            a_prev, a_t = _alpha(sched, int(t) - step), _alpha(sched, int(t))
            x0 = (z - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
            z = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
            levels.append(z)
    latents = torch.stack(levels)  # (N + 1, B, C, h, w)

    nulls = losses = None
    if method == "null-text":
        nulls, losses = _null_text(unet, sched, latents, timesteps, emb, null_text_iters, null_text_lr, progress)
    return Inversion(latents=latents, timesteps=timesteps.cpu(), null_embeddings=nulls, method=method,
                     image=pil if isinstance(image, (list, tuple)) else pil[0], notes=notes, null_losses=losses)


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
        null = null.detach().requires_grad_(True)
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
