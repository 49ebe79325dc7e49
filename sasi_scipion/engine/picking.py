"""Pick one tomogram with a trained model: segment, then extract particles."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .contrast import contrast_skew, inversion_warning
from .coordinates import ParticleTable
from .defaults import PICK_MODES, VOXEL_SIZE_TOLERANCE, ComponentMode, PickMode, Precision
from .errors import SasiInputError, SasiWarning, input_name
from .inference import ProgressCallback, segment_sliding, segment_tiled
from .model_file import Model, ModelMetadata
from .mrc_io import TomogramInput, load_tomogram, tomogram_source
from .normalize import NORMALISATION, normalise
from .postprocess import DEFAULT_COMPONENTS, Segmentation, extract_particles
from .thresholds import score_cutoffs


def check_pickable(meta: ModelMetadata, voxel_size: float | None, source: str,
                   model_name: str) -> None:
    """Refuse a pre-trained-only model, another normalisation or another voxel size;
    ``source`` names the tomogram, ``model_name`` the model in messages.

    Raises:
        SasiInputError: naming the fix.
    """
    if meta.pretrained_only:
        raise SasiInputError(
            f"{model_name}: a pre-trained model has no particle classes; train it first "
            "with 'sasi train --pretrained' and pick with the trained model"
        )
    if meta.normalisation != NORMALISATION:
        raise SasiInputError(
            f"{model_name}: uses input normalisation {meta.normalisation!r}, this engine "
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
    model: Model,
    tomogram: TomogramInput,
    device: torch.device,
    mode: PickMode = "tiled",
    precision: Precision = "auto",
    progress: ProgressCallback | None = None,
    invert_contrast: bool = False,
    voxel_size: float | None = None,
    model_name: str = "model",
) -> Segmentation:
    """Segment a tomogram (argmax class and its probability per voxel); with
    ``invert_contrast``, of the negated normalised tomogram. Warns
    (:class:`SasiWarning`) when the tomogram, so prepared, looks inverted relative to
    the model (``contrast.inversion_warning``). Its voxel size is ``voxel_size`` (Å)
    when given, else its own. ``model_name`` names the model in messages."""
    if mode not in PICK_MODES:
        raise SasiInputError(
            f"{input_name('mode')} {mode}: choose one of {', '.join(PICK_MODES)}")
    meta = model.metadata
    name = input_name("tomogram")
    volume = load_tomogram(tomogram, name, meta.window, voxel_size)
    source = tomogram_source(tomogram, name)
    check_pickable(meta, volume.voxel_size, source, model_name)
    data = normalise(volume.data)
    del volume
    if invert_contrast:
        np.negative(data, out=data)
    warning = inversion_warning(contrast_skew(data), meta.contrast_skew, source)
    if warning:
        warnings.warn(warning, SasiWarning, stacklevel=2)
    network = model.network.to(device).eval()
    if mode == "tiled":
        return segment_tiled(network, data, device, precision=precision, progress=progress)
    return segment_sliding(network, data, device, window=meta.window,
                           stride=meta.window // 2, precision=precision, progress=progress)


def model_cutoffs(meta: ModelMetadata, components: str) -> list[float]:
    """The model's per-class score cut-offs for ``components`` (0 for every class of a
    model that has none: an older or pre-trained model)."""
    return meta.score_cutoffs.get(components, [0.0] * len(meta.classes))


def pick_tomogram(
    model: Model,
    tomogram: TomogramInput,
    device: torch.device,
    mode: PickMode = "tiled",
    min_score: float | None = None,
    precision: Precision = "auto",
    progress: ProgressCallback | None = None,
    components: ComponentMode = DEFAULT_COMPONENTS,
    invert_contrast: bool = False,
    voxel_size: float | None = None,
    model_name: str = "model",
) -> ParticleTable:
    """Particles (centres in voxels ``(x, y, z)``, class, score) found in a tomogram.

    ``min_score`` drops particles scoring lower; ``None``: the model's per-class
    cut-offs from its training labels (:func:`model_cutoffs`). ``invert_contrast``
    negates the tomogram first (protein bright here, dark in the training data, or
    the reverse). ``voxel_size`` (Å) replaces the tomogram's own. The other arguments
    are :func:`segment_tomogram`'s.
    """
    segmentation = segment_tomogram(model, tomogram, device, mode, precision, progress,
                                    invert_contrast, voxel_size, model_name)
    meta = model.metadata
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
