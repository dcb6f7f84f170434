"""The toy world: procedural domains with known factors and the small models shipped for them."""

from __future__ import annotations

from pathlib import Path

from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.toyworld.domains import Domain, Factor, get_domain, list_domains, register_domain

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "toy"
BUILD_HINT = "build it with `python scripts/build_toy_assets.py --help` or reinstall noiseclr_lab"


def load_toy_pipeline(domain: str, dtype=None):
    """The shipped toy ``StableDiffusionPipeline`` (one model serves every domain), on the CPU."""
    import torch
    from diffusers import StableDiffusionPipeline

    get_domain(domain)  # unknown domains fail here, listing the known ones
    folder = ASSET_DIR / "pipeline"
    if not (folder / "model_index.json").is_file():
        raise NoiseCLRLabError(f"The toy diffusion model is missing from {folder}; {BUILD_HINT}.")
    from noiseclr_lab.models import dtype_kwargs

    pipe = StableDiffusionPipeline.from_pretrained(
        folder, **dtype_kwargs(dtype or torch.float32), safety_checker=None, requires_safety_checker=False,
        local_files_only=True,
    )
    return pipe


__all__ = ["ASSET_DIR", "Domain", "Factor", "get_domain", "list_domains", "load_toy_pipeline", "register_domain"]
