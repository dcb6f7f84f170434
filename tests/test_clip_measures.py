"""Properties of the CLIP measures on synthetic arrays: an ideal edit scores as one, noise and no edit as
zero, entanglement lowers confidence, rankings are scored correctly."""

from __future__ import annotations

import numpy as np
import pytest

from noiseclr_lab.analysis.metrics import MEASURES
from noiseclr_lab.analysis.metrics.autolabel import auto_labels, directional_similarity
from noiseclr_lab.analysis.metrics.consistency import consistency, ranking_auc
from noiseclr_lab.analysis.metrics.preservation import clip_similarity, pixel_rmse
from noiseclr_lab.analysis.metrics.rescoring import group_effect, rescoring, strongest_scale, target_and_off_target

RNG = np.random.default_rng(0)
GROUPS = [0, 0, 1, 1, 1]  # two groups: attributes 0-1 and 2-4


def _probs(n, K, S):
    base = np.tile([0.5, 0.5, 0.4, 0.3, 0.3], (S, 1))
    edited = np.tile(base, (n, K, 1, 1))
    return edited, base


def test_rescoring_of_an_ideal_edit_and_of_no_edit():
    edited, base = _probs(2, 2, 8)
    edited[1, 0, :, 0] += 0.4  # direction 0 at scale 1 raises attribute 0 by 0.4 on every seed
    edited[1, 0, :, 1] -= 0.4
    mean, se = rescoring(edited, base)
    assert mean[1, 0, 0] == pytest.approx(0.4) and se[1, 0, 0] == pytest.approx(0.0)
    assert np.allclose(mean[:, 1], 0) and np.allclose(mean[0], 0)  # no edit, no change
    eff = group_effect(mean, se, GROUPS)
    assert eff.shape == (2, 2, 2) and eff[1, 0, 0] == pytest.approx(0.4) and eff[1, 0, 1] == 0
    assert strongest_scale(eff)[0] == 1
    tgt = target_and_off_target(mean[1], GROUPS)
    assert tgt["target"][0] == 0 and tgt["gain"][0] == pytest.approx(0.4) and tgt["off_target"][0] == 0


def test_noise_is_shrunk_away():
    edited, base = _probs(1, 1, 12)
    flips = RNG.choice([-0.3, 0.3], size=12)
    edited[0, 0, :, 2] += flips  # pushes attribute 2 both ways: no consistent effect
    mean, se = rescoring(edited, base)
    assert group_effect(mean, se, GROUPS, noise_z=2.0)[0, 0, 1] < 0.05
    assert group_effect(mean, se, GROUPS, noise_z=0.0)[0, 0, 1] == pytest.approx(abs(flips.mean()))


def test_auto_label_sign_and_confidence():
    scales = [-4.0, 4.0]
    edited, base = _probs(2, 3, 6)
    edited[0, 0, :, 3] += 0.5  # direction 0 raises attribute 3 at the negative scale
    edited[1, 1, :, 1] += 0.4  # direction 1 raises attribute 1 ...
    edited[1, 1, :, 4] += 0.35  # ... and nearly as much attribute 4 of the other group: entangled
    mean, se = rescoring(edited, base)
    lab = auto_labels(mean, se, scales, GROUPS)
    assert lab["attribute"][0] == 3 and lab["sign"][0] == -1 and lab["confidence"][0] == pytest.approx(0.5)
    assert lab["attribute"][1] == 1 and lab["sign"][1] == 1
    assert lab["confidence"][1] == pytest.approx(0.05) and lab["confidence"][1] < lab["confidence"][0]
    assert lab["confidence"][2] == pytest.approx(0.0)  # a direction that does nothing has no confidence


def test_consistency_of_aligned_random_and_null_changes():
    S, E = 12, 256
    base = RNG.normal(size=(S, E))
    push = RNG.normal(size=E)
    edited = np.stack([base + push, base + RNG.normal(size=(S, E)), base])[None]  # (1, 3, S, E)
    c = consistency(edited, base)[0]
    assert c[0] == pytest.approx(1.0) and abs(c[1]) < 0.1 and c[2] == 0.0


def test_ranking_auc():
    assert ranking_auc([3, 2, 1, 0], [True, True, False, False]) == 1.0
    assert ranking_auc([0, 1, 2, 3], [True, True, False, False]) == 0.0
    assert ranking_auc([1, 1], [True, False]) == 0.5
    assert np.isnan(ranking_auc([1, 2], [True, True]))


