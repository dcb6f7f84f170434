"""Disentanglement metrics on a K x F effect matrix (how much direction k moves factor f, in [0, 1]).

Each metric is one module with a pure numpy function ``compute_x(effect, **kw) -> dict[str, float]`` that
knows nothing of registration; this package holds the one explicit table of them (``METRICS``), as
scikit-learn's scorer table does. ``MEASURES`` lists the per-direction measures of the CLIP analysis
(re-scoring, auto-labels, consistency, preservation): numpy functions over sweep arrays. Metrics never import torch (an import-linter contract). Adding one:
docs/design.md, "Adding a metric".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from noiseclr_lab.analysis.metrics.autolabel import auto_labels, directional_similarity
from noiseclr_lab.analysis.metrics.calibration import calibrated_scales
from noiseclr_lab.analysis.metrics.composition import additivity, change_map, interference, overlap, rank_correlation
from noiseclr_lab.analysis.metrics.consistency import consistency, ranking_auc
from noiseclr_lab.analysis.metrics.coverage import compute_coverage
from noiseclr_lab.analysis.metrics.dci import compute_dci
from noiseclr_lab.analysis.metrics.mig import compute_mig
from noiseclr_lab.analysis.metrics.modularity import compute_modularity
from noiseclr_lab.analysis.metrics.preservation import clip_similarity, pixel_rmse
from noiseclr_lab.analysis.metrics.rescoring import group_effect, rescoring, strongest_scale, target_and_off_target
from noiseclr_lab.analysis.metrics.selection import edit_signature, greedy_select
from noiseclr_lab.registry import Registry

MetricFn = Callable[..., dict[str, float]]

METRICS: Registry[MetricFn] = Registry("metric")
METRICS.register("coverage", compute_coverage)
METRICS.register("dci", compute_dci)
METRICS.register("mig", compute_mig)
METRICS.register("modularity", compute_modularity)


# per-direction measures over sweep arrays (CLIP analysis); each is a numpy function of its own signature
MEASURES: dict[str, Callable] = {
    "rescoring": rescoring,
    "group_effect": group_effect,
    "strongest_scale": strongest_scale,
    "target_and_off_target": target_and_off_target,
    "auto_labels": auto_labels,
    "directional_similarity": directional_similarity,
    "consistency": consistency,
    "ranking_auc": ranking_auc,
    "clip_similarity": clip_similarity,
    "pixel_rmse": pixel_rmse,
    "calibrated_scales": calibrated_scales,
    "interference": interference,
    "additivity": additivity,
    "change_map": change_map,
    "overlap": overlap,
    "rank_correlation": rank_correlation,
    "edit_signature": edit_signature,
    "greedy_select": greedy_select,
}


def register_metric(name: str, fn: MetricFn) -> MetricFn:
    """Add a metric of your own to the table (``fn(effect (K, F)) -> dict[str, float]``)."""
    return METRICS.register(name, fn)


def get_metric(name: str) -> MetricFn:
    return METRICS.get(name)


def list_metrics() -> list[str]:
    return METRICS.names()


def compute_all(effect: np.ndarray) -> dict[str, float]:
    """Every metric of the table on ``effect`` (K, F), merged into one dict."""
    out: dict[str, float] = {}
    for name in list_metrics():
        out.update(METRICS.get(name)(effect))
    return out


__all__ = ["MEASURES", "METRICS", "compute_all", "compute_coverage", "compute_dci", "compute_mig", "compute_modularity",
           "get_metric", "list_metrics", "register_metric"]
