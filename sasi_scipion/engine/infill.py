"""Self-augmented Volume Infill: AugMix for volumes and their labels (method card item 5).

For every window, ``chains`` augmentation chains of 1..``max_ops`` operations
drawn from {shift, rotation about z, flip} transform the window and its
one-hot label alike; the chain outputs are mixed with Dirichlet(1) weights
and blended with the original as ``beta * x + (1 - beta) * x_aug``, beta ~
Beta(1, 1) (AugMix's defaults; the paper gives none). The new label is the
argmax of the identically mixed one-hot labels, so a voxel's label follows
the structure that dominates its mixed intensity. Voxels moved in from
outside the window are 0 (the normalised mean) and background. Voxels left out
of the loss (``masks.IGNORE_LABEL``) are mixed as one more label, so that where
an ignored structure dominates, the result is ignored too.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional

from .augment import SPATIAL_DIMS, rotate_about_z
from .masks import IGNORE_LABEL

OPERATIONS = ("shift", "rotate", "flip")


def _shift(t: torch.Tensor, offsets: np.ndarray) -> torch.Tensor:
    """Translate ``t`` ``(C, z, y, x)`` by integer ``offsets`` (z, y, x), zero-filled."""
    out = torch.zeros_like(t)
    src, dst = [slice(None)], [slice(None)]
    for offset, n in zip(offsets, t.shape[1:]):
        offset = int(offset)
        src.append(slice(max(-offset, 0), n - max(offset, 0)))
        dst.append(slice(max(offset, 0), n - max(-offset, 0)))
    out[tuple(dst)] = t[tuple(src)]
    return out


def _operate(t: torch.Tensor, operation: str, rng: np.random.Generator) -> torch.Tensor:
    """Apply one random operation to the stacked window and one-hot label ``(C, z, y, x)``."""
    if operation == "shift":
        return _shift(t, rng.integers(-(t.shape[-1] // 4), t.shape[-1] // 4 + 1, size=3))
    if operation == "rotate":
        return rotate_about_z(t[None], [rng.uniform(0.0, 2.0 * np.pi)])[0]
    dims = [SPATIAL_DIMS[a] for a in np.flatnonzero(rng.integers(0, 2, size=3))]
    return t.flip(dims or [SPATIAL_DIMS[int(rng.integers(3))]])


def volume_infill(
    x: torch.Tensor,
    y: torch.Tensor,
    num_outputs: int,
    rng: np.random.Generator,
    chains: int = 3,
    max_ops: int = 3,
    beta: tuple[float, float] = (1.0, 1.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Infilled windows and their labels.

    Args:
        x: windows ``(B, 1, W, W, W)`` float32.
        y: labels ``(B, W, W, W)`` int64 in ``0..num_outputs-1`` or ``IGNORE_LABEL``.
        num_outputs: K + 1 label values.
        rng: source of every random choice.
        chains: augmentation chains per window (AugMix m).
        max_ops: the most operations per chain (AugMix k in 1..max_ops).
        beta: Beta distribution parameters of the blend with the original.

    Returns:
        ``(x_mix (B, 1, W, W, W), y_mix (B, W, W, W) int64)``.
    """
    ignored = y == IGNORE_LABEL  # mixed as label num_outputs, where there is any
    channels = num_outputs + 1 if bool(ignored.any()) else num_outputs
    indices = torch.where(ignored, torch.full_like(y, num_outputs), y)
    one_hot = functional.one_hot(indices, channels).permute(0, 4, 1, 2, 3).to(x.dtype)
    stacked = torch.cat([x, one_hot], dim=1)
    mixed = []
    for sample in stacked:
        weights = rng.dirichlet(np.ones(chains))
        augmented = torch.zeros_like(sample)
        for weight in weights:
            chain = sample
            for _ in range(int(rng.integers(1, max_ops + 1))):
                chain = _operate(chain, OPERATIONS[int(rng.integers(len(OPERATIONS)))], rng)
            augmented += float(weight) * chain
        blend = float(rng.beta(*beta))
        mixed.append(blend * sample + (1.0 - blend) * augmented)
    result = torch.stack(mixed)
    labels = result[:, 1:]
    # Voxels moved in from outside carry no label mass: count that mass as background.
    labels[:, 0] += 1.0 - labels.sum(dim=1)
    mixed_labels = labels.argmax(dim=1)
    return result[:, :1].contiguous(), torch.where(
        mixed_labels == num_outputs, torch.full_like(mixed_labels, IGNORE_LABEL), mixed_labels)
