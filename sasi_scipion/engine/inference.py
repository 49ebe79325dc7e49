"""Segment a whole tomogram with a trained backbone (method card item 8).

Two modes:
- ``segment_tiled`` (fast default): the fully convolutional net runs on large
  tiles; each tile carries a margin of at least the net's receptive field on
  every side that touches another tile, and only its core is kept (a net with
  ``decode_region`` runs its decoder on the core alone, in parts). Tile
  origins lie on the net's pooling grid (multiples of ``size_multiple``), so
  the result equals one forward pass over the whole (zero-padded) volume up to
  float rounding, while memory is bounded by the tile size.
- ``segment_sliding`` (the paper's reference): windows of W with stride W/2,
  softmax probabilities averaged where windows overlap. Every window sees its
  own zero padding at its faces, so its answer differs slightly from the
  tiled one near window faces; ``test_tiled_and_sliding_agree_on_a_random_volume``
  in ``tests/engine/test_inference_postprocess.py`` states the tolerance.

Volumes are normalised ``(z, y, x)``: ``float32`` arrays, or ``NormalisedVolume`` s
read tile by tile (``normalize.Voxels``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext

import numpy as np
import torch
from torch.nn import functional

from .calibration import ClassCalibration
from .defaults import PRECISIONS, Precision
from .models.backbone import Backbone, RegionDecoder
from .normalize import Voxels
from .postprocess import Box, Segmentation, summarise_probabilities
from .sampling import grid_starts

ProgressCallback = Callable[[int, int], None]
LogProbabilitySink = Callable[[torch.Tensor, tuple[slice, ...]], None]
"""Receives the log-probabilities ``(K+1, dz, dy, dx)`` of a region of the volume and
the region (absolute half-open slices ``(z, y, x)``)."""
MAX_TILE_VOXELS = {"cpu": 8_000_000, "cuda": 16_000_000}
"""Default largest tile (input voxels, margins included) per device type."""
DECODE_SHARE = 2
"""A tile's core is decoded in parts of at most ``max_tile_voxels / DECODE_SHARE``
voxels: per voxel the decoder needs about twice the encoder's memory."""


