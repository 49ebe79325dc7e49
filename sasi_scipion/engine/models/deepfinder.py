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
so the decoder, about 70 % of the FLOPs of the net as written, never runs on
margins, and it decodes a large core in parts, which bounds its memory.

Each decoder stage's first convolution sees ``cat(upsample(low), skip)``. It is
computed without building either tensor (``UpsampledConcatConv3d``): a 3-tap
kernel over a nearest-up-sampled axis is, for each output parity, a 2-tap
kernel over the low-resolution axis, so the up-sampled channels cost 8 taps
per output voxel instead of 27, at low resolution. Same function to float
rounding (``tests/engine/test_backbones.py`` compares logits and gradients
with the literal up-sample, concatenate and convolve), a fifth fewer FLOPs
than the net as written (268,576 instead of 341,536 per voxel for K = 3 on
large inputs), and no up-sampled or concatenated copies.

The input convolution (one channel in) runs on the input and kernel padded
with zero channels to four (``ZeroChannelPaddedConv3d``): the same sums, but
oneDNN's fast path instead of torch's slow single-channel one.
"""

from __future__ import annotations

import torch
from torch import nn

Region = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
"""``((z0, z1), (y0, y1), (x0, x1))``: a box in input voxels, half-open."""
Features = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _conv_block(in_channels: int, out_channels: int, count: int,
                first: type[nn.Conv3d] = nn.Conv3d) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(count):
        layers += [
            (first if i == 0 else nn.Conv3d)(in_channels if i == 0 else out_channels,
                                             out_channels, 3, padding=1),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class ZeroChannelPaddedConv3d(nn.Conv3d):
    """An ``nn.Conv3d`` that pads its input and kernel with zero channels up to a
    multiple of ``CHANNEL_MULTIPLE``: the same output (the added products are
    zero), computed by oneDNN, which a single-channel input does not reach
    (1.9x faster for the 1 -> 32 input layer on a 64 x 128 x 128 volume, fp32, 2
    AVX2 cores). Parameters are an ``nn.Conv3d``'s, so checkpoints load unchanged."""

    CHANNEL_MULTIPLE = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        missing = -x.shape[1] % self.CHANNEL_MULTIPLE
        weight = nn.functional.pad(self.weight, [0] * 6 + [0, missing])
        x = nn.functional.pad(x, [0] * 6 + [0, missing])
        channels_last = torch.channels_last_3d  # oneDNN's layout; the net's output follows it
        return self._conv_forward(x.contiguous(memory_format=channels_last),
                                  weight.contiguous(memory_format=channels_last), self.bias)


class UpsampledConcatConv3d(nn.Conv3d):
    """A 3x3x3 'same' convolution of ``cat([upsample(low), skip])`` (nearest, x2),
    computed from ``low`` and ``skip`` directly.

    Along one axis, output voxel ``2q + r`` of a 3-tap kernel ``(w0, w1, w2)`` over
    the up-sampled axis reads low-resolution voxels ``q-1, q`` with weights
    ``(w0, w1 + w2)`` when ``r = 0`` and ``q, q+1`` with ``(w0 + w1, w2)`` when
    ``r = 1``. The eight parity combinations of the three axes are one 2x2x2
    convolution over ``low`` with 8 x ``out_channels`` outputs, interleaved into
    the skip channels' ordinary convolution. Parameters and their layout are an
    ``nn.Conv3d``'s over ``low``'s channels then ``skip``'s, so checkpoints load
    unchanged.
    """

    def forward(self, low: torch.Tensor, skip: torch.Tensor,  # type: ignore[override]
                window: tuple[slice, ...] | None = None) -> torch.Tensor:
        """Convolution ``(B, out, *skip extents)`` of ``cat([upsample(low)[window], skip])``.

        ``low``: ``(B, C_low, z, y, x)``; ``skip``: ``(B, C_skip, *window extents)``;
        ``window``: full-resolution slices into ``upsample(low)`` (default: all of
        it), with even starts and extents. Both parts are zero-padded at the
        edges of ``low``; inside ``low``, the up-sampled part of a window's border
        voxels reads its true neighbours and the skip part zeros, so border
        voxels differ from convolving the cropped concatenation; callers crop them.
        """
        if window is None:
            window = tuple(slice(0, 2 * n) for n in low.shape[2:])
        if any(w.start % 2 or w.stop % 2 for w in window):
            raise ValueError(f"window {window}: starts and stops must be even")
        lows = [(w.start // 2, w.stop // 2) for w in window]
        # low-resolution voxels q-1 .. q+1 of every output, zeros beyond low's edges
        padded = nn.functional.pad(
            low[(..., *(slice(max(a - 1, 0), min(b + 1, n))
                        for (a, b), n in zip(lows, low.shape[2:])))],
            [p for (a, b), n in reversed(list(zip(lows, low.shape[2:])))
             for p in (int(a == 0), int(b == n))])
        low_channels = low.shape[1]
        phases = nn.functional.conv3d(padded, _parity_kernels(self.weight[:, :low_channels]))
        out = nn.functional.conv3d(skip, self.weight[:, low_channels:], self.bias, padding=1)
        batch, channels = out.shape[:2]
        (nz, ny, nx) = (b - a for a, b in lows)
        phases = phases.view(batch, 2, 2, 2, channels, *phases.shape[2:])
        interleaved = out.view(batch, channels, nz, 2, ny, 2, nx, 2)
        for rz in (0, 1):
            for ry in (0, 1):
                for rx in (0, 1):
                    interleaved[:, :, :, rz, :, ry, :, rx] += phases[
                        :, rz, ry, rx, :, rz:rz + nz, ry:ry + ny, rx:rx + nx]
        return out


def _parity_kernels(weight: torch.Tensor) -> torch.Tensor:
    """``(8 * out, in, 2, 2, 2)`` kernels, parity-major ``(rz, ry, rx)``, of a
    ``(out, in, 3, 3, 3)`` kernel over a nearest-up-sampled input (see
    ``UpsampledConcatConv3d``)."""
    kernels = [weight]
    for axis in (2, 3, 4):
        folded = []
        for kernel in kernels:
            first, middle, last = kernel.split(1, dim=axis)
            folded += [torch.cat((first, middle + last), dim=axis),
                       torch.cat((first + middle, last), dim=axis)]
        kernels = folded
    return torch.cat(kernels, dim=0)


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
        self.enc1 = _conv_block(1, c1, 2, first=ZeroChannelPaddedConv3d)
        self.enc2 = _conv_block(c1, c2, 2)
        self.bottom = _conv_block(c2, c3, 4)
        self.dec2 = _conv_block(c3 + c2, c2, 2, first=UpsampledConcatConv3d)
        self.dec1 = _conv_block(c2 + c1, c1, 2, first=UpsampledConcatConv3d)
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
        d2 = _decode_stage(self.dec2, bottom[(..., *quarter)], s2[(..., *half)], None)
        # d2 covers half; its up-sampling covers 2 x half, which holds full
        d1 = _decode_stage(self.dec1, d2, s1[(..., *full)], _shift(full, half, 2))
        del d2
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


def _decode_stage(block: nn.Sequential, low: torch.Tensor, skip: torch.Tensor,
                  window: tuple[slice, ...] | None) -> torch.Tensor:
    """``block`` on ``cat([upsample(low)[window], skip])``, its first convolution an
    ``UpsampledConcatConv3d``."""
    x = block[0](low, skip, window)
    for layer in block[1:]:
        x = layer(x)
    return x
