"""Losses of the SaSi method.

Probability and target tensors are ``(B, K+1, z, y, x)``; integer label
tensors are ``(B, z, y, x)`` int64 (0 = background, ``masks.IGNORE_LABEL``: left out).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional

from .masks import IGNORE_LABEL

EPSILON = 1e-6

SumAcross = Callable[[torch.Tensor], torch.Tensor]
"""Adds a tensor over the processes of a data-parallel run (identity when alone)."""


def _alone(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def dice_loss(probs: torch.Tensor, target: torch.Tensor,
              sum_across: SumAcross = _alone) -> torch.Tensor:
    """Multi-class soft Dice loss ``1 - mean_c (2 Σ p q + ε) / (Σ p² + Σ q² + ε)``.

    Sums run over the batch and all voxels (and, through ``sum_across``, over the
    shares of a data-parallel batch), the mean over every class (background
    included); zero when ``probs == target``. Voxels whose ``probs`` and ``target``
    are both zero in every class (left out by the caller) add nothing.
    """
    dims = (0, *range(2, probs.dim()))
    overlap = sum_across((probs * target).sum(dims))
    total = sum_across((probs * probs).sum(dims) + (target * target).sum(dims))
    return 1.0 - ((2.0 * overlap + EPSILON) / (total + EPSILON)).mean()


def focal_loss(log_probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Focal loss generalised to soft targets: voxel mean of
    ``(1 - Σ_c q_c p_c)^γ · KL(q || p)``.

    For a one-hot ``q`` this is ``-(1 - p_t)^γ log p_t``, the focal loss; it is
    zero when ``p == q``. With ``weight`` ``(B, z, y, x)`` (1 = counted, 0 = left
    out), the mean runs over the counted voxels (of this share of a data-parallel
    batch: the shares then weigh equally, as they do without ``weight``).
    """
    probs = log_probs.exp()
    agreement = (target * probs).sum(dim=1)
    target_log = torch.where(target > 0, target.clamp_min(EPSILON).log(), torch.zeros_like(target))
    divergence = (target * (target_log - log_probs)).sum(dim=1)
    focal = (1.0 - agreement).clamp_min(0.0).pow(gamma) * divergence
    if weight is None:
        return focal.mean()
    return (focal * weight).sum() / weight.sum().clamp_min(1.0)


def dice_focal_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 20.0,
                    focal_weight: float = 1.0, sum_across: SumAcross = _alone) -> torch.Tensor:
    """The supervised loss ``20 · Dice + 1 · Focal`` (method card item 4).

    Args:
        logits: ``(B, K+1, z, y, x)``.
        target: int64 labels ``(B, z, y, x)`` (voxels of ``IGNORE_LABEL`` add nothing to
            either term) or probabilities ``(B, K+1, z, y, x)``.
        sum_across: see :func:`dice_loss`.
    """
    logits = logits.float()
    log_probs = functional.log_softmax(logits, dim=1)
    probs, weight = log_probs.exp(), None
    if target.dtype == torch.long:
        counted = target != IGNORE_LABEL
        if not bool(counted.all()):
            weight = counted.float()
            target = torch.where(counted, target, torch.zeros_like(target))
            probs = probs * weight[:, None]
        target = functional.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)
        if weight is not None:
            target = target * weight[:, None]
    target = target.float()
    return dice_weight * dice_loss(probs, target, sum_across) + focal_weight * focal_loss(
        log_probs, target, weight=weight)


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross entropy for ``N`` positive pairs.

    Args:
        z1, z2: ``(N, D)`` projections of the two views; row i of each is a pair.
        temperature: softmax temperature (paper: 0.1).
    """
    z = functional.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    similarity = z @ z.T / temperature
    similarity.fill_diagonal_(float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return functional.cross_entropy(similarity, positives)


def consistency_loss(model: nn.Module, x: torch.Tensor,
                     transform: Callable[[torch.Tensor], torch.Tensor],
                     sum_across: SumAcross = _alone) -> torch.Tensor:
    """Self-interpreted consistency guidance (method card item 7).

    ``m = softmax(f(x))`` is a soft, detached target (the paper leaves both
    open); the loss is ``dice_focal_loss(f(T(x)), T(m))``, zero for a network
    whose prediction commutes with ``T``.
    """
    with torch.no_grad():
        target = functional.softmax(model(x), dim=1)
    return dice_focal_loss(model(transform(x)), transform(target), sum_across=sum_across)
