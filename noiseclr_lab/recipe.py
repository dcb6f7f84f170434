"""An edit recipe: everything that decides one edited image (model, bank, directions and scales, step windows,
prompt, seed, steps, guidance and its rescale, or a real image and its inversion), as JSON. ``workflows.apply_recipe`` makes
the image; the dashboard downloads a recipe and ``noiseclr-lab edit --recipe FILE`` replays it to the same
pixels (on the same device and dtype)."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from noiseclr_lab.errors import NoiseCLRLabError
from noiseclr_lab.fileio import read_json, write_json_atomic

RECIPE_SCHEMA = "noiseclr_lab.recipe/2"  # 2 added ``resolved``; a version that knows only 1 refuses it by its schema
READ_SCHEMAS = ("noiseclr_lab.recipe/1", RECIPE_SCHEMA)  # /1 recipes load without ``resolved`` (recorded on replay)


@dataclass
class Recipe:
    model: str  # a load_pipeline spec
    bank: str  # path of the directions.safetensors
    edits: dict[str, float]  # direction (token or label) -> scale (a multiple of the calibrated one if calibrated)
    windows: dict[str, list[int]] = field(default_factory=dict)  # direction -> [start, end) denoising steps
    calibrated: bool = False
    edit_start: int = 0
    prompt: str = ""
    negative_prompt: str | None = None
    steps: int = 50
    guidance: float = 7.5
    guidance_rescale: float = 0.0  # EditPipeline's guidance_rescale (0: none)
    seed: int = 0
    image: str | None = None  # a real image to edit (inverted first) instead of a seed
    inversion: str = "ddim"  # ddim, null-text or null-text-p2p
    bank_hash: str | None = None  # the bank's content hash when the recipe was made (checked on replay)
    image_sha256: str | None = None  # the image file's hash (checked on replay)
    # the edits as they resolved when the recipe was made: {token: {"scale": absolute scale, "window": [start, end)}}
    # (filled by workflows.check_recipe on first use; on replay the edits must resolve the same, so that a label moved to
    # another direction or a calibrated scale changed by a later analyze is refused, not silently applied)
    resolved: dict[str, dict] | None = None

    def __post_init__(self):
        if not isinstance(self.edits, dict) or not self.edits:
            raise NoiseCLRLabError("A recipe needs at least one edit (direction -> scale).")
        try:
            self.edits = {str(k): float(v) for k, v in self.edits.items()}
            self.windows = {str(k): [int(v[0]), int(v[1])] for k, v in (self.windows or {}).items()}
            self.steps, self.seed, self.edit_start = int(self.steps), int(self.seed), int(self.edit_start)
            self.guidance, self.guidance_rescale = float(self.guidance), float(self.guidance_rescale)
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
            raise NoiseCLRLabError(f"A recipe field has the wrong type ({type(e).__name__}: {e}).") from e
        if not all(math.isfinite(v) for v in [*self.edits.values(), self.guidance]):
            raise NoiseCLRLabError("A recipe's scales and guidance must be finite numbers.")
        if not 0.0 <= self.guidance_rescale <= 1.0:
            raise NoiseCLRLabError(f"A recipe's guidance_rescale is a share in [0, 1], got {self.guidance_rescale}.")
        if not isinstance(self.calibrated, bool):
            raise NoiseCLRLabError(f"A recipe's calibrated is true or false, got {self.calibrated!r}.")
        for name in ("model", "bank", "prompt"):
            if not isinstance(getattr(self, name), str):
                raise NoiseCLRLabError(f"A recipe's {name} is a string, got {type(getattr(self, name)).__name__}.")
        for name in ("image", "negative_prompt", "bank_hash", "image_sha256"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise NoiseCLRLabError(f"A recipe's {name} is a string or null.")
        if self.steps < 1 or not 0 <= self.edit_start < self.steps:
            raise NoiseCLRLabError(f"A recipe needs steps >= 1 and 0 <= edit_start < steps, got {self.steps} and "
                                   f"{self.edit_start}.")
        if self.resolved is not None:
            try:
                self.resolved = resolved_edits(self.resolved)
            except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:
                raise NoiseCLRLabError(f"A recipe's resolved edits are malformed ({type(e).__name__}: {e}).") from e
            if not all(math.isfinite(e["scale"]) for e in self.resolved.values()):
                raise NoiseCLRLabError("A recipe's resolved scales must be finite numbers.")
        if self.inversion not in ("ddim", "null-text", "null-text-p2p"):
            raise NoiseCLRLabError(f"Unknown inversion {self.inversion!r}; use ddim, null-text or null-text-p2p.")

    def as_dict(self) -> dict:
        return {"schema": RECIPE_SCHEMA} | asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        write_json_atomic(Path(path), self.as_dict())
        return Path(path)

    @classmethod
    def from_dict(cls, data: dict, source: str = "recipe") -> Recipe:
        if not isinstance(data, dict) or data.get("schema") not in READ_SCHEMAS:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise NoiseCLRLabError(f"{source} is not a {RECIPE_SCHEMA} recipe (schema {found!r}).")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"schema"})
        if unknown:
            raise NoiseCLRLabError(f"{source} has unknown fields: {', '.join(unknown)}.")
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as e:
            raise NoiseCLRLabError(f"{source} lacks a field ({e}).") from e

    @classmethod
    def load(cls, path: str | os.PathLike) -> Recipe:
        """A recipe file; a relative model, bank or image path in it that is not found from here is read relative
        to the recipe's folder (recipes written by hand, or by an older version that kept paths as typed)."""
        recipe = cls.from_dict(read_json(Path(path)), str(path))
        for name in ("model", "bank", "image"):  # a model spec that is no path (toy:faces, a hub id) stays as it is
            value = getattr(recipe, name)
            if value and not Path(value).is_absolute() and not Path(value).exists():
                beside = Path(path).resolve().parent / value
                if beside.exists():
                    setattr(recipe, name, str(beside))
        return recipe


def resolved_edits(spec: dict) -> dict[str, dict]:
    """{token: {"scale", "window", ...}} (``resolve_edits``' result, or a recipe's record of it) as a recipe
    records it: {token: {"scale": float, "window": [start, end]}}."""
    return {str(t): {"scale": float(e["scale"]), "window": [int(e["window"][0]), int(e["window"][1])]}
            for t, e in spec.items()}


def file_sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
