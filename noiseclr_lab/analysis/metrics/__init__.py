"""Disentanglement metrics on a K x F effect matrix (how much direction k moves factor f, in [0, 1]).

Each metric is one module with a pure numpy function ``compute_x(effect, **kw) -> dict[str, float]`` that
knows nothing of registration; this package holds the one explicit table of them (``METRICS``), as
scikit-learn's scorer table does. Metrics never import torch (an import-linter contract). Adding one:
docs/design.md, "Adding a metric".
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from noiseclr_lab.analysis.metrics.coverage import compute_coverage
from noiseclr_lab.analysis.metrics.dci import compute_dci
from noiseclr_lab.analysis.metrics.mig import compute_mig
from noiseclr_lab.analysis.metrics.modularity import compute_modularity
from noiseclr_lab.registry import Registry

MetricFn = Callable[..., dict[str, float]]

METRICS: Registry[MetricFn] = Registry("metric")
METRICS.register("coverage", compute_coverage)
METRICS.register("dci", compute_dci)
METRICS.register("mig", compute_mig)
METRICS.register("modularity", compute_modularity)


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


__all__ = ["METRICS", "compute_all", "compute_coverage", "compute_dci", "compute_mig", "compute_modularity",
           "get_metric", "list_metrics", "register_metric"]
