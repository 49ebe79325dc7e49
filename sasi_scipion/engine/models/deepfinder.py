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

Tensors are ``(batch, channels, z, y, x)``. The custom layers named below and the
z-slab schedule live in ``layers``; this module holds the network.

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
than the net as written, and no up-sampled or concatenated copies. Under
autograd the up-sampled part is one stride-2 transposed convolution with the
equivalent 4-tap kernels instead (the same 8 taps per output voxel), whose
backward pass is one convolution rather than the interleave's strided copies.

The input convolution (one channel in) is a 1x3x3 convolution of the input's
planes z - 1, z and z + 1 stacked as channels, plus a zero channel
(``PlaneStackedInputConv3d``): the same sums, on oneDNN's fast path instead of
torch's slow single-channel one, with 9 taps per channel instead of 27. With
both, the engine computes 263,968 FLOPs per voxel for K = 3 on large inputs
instead of the 341,536 of the net as written.

In reduced-precision (bf16, fp16) CPU inference the full-resolution layers run
in z-slabs of about ``layers.SLAB_VOXELS`` voxels: the input convolution, the second
encoder convolution, their ReLUs and the first max-pooling slab by slab, and
likewise the decoder's last stage (its first convolution's skip part and
up-sampled part, the second convolution, the 1x1x1 head), so that these
32-channel intermediates stay in the CPU cache instead of streaming whole-tile
tensors through memory. The same values as the layer-by-layer pass that
training uses (``tests/engine/test_backbones.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from .backbone import Region
from .layers import (
    PlaneStackedInputConv3d,
    SharedBatchNorm3d,
    UpsampledConcatConv3d,
    runs_in_slabs,
    slab_planes,
    with_neighbour_planes,
)

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


def _folded(conv: nn.Conv3d, norm: nn.BatchNorm3d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the convolution equal to ``norm(conv(x))`` in evaluation
    mode (``conv`` with or without a bias): each output channel scaled by
    ``gamma / sqrt(running_var + eps)``."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    weight = conv.weight * scale.view(-1, *(1,) * (conv.weight.dim() - 1))
    bias = -norm.running_mean if conv.bias is None else conv.bias - norm.running_mean
    return weight, bias * scale + norm.bias


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
        planes = slab_planes(height, width)
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
        """Whether the full-resolution layers run in z-slabs (``runs_in_slabs``);
        never with batch normalisation, whose layers the slab paths do not index
        (inference folds it first: ``without_batch_norm``)."""
        return not self.batch_norm and runs_in_slabs(x)

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
        planes = slab_planes(height, width)
        hidden = torch.empty((s1.shape[0], conv.out_channels, depth, height, width),
                             dtype=s1.dtype, device=s1.device,
                             memory_format=torch.channels_last_3d)
        skip_weight = conv.weight[:, low.shape[1]:]
        skip_tensor = s1[(..., *full)]
        for start in range(0, depth, planes):
            stop = min(start + planes, depth)
            skip = with_neighbour_planes(skip_tensor, start, stop)
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
        planes = slab_planes(*hidden.shape[3:])
        zs, ys, xs = core
        logits = torch.empty((hidden.shape[0], self.num_outputs, zs.stop - zs.start,
                              ys.stop - ys.start, xs.stop - xs.start), dtype=hidden.dtype,
                             device=hidden.device, memory_format=torch.channels_last_3d)
        for start in range(zs.start, zs.stop, planes):
            stop = min(start + planes, zs.stop)
            slab = with_neighbour_planes(hidden, start, stop)
            out = torch.relu_(nn.functional.conv3d(slab, conv.weight, conv.bias, padding=(0, 1, 1)))
            logits[:, :, start - zs.start:stop - zs.start] = self.head(out)[(..., ys, xs)]
        return logits


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
