"""Stand-ins for tests of the decisions taken after the network: volumes of solid
balls at a few grey levels over a background level, and a base for fully
convolutional stand-in nets that read those levels (volumes ``(z, y, x)``, voxels)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def balls(centres: Sequence[tuple[int, int, int]], levels: Sequence[float],
          radii: float | Sequence[float] = 3.0,
          shape: tuple[int, int, int] = (24, 40, 40)) -> np.ndarray:
    """A zero ``(z, y, x)`` float32 volume with a solid ball of each level at each
    ``(z, y, x)`` centre; ``radii`` in voxels, one for all balls or one each."""
    radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(centres),))
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    volume = np.zeros(shape, dtype=np.float32)
    for centre, level, radius in zip(centres, levels, radii, strict=True):
        volume[((grid - np.array(centre)) ** 2).sum(-1) <= radius**2] = level
    return volume


class LevelsNet(nn.Module):
    """Base of stand-in nets for normalised :func:`balls` volumes of two ball levels:
    it keeps the normalised ``background``, ``low`` and ``high`` levels, and one unit
    weight (inference takes its dtype from the first weight); subclasses give
    ``forward`` and the backbone attributes inference reads."""

    receptive_margin = 0

    def __init__(self, background: float, low: float, high: float) -> None:
        super().__init__()
        self.levels = background, low, high
        self.gain = nn.Parameter(torch.ones(()))

    def level_scale(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on a scale where the low level is 0 and the high level 1."""
        _, low, high = self.levels
        return (x - low) / (high - low)
