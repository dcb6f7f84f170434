"""The toy world: procedural domains with known factors and the small models shipped for them."""

from __future__ import annotations

from pathlib import Path

from noiseclr_lab.compat import dtype_kwargs
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
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, **dtype_kwargs(dtype or torch.float32), safety_checker=None, requires_safety_checker=False,
        local_files_only=True,
    )
    return pipe


def load_probe(domain: str, device="cpu"):
    """The shipped factor probe of ``domain``: ``load_probe("faces").predict(images)`` -> ProbeReading."""
    from noiseclr_lab.toyworld.probe import load_probe_from

    get_domain(domain)
    if not (ASSET_DIR / f"probe_{domain}.json").is_file():
        raise NoiseCLRLabError(f"The toy factor probe for {domain!r} is missing from {ASSET_DIR}; {BUILD_HINT}.")
    return load_probe_from(ASSET_DIR, domain, device)


CLIP_NAME = "toy-clip"


def register_toy_clip() -> str:
    """Register the toy CLIP's config with open_clip (``open_clip.add_model_config``); returns its name."""
    import open_clip

    cfg = ASSET_DIR / "clip" / f"{CLIP_NAME}.json"
    if not cfg.is_file():
        raise NoiseCLRLabError(f"The toy CLIP is missing from {cfg.parent}; {BUILD_HINT}.")
    if CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(cfg)
    return CLIP_NAME


def toy_clip_weights() -> Path:
    """Path of the shipped toy CLIP weights (pass as ``pretrained=`` to open_clip)."""
    return ASSET_DIR / "clip" / f"{CLIP_NAME}.safetensors"


def load_clip(device="cpu"):
    """The shipped toy open_clip CLIP: ``(model, preprocess, tokenizer)`` as open_clip builds them.

    Equivalent to ``open_clip.create_model_and_transforms("toy-clip", pretrained=toy_clip_weights())``
    after :func:`register_toy_clip`.
    """
    import open_clip

    name = register_toy_clip()
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(toy_clip_weights()), device=device)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def toy_assets_info() -> dict:
    """toy_assets.json: how each shipped asset was trained and its measured quality."""
    import json

    path = ASSET_DIR / "toy_assets.json"
    return json.loads(path.read_text()) if path.is_file() else {}


__all__ = ["ASSET_DIR", "Domain", "Factor", "get_domain", "list_domains", "load_clip", "load_probe",
           "load_toy_pipeline", "register_domain", "register_toy_clip", "toy_assets_info", "toy_clip_weights"]
