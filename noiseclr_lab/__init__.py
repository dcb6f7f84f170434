"""noiseclr_lab: discover, apply, compose and judge NoiseCLR directions in Stable Diffusion models.

Public names are imported lazily (``_LAZY``) so that ``noiseclr-lab --help`` and light imports stay fast; the
``TYPE_CHECKING`` block names the same objects for editors and type checkers. See docs/design.md for the
layers these names come from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from noiseclr_lab._lazy import lazy_exports
from noiseclr_lab._version import __version__

_LAZY = {
    "load_pipeline": "noiseclr_lab.models",
    "pick_device": "noiseclr_lab.models",
    "pipeline_spec": "noiseclr_lab.models",
    "register_model_source": "noiseclr_lab.models",
    "list_model_sources": "noiseclr_lab.models",
    "DirectionBank": "noiseclr_lab.directions.bank",
    "tokenizer_fingerprint": "noiseclr_lab.directions.bank",
    "import_official": "noiseclr_lab.directions.official",
    "build_clip_tokenizer": "noiseclr_lab.tokenizer",
    "NoiseCLRLabError": "noiseclr_lab.errors",
    "RunDir": "noiseclr_lab.store",
    "EditPipeline": "noiseclr_lab.editing.pipeline",
    "EditOutput": "noiseclr_lab.editing.pipeline",
    "Inversion": "noiseclr_lab.editing.pipeline",
    "default_edit_start": "noiseclr_lab.editing.pipeline",
    "invert": "noiseclr_lab.editing.inversion",
    "TrainConfig": "noiseclr_lab.training.config",
    "train": "noiseclr_lab.training.trainer",
    "Reader": "noiseclr_lab.analysis.readers",
    "ProbeReader": "noiseclr_lab.analysis.readers",
    "SweepSettings": "noiseclr_lab.analysis.sweep",
    "read_sweep": "noiseclr_lab.analysis.sweep",
    "score_bank": "noiseclr_lab.analysis.groundtruth",
    "evaluate_gt": "noiseclr_lab.workflows",
    "analyze": "noiseclr_lab.workflows",
    "demo": "noiseclr_lab.workflows",
}

if TYPE_CHECKING:  # the same names, eagerly, for editors and type checkers (never executed)
    from noiseclr_lab.analysis.groundtruth import score_bank
    from noiseclr_lab.analysis.readers import ProbeReader, Reader
    from noiseclr_lab.analysis.sweep import SweepSettings, read_sweep
    from noiseclr_lab.directions.bank import DirectionBank, tokenizer_fingerprint
    from noiseclr_lab.directions.official import import_official
    from noiseclr_lab.editing.inversion import invert
    from noiseclr_lab.editing.pipeline import EditOutput, EditPipeline, Inversion, default_edit_start
    from noiseclr_lab.errors import NoiseCLRLabError
    from noiseclr_lab.models import list_model_sources, load_pipeline, pick_device, pipeline_spec, register_model_source
    from noiseclr_lab.store import RunDir
    from noiseclr_lab.tokenizer import build_clip_tokenizer
    from noiseclr_lab.training.config import TrainConfig
    from noiseclr_lab.training.trainer import train
    from noiseclr_lab.workflows import analyze, demo, evaluate_gt

__all__ = sorted(_LAZY) + ["__version__"]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
