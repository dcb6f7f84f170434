"""Ground-truth evaluation: calibration logic on synthetic sweeps; the full loop on the shipped toy model."""

from __future__ import annotations

import numpy as np

from noiseclr_lab.analysis.groundtruth import calibrate, effect_heatmap, list_baselines


def test_calibration_picks_the_gentlest_visible_scale():
    scales = [-8.0, -4.0, 4.0, 8.0]
    sweep = np.zeros((4, 2, 3))
    sweep[:, 0, 1] = [0.9, 0.5, 0.1, 0.95]  # visible at -4 first (|s| = 4 beats 8)
    sweep[:, 0, 2] = [0.6, 0.05, 0.0, 0.7]  # the larger scales also move factor 2
    sweep[:, 1, 0] = [0.1, 0.05, 0.2, 0.15]  # never visible: take its strongest scale
    eff, chosen = calibrate(sweep, scales, threshold=0.3)
    assert chosen == [-4.0, 4.0]
    assert np.allclose(eff[0], [0, 0.5, 0.05]) and np.allclose(eff[1], [0.2, 0, 0])


def test_baselines_registered_and_heatmap_draws():
    assert set(list_baselines()) >= {"random", "init", "supervised"}
    res = {"trained": {"effect": np.eye(3).tolist(), "metrics": {"coverage": 3.0, "modularity_mean": 1.0},
                       "directions": [{"token": f"<d{i}>", "label": ""} for i in range(3)]}}
    img = effect_heatmap(res | {"random": res["trained"]}, ["a", "b", "c"])
    assert img.width > 2 * 3 * 26 and img.height > 3 * 26
