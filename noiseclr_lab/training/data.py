"""Training images -> VAE latents, cached once per (images, model, resolution)."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from noiseclr_lab.editing.images import prepare_image
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.fileio import save_safetensors_atomic
from noiseclr_lab.toyworld.render import FACTORS_CSV

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def list_image_files(folder: Path) -> list[Path]:
    """Image files (by suffix) directly in ``folder`` or below, sorted."""
    if not folder.is_dir():
        raise NoiseCLRLabError(f"Training data folder {folder} does not exist (or is not a folder).")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_training_images(data: str, resolution: int, num_images: int = 256, seed: int = 0, max_images: int = 0):
    """(PIL images, a fingerprint of the data) from a folder or ``toy:<domain>``.

    Folder images of any size or mode are converted, centre-cropped and resized; files that are not
    readable images are skipped and counted in one warning.
    """
    if data.startswith("toy:"):
        from noiseclr_lab.toyworld import get_domain

        dom = get_domain(data.split(":", 1)[1])
        records = dom.sample(np.random.default_rng(seed), num_images)
        images = [prepare_image(im, resolution)[0] for im in dom.render(records)]
        return images, f"{data}:{num_images}:{seed}"
    folder = Path(data).expanduser()
    files = list_image_files(folder)
    if max_images:
        files = files[:max_images]
    others = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES
              and not p.name.startswith(".")
              and p.name != FACTORS_CSV]  # the labels `toy render` writes beside its images
    images, skipped, digest = [], len(others), hashlib.sha256()
    for p in tqdm(files, desc="reading images", leave=False):
        try:
            img, _ = prepare_image(p, resolution)
        except NoiseCLRLabError:
            skipped += 1
            continue
        images.append(img)
        st = p.stat()
        digest.update(f"{p.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}".encode())
    if skipped:
        warnings.warn(f"Skipped {skipped} file(s) in {folder} that are not readable jpg/png/webp/bmp images.", stacklevel=2)
    if not images:
        raise NoiseCLRLabError(f"No readable images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)}).")
    return images, f"folder:{folder.resolve()}:{digest.hexdigest()[:16]}"


def data_digest(fingerprint: str) -> str:
    """A data fingerprint without the folder's path (``folder:<path>:<digest>`` -> ``<digest>``), so that a moved
    data folder still matches (resume, the latent cache); ``toy:`` fingerprints have no path and stay whole."""
    return fingerprint.rsplit(":", 1)[-1] if fingerprint.startswith("folder:") else fingerprint


def _cache_root(cache_dir: str) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else Path.home() / ".cache" / "noiseclr_lab" / "latents"


@torch.no_grad()
def encode_dataset(pipe, images, fingerprint: str, model_spec: str, cache_dir: str = "", batch_size: int = 16) -> torch.Tensor:
    """Scaled VAE latents (N, C, h, w) float32 of ``images``, from the cache when the same data and model were seen."""
    from safetensors.torch import load_file

    from noiseclr_lab.editing.inversion import encode_images

    vae = pipe.vae
    key = hashlib.sha256(json.dumps([data_digest(fingerprint), model_spec, len(images), images[0].size,
                                     float(vae.config.scaling_factor)]).encode()).hexdigest()[:20]
    path = _cache_root(cache_dir) / f"{key}.safetensors"
    if path.is_file():
        from safetensors import SafetensorError

        try:
            cached = load_file(str(path))["latents"]
            if len(cached) == len(images):
                return cached
        except (SafetensorError, OSError, KeyError):
            pass  # a damaged cache file (e.g. a full disk when it was written): encode again, and replace it
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc="encoding latents", leave=False):
        x = pipe.image_processor.preprocess(images[i : i + batch_size])
        out.append(encode_images(pipe, x).float().cpu())
    latents = torch.cat(out)
    if not torch.isfinite(latents).all():
        raise NoiseCLRLabError("The VAE produced non-finite latents; try dtype fp32 for this model.")
    save_safetensors_atomic({"latents": latents}, path, metadata={"fingerprint": fingerprint, "model": model_spec})
    os.utime(path)
    return latents
