"""Volume Infill and the losses, on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional

from sasi_scipion.engine.augment import ExactTransform
from sasi_scipion.engine.infill import volume_infill
from sasi_scipion.engine.losses import (
    consistency_loss,
    dice_focal_loss,
    dice_loss,
    focal_loss,
    nt_xent_loss,
)
from sasi_scipion.engine.models import build_backbone
from sasi_scipion.engine.models.projection import ProjectionHead


def _windows() -> tuple[torch.Tensor, torch.Tensor]:
    """Windows whose intensity is a class-specific value: a labelled cube of class 1 or 2."""
    y = torch.zeros(4, 24, 24, 24, dtype=torch.long)
    y[:2, 6:14, 6:14, 6:14] = 1
    y[2:, 10:20, 4:12, 8:16] = 2
    x = torch.where(y == 1, 5.0, torch.where(y == 2, -5.0, 0.0))[:, None]
    return x, y


def test_infill_labels_follow_the_dominant_mixed_structure() -> None:
    x, y = _windows()
    x_mix, y_mix = volume_infill(x, y, 3, np.random.default_rng(0))
    assert x_mix.shape == x.shape and y_mix.shape == y.shape and y_mix.dtype == torch.long
    assert not torch.equal(x_mix, x)
    # Where the mixed intensity is clearly positive, class 1 dominates the label
    # mixture; clearly negative: class 2. Labels and volume were mixed alike.
    assert (y_mix[x_mix[:, 0] > 3.0] == 1).float().mean() > 0.95
    assert (y_mix[x_mix[:, 0] < -3.0] == 2).float().mean() > 0.95
    assert (y_mix[x_mix[:, 0].abs() < 0.5] == 0).float().mean() > 0.95


def test_infill_is_seeded() -> None:
    x, y = _windows()
    a = volume_infill(x, y, 3, np.random.default_rng(5))
    b = volume_infill(x, y, 3, np.random.default_rng(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_infill_with_beta_one_returns_the_original() -> None:
    x, y = _windows()
    x_mix, y_mix = volume_infill(x, y, 3, np.random.default_rng(0), beta=(1e6, 1e-6))
    assert torch.allclose(x_mix, x, atol=1e-3) and torch.equal(y_mix, y)


def test_dice_loss_hand_computed() -> None:
    target = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])[None]  # (1, 2 classes, 1, 2)
    assert dice_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    probs = torch.full_like(target, 0.5)
    # per class: 2 * 0.5 / (0.5 + 1) = 2/3
    assert dice_loss(probs, target).item() == pytest.approx(1 / 3, abs=1e-5)


def test_focal_loss_equals_the_focal_formula_for_one_hot_targets() -> None:
    p = torch.tensor([0.8, 0.2])
    target = torch.tensor([1.0, 0.0])
    loss = focal_loss(p.log()[None, :, None], target[None, :, None], gamma=2.0)
    assert loss.item() == pytest.approx(-(0.2**2) * math.log(0.8), rel=1e-5)
    soft = torch.tensor([0.3, 0.7])[None, :, None]
    assert focal_loss(soft.log(), soft).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_focal_weights_and_label_forms_agree() -> None:
    logits = torch.randn(2, 3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (2, 4, 4, 4), generator=torch.Generator().manual_seed(1))
    one_hot = functional.one_hot(labels, 3).permute(0, 4, 1, 2, 3).float()
    probs = functional.softmax(logits, 1)
    expected = 20 * dice_loss(probs, one_hot) + focal_loss(functional.log_softmax(logits, 1),
                                                            one_hot)
    assert dice_focal_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)
    assert dice_focal_loss(logits, one_hot).item() == pytest.approx(expected.item(), rel=1e-5)


def test_nt_xent_hand_computed() -> None:
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = z1.clone()
    # Row 0 of [z1; z2]: similarities to others (/t=0.1): z1[1] 0, z2[0] 10, z2[1] 0.
    expected = -math.log(math.exp(10) / (math.exp(10) + 2))
    assert nt_xent_loss(z1, z2, 0.1).item() == pytest.approx(expected, rel=1e-3)
    assert nt_xent_loss(z1, z2.flip(0), 0.1).item() > nt_xent_loss(z1, z2, 0.1).item()


class _Pointwise(torch.nn.Module):
    """A voxel-wise net: commutes with every spatial transform."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_consistency_loss_vanishes_for_an_equivariant_prediction() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8, 8, 8)
    transform = ExactTransform((True, False, True), 1)
    assert consistency_loss(_Pointwise(), x, transform.apply).item() == pytest.approx(0, abs=1e-5)
    unet = build_backbone("deepfinder", 3)  # zero padding and pooling: not equivariant
    assert consistency_loss(unet, x, transform.apply).item() > 1e-4


def test_consistency_loss_only_trains_the_transformed_branch() -> None:
    net = _Pointwise()
    loss = consistency_loss(net, torch.randn(1, 1, 4, 4, 4), ExactTransform((True,) * 3, 0).apply)
    loss.backward()
    assert net.conv.weight.grad is not None


def test_projection_head_shape() -> None:
    head = ProjectionHead(64 * 6**3)
    assert head(torch.randn(5, 64, 6, 6, 6)).shape == (5, 128)
