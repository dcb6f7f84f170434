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
