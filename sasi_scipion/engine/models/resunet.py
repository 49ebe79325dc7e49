"""Residual 3D U-Net of DeepETPicker's size class (about 6 M parameters for K = 3).

Layout (default ``width`` w = 48): a 3x3x3 stem convolution to w channels, one
residual block at w, a 2x2x2 stride-2 convolution down to 2w, one residual
block, a second stride-2 convolution down to 4w and two residual blocks at the
bottom (the SimCLR embedding, stride 4: ``24^3`` windows give ``6^3``). The
decoder up-samples with 2x2x2 stride-2 transposed convolutions, concatenates
the skip, and applies one residual block per level (1x1x1 shortcut for the
channel change); a 1x1x1 convolution gives the K + 1 class logits. Zero
('same') padding everywhere.

Residual blocks are pre-activation: ``shortcut(x) + gamma * conv(relu(conv(relu(x))))``
with two 3x3x3 convolutions.

Normalisation: none with spatial statistics. BatchNorm would make outputs
depend on the batch composition, and GroupNorm/InstanceNorm on the statistics
of the whole input tile, so tiled inference would no longer equal one
whole-volume pass. Training stability comes instead from He (Kaiming) initial
weights and a learnable per-channel scale ``gamma`` on every residual branch
("LayerScale", initialised to 0.1), so that the identity path dominates at
the start and the activations' scale stays bounded with depth. Every output
voxel therefore depends only on the input within ``receptive_margin`` voxels
(a measured upper bound: see ``tests/engine/test_backbones.py``), and exact
tiled inference holds.

Tensors are ``(batch, channels, z, y, x)``.
"""

from __future__ import annotations

import torch
from torch import nn

LAYER_SCALE_INIT = 0.1


class ResidualBlock(nn.Module):
    """Pre-activation residual block: two 3x3x3 convolutions, a per-channel
    learnable branch scale, identity (or 1x1x1 convolution) shortcut."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        self.gamma = nn.Parameter(torch.full((1, out_channels, 1, 1, 1), LAYER_SCALE_INIT))
        self.shortcut: nn.Module = (
            nn.Identity() if in_channels == out_channels
            else nn.Conv3d(in_channels, out_channels, 1)
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.conv2(self.act(self.conv1(self.act(x))))
        return self.shortcut(x) + self.gamma * branch


class ResUNet(nn.Module):
    """A residual 3D U-Net without spatial-statistics normalisation.

    Attributes:
        num_outputs: K + 1 output channels.
        size_multiple: spatial sizes (and tile offsets) must be multiples of this
            so that the two stride-2 grids line up (4).
        receptive_margin: voxels of context on each side that can influence an
            output voxel (32, the measured receptive field radius over all four
            grid phases); tiled inference crops at least this much.
        embedding_channels: channels of the encoder embedding (4 * width).
        embedding_stride: spatial down-sampling of the encoder embedding (4).
        fixed_window: None (fully convolutional).
    """

    size_multiple = 4
    receptive_margin = 32
    embedding_stride = 4
    fixed_window: int | None = None

    def __init__(self, num_outputs: int, width: int = 48) -> None:
        super().__init__()
        c1, c2, c3 = width, width * 2, width * 4
        self.num_outputs = num_outputs
        self.embedding_channels = c3
        self.stem = nn.Conv3d(1, c1, 3, padding=1)
        self.enc1 = ResidualBlock(c1, c1)
        self.down1 = nn.Conv3d(c1, c2, 2, stride=2)
        self.enc2 = ResidualBlock(c2, c2)
        self.down2 = nn.Conv3d(c2, c3, 2, stride=2)
        self.bottom = nn.Sequential(ResidualBlock(c3, c3), ResidualBlock(c3, c3))
        self.up2 = nn.ConvTranspose3d(c3, c2, 2, stride=2)
        self.dec2 = ResidualBlock(2 * c2, c2)
        self.up1 = nn.ConvTranspose3d(c2, c1, 2, stride=2)
        self.dec1 = ResidualBlock(2 * c1, c1)
        self.head = nn.Conv3d(c1, num_outputs, 1)
        self.act = nn.ReLU()
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s1 = self.enc1(self.stem(x))
        s2 = self.enc2(self.down1(s1))
        return s1, s2, self.bottom(self.down2(s2))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder embedding ``(B, 4 * width, z/4, y/4, x/4)`` of input ``(B, 1, z, y, x)``."""
        return self._encode(x)[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K+1, z, y, x)`` of input ``(B, 1, z, y, x)``."""
        s1, s2, bottom = self._encode(x)
        d2 = self.dec2(torch.cat([self.up2(bottom), s2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), s1], dim=1))
        return self.head(self.act(d1))
