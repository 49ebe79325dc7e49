"""The SimCLR projection head (method card item 6).

The paper flattens the encoder output and applies ReLU and one linear layer to
128 dimensions. With the DeepFinder U-Net's default (PyTorch) initialisation
that head sees embeddings that are nearly the same for every window: eight
convolutions shrink the input-dependent part of the signal until the biases
dominate (cosine similarity 0.9996 between the embeddings of different
windows at initialisation, measured on a simulated SHREC-like tomogram), so
every projection points the same way, NT-Xent sits at ``ln(2B - 1)`` and its
gradients barely reach the encoder. The embedding also comes out of a ReLU,
so the paper's ReLU does nothing.

This head standardises each flattened feature over the batch first
(``BatchNorm1d`` without affine parameters: the window-to-window differences
become the signal, whatever the scale of the shared part), then projects
through a hidden layer with batch normalisation before its ReLU (half of the
hidden units are active in every batch, so none can die), as SimCLR's own
MLP head does.
"""

from __future__ import annotations

import torch
from torch import nn

PROJECTION_DIM = 128
"""Output dimension of the projection (paper: 128)."""
HIDDEN_DIM = 512
"""Width of the projection's hidden layer."""


class ProjectionHead(nn.Module):
    """SimCLR projection of encoder embeddings ``(B, C, z, y, x)`` to ``(B, 128)``.

    Flatten, standardise each feature over the batch, Linear to ``hidden``,
    batch normalisation, ReLU, Linear to ``out_features``. Needs batches of at
    least two windows in training mode.
    """

    def __init__(self, in_features: int, out_features: int = PROJECTION_DIM,
                 hidden: int = HIDDEN_DIM) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.BatchNorm1d(in_features, affine=False),
            nn.Linear(in_features, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_features),
        )

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """``(B, out_features)`` projections of embeddings ``(B, C, z, y, x)``."""
        return self.layers(embedding)
