"""Pick one tomogram with a trained model: segment, then extract particles."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .contrast import contrast_skew, inversion_warning
from .coordinates import ParticleTable
from .defaults import PICK_MODES, VOXEL_SIZE_TOLERANCE
from .errors import SasiInputError
from .inference import segment_sliding, segment_tiled
from .model_file import ModelMetadata, load_model
from .mrc_io import Volume, read_tomogram
from .normalize import NORMALISATION, normalise
from .postprocess import DEFAULT_COMPONENTS, Segmentation, extract_particles
from .resample import resample, resampled_shape, resampling_problem, to_source_voxels
from .thresholds import score_cutoffs


def check_pickable(meta: ModelMetadata, model_path: str | os.PathLike) -> None:
    """Refuse a pre-trained-only model or another normalisation.

    Raises:
        SasiInputError: naming the fix.
    """
    if meta.pretrained_only:
        raise SasiInputError(
            f"{model_path}: a pre-trained model has no particle classes; train it first "
            "with 'sasi train --pretrained' and pick with the trained model"
        )
    if meta.normalisation != NORMALISATION:
        raise SasiInputError(
            f"{model_path}: uses input normalisation {meta.normalisation!r}, this engine "
            f"applies {NORMALISATION!r}; retrain the model with this version"
        )


def model_grid(meta: ModelMetadata, volume: Volume, source: str) -> tuple[int, ...]:
    """The ``(z, y, x)`` shape ``volume`` (from file ``source``) has at the model's voxel
    size: its own when the voxel sizes agree within ``VOXEL_SIZE_TOLERANCE`` or one of
    them is unknown, else the shape it is resampled to (``resample``).

    Raises:
        SasiInputError: voxel sizes too far apart, or a resampled tomogram smaller
            than the model's window.
    """
    shape = volume.data.shape
    if not (meta.voxel_size and volume.voxel_size) or abs(
            volume.voxel_size - meta.voxel_size) <= VOXEL_SIZE_TOLERANCE * meta.voxel_size:
        return shape
    problem = resampling_problem(volume.voxel_size, meta.voxel_size, source, "the model")
    if problem:
        raise SasiInputError(problem)
    resampled = resampled_shape(shape, volume.voxel_size, meta.voxel_size)
    if min(resampled) < meta.window:
        raise SasiInputError(
            f"{source}: {' x '.join(map(str, shape))} voxels of {volume.voxel_size:.3f} Å "
            f"are {' x '.join(map(str, resampled))} at the model's {meta.voxel_size:.3f} Å, "
            f"smaller than its {meta.window}-voxel window; pick a larger tomogram")
    return resampled


def segment_tomogram(
    model_path: str | os.PathLike,
    tomogram_path: str | os.PathLike,
    device: torch.device,
    mode: str = "tiled",
    precision: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    invert_contrast: bool = False,
    voxel_size: float | None = None,
) -> tuple[Segmentation, ModelMetadata, tuple[int, ...]]:
    """Segment a tomogram (argmax class and its probability per voxel) at the model's
    voxel size; return the segmentation, the model's metadata and the tomogram's own
    ``(z, y, x)`` shape. A tomogram at another voxel size is resampled to the model's
    first (``model_grid``; the segmentation is then on that grid, whose voxels
    ``resample.to_source_voxels`` maps back). With ``invert_contrast``, of the
    negated normalised tomogram. Warns on stderr when the tomogram, so prepared,
    looks inverted relative to the model (``contrast.inversion_warning``). Its voxel
    size is ``voxel_size`` (Å, ``--voxel-size``) when given, else its header's."""
    if mode not in PICK_MODES:
        raise SasiInputError(f"--mode {mode}: choose one of {', '.join(PICK_MODES)}")
    model, meta = load_model(model_path, device)
    check_pickable(meta, model_path)
    volume = read_tomogram(tomogram_path, meta.window, voxel_size)
    source_shape = volume.data.shape
    grid = model_grid(meta, volume, str(tomogram_path))
    if grid != source_shape:
        print(f"{tomogram_path}: resampling {' x '.join(map(str, source_shape))} voxels of "
              f"{volume.voxel_size:.3f} Å to {' x '.join(map(str, grid))} at the model's "
              f"{meta.voxel_size:.3f} Å; picks are given in the tomogram's own voxels",
              file=sys.stderr)
        data = normalise(resample(volume.data, grid))
    else:
        data = normalise(volume.data)
    del volume
    if invert_contrast:
        np.negative(data, out=data)
    warning = inversion_warning(contrast_skew(data), meta.contrast_skew, str(tomogram_path))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if mode == "tiled":
        segmentation = segment_tiled(model, data, device, precision=precision,
                                     progress=progress)
    else:
        segmentation = segment_sliding(model, data, device, window=meta.window,
                                       stride=meta.window // 2, precision=precision,
                                       progress=progress)
    return segmentation, meta, source_shape


def model_cutoffs(meta: ModelMetadata, components: str) -> list[float]:
    """The model's per-class score cut-offs for ``components`` (0 for every class of a
    model that has none: an older or pre-trained model)."""
    return meta.score_cutoffs.get(components, [0.0] * len(meta.classes))


def pick_tomogram(
    model_path: str | os.PathLike,
    tomogram_path: str | os.PathLike,
    device: torch.device,
    mode: str = "tiled",
    min_score: float | None = None,
    precision: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    components: str = DEFAULT_COMPONENTS,
    invert_contrast: bool = False,
    voxel_size: float | None = None,
) -> ParticleTable:
    """Particles (centres in voxels ``(x, y, z)``, class, score) found in a tomogram.

    ``min_score`` drops particles scoring lower; ``None``: the model's per-class
    cut-offs from its training labels (:func:`model_cutoffs`). ``invert_contrast``
    negates the tomogram first (protein bright here, dark in the training data, or
    the reverse). ``voxel_size`` (Å) replaces the header's voxel size. A tomogram at
    another voxel size than the model's is picked resampled to it, and the centres
    are given in the tomogram's own voxels.
    """
    segmentation, meta, source_shape = segment_tomogram(
        model_path, tomogram_path, device, mode, precision, progress, invert_contrast,
        voxel_size)
    cut = model_cutoffs(meta, components) if min_score is None else min_score
    picks = extract_particles(segmentation, meta.classes, meta.radii, min_score=cut,
                              components=components)
    shape = segmentation.labels.shape
    if shape != source_shape:
        picks.xyz = to_source_voxels(picks.xyz, source_shape, shape)
    return picks


def label_cutoffs(model: nn.Module, volumes: Sequence[np.ndarray],
                  labels: Sequence[ParticleTable], class_names: Sequence[str],
                  radii: Sequence[float], device: torch.device) -> dict[str, list[float]]:
    """The score cut-offs (``thresholds.score_cutoffs``) of a model for the default
    component mode, from its picks of its own normalised training volumes
    ``(z, y, x)`` and their labels (other modes pick without cut-offs unless given
    ``min_score``)."""
    picks = [extract_particles(segment_tiled(model, volume, device), class_names, radii,
                               components=DEFAULT_COMPONENTS) for volume in volumes]
    return {DEFAULT_COMPONENTS: score_cutoffs(picks, labels, class_names, radii)}
