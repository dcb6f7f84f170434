"""The NoiseCLR contrastive objective (docs/design.md, "Method").

Edits D[n, k] = eps(z_n^t, t, E("<dk>")) - eps(z_n^t, t, E("")) for B images n and M directions k.
For an anchor direction k, with sim the cosine similarity of the flattened edits and tau the temperature:

    positives: the same direction on different images    sim(D[n, k], D[n', k]),  n < n'
    negatives: different directions on the same image    sim(D[n, k], D[n, l]),   l != k

    L_k = -log( mean_pos exp(sim / tau) / mean_neg exp(sim / tau) )

The official code uses one anchor per step (anchors=[0], column 0 the anchor, the rest its negatives);
the batched schedule averages L_k over every drawn direction.

With ``patch_grid`` g > 1 (an extension, not in the paper) the latent is cut into g x g patches and the loss
is the mean of the loss computed on each patch alone: an edit that changes a small region (glasses, a mouth)
then decides the similarities of its patches instead of being outweighed by edits that recolour the whole
image; on aligned data (faces) the same region holds the same part in every image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def noiseclr_loss(edits: torch.Tensor, temperature: float = 0.5, anchors: list[int] | None = None,
                  patch_grid: int = 1) -> torch.Tensor:
    """Mean of L_k over ``anchors`` (default: every direction), and over patches when ``patch_grid`` > 1.

    edits: (B, M, ...) edit vectors of B >= 2 images for M >= 2 directions; (B, M, C, h, w) latents when
    ``patch_grid`` > 1 (h and w divisible by it). Returns a scalar.
    """
    B, M = edits.shape[:2]
    if B < 2 or M < 2:
        raise ValueError(f"NoiseCLR needs at least 2 images and 2 directions per step, got B={B}, M={M}.")
    if patch_grid > 1:
        if edits.dim() != 5 or edits.shape[3] % patch_grid or edits.shape[4] % patch_grid:
            raise ValueError(f"patch_grid {patch_grid} needs (B, M, C, h, w) edits with h and w divisible by it, "
                             f"got shape {tuple(edits.shape)}.")
        g = patch_grid
        C, h, w = edits.shape[2:]
        patches = edits.reshape(B, M, C, g, h // g, g, w // g).permute(3, 5, 0, 1, 2, 4, 6).reshape(g * g, B, M, -1)
        return torch.stack([noiseclr_loss(p, temperature, anchors) for p in patches]).mean()
    f = F.normalize(edits.flatten(2).float(), dim=-1, eps=1e-12)  # (B, M, F)
    anchors = list(range(M)) if anchors is None else list(anchors)
    a = f[:, anchors]  # (B, A, F)
    # positives: (A, B, B) similarities between images for the same anchor direction, upper triangle
    pos = torch.einsum("nkf,mkf->knm", a, a) / temperature
    iu = torch.triu_indices(B, B, offset=1, device=edits.device)
    pos = pos[:, iu[0], iu[1]]  # (A, B(B-1)/2)
    # negatives: (A, B, M) similarities between the anchor and every direction on the same image, l != k
    neg = torch.einsum("nkf,nlf->knl", a, f) / temperature
    keep = torch.ones(len(anchors), M, dtype=torch.bool, device=edits.device)
    keep[torch.arange(len(anchors)), torch.tensor(anchors, device=edits.device)] = False
    neg = neg.permute(0, 2, 1)[keep].reshape(len(anchors), M - 1, B).flatten(1)  # (A, (M-1) B)
    log_mean_pos = torch.logsumexp(pos, dim=1) - math.log(pos.shape[1])
    log_mean_neg = torch.logsumexp(neg, dim=1) - math.log(neg.shape[1])
    return -(log_mean_pos - log_mean_neg).mean()


def strength_penalty(edits: torch.Tensor, base_norms: torch.Tensor, target: float) -> torch.Tensor:
    """Hinge on each direction's edit strength (an extension, not in the paper; off by default).

    The contrastive loss only sees cosines, so it is blind to how large an edit is: a direction whose edit is
    consistent but 0.2% of the noise estimate is as good to it as one at 5%, yet invisible at any usable
    scale. With r_k = mean_n ||D[n, k]|| / mean_n ||u[n]|| (u the unconditional estimate):

        P = mean_k max(0, log(target) - log(r_k))

    pushes every edit up to ``target`` of the estimate's length and not beyond.
    edits (B, M, ...), base_norms (B,) the lengths ||u[n]|| -> scalar.
    """
    r = edits.flatten(2).float().norm(dim=-1).mean(0) / base_norms.float().mean().clamp_min(1e-12)
    return F.relu(math.log(target) - torch.log(r.clamp_min(1e-12))).mean()