def resolve_precision(precision: Precision, device: torch.device) -> str:
    """The arithmetic used for inference: ``auto`` is ``fp16`` autocast on a GPU,
    ``bf16`` autocast on a CPU with native bfloat16 (AVX512-BF16 / AMX), else ``fp32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "fp16"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"


LOW_PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _reduced_precision(model: Backbone, device: torch.device, precision: str):
    """Autocast to ``precision``, unless the net itself is already in that dtype
    (``_prepare`` converts an ``autocast_free`` net) or ``precision`` is fp32."""
    if precision == "fp32" or next(model.parameters()).dtype != torch.float32:
        return nullcontext()
    return torch.autocast(device.type, dtype=LOW_PRECISION_DTYPES[precision])


def _as_input(model: Backbone, array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy batch ``(B, 1, z, y, x)`` as the net's input: its device and dtype,
    channels-last 3D."""
    dtype = next(model.parameters()).dtype
    return torch.from_numpy(array).to(device, dtype).to(memory_format=torch.channels_last_3d)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _axis_tiles(size: int, count: int, margin: int,
                multiple: int) -> list[tuple[int, int, int, int]]:
    """``(input_start, input_stop, core_start, core_stop)`` of ``count`` tiles along one
    padded axis: equal cores (multiples of ``multiple``, the last one shorter), inputs
    extended by ``margin`` where they do not touch the axis ends."""
    if count <= 1:
        return [(0, size, 0, size)]
    core = _round_up(-(-size // count), multiple)
    tiles = []
    for start in range(0, size, core):
        stop = min(start + core, size)
        tiles.append((max(start - margin, 0), min(stop + margin, size), start, stop))
    return tiles


def tile_counts(shape_zyx: tuple[int, int, int], margin: int, multiple: int,
                max_voxels: int) -> tuple[int, int, int]:
    """Tile counts along each axis (for ``_axis_tiles``): the split with the fewest
    input voxels in all (cores plus margins, i.e. the least computation) whose
    largest tile holds at most ``max_voxels`` voxels; ties go to fewer tiles.
    Cores are about ``8 * multiple`` voxels or more. Where no split fits the
    budget, the one with the smallest largest tile.
    """
    padded = [_round_up(n, multiple) for n in shape_zyx]
    options = []  # per axis: (count, tiles, summed input extent, largest input extent)
    for size in padded:
        axis, seen = [], set()
        for count in range(1, max(1, size // (8 * multiple)) + 1):
            tiles = _axis_tiles(size, count, margin, multiple)
            if len(tiles) in seen:  # rounding gave the same split as a smaller count
                continue
            seen.add(len(tiles))
            axis.append((count, len(tiles), sum(t[1] - t[0] for t in tiles),
                         max(t[1] - t[0] for t in tiles)))
        options.append(axis)
    best_key, best_counts = None, (1, 1, 1)
    for z in options[0]:
        for y in options[1]:
            for x in options[2]:
                largest = z[3] * y[3] * x[3]
                fits = largest <= max_voxels
                total = z[2] * y[2] * x[2]
                key = ((0, total) if fits else (1, largest, total)) + (z[1] * y[1] * x[1],)
                if best_key is None or key < best_key:
                    best_key, best_counts = key, (z[0], y[0], x[0])
    return best_counts


def tile_extents(shape_zyx: tuple[int, int, int], margin: int, multiple: int,
                 max_voxels: int) -> tuple[int, int, int]:
    """Input extent of the largest tile along each axis for ``tile_counts``' split
    (multiples of ``multiple``; a whole axis where it is not split)."""
    padded = [_round_up(n, multiple) for n in shape_zyx]
    counts = tile_counts(shape_zyx, margin, multiple, max_voxels)
    return tuple(max(t[1] - t[0] for t in _axis_tiles(n, c, margin, multiple))  # type: ignore[return-value]
                 for n, c in zip(padded, counts))


def plan_tiles(shape_zyx: tuple[int, int, int], margin: int, multiple: int,
               max_voxels: int) -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """Tiles covering a volume: ``(input slices, core slices)`` in padded volume coordinates.

    The padded volume has every size rounded up to ``multiple``; cores tile it
    without overlap; inputs extend cores by ``margin`` (a multiple of
    ``multiple``) where they do not touch the volume's faces. The split is
    ``tile_counts``': the least computation within the memory budget.
    """
    padded = [_round_up(n, multiple) for n in shape_zyx]
    counts = tile_counts(shape_zyx, margin, multiple, max_voxels)
    per_axis = [_axis_tiles(n, c, margin, multiple) for n, c in zip(padded, counts)]
    plan = []
    for tz in per_axis[0]:
        for ty in per_axis[1]:
            for tx in per_axis[2]:
                plan.append((tuple(slice(t[0], t[1]) for t in (tz, ty, tx)),
                             tuple(slice(t[2], t[3]) for t in (tz, ty, tx))))
    return plan


def _padded_crop(volume: Voxels, region: tuple[slice, ...]) -> np.ndarray:
    """``volume[region]`` with zeros where the region passes the volume's end."""
    out = np.zeros([s.stop - s.start for s in region], dtype=np.float32)
    inside = tuple(slice(s.start, min(s.stop, n)) for s, n in zip(region, volume.shape))
    out[tuple(slice(0, s.stop - s.start) for s in inside)] = volume[inside]
    return out


def _prepare(model: Backbone, device: torch.device, precision: str) -> Backbone:
    """``model`` on ``device``, channels-last 3D, in eval mode, with its batch
    normalisation folded into its convolutions where it can (``without_batch_norm``).
    For bf16 or fp16, a net marked ``autocast_free`` (only convolutions, ReLU,
    pooling, nearest up-sampling and concatenation, once folded) becomes a copy in
    that dtype: the same arithmetic as autocast, without its per-operation casts
    (autocast runs the up-sampling in float32 and the concatenations follow)."""
    model = model.to(device).eval()
    fold = getattr(model, "without_batch_norm", None)
    model = (model if fold is None else fold()).to(memory_format=torch.channels_last_3d)
    if precision != "fp32" and getattr(model, "autocast_free", False):
        model = copy.deepcopy(model).to(LOW_PRECISION_DTYPES[precision])
    return model


def _logits(model: Backbone, batch: np.ndarray, device: torch.device,
            precision: str) -> torch.Tensor:
    """Float32 class logits of a numpy batch ``(B, 1, z, y, x)`` (channels-last 3D)."""
    tensor = _as_input(model, batch, device)
    with torch.inference_mode(), _reduced_precision(model, device, precision):
        return model(tensor).float()


def split_box(box: Box, max_voxels: int, multiple: int) -> list[Box]:
    """``box`` cut along its longest axis into the fewest equal parts (cuts on
    multiples of ``multiple`` from its start) of at most ``max_voxels`` voxels, or
    into slices ``multiple`` thick where even those are larger."""
    extents = [hi - lo for lo, hi in box]
    axis = int(np.argmax(extents))
    across = int(np.prod(extents)) // extents[axis]
    count = max(1, -(-int(np.prod(extents)) // max_voxels))
    while True:
        step = _round_up(-(-extents[axis] // count), multiple)
        if step * across <= max_voxels or step <= multiple:
            break
        count += 1
    lo, hi = box[axis]
    return [box[:axis] + ((start, min(start + step, hi)),) + box[axis + 1:]  # type: ignore[misc]
            for start in range(lo, hi, step)]


def _core_logits(model: Backbone | RegionDecoder, tile: np.ndarray, core: Box, device: torch.device,
                 precision: str, max_part_voxels: int) -> Iterator[tuple[Box, torch.Tensor]]:
    """Float32 class logits ``(K+1, *part extents)`` of ``core`` (a box in ``tile``'s
    voxels), part by part. A net with ``features`` and ``decode_region`` (the
    DeepFinder U-Net) encodes the whole tile once and decodes only the core,
    in parts of at most ``max_part_voxels``; any other net runs whole."""
    tensor = _as_input(model, tile[None, None], device)
    with torch.inference_mode(), _reduced_precision(model, device, precision):
        if not hasattr(model, "decode_region"):
            yield core, model(tensor)[(0, slice(None), *(slice(lo, hi) for lo, hi in core))].float()
            return
        features = model.features(tensor)
        for part in split_box(core, max_part_voxels, model.size_multiple):
            yield part, model.decode_region(features, part)[0].float()


def segment_tiled(
    model: Backbone,
    volume: Voxels,
    device: torch.device,
    max_tile_voxels: int | None = None,
    precision: Precision = "auto",
    progress: ProgressCallback | None = None,
    calibration: ClassCalibration | None = None,
    log_probability_sink: LogProbabilitySink | None = None,
    regions: Sequence[Box] | None = None,
) -> Segmentation:
    """Segment ``volume`` with exact tiled inference (see the module docstring); a net
    with a ``fixed_window`` (a ViT) runs on its windows instead, as ``segment_sliding``
    (every window: ``regions`` do not shorten it).

    Args:
        model: a backbone (``models.Backbone``: ``size_multiple``, ``receptive_margin`` ...).
        volume: normalised ``(z, y, x)`` tomogram (an array, or a ``NormalisedVolume``
            read tile by tile).
        device: where the net runs.
        max_tile_voxels: largest tile in input voxels (default per device type).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see ``resolve_precision``);
            exactness against one whole-volume pass holds at the same precision.
        progress: called with ``(tiles done, tiles in all)``.
        calibration: class decisions (``postprocess.summarise_probabilities``).
        log_probability_sink: given every part of the volume as it is computed:
            its log-probabilities ``(K+1, dz, dy, dx)`` float32 and its region.
        regions: only the tiles whose core meets one of these boxes
            (``((z0, z1), (y0, y1), (x0, x1))`` voxels, ends exclusive) are computed,
            exactly as in a whole pass; the rest of the maps stays background (label 0,
            probabilities 0). ``None``: every tile.
    """
    window = getattr(model, "fixed_window", None)
    if window:
        # A net bound to one input size (a ViT) is not translation-equivariant:
        # its exact whole-volume answer is the windowed one.
        return segment_sliding(model, volume, device, window=window, stride=window // 2,
                               precision=precision, progress=progress,
                               calibration=calibration,
                               log_probability_sink=log_probability_sink)
    precision = resolve_precision(precision, device)
    budget = _tile_budget(device, max_tile_voxels)
    plan = _region_plan(model, volume.shape, budget, regions)
    model = _prepare(model, device, precision)
    segmentation = Segmentation.blank(volume.shape)
    for done, (inputs, cores) in enumerate(plan, start=1):
        tile = _padded_crop(volume, inputs)
        core = tuple((c.start - i.start, c.stop - i.start) for c, i in zip(cores, inputs))
        for part, logits in _core_logits(model, tile, core, device, precision,  # type: ignore[arg-type]
                                         budget // DECODE_SHARE):
            keep = tuple(slice(i.start + lo, min(i.start + hi, n))
                         for (lo, hi), i, n in zip(part, inputs, volume.shape))
            trim = tuple(slice(0, k.stop - k.start) for k in keep)
            log_probs = functional.log_softmax(logits.float(), dim=0)[(slice(None), *trim)]
            if log_probability_sink is not None:
                log_probability_sink(log_probs.cpu(), keep)
            for out, values in zip(segmentation.maps(),
                                   summarise_probabilities(log_probs, calibration)):
                out[keep] = values.cpu().numpy()
        if progress:
            progress(done, len(plan))
    return segmentation


def _tile_budget(device: torch.device, max_tile_voxels: int | None) -> int:
    """The largest tile (input voxels): ``max_tile_voxels``, else the device type's default."""
    return max_tile_voxels or MAX_TILE_VOXELS.get(device.type, MAX_TILE_VOXELS["cpu"])


def _region_plan(model: Backbone, shape_zyx: tuple[int, ...], budget: int,
                 regions: Sequence[Box] | None
                 ) -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """``segment_tiled``'s tiles (``plan_tiles``) of a volume of ``shape_zyx``: those
    whose core meets one of ``regions``, or all of them (``regions`` ``None``)."""
    multiple = model.size_multiple
    margin = _round_up(model.receptive_margin, multiple)
    plan = plan_tiles(shape_zyx, margin, multiple, budget)  # type: ignore[arg-type]
    if regions is None:
        return plan
    return [(inputs, cores) for inputs, cores in plan
            if any(all(c.start < hi and lo < c.stop for c, (lo, hi) in zip(cores, box))
                   for box in regions)]


def segmented_boxes(model: Backbone, shape_zyx: tuple[int, ...], device: torch.device,
                    regions: Sequence[Box], max_tile_voxels: int | None = None) -> list[Box]:
    """The boxes (voxels ``(z, y, x)``, clipped to the volume) that ``segment_tiled``
    with these ``regions`` (and ``max_tile_voxels``) computes: the cores of the tiles
    that meet them, or the whole volume for a net with a ``fixed_window``; the rest
    of its maps is background."""
    if getattr(model, "fixed_window", None):
        return [((0, shape_zyx[0]), (0, shape_zyx[1]), (0, shape_zyx[2]))]
    plan = _region_plan(model, shape_zyx, _tile_budget(device, max_tile_voxels), regions)
    return [tuple((c.start, min(c.stop, n)) for c, n in zip(cores, shape_zyx))  # type: ignore[misc]
            for _, cores in plan]


def _windows(shape_zyx: tuple[int, ...], window: int, stride: int) -> Iterator[tuple[int, ...]]:
    for z in grid_starts(shape_zyx[0], window, stride):
        for y in grid_starts(shape_zyx[1], window, stride):
            for x in grid_starts(shape_zyx[2], window, stride):
                yield z, y, x


def segment_sliding(
    model: Backbone,
    volume: Voxels,
    device: torch.device,
    window: int = 24,
    stride: int = 12,
    batch_size: int = 32,
    precision: Precision = "auto",
    progress: ProgressCallback | None = None,
    calibration: ClassCalibration | None = None,
    log_probability_sink: LogProbabilitySink | None = None,
) -> Segmentation:
    """Segment ``volume`` the paper's way: windows of ``window`` voxels every
    ``stride`` voxels, softmax probabilities averaged over overlapping windows
    (``calibration`` and ``log_probability_sink`` as in ``segment_tiled``, on the
    logarithm of the averaged probabilities).

    Memory grows with the tomogram (a float32 copy of it and ``K + 1`` float32
    probability maps); this is the reference mode, not the default.
    """
    precision = resolve_precision(precision, device)
    model = _prepare(model, device, precision)
    padded = np.zeros([max(n, window) for n in volume.shape], dtype=np.float32)
    padded[: volume.shape[0], : volume.shape[1], : volume.shape[2]] = volume[:, :, :]
    origins = list(_windows(padded.shape, window, stride))
    totals = np.zeros((model.num_outputs, *padded.shape), dtype=np.float32)
    counts = np.zeros(padded.shape, dtype=np.float32)
    batches = range(0, len(origins), batch_size)
    for done, first in enumerate(batches, start=1):
        chunk = origins[first : first + batch_size]
        crops = np.stack([padded[z : z + window, y : y + window, x : x + window]
                          for z, y, x in chunk])
        logits = _logits(model, crops[:, None], device, precision)
        probs = functional.softmax(logits, dim=1).cpu().numpy()
        for (z, y, x), p in zip(chunk, probs):
            totals[:, z : z + window, y : y + window, x : x + window] += p
            counts[z : z + window, y : y + window, x : x + window] += 1.0
        if progress:
            progress(done, len(batches))
    mean = totals[:, : volume.shape[0], : volume.shape[1], : volume.shape[2]]
    mean /= counts[None, : volume.shape[0], : volume.shape[1], : volume.shape[2]]
    log_probs = torch.from_numpy(mean).clamp_min(torch.finfo(torch.float32).tiny).log()
    if log_probability_sink is not None:
        log_probability_sink(log_probs, tuple(slice(0, n) for n in volume.shape))
    labels, scores, foreground = summarise_probabilities(log_probs, calibration)
    return Segmentation(labels.numpy().astype(np.uint8), scores.numpy().astype(np.float16),
                        foreground.numpy().astype(np.float16))
