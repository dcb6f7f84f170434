"""Ground-truth evaluation: calibration logic on synthetic sweeps; the full loop on the shipped toy model."""

from __future__ import annotations

import numpy as np

from noiseclr_lab.analysis.groundtruth import calibrate, effect_heatmap, list_baselines
from noiseclr_lab.editing import default_edit_start


def test_calibration_picks_the_gentlest_visible_scale():
    scales = [-8.0, -4.0, 4.0, 8.0]
    sweep = np.zeros((4, 2, 3))
    sweep[:, 0, 1] = [0.9, 0.5, 0.1, 0.95]  # visible at -4 first (|s| = 4 beats 8)
    sweep[:, 0, 2] = [0.6, 0.05, 0.0, 0.7]  # the larger scales also move factor 2
    sweep[:, 1, 0] = [0.1, 0.05, 0.2, 0.15]  # never visible: take its strongest scale
    eff, chosen = calibrate(sweep, scales, threshold=0.3)
    assert chosen == [-4.0, 4.0]
    assert np.allclose(eff[0], [0, 0.5, 0.05]) and np.allclose(eff[1], [0.2, 0, 0])


def test_default_edit_window_skips_the_first_fifth_of_the_steps():
    assert [default_edit_start(n) for n in (10, 15, 25, 50)] == [2, 3, 5, 10]  # SEGA: 10 of 50


def test_baselines_registered_and_heatmap_draws():
    assert set(list_baselines()) >= {"random", "init", "supervised"}
    res = {"trained": {"effect": np.eye(3).tolist(), "metrics": {"coverage": 3.0, "modularity_mean": 1.0},
                       "directions": [{"token": f"<d{i}>", "label": ""} for i in range(3)]}}
    img = effect_heatmap(res | {"random": res["trained"]}, ["a", "b", "c"])
    assert img.width > 2 * 3 * 26 and img.height > 3 * 26


def test_probe_effect_keeps_consistent_pushes_and_shrinks_random_flips():
    from noiseclr_lab.analysis.groundtruth import probe_effect

    seeds = 16
    base = np.tile([1.0, 0.0], (seeds, 1))  # a binary factor read as value 0 on every seed
    base[::2] = [0.0, 1.0]  # ... and value 1 on every other seed
    # scale 0: the edit turns every seed into value 1 (a semantic push: half the seeds change)
    # scale 1: the edit re-rolls four seeds, three one way and one the other (a chaotic perturbation)
    edited = np.stack([np.tile([0.0, 1.0], (seeds, 1)), base.copy()])
    for i in (1, 3, 5, 0):
        edited[1, i] = 1.0 - edited[1, i]
    shrunk, raw = probe_effect(edited, base, noise_z=1.0)
    assert np.isclose(raw[0], 0.5)
    assert 0.3 < shrunk[0] < 0.5  # a real push survives the correction (se = 0.5 / sqrt(16) ~ 0.13)
    assert raw[1] > 0.1 and shrunk[1] < 0.05  # the re-roll leaves a raw residue; the correction removes it
    same, same_raw = probe_effect(edited, base, noise_z=0.0)
    assert np.allclose(same, same_raw)


def test_a_reader_must_read_every_group_at_the_right_shape_and_finite():
    import pytest

    from noiseclr_lab.analysis.readers import check_reading
    from noiseclr_lab.errors import NoiseCLRLabError

    class Reader:
        values = {"hair": ("black", "red"), "glasses": ("no", "yes")}

    ok = {"hair": np.full((3, 2), 0.5), "glasses": np.eye(2)[[0, 1, 0]]}
    assert check_reading(Reader(), ok, 3)["glasses"].dtype == np.float64
    with pytest.raises(NoiseCLRLabError, match="no reading for group 'glasses'"):
        check_reading(Reader(), {"hair": ok["hair"]}, 3)
    with pytest.raises(NoiseCLRLabError, match=r"as shape \(2, 2\), expected \(3, 2\)"):
        check_reading(Reader(), ok | {"hair": ok["hair"][:2]}, 3)
    nan = ok["hair"].copy()
    nan[1, 0] = np.nan  # would be argmax'ed as the strongest scale and then score as no effect
    with pytest.raises(NoiseCLRLabError, match="'hair' as NaN or infinite"):
        check_reading(Reader(), ok | {"hair": nan}, 3)
