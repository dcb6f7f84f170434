"""Metric properties on synthetic effect matrices: ideal ~1, random and zero ~0, duplicates flagged."""

import numpy as np
import pytest

from noiseclr_lab.analysis.metrics import compute_all, get_metric, list_metrics
from noiseclr_lab.errors import NoiseCLRLabError

F = 6
IDEAL = np.eye(F) * 0.8  # each direction moves exactly one factor, each factor has one direction
RANDOM = np.random.default_rng(0).uniform(0, 1, (12, F))
ZERO = np.zeros((12, F))
# the headline score of each metric: ideal must reach ~1, random and zero stay low
HEADLINE = {"coverage": "coverage_frac", "dci": "dci_disentanglement", "mig": "mig_style", "modularity": "modularity_mean"}


def test_every_metric_has_a_headline():
    assert set(list_metrics()) == set(HEADLINE)


@pytest.mark.parametrize("name", list_metrics())
def test_ideal_scores_one_random_and_zero_score_low(name):
    key = HEADLINE[name]
    fn = get_metric(name)
    assert fn(IDEAL)[key] == pytest.approx(1.0)
    assert fn(RANDOM)[key] < 0.35
    assert fn(ZERO)[key] == pytest.approx(0.0)
    # one metric signature: an array in, a dict of floats out
    assert all(isinstance(v, float) for v in fn(RANDOM).values())


def test_duplicated_direction_is_flagged_by_the_gap():
    dup = np.vstack([IDEAL, IDEAL[:1]])  # factor 0 has two identical directions
    assert get_metric("mig")(dup)["mig_style"] == pytest.approx((F - 1) / F)
    assert get_metric("modularity")(dup)["modularity_mean"] == pytest.approx(1.0)  # each is still clean


def test_entangled_direction_fails_coverage():
    two = np.zeros((1, F))
    two[0, :2] = 0.8  # moves two factors equally
    assert get_metric("modularity")(two)["modularity_mean"] == pytest.approx(0.5)
    assert get_metric("coverage")(two)["coverage"] == 0.0
    weak = IDEAL * 0.1  # clean but below the visible-effect bar
    assert get_metric("coverage")(weak)["coverage"] == 0.0


def test_compute_all_and_unknown_metric():
    out = compute_all(IDEAL)
    assert {"coverage", "modularity_mean", "mig_style", "dci_completeness"} <= set(out)
    with pytest.raises(NoiseCLRLabError, match="known: coverage, dci"):
        get_metric("beta-vae")


# hand-computed values: each would catch a plausible wrong implementation that the property tests above accept
def test_dci_by_hand():
    e = np.zeros((2, F))
    e[0, :2], e[1, 2] = 0.4, 1.6  # direction 0 splits its effect over two factors, direction 1 is clean
    d0 = 1 - np.log(2) / np.log(F)
    out = get_metric("dci")(e)
    assert out["dci_disentanglement"] == pytest.approx((0.8 * d0 + 1.6) / 2.4)  # 0.871049: weighted by 0.8 / 1.6
    assert out["dci_completeness"] == pytest.approx(1.0)  # each factor has one direction
    assert get_metric("dci")(e[:1])["dci_disentanglement"] == pytest.approx(0.6131, abs=1e-4)  # log base F
    two = get_metric("dci")([[0.8], [0.8]])  # one factor moved equally by two directions
    assert two == pytest.approx({"dci_disentanglement": 1.0, "dci_completeness": 0.0})
    # completeness weights factors by their share of all effect: a factor only noise moves barely counts
    noise = np.zeros((2, 2))
    noise[0, 0], noise[:, 1] = 1.0, 0.01
    assert get_metric("dci")(noise)["dci_completeness"] == pytest.approx(1.0 / 1.02)


def test_modularity_and_coverage_by_hand():
    e = np.zeros((2, F))
    e[0, :3] = [0.6, 0.2, 0.2]  # active, 0.6 of its effect on its main factor
    e[1, 0] = 0.1  # below the visible bar: inactive, counts 0 in modularity_all
    assert get_metric("modularity")(e) == pytest.approx(
        {"modularity_mean": 0.6, "modularity_all": 0.3, "active_directions": 1.0})
    dup = np.vstack([IDEAL, IDEAL[:1], IDEAL[:1]])  # three clean directions on factor 0 still cover it once
    assert get_metric("coverage")(dup)["coverage"] == F
    edge = np.zeros((1, F))
    edge[0, :2] = [0.7, 0.3]  # modularity exactly 0.7: covered (the bar is inclusive)
    assert get_metric("coverage")(edge)["coverage"] == 1.0
    edge[0, :2] = [0.2, 0.0]  # effect exactly 0.2: active
    assert get_metric("coverage")(edge)["coverage"] == 1.0


def test_mig_by_hand_and_only_for_visible_effects():
    assert get_metric("mig")([[0.9], [0.45]])["mig_style"] == pytest.approx(0.5)
    assert get_metric("mig")(np.eye(F) * 0.01)["mig_style"] == 0.0  # nothing visible: no credit for exclusivity
    assert get_metric("mig")([[0.5], [-0.5]])["mig_style"] == pytest.approx(1.0)  # negatives are 0, never > 1
    assert get_metric("mig")([[0.5, 0.0]])["mig_style"] == pytest.approx(0.5)  # one direction: gap = 1 where visible


def test_bad_effect_matrices_are_refused_and_empty_ones_score_zero():
    for name in list_metrics():
        with pytest.raises(NoiseCLRLabError, match="NaN or infinite"):
            get_metric(name)([[np.nan, 0.5]])
        with pytest.raises(NoiseCLRLabError, match="directions, factors"):
            get_metric(name)([0.5, 0.2])
        assert all(v == 0.0 for v in get_metric(name)(np.zeros((0, F))).values())


def test_probe_effect_by_hand_paired_and_with_sample_deviation():
    from noiseclr_lab.analysis.groundtruth import probe_effect

    # a binary factor; value 1's probability moves by 1, 1, 1, 0 over four seeds: mean 0.75, SE 0.5 / 2
    base = np.array([[1.0, 0.0]] * 4)
    edited = np.array([[[0.0, 1.0]] * 3 + [[1.0, 0.0]]])
    shrunk, raw = probe_effect(edited, base, noise_z=1.0)
    assert raw == pytest.approx([0.75]) and shrunk == pytest.approx([0.5])  # ddof = 1 (ddof 0 gives 0.5335)
    # the same push of +0.2 on seeds that start at different places: the SE is of the paired difference, 0
    start = np.array([0.1, 0.3, 0.5, 0.7])
    base = np.stack([1 - start, start], 1)
    shrunk, raw = probe_effect((base + [-0.2, 0.2])[None], base, noise_z=1.0)
    assert shrunk == pytest.approx([0.2]) and raw == pytest.approx([0.2])
