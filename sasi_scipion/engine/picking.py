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
from .mrc_io import read_tomogram
from .normalize import NORMALISATION, normalise
from .postprocess import DEFAULT_COMPONENTS, Segmentation, extract_particles
from .thresholds import score_cutoffs


def check_pickable(meta: ModelMetadata, voxel_size: float | None, source: str,
                   model_path: str | os.PathLike) -> None:
    """Refuse a pre-trained-only model, another normalisation or another voxel size.

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
    if meta.voxel_size and voxel_size and (
        abs(voxel_size - meta.voxel_size) > VOXEL_SIZE_TOLERANCE * meta.voxel_size
    ):
        raise SasiInputError(
            f"{source}: voxel size {voxel_size:.3f} Å but the model was trained at "
            f"{meta.voxel_size:.3f} Å; rescale (bin) the tomogram to {meta.voxel_size:.3f} Å "
            "or train a model at this voxel size"
        )


def segment_tomogram(
    model_path: str | os.PathLike,
    tomogram_path: str | os.PathLike,
    device: torch.device,
    mode: str = "tiled",
    precision: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    invert_contrast: bool = False,
    voxel_size: float | None = None,
) -> tuple[Segmentation, ModelMetadata]:
    """Segment a tomogram (argmax class and its probability per voxel); with
    ``invert_contrast``, of the negated normalised tomogram. Warns on stderr when the
    tomogram, so prepared, looks inverted relative to the model
    (``contrast.inversion_warning``). Its voxel size is ``voxel_size`` (Å,
    ``--voxel-size``) when given, else its header's."""
    if mode not in PICK_MODES:
        raise SasiInputError(f"--mode {mode}: choose one of {', '.join(PICK_MODES)}")
    model, meta = load_model(model_path, device)
    volume = read_tomogram(tomogram_path, meta.window, voxel_size)
    check_pickable(meta, volume.voxel_size, str(tomogram_path), model_path)
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
    return segmentation, meta


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
    the reverse). ``voxel_size`` (Å) replaces the header's voxel size.
    """
    segmentation, meta = segment_tomogram(model_path, tomogram_path, device, mode, precision,
                                          progress, invert_contrast, voxel_size)
    cut = model_cutoffs(meta, components) if min_score is None else min_score
    return extract_particles(segmentation, meta.classes, meta.radii, min_score=cut,
                             components=components)


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
