"""The NoiseCLR loss on hand-made edit tensors whose answer is known."""

import math

import pytest
import torch

from noiseclr_lab.training.loss import noiseclr_loss


def _official(edits, tau, k):
    """The released code's formula, written out with loops: one anchor k, its negatives the other columns."""
    B, M = edits.shape[:2]
    f = torch.nn.functional.normalize(edits.flatten(2), dim=-1)
    pos = [math.exp(float(f[n, k] @ f[m, k]) / tau) for n in range(B) for m in range(n + 1, B)]
    neg = [math.exp(float(f[n, k] @ f[n, j]) / tau) for n in range(B) for j in range(M) if j != k]
    return -math.log((sum(pos) / len(pos)) / (sum(neg) / len(neg)))


def test_matches_the_official_formula_per_anchor():
    edits = torch.randn(5, 4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    for k in range(4):
        assert noiseclr_loss(edits, 0.5, anchors=[k]).item() == pytest.approx(_official(edits, 0.5, k), rel=1e-5)
    mean = sum(_official(edits, 0.5, k) for k in range(4)) / 4
    assert noiseclr_loss(edits, 0.5).item() == pytest.approx(mean, rel=1e-5)


def test_known_values():
    e = torch.eye(3)  # three orthogonal unit edit vectors
    # ideal: each direction's edit is the same on every image and orthogonal to the others
    ideal = e[None].repeat(4, 1, 1)  # (B=4, M=3, F=3)
    tau = 0.5
    # pos sims all 1, neg sims all 0 -> L = -log(e^{1/tau} / e^0) = -1/tau
    assert noiseclr_loss(ideal, tau).item() == pytest.approx(-1 / tau)
    # collapsed: every direction makes the same edit -> pos = neg -> L = 0
    same = torch.ones(4, 3, 5)
    assert noiseclr_loss(same, tau).item() == pytest.approx(0.0, abs=1e-6)
    # scale invariance: only directions of edits matter
    assert noiseclr_loss(ideal * 7.0, tau).item() == pytest.approx(-1 / tau)


def test_gradient_pushes_towards_disentanglement():
    torch.manual_seed(0)
    edits = torch.randn(6, 4, 8, requires_grad=True)
    opt = torch.optim.SGD([edits], lr=0.5)
    start = noiseclr_loss(edits).item()
    for _ in range(100):
        opt.zero_grad()
        noiseclr_loss(edits).backward()
        opt.step()
    assert noiseclr_loss(edits).item() < start - 1.0


def test_needs_two_images_and_two_directions():
    with pytest.raises(ValueError, match="at least 2 images"):
        noiseclr_loss(torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match="2 directions"):
        noiseclr_loss(torch.randn(3, 1, 4))


def test_patch_grid_scores_each_patch_alone():
    g = torch.Generator().manual_seed(1)
    edits = torch.randn(4, 3, 2, 4, 4, generator=g)
    # by hand: cut into 2 x 2 patches of 2 x 2 pixels, score each, average
    by_hand = [noiseclr_loss(edits[:, :, :, i:i + 2, j:j + 2], 0.3) for i in (0, 2) for j in (0, 2)]
    assert noiseclr_loss(edits, 0.3, patch_grid=2).item() == pytest.approx(float(sum(by_hand) / 4), rel=1e-5)
    assert noiseclr_loss(edits, 0.3, patch_grid=1).item() == pytest.approx(noiseclr_loss(edits, 0.3).item())
    with pytest.raises(ValueError, match="divisible"):
        noiseclr_loss(torch.randn(3, 2, 4, 5, 5), patch_grid=2)


def test_strength_penalty_lifts_weak_edits_only():
    from noiseclr_lab.training.loss import strength_penalty

    base = torch.full((4,), 10.0)  # ||u|| = 10 on every image
    edits = torch.zeros(4, 2, 3)
    edits[:, 0, 0] = 0.1  # r = 0.01
    edits[:, 1, 0] = 1.0  # r = 0.1, above the target
    p = strength_penalty(edits, base, target=0.05)
    assert p.item() == pytest.approx(0.5 * math.log(5.0), rel=1e-5)
    edits.requires_grad_(True)
    strength_penalty(edits, base, 0.05).backward()
    assert (edits.grad[:, 0, 0] < 0).all() and (edits.grad[:, 1] == 0).all()  # descent grows the weak edit
