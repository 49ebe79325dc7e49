"""DeepFinder-shaped 3D U-Net, the SaSi paper's default backbone.

Encoder: two 3x3x3 convolutions (ReLU) at 32 channels, max-pool, two at 48,
max-pool, four at 64. Decoder: up-sample (nearest, x2) + skip concatenation,
two at 48, up-sample + skip concatenation, two at 32, then a 1x1x1
convolution to K + 1 class logits (background + K). About 0.85 M parameters
for K = 3. Zero ('same') padding everywhere.

The engine trains it with a batch normalisation after every 3x3x3 convolution
(``batch_norm``; the paper's net has none, and learns the 12 classes of the
accuracy benchmark far more slowly without it: ``docs/method.md``). Inference
folds each normalisation into the convolution before it
(``without_batch_norm``), so what follows holds for both nets. Data-parallel
training normalises with the statistics of the whole global batch
(``SharedBatchNorm3d``).

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
than the net as written, and no up-sampled or concatenated copies.

The input convolution (one channel in) is a 1x3x3 convolution of the input's
planes z - 1, z and z + 1 stacked as channels, plus a zero channel
(``PlaneStackedInputConv3d``): the same sums, on oneDNN's fast path instead of
torch's slow single-channel one, with 9 taps per channel instead of 27. With
both, the engine computes 263,968 FLOPs per voxel for K = 3 on large inputs
instead of the 341,536 of the net as written.

In reduced-precision (bf16, fp16) CPU inference the full-resolution layers run
in z-slabs of about ``SLAB_VOXELS`` voxels: the input convolution, the second
encoder convolution, their ReLUs and the first max-pooling slab by slab, and
likewise the decoder's last stage (its first convolution's skip part and
up-sampled part, the second convolution, the 1x1x1 head), so that these
32-channel intermediates stay in the CPU cache instead of streaming whole-tile
tensors through memory. The same values as the layer-by-layer pass that
training uses (``tests/engine/test_backbones.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Region = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
"""``((z0, z1), (y0, y1), (x0, x1))``: a box in input voxels, half-open."""
Features = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _conv_block(in_channels: int, out_channels: int, count: int,
                first: type[nn.Conv3d] = nn.Conv3d, batch_norm: bool = False) -> nn.Sequential:
    """``count`` 3x3x3 'same' convolutions, each followed by a batch normalisation
    (if ``batch_norm``; the convolution then has no bias, which the normalisation
    would remove) and a ReLU; the first one of type ``first``."""
    layers: list[nn.Module] = []
    for i in range(count):
        layers.append((first if i == 0 else nn.Conv3d)(in_channels if i == 0 else out_channels,
                                                       out_channels, 3, padding=1,
                                                       bias=not batch_norm))
        if batch_norm:
            layers.append(SharedBatchNorm3d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


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


def _folded(conv: nn.Conv3d, norm: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the convolution equal to ``norm(conv(x))`` in evaluation
    mode (``conv`` with or without a bias): each output channel scaled by
    ``gamma / sqrt(running_var + eps)``."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    weight = conv.weight * scale.view(-1, *(1,) * (conv.weight.dim() - 1))
    bias = -norm.running_mean if conv.bias is None else conv.bias - norm.running_mean
    return weight, bias * scale + norm.bias


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
        planes = _with_neighbour_planes(x, start, stop)
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
            and concatenation once any batch normalisation is folded
            (``without_batch_norm``), so inference can run the whole net in bf16
            or fp16 (same results as autocast, without its casts).
    """

    size_multiple = 4
    receptive_margin = 30
    autocast_free = True
    embedding_channels = 64
    embedding_stride = 4
    fixed_window: int | None = None

    def __init__(self, num_outputs: int, width: int = 32, batch_norm: bool = False) -> None:
        """``num_outputs`` = K + 1 logit channels; ``width`` channels at full
        resolution; ``batch_norm``: a ``SharedBatchNorm3d`` after every 3x3x3
        convolution (the engine trains with it, ``defaults.BATCH_NORM``; the paper's
        net and models written before it have none)."""
        super().__init__()
        c1, c2, c3 = width, width * 3 // 2, width * 2
        self.num_outputs = num_outputs
        self.width = width
        self.batch_norm = batch_norm
        self.enc1 = _conv_block(1, c1, 2, PlaneStackedInputConv3d, batch_norm)
        self.enc2 = _conv_block(c1, c2, 2, batch_norm=batch_norm)
        self.bottom = _conv_block(c2, c3, 4, batch_norm=batch_norm)
        self.dec2 = _conv_block(c3 + c2, c2, 2, UpsampledConcatConv3d, batch_norm)
        self.dec1 = _conv_block(c2 + c1, c1, 2, UpsampledConcatConv3d, batch_norm)
        self.head = nn.Conv3d(c1, num_outputs, 1)
        self.pool = nn.MaxPool3d(2)
        self.embedding_channels = c3

    def without_batch_norm(self) -> DeepFinderUNet:
        """This net in evaluation mode with every batch normalisation folded into the
        convolution before it (an affine map per channel; zero padding comes before
        the convolution, so the fold is exact at the edges too): the same logits, a
        net of only convolutions, ReLU and pooling (``autocast_free``), with the
        layout the slab-wise paths index. ``self`` when it has no normalisation."""
        if not self.batch_norm:
            return self
        reference = self.head.weight
        plain = DeepFinderUNet(self.num_outputs, self.width).to(reference.device,
                                                                 reference.dtype)
        with torch.no_grad():
            for name in ("enc1", "enc2", "bottom", "dec2", "dec1"):
                source = getattr(self, name)
                pairs = zip([m for m in source if isinstance(m, nn.Conv3d)],
                            [m for m in source if isinstance(m, nn.BatchNorm3d)])
                targets = [m for m in getattr(plain, name) if isinstance(m, nn.Conv3d)]
                for (conv, norm), target in zip(pairs, targets, strict=True):
                    weight, bias = _folded(conv, norm)
                    target.weight.copy_(weight)
                    target.bias.copy_(bias)
            plain.head.load_state_dict(self.head.state_dict())
        return plain.eval()

    def features(self, x: torch.Tensor) -> Features:
        """Encoder outputs of input ``(B, 1, z, y, x)``: the two skip tensors
        ``(B, 32, z, y, x)`` and ``(B, 48, z/2, y/2, x/2)`` and the embedding
        ``(B, 64, z/4, y/4, x/4)`` (channel counts for the default width)."""
        if self._in_slabs(x):
            s1, pooled = self._full_resolution_encoder_in_slabs(x)
        else:
            s1 = self.enc1(x)
            pooled = self.pool(s1)
        s2 = self.enc2(pooled)
        return s1, s2, self.bottom(self.pool(s2))

    def _full_resolution_encoder_in_slabs(
            self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``enc1(x)`` and its max-pooling, computed slab by slab along z: each
        slab's 32-channel intermediate, ReLU and pooling stay in the CPU's cache
        instead of streaming whole-tile tensors through memory. The same values
        as the layer-by-layer pass, to the rounding of a convolution's blocking."""
        first, second = self.enc1[0], self.enc1[2]
        batch, _, depth, height, width = x.shape
        planes = _slab_planes(height, width)
        channels_last = torch.channels_last_3d
        s1 = torch.empty((batch, second.out_channels, depth, height, width), dtype=x.dtype,
                         device=x.device, memory_format=channels_last)
        pooled = torch.empty((batch, second.out_channels, depth // 2, height // 2, width // 2),
                             dtype=x.dtype, device=x.device, memory_format=channels_last)
        for start in range(0, depth, planes):
            stop = min(start + planes, depth)
            hidden = torch.relu_(first.output_planes(x, max(start - 1, 0), min(stop + 1, depth)))
            # the second convolution's 'same' zero padding where the slab meets the volume's end
            hidden = nn.functional.pad(hidden, [0, 0, 0, 0, int(start == 0), int(stop == depth)])
            out = torch.relu_(nn.functional.conv3d(hidden, second.weight, second.bias,
                                                   padding=(0, 1, 1)))
            s1[:, :, start:stop] = out
            pooled[:, :, start // 2:stop // 2] = self.pool(out)
        return s1, pooled

    def _in_slabs(self, x: torch.Tensor) -> bool:
        """Whether the full-resolution layers run in z-slabs (``_runs_in_slabs``);
        never with batch normalisation, whose layers the slab paths do not index
        (inference folds it first: ``without_batch_norm``)."""
        return not self.batch_norm and _runs_in_slabs(x)

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
        window = _shift(full, half, 2)
        core = tuple(slice(lo - f.start, hi - f.start) for (lo, hi), f in zip(region, full))
        if self._in_slabs(d2):
            hidden = self._first_decoder_convolution_in_slabs(d2, s1, full, window)
            del d2
            return self._last_convolution_and_head_in_slabs(hidden, core)
        d1 = _decode_stage(self.dec1, d2, s1[(..., *full)], window)
        del d2
        return self.head(d1)[(..., *core)]  # the head before the crop: no 32-channel copy

    def _first_decoder_convolution_in_slabs(self, low: torch.Tensor, s1: torch.Tensor,
                                            full: tuple[slice, ...],
                                            window: tuple[slice, ...]) -> torch.Tensor:
        """``relu(dec1[0](low, s1[full], window))``, slab by slab along z: each slab's
        skip convolution reads its planes of ``s1`` and one more on each side
        (zeros beyond ``full``, as the whole convolution's padding), so neither
        the cropped skip tensor nor the convolution's output before the ReLU
        leaves the cache."""
        conv = self.dec1[0]
        zs, ys, xs = full
        depth = zs.stop - zs.start
        height, width = ys.stop - ys.start, xs.stop - xs.start
        planes = _slab_planes(height, width)
        hidden = torch.empty((s1.shape[0], conv.out_channels, depth, height, width),
                             dtype=s1.dtype, device=s1.device,
                             memory_format=torch.channels_last_3d)
        skip_weight = conv.weight[:, low.shape[1]:]
        skip_tensor = s1[(..., *full)]
        for start in range(0, depth, planes):
            stop = min(start + planes, depth)
            skip = _with_neighbour_planes(skip_tensor, start, stop)
            out = nn.functional.conv3d(skip, skip_weight, conv.bias, padding=(0, 1, 1))
            conv.add_upsampled_part(out, low, (slice(window[0].start + start,
                                                     window[0].start + stop), *window[1:]))
            hidden[:, :, start:stop] = torch.relu_(out)
        return hidden

    def _last_convolution_and_head_in_slabs(self, hidden: torch.Tensor,
                                            core: tuple[slice, ...]) -> torch.Tensor:
        """Logits ``(B, K+1, *core extents)`` of ``head(relu(dec1[2](hidden)))`` cropped
        to ``core`` (slices of ``hidden``), slab by slab along z, so that the last
        32-channel tensor never leaves the cache. Planes of ``hidden`` outside it
        are the volume's zero padding (``decode_region`` widens the core by 2
        voxels inside the volume)."""
        conv = self.dec1[2]
        planes = _slab_planes(*hidden.shape[3:])
        zs, ys, xs = core
        logits = torch.empty((hidden.shape[0], self.num_outputs, zs.stop - zs.start,
                              ys.stop - ys.start, xs.stop - xs.start), dtype=hidden.dtype,
                             device=hidden.device, memory_format=torch.channels_last_3d)
        for start in range(zs.start, zs.stop, planes):
            stop = min(start + planes, zs.stop)
            slab = _with_neighbour_planes(hidden, start, stop)
            out = torch.relu_(nn.functional.conv3d(slab, conv.weight, conv.bias, padding=(0, 1, 1)))
            logits[:, :, start - zs.start:stop - zs.start] = self.head(out)[(..., ys, xs)]
        return logits


SLAB_VOXELS = 320_000
"""Voxels per z-slab of the slab-wise full-resolution layers (``_runs_in_slabs``):
about 20 MB per 32-channel bf16 slab, which stays in a 32 MB L3 cache."""


def _slab_planes(height: int, width: int) -> int:
    """Planes of a z-slab of about ``SLAB_VOXELS`` voxels: even (the max-pooling
    grid), at least 2."""
    return max(2, SLAB_VOXELS // (height * width) // 2 * 2)


def _with_neighbour_planes(x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Planes ``start - 1`` to ``stop`` (along z) of ``x`` ``(B, C, z, y, x)``, zeros
    beyond its ends: the input a 3-tap convolution along z needs for planes
    ``start`` to ``stop - 1`` of its 'same' output."""
    depth = x.shape[2]
    return nn.functional.pad(x[:, :, max(start - 1, 0):min(stop + 1, depth)],
                             [0, 0, 0, 0, int(start == 0), int(stop == depth)])


def _runs_in_slabs(x: torch.Tensor) -> bool:
    """Whether the DeepFinder U-Net runs its full-resolution layers (encoder, last
    decoder stage and head) in z-slabs: reduced-precision CPU inference. fp32
    slabs ran slower than whole tensors on the CPU measured (Zen 4,
    ``benchmarks/RESULTS.md``), and training needs the whole tensors for the
    backward pass."""
    return (x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16)
            and not torch.is_grad_enabled())


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
