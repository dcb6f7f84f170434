"""Disentanglement metrics on a K x F effect matrix (how much direction k moves factor f, in [0, 1]).

Each metric is one module with a pure ``_compute_x(effect)`` and a public ``compute_x(effect, **kw) -> dict``,
registered by name; ``compute_all`` runs every registered metric.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from noiseclr_lab.registry import Registry

_METRICS: Registry[Callable[..., dict[str, float]]] = Registry("metric")


def register_metric(name: str, fn: Callable[..., dict[str, float]]) -> Callable:
    return _METRICS.register(name, fn)


def get_metric(name: str) -> Callable[..., dict[str, float]]:
    return _METRICS.get(name)


def list_metrics() -> list[str]:
    return _METRICS.names()


def compute_all(effect: np.ndarray) -> dict[str, float]:
    """Every registered metric on ``effect`` (K, F), merged into one dict."""
    out: dict[str, float] = {}
    for name in list_metrics():
        out.update(get_metric(name)(effect))
    return out


from noiseclr_lab.analysis.metrics import coverage, dci, mig, modularity  # noqa: E402  (they register themselves)

__all__ = ["compute_all", "coverage", "dci", "get_metric", "list_metrics", "mig", "modularity", "register_metric"]
