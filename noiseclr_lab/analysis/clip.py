"""CLIP for analysis: any open_clip model (or the shipped toy CLIP) as an image/text encoder and a zero-shot
``Reader`` over a concept vocabulary.

Specs: ``toy`` (the shipped toy CLIP, the offline default), ``NAME:TAG`` (an open_clip model and pretrained
tag, read from the local cache, e.g. ``ViT-L-14:laion2b_s32b_b82k``), ``NAME:/path/weights.safetensors`` (a
local checkpoint of that architecture; safetensors only, no pickles), or ``NAME:random`` (random weights, the
same on every load: tests and plumbing only).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file

from noiseclr_lab.analysis.vocab import Vocabulary
from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.fileio import save_safetensors_atomic
from noiseclr_lab.models import pick_device

TOY = "toy"


@dataclass
class ClipModel:
    """A loaded open_clip model with the preprocessing it expects, working on float image tensors."""

    spec: str  # what it was loaded from ("toy", "ViT-L-14:laion2b_s32b_b82k", ...)
    model: torch.nn.Module  # an open_clip CLIP (eval mode)
    tokenizer: object  # open_clip tokenizer: list[str] -> (T, context) ids
    image_size: int  # the vision tower's input side
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    batch_size: int = 64

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def logit_scale(self) -> float:
        """The model's learned softmax temperature (exp of its logit_scale), as its zero-shot classifier uses."""
        return float(self.model.logit_scale.detach().exp())

    def fingerprint(self) -> str:
        """A short id of what the features depend on (feature caches are keyed by it): the spec, the weights
        file's size and time when the spec names one, the dtype and a few weights of each tower."""
        h = hashlib.sha256(f"{self.spec}|{self.dtype}|{self.image_size}".encode())
        _, _, tail = self.spec.partition(":")
        if tail and Path(tail).expanduser().is_file():
            st = Path(tail).expanduser().stat()
            h.update(f"{st.st_size}|{st.st_mtime_ns}".encode())
        params = list(self.model.parameters())
        for p in (params[0], params[-1]):  # two small tensors that differ between weight files
            h.update(p.detach().float().cpu().contiguous().flatten()[:4096].numpy().tobytes())
        return h.hexdigest()[:12]

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float in [0, 1] -> the tower's normalised input: bicubic resize of the shortest side
        to ``image_size`` (antialiased), centre crop, mean/std normalisation (open_clip's eval transform)."""
        x = images.float()
        h, w = x.shape[-2:]
        s = self.image_size
        if min(h, w) != s:
            scale = s / min(h, w)
            x = F.interpolate(x, size=(max(s, round(h * scale)), max(s, round(w * scale))), mode="bicubic",
                              antialias=True, align_corners=False)
        top, left = (x.shape[-2] - s) // 2, (x.shape[-1] - s) // 2
        x = x[..., top : top + s, left : left + s]
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float in [0, 1] -> (N, E) unit-norm float32 features on the CPU, in batches."""
        out = []
        for chunk in images.split(self.batch_size):
            x = self.pixels(chunk.to(self.device)).to(self.dtype)
            out.append(self.model.encode_image(x, normalize=True).float().cpu())
        return torch.cat(out)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """Prompts -> (T, E) unit-norm float32 features on the CPU."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            ids = self.tokenizer(texts[i : i + self.batch_size]).to(self.device)
            out.append(self.model.encode_text(ids, normalize=True).float().cpu())
        return torch.cat(out)


def _offline_hint(name: str, tag: str) -> str:
    return (f"the OpenCLIP weights {name}:{tag} are not in the local cache; fetch them once on a machine with "
            f"network access: python -c \"import open_clip; open_clip.create_model_and_transforms('{name}', "
            f"pretrained='{tag}')\"")


def load_clip_model(spec: str = TOY, device=None, batch_size: int = 64) -> ClipModel:
    """Load a CLIP for analysis from ``spec`` (see the module docstring); fp16 on GPUs, fp32 on the CPU."""
    import open_clip

    dev = pick_device(device)
    precision = "fp16" if dev.type == "cuda" else "fp32"
    if spec == TOY:
        from noiseclr_lab.toyworld import register_toy_clip, toy_clip_weights

        name, pretrained = register_toy_clip(), str(toy_clip_weights())
    else:
        name, sep, pretrained = spec.partition(":")
        known = open_clip.list_models()
        if name not in known:
            raise NoiseCLRLabError(f"Unknown CLIP model {name!r}; available: {TOY}, {', '.join(known)} "
                                   "(give NAME:TAG, e.g. ViT-L-14:laion2b_s32b_b82k).")
        if not sep or not pretrained:
            tags = open_clip.list_pretrained_tags_by_model(name)
            raise NoiseCLRLabError(f"CLIP spec {spec!r} needs a pretrained tag or a weights file: NAME:TAG with TAG "
                                   f"one of {', '.join(tags) or '(none)'}, NAME:/path/to/weights, or NAME:random.")
        if pretrained == "random":
            pretrained = None
        elif Path(pretrained).expanduser().is_file():
            if Path(pretrained).suffix.lower() != ".safetensors":
                raise NoiseCLRLabError(f"CLIP weights {pretrained} must be a .safetensors file (pickled checkpoints "
                                       "are not loaded); convert it with safetensors.torch.save_file first.")
        else:
            tags = open_clip.list_pretrained_tags_by_model(name)
            if pretrained not in tags:
                raise NoiseCLRLabError(f"{pretrained!r} is neither a weights file nor a pretrained tag of {name}; "
                                       f"its tags: {', '.join(tags) or '(none)'}.")
    try:
        with torch.random.fork_rng(devices=[]):  # NAME:random: the same random weights on every load (a fingerprint
            torch.manual_seed(0)  # that holds, reproducible plumbing), and the caller's random stream untouched
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=dev,
                                                                         precision=precision)
    except Exception as e:  # open_clip and huggingface_hub raise RuntimeError, OSError, ValueError, HF errors ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if pretrained and not Path(str(pretrained)).expanduser().is_file():
            raise NoiseCLRLabError(f"Could not load CLIP {spec!r}: {_offline_hint(name, pretrained)} ({msg}).") from e
        raise NoiseCLRLabError(f"Could not load CLIP {spec!r}: {msg}") from e
    cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    size = cfg.get("size", getattr(model.visual, "image_size", 224))
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = tuple(cfg.get("mean", getattr(model.visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN))
    std = tuple(cfg.get("std", getattr(model.visual, "image_std", None) or open_clip.OPENAI_DATASET_STD))
    return ClipModel(spec=spec, model=model.eval(), tokenizer=open_clip.get_tokenizer(name), image_size=int(size),
                     mean=mean, std=std, batch_size=batch_size)


class ClipReader:
    """Zero-shot CLIP over a vocabulary: p(value | image) = softmax over the group's values of
    logit_scale * cos(image feature, mean text feature of the value's prompts)."""

    def __init__(self, clip: ClipModel, vocab: Vocabulary, cache_dir: str | os.PathLike | None = None):
        self.clip, self.vocab = clip, vocab
        self.values = vocab.values
        self.text_features = text_features(clip, vocab, cache_dir)  # {group: (V, E)}

    def probabilities(self, features: torch.Tensor) -> dict[str, np.ndarray]:
        """(N, E) unit image features -> {group: (N, V)} zero-shot probabilities."""
        f = features.float()
        return {g: (self.clip.logit_scale * f @ t.T).softmax(-1).numpy() for g, t in self.text_features.items()}

    def read(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        return self.probabilities(self.clip.encode_images(images))


def text_features(clip: ClipModel, vocab: Vocabulary, cache_dir: str | os.PathLike | None = None
                  ) -> dict[str, torch.Tensor]:
    """{group: (V, E)} unit text features (each value's prompts averaged, then renormalised); cached in
    ``cache_dir`` by CLIP spec and prompts when given."""
    prompts = [p for vals in vocab.groups.values() for ps in vals.values() for p in ps]
    key = hashlib.sha256(json.dumps([clip.spec, prompts]).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"clip-text-{key}.safetensors" if cache_dir is not None else None
    flat = None
    if path is not None and path.is_file():
        try:
            flat = load_file(str(path))["features"]
        except (SafetensorError, OSError, KeyError):
            flat = None  # a damaged cache is recomputed
    if flat is None:
        flat = clip.encode_texts(prompts)
        if path is not None:
            save_safetensors_atomic({"features": flat}, path)
    out, i = {}, 0
    for g, vals in vocab.groups.items():
        rows = []
        for ps in vals.values():
            rows.append(F.normalize(flat[i : i + len(ps)].mean(0), dim=0))
            i += len(ps)
        out[g] = torch.stack(rows)
    return out
