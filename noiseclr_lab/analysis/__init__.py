"""The analysis layer: sweeps, readers (toy probe, CLIP), ground-truth scoring, CLIP analysis, measures.

    from noiseclr_lab.analysis import SweepSettings, read_sweep, ProbeReader, ClipReader, load_clip_model
    from noiseclr_lab.analysis import load_vocabulary, score_bank, analyze_bank

Names are imported on first use (submodules such as ``analysis.metrics`` stay light); see docs/design.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from noiseclr_lab._lazy import lazy_exports

_LAZY = {
    "SweepSettings": "noiseclr_lab.analysis.sweep",
    "SweepReading": "noiseclr_lab.analysis.sweep",
    "iter_sweep": "noiseclr_lab.analysis.sweep",
    "read_sweep": "noiseclr_lab.analysis.sweep",
    "sweep_cache_dir": "noiseclr_lab.analysis.sweep",
    "Reader": "noiseclr_lab.analysis.readers",
    "ProbeReader": "noiseclr_lab.analysis.readers",
    "ClipModel": "noiseclr_lab.analysis.clip",
    "ClipReader": "noiseclr_lab.analysis.clip",
    "load_clip_model": "noiseclr_lab.analysis.clip",
    "Vocabulary": "noiseclr_lab.analysis.vocab",
    "load_vocabulary": "noiseclr_lab.analysis.vocab",
    "list_vocabularies": "noiseclr_lab.analysis.vocab",
    "score_bank": "noiseclr_lab.analysis.groundtruth",
    "list_baselines": "noiseclr_lab.analysis.groundtruth",
    "register_baseline": "noiseclr_lab.analysis.groundtruth",
    "analyze_bank": "noiseclr_lab.analysis.clipanalysis",
    "METRICS": "noiseclr_lab.analysis.metrics",
    "MEASURES": "noiseclr_lab.analysis.metrics",
}

if TYPE_CHECKING:
    from noiseclr_lab.analysis.clip import ClipModel, ClipReader, load_clip_model
    from noiseclr_lab.analysis.clipanalysis import analyze_bank
    from noiseclr_lab.analysis.groundtruth import list_baselines, register_baseline, score_bank
    from noiseclr_lab.analysis.metrics import MEASURES, METRICS
    from noiseclr_lab.analysis.readers import ProbeReader, Reader
    from noiseclr_lab.analysis.sweep import SweepReading, SweepSettings, iter_sweep, read_sweep, sweep_cache_dir
    from noiseclr_lab.analysis.vocab import Vocabulary, list_vocabularies, load_vocabulary

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__)