def test_preservation_and_directional_similarity():
    f = RNG.normal(size=(4, 8))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    assert np.allclose(clip_similarity(f[None, None], f), 1.0)
    x = np.zeros((2, 4, 3, 2, 2))
    x[1] += 0.5
    assert np.allclose(pixel_rmse(x, np.zeros((4, 3, 2, 2))), [0.0, 0.5])
    t = np.eye(3)
    assert np.allclose(directional_similarity(2 * t[1], t), [0, 1, 0])


@pytest.mark.parametrize("name", sorted(MEASURES))
def test_every_measure_is_in_the_table_and_numpy_only(name):
    import inspect

    src = inspect.getsource(inspect.getmodule(MEASURES[name]))
    assert "import torch" not in src


def test_calibrated_scales_interpolate_to_the_target_on_the_label_side():
    from noiseclr_lab.analysis.metrics.calibration import calibrated_scales

    scales = [-6.0, -3.0, 3.0, 6.0]
    curve = np.array([[0.6, 0.3, 0.1, 0.2],   # direction 0, sign -: 0.3 at -3 exactly ... target 0.45 -> -4.5
                      [0.0, 0.0, 0.5, 0.9],   # direction 1, sign +: reaches 0.45 between 0 and 3 -> 2.7
                      [0.1, 0.05, 0.1, 0.2]]).T  # direction 2 never reaches it: strongest scale, not reached
    cal, ok = calibrated_scales(curve, scales, signs=[-1, 1, 1], target=0.45)
    assert cal == pytest.approx([-4.5, 2.7, 6.0]) and ok.tolist() == [True, True, False]
    # a steeper direction gets a smaller calibrated scale: equal effect, different scales
    steep = np.array([[0, 0, 0.9, 1.0]]).T
    gentle = np.array([[0, 0, 0.3, 0.6]]).T
    assert calibrated_scales(steep, scales, [1], 0.45)[0][0] < calibrated_scales(gentle, scales, [1], 0.45)[0][0]


def test_interference_additivity_and_overlap_properties():
    from noiseclr_lab.analysis.metrics.composition import (
        additivity,
        change_map,
        interference,
        overlap,
        rank_correlation,
    )

    S, A = 6, 4
    base = np.full((S, A), 0.25)
    alone = np.repeat(base[None], 3, 0).copy()
    alone[0, :, 0] += 0.4  # direction 0 raises attribute 0
    alone[1, :, 1] += 0.3  # direction 1 raises attribute 1
    alone[2, :, 2] += 0.3  # direction 2 raises attribute 2
    pair = np.zeros((3, 3, S, A))
    for i in range(3):
        for j in range(3):
            pair[i, j] = base + (alone[i] - base) + (alone[j] - base)  # perfectly additive composition
    pair[0, 2, :, 0] = pair[2, 0, :, 0] = base[:, 0] + 0.1  # ... except that 2 undoes most of 0's effect
    inter = interference(base, alone, pair, own_attr=[0, 1, 2])
    assert np.isnan(inter).sum() == 3 and inter[0, 1] == pytest.approx(0) and inter[1, 0] == pytest.approx(0)
    assert inter[0, 2] == pytest.approx(0.75) and inter[2, 0] == pytest.approx(0)

    E = 16
    fb = RNG.normal(size=(S, E))
    fa = np.stack([fb + RNG.normal(size=E) for _ in range(3)])
    fp = np.zeros((3, 3, S, E))
    for i in range(3):
        for j in range(3):
            fp[i, j] = fa[i] + fa[j] - fb
    fp[1, 2] = fp[2, 1] = fb - (fa[1] - fb) - (fa[2] - fb)  # the composition goes the opposite way
    add = additivity(fb, fa, fp)
    assert add[0, 1] == pytest.approx(1.0) and add[1, 2] == pytest.approx(-1.0)

    maps = np.zeros((3, 4, 4))
    maps[0, :2] = 1  # top half
    maps[1, 2:] = 1  # bottom half
    maps[2] = 1  # everywhere
    ov = overlap(maps)
    assert ov[0, 0] == pytest.approx(1) and ov[0, 1] == pytest.approx(0) and ov[0, 2] == pytest.approx(0.5)
    x = np.zeros((2, 3, 4, 4))
    assert change_map(x + 0.5, x).shape == (4, 4) and np.allclose(change_map(x + 0.5, x), 0.5)
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(rank_correlation([1, 2], [1, 2]))
