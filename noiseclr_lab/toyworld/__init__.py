"""The toy world: procedural domains with known factors and the small models shipped for them."""

from __future__ import annotations

from pathlib import Path

from noiseclr_lab.compat import dtype_kwargs
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.toyworld.domains import Domain, Factor, get_domain, list_domains, register_domain

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "toy"
TOY_VARIANTS = {"base": None, "zsnr": "pipeline_zsnr"}  # variant -> folder of the components it replaces
BUILD_HINT = "build it with `python scripts/build_toy_assets.py --help` or reinstall noiseclr_lab"


def load_toy_pipeline(domain: str, dtype=None, variant: str = "base"):
    """The shipped toy ``StableDiffusionPipeline`` (one model serves every domain), on the CPU.

    ``variant="zsnr"`` (model spec ``toy-zsnr:<domain>``): the same model fine-tuned on a zero-terminal-SNR
    schedule with v-prediction (its text encoder, UNet and scheduler in ``assets/toy/pipeline_zsnr``; tokenizer
    and VAE shared), whose layout follows the caption (text fidelity for position 1.00 in shapes and scenes,
    against ~0.5 for the default). It is opt-in: toy_assets.json ``unet_zsnr`` records its quality and how it
    was trained, and the README ("The toy world", "Discovery") why the default stays: discovery finds fewer
    factors on it (2-4 of the 6 face factors on training seeds 0-4, against 5-6)."""
    import torch
    from diffusers import StableDiffusionPipeline

    get_domain(domain)  # unknown domains fail here, listing the known ones
    if variant not in TOY_VARIANTS:
        raise NoiseCLRLabError(f"Unknown toy model variant {variant!r}; known: {', '.join(TOY_VARIANTS)}.")
    folder = ASSET_DIR / "pipeline"
    extra = ASSET_DIR / TOY_VARIANTS[variant] if TOY_VARIANTS[variant] else None
    for f in (folder / "model_index.json", extra / "unet" / "config.json" if extra else None):
        if f is not None and not f.is_file():
            raise NoiseCLRLabError(f"The toy diffusion model is missing from {f.parent}; {BUILD_HINT}.")
    kw = dtype_kwargs(dtype or torch.float32)
    parts = {}
    if extra is not None:
        from diffusers import DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel

        parts = {"text_encoder": CLIPTextModel.from_pretrained(extra / "text_encoder", local_files_only=True, **kw),
                 "unet": UNet2DConditionModel.from_pretrained(extra / "unet", local_files_only=True, **kw),
                 "scheduler": DDIMScheduler.from_pretrained(extra / "scheduler", local_files_only=True)}
    return StableDiffusionPipeline.from_pretrained(folder, **kw, **parts, safety_checker=None,
                                                   requires_safety_checker=False, local_files_only=True)


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
