"""Custom layers of the DeepFinder U-Net (``deepfinder``) and the z-slab schedule of its
reduced-precision CPU inference.

- ``SharedBatchNorm3d``: batch normalisation whose training statistics span the
  shards of a data-parallel global batch (``share_batch_statistics``).
- ``PlaneStackedInputConv3d``: the single-channel 3x3x3 input convolution as a
  1x3x3 convolution of stacked planes (oneDNN's fast path, a third of the taps).
- ``UpsampledConcatConv3d``: a 3x3x3 convolution of ``cat(upsample(low), skip)``
  without building either tensor (2x2x2 parity kernels over ``low``).
- ``runs_in_slabs``, ``slab_planes``, ``with_neighbour_planes``: when and in how
  many z-planes the full-resolution layers run slab by slab (``SLAB_VOXELS``).

The module docstring of ``deepfinder`` says why each exists and what it saves.
Tensors are ``(batch, channels, z, y, x)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class SharedBatchNorm3d(nn.BatchNorm3d):
    """``nn.BatchNorm3d`` whose training statistics can span the shards of a global
    batch that several data-parallel processes share (``distributed``), so that K
    processes normalise as one process does with the whole batch.

    ``sum_across`` (set by ``share_batch_statistics``) sums a tensor over the
    processes with gradients; while it is ``None`` (one process, or evaluation) this
    is exactly ``nn.BatchNorm3d``. ``torch.nn.SyncBatchNorm`` does the same on GPUs
    only; this one works with gloo on the CPU too. Input ``(B, C, z, y, x)``.
    """

    sum_across: Callable[[torch.Tensor], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not self.training or self.sum_across is None:
            return super().forward(x)
        channels = x.shape[1]
        values = x.float()
        reduce = (0, 2, 3, 4)
        count = values.new_full((1,), values.numel() / channels)
        sums = self.sum_across(torch.cat([values.sum(reduce), (values * values).sum(reduce),
                                          count]))
        total = sums[-1]
        mean = sums[:channels] / total
        variance = sums[channels:2 * channels] / total - mean * mean
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(variance * total / (total - 1), self.momentum)
        shape = (1, channels, 1, 1, 1)
        scale = torch.rsqrt(variance + self.eps) * self.weight
        return ((values - mean.view(shape)) * scale.view(shape)
                + self.bias.view(shape)).to(x.dtype)


def share_batch_statistics(model: nn.Module,
                           sum_across: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
    """Make every ``SharedBatchNorm3d`` of ``model`` normalise with statistics summed
    by ``sum_across`` over the processes (``None``: this process's batch only)."""
    for module in model.modules():
        if isinstance(module, SharedBatchNorm3d):
            module.sum_across = sum_across


class PlaneStackedInputConv3d(nn.Conv3d):
    """The 3x3x3 'same' convolution of a single-channel input ``(B, 1, z, y, x)``,
    computed as a 1x3x3 convolution of four channels: the input at planes z - 1,
    z and z + 1 (zeros beyond the ends) and a zero channel, with the kernel's
    three z-taps as the first three channels' kernels. The same sums; oneDNN runs
    it (a single-channel input takes torch's slow path, and four channels its
    fast one) with a third of the taps of the kernel padded to four channels
    (0.27 -> 0.20 s bf16, 0.56 -> 0.42 s fp32 for a 200 x 236 x 168 tile, 2 Zen 4
    cores). Parameters are an ``nn.Conv3d(1, out, 3, padding=1)``'s, so
    checkpoints load unchanged."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 padding: int = 1, bias: bool = True) -> None:
        if (in_channels, kernel_size, padding) != (1, 3, 1):
            raise ValueError("PlaneStackedInputConv3d is the 1-channel 3x3x3 'same' convolution")
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.output_planes(x, 0, x.shape[2])

    def output_planes(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Planes ``start`` to ``stop - 1`` (along z) of ``forward(x)``, reading
        only the input planes they need."""
        planes = with_neighbour_planes(x, start, stop)
        stacked = torch.cat([planes[:, :, tap:tap + stop - start] for tap in range(3)]
                            + [torch.zeros_like(planes[:, :, :stop - start])], dim=1)
        weight = torch.cat([self.weight.transpose(1, 2),
                            self.weight.new_zeros(self.out_channels, 1, 1, 3, 3)], dim=1)
        channels_last = torch.channels_last_3d  # oneDNN's layout; the net's output follows it
        return nn.functional.conv3d(stacked.contiguous(memory_format=channels_last),
                                    weight.contiguous(memory_format=channels_last),
                                    self.bias, padding=(0, 1, 1))


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

    Under autograd (training) the up-sampled part is instead one transposed
    convolution of ``low`` (stride 2, the 4-tap kernels of ``_transposed_kernel``):
    the same sums, whose backward pass is one convolution, where the eight strided
    in-place additions of the parity interleave cost a zero-filled buffer of the
    whole parity tensor and a copy of the output per parity (about a third of a
    default training step on a 2-core CPU, ``benchmarks/RESULTS.md``); a ``window``
    is then a crop of the whole up-sampled convolution. Without gradients the two
    are level, and the interleave computes only the window.
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
        out = nn.functional.conv3d(skip, self.weight[:, low.shape[1]:], self.bias, padding=1)
        if torch.is_grad_enabled():
            upsampled = nn.functional.conv_transpose3d(
                low, _transposed_kernel(self.weight[:, :low.shape[1]]), stride=2, padding=1)
            return out + (upsampled if window is None else upsampled[(..., *window)])
        self.add_upsampled_part(out, low, window)
        return out

    def add_upsampled_part(self, out: torch.Tensor, low: torch.Tensor,
                           window: tuple[slice, ...] | None = None) -> None:
        """Adds to ``out`` ``(B, out, *window extents)`` the convolution of
        ``upsample(low)[window]`` with the kernel's ``low`` channels (zeros
        beyond ``low``'s edges); ``window`` as in ``forward``."""
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
        phases = nn.functional.conv3d(padded, _parity_kernels(self.weight[:, :low.shape[1]]))
        batch, channels = out.shape[:2]
        (nz, ny, nx) = (b - a for a, b in lows)
        phases = phases.view(batch, 2, 2, 2, channels, *phases.shape[2:])
        interleaved = out.view(batch, channels, nz, 2, ny, 2, nx, 2)
        for rz in (0, 1):
            for ry in (0, 1):
                for rx in (0, 1):
                    interleaved[:, :, :, rz, :, ry, :, rx] += phases[
                        :, rz, ry, rx, :, rz:rz + nz, ry:ry + ny, rx:rx + nx]


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


def _transposed_kernel(weight: torch.Tensor) -> torch.Tensor:
    """``(in, out, 4, 4, 4)`` kernel of the transposed convolution (stride 2, padding
    1) of ``low`` equal to the ``(out, in, 3, 3, 3)`` kernel's 'same' convolution of
    ``upsample(low)`` (nearest, x2). Along each axis the taps ``(w0, w1, w2)``
    become ``(w2, w1 + w2, w0 + w1, w0)``: output ``2q`` then reads ``low[q]`` with
    ``w1 + w2`` and ``low[q - 1]`` with ``w0``, output ``2q + 1`` reads ``low[q]``
    with ``w0 + w1`` and ``low[q + 1]`` with ``w2`` (see ``UpsampledConcatConv3d``)."""
    kernel = weight
    for axis in (2, 3, 4):
        first, middle, last = kernel.split(1, dim=axis)
        kernel = torch.cat((last, middle + last, first + middle, first), dim=axis)
    return kernel.transpose(0, 1)


SLAB_VOXELS = 320_000
"""Voxels per z-slab of the slab-wise full-resolution layers (``runs_in_slabs``):
about 20 MB per 32-channel bf16 slab, which stays in a 32 MB L3 cache."""


def slab_planes(height: int, width: int) -> int:
    """Planes of a z-slab of about ``SLAB_VOXELS`` voxels: even (the max-pooling
    grid), at least 2."""
    return max(2, SLAB_VOXELS // (height * width) // 2 * 2)


def with_neighbour_planes(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Planes ``start - 1`` to ``stop`` (along z) of ``x`` ``(B, C, z, y, x)``, zeros
    beyond its ends: the input a 3-tap convolution along z needs for planes
    ``start`` to ``stop - 1`` of its 'same' output."""
    depth = x.shape[2]
    return nn.functional.pad(x[:, :, max(start - 1, 0):min(stop + 1, depth)],
                             [0, 0, 0, 0, int(start == 0), int(stop == depth)])


def runs_in_slabs(x: torch.Tensor) -> bool:
    """Whether the DeepFinder U-Net runs its full-resolution layers (encoder, last
    decoder stage and head) in z-slabs: reduced-precision CPU inference. fp32
    slabs ran slower than whole tensors on the CPU measured (Zen 4,
    ``benchmarks/RESULTS.md``), and training needs the whole tensors for the
    backward pass."""
    return (x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16)
            and not torch.is_grad_enabled())
