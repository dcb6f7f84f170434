"""noiseclr_lab: discover, apply, compose and judge NoiseCLR directions in Stable Diffusion models.

Public names are imported lazily so that ``noiseclr-lab --help`` and light imports stay fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "load_pipeline": "noiseclr_lab.models",
    "pick_device": "noiseclr_lab.models",
    "register_model_source": "noiseclr_lab.models",
    "list_model_sources": "noiseclr_lab.models",
    "DirectionBank": "noiseclr_lab.directions.bank",
    "tokenizer_fingerprint": "noiseclr_lab.directions.bank",
    "import_official": "noiseclr_lab.directions.official",
    "build_clip_tokenizer": "noiseclr_lab.tokenizer",
    "NoiseCLRLabError": "noiseclr_lab.errors",
    "EditPipeline": "noiseclr_lab.editing.pipeline",
    "EditOutput": "noiseclr_lab.editing.pipeline",
    "Inversion": "noiseclr_lab.editing.pipeline",
    "invert": "noiseclr_lab.editing.inversion",
    "TrainConfig": "noiseclr_lab.training.config",
    "train": "noiseclr_lab.training.trainer",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'noiseclr_lab' has no attribute {name!r}")


def __dir__():
    return __all__
