"""DeepFinder-shaped 3D U-Net, the SaSi paper's default backbone.

Encoder: two 3x3x3 convolutions (ReLU) at 32 channels, max-pool, two at 48,
max-pool, four at 64. Decoder: up-sample (nearest, x2) + skip concatenation,
two at 48, up-sample + skip concatenation, two at 32, then a 1x1x1
convolution to K + 1 class logits (background + K). About 0.85 M parameters
for K = 3. Zero ('same') padding everywhere.

Tensors are ``(batch, channels, z, y, x)``.

``decode_region`` computes the logits of one region of the input only: the
encoder (``features``) runs on the whole input, as it provides the region's
context, and the decoder on the region plus the few voxels its own
convolutions need. Tiled inference keeps a tile's core and drops its margins,
so the decoder, about 70 % of the net's FLOPs, never runs on margins, and it
decodes a large core in parts, which bounds its memory.
"""

from __future__ import annotations

import torch
from torch import nn

Region = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
"""``((z0, z1), (y0, y1), (x0, x1))``: a box in input voxels, half-open."""
Features = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _conv_block(in_channels: int, out_channels: int, count: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(count):
        layers += [
            nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class DeepFinderUNet(nn.Module):
    """The DeepFinder U-Net.

    Attributes:
        num_outputs: K + 1 output channels.
        size_multiple: spatial sizes (and tile offsets) must be multiples of this
            so that the two max-pool grids line up (4).
        receptive_margin: voxels of context on each side that influence an
            output voxel (receptive field radius, 30); tiled inference crops
            at least this much.
        embedding_channels: channels of the encoder embedding (64).
        embedding_stride: spatial down-sampling of the encoder embedding (4).
        autocast_free: only convolutions, ReLU, max-pooling, nearest up-sampling
            and concatenation, so inference can run the whole net in bf16 or
            fp16 (same results as autocast, without its casts).
    """

    size_multiple = 4
    receptive_margin = 30
    autocast_free = True
    embedding_channels = 64
    embedding_stride = 4
    fixed_window: int | None = None

    def __init__(self, num_outputs: int, width: int = 32) -> None:
        super().__init__()
        c1, c2, c3 = width, width * 3 // 2, width * 2
        self.num_outputs = num_outputs
        self.enc1 = _conv_block(1, c1, 2)
        self.enc2 = _conv_block(c1, c2, 2)
        self.bottom = _conv_block(c2, c3, 4)
        self.dec2 = _conv_block(c3 + c2, c2, 2)
        self.dec1 = _conv_block(c2 + c1, c1, 2)
        self.head = nn.Conv3d(c1, num_outputs, 1)
        self.pool = nn.MaxPool3d(2)
        self.embedding_channels = c3

    def features(self, x: torch.Tensor) -> Features:
        """Encoder outputs of input ``(B, 1, z, y, x)``: the two skip tensors
        ``(B, 32, z, y, x)`` and ``(B, 48, z/2, y/2, x/2)`` and the embedding
        ``(B, 64, z/4, y/4, x/4)`` (channel counts for the default width)."""
        s1 = self.enc1(x)
        s2 = self.enc2(self.pool(s1))
        return s1, s2, self.bottom(self.pool(s2))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder embedding ``(B, 64, z/4, y/4, x/4)`` of input ``(B, 1, z, y, x)``."""
        return self.features(x)[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K+1, z, y, x)`` of input ``(B, 1, z, y, x)``."""
        return self.decode_region(self.features(x), tuple((0, n) for n in x.shape[2:]))  # type: ignore[arg-type]

    def decode_region(self, features: Features, region: Region) -> torch.Tensor:
        """Class logits ``(B, K+1, *region extents)`` of ``region`` of the input that
        gave ``features``; equal to ``forward(x)`` cropped to ``region``.

        ``region``'s bounds must be multiples of ``size_multiple`` (or the input's
        end). Each decoder stage runs on the region widened by what its two
        convolutions need: 2 voxels at full resolution; at half resolution 1 for
        the up-sampling plus 2, rounded up to the quarter-resolution grid (4);
        2 at quarter resolution. The kept voxels therefore get exactly the whole
        pass's values (``tests/engine/test_inference_postprocess.py`` checks
        that 1 voxel less at full resolution breaks this).
        """
        s1, s2, bottom = features
        quarter = _widened(region, 4, 2, bottom.shape[2:])
        half = _widened(region, 2, 4, s2.shape[2:])
        full = _widened(region, 1, 2, s1.shape[2:])
        up = _upsample(bottom[(..., *quarter)])
        d2 = self.dec2(torch.cat([up, s2[(..., *half)]], dim=1))
        del up
        up = _upsample(d2)  # covers 2 x half, which holds full
        del d2
        d1 = self.dec1(torch.cat([up[(..., *_shift(full, half, 2))], s1[(..., *full)]], dim=1))
        del up
        core = tuple(slice(lo - f.start, hi - f.start) for (lo, hi), f in zip(region, full))
        return self.head(d1[(..., *core)])


def _widened(region: Region, scale: int, margin: int, shape: torch.Size) -> tuple[slice, ...]:
    """``region`` at 1/``scale`` resolution, widened by ``margin`` voxels there and
    clipped to ``shape``."""
    return tuple(slice(max(lo // scale - margin, 0), min(-(-hi // scale) + margin, n))
                 for (lo, hi), n in zip(region, shape))


def _shift(inner: tuple[slice, ...], outer: tuple[slice, ...], scale: int) -> tuple[slice, ...]:
    """Slices of ``inner`` (full resolution) inside ``outer`` up-sampled ``scale`` times."""
    return tuple(slice(i.start - scale * o.start, i.stop - scale * o.start)
                 for i, o in zip(inner, outer))


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.interpolate(x, scale_factor=2, mode="nearest")
