"""Pick one tomogram with a trained model: segment, then extract particles."""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from .coordinates import ParticleTable
from .errors import SasiInputError
from .inference import segment_sliding, segment_tiled
from .model_file import ModelMetadata, load_model
from .mrc_io import read_volume
from .normalize import NORMALISATION, normalise
from .postprocess import Segmentation, extract_particles
from .training_data import VOXEL_SIZE_TOLERANCE

PICK_MODES = ("tiled", "sliding")


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
) -> tuple[Segmentation, ModelMetadata]:
    """Segment a tomogram (argmax class and its probability per voxel)."""
    if mode not in PICK_MODES:
        raise SasiInputError(f"--mode {mode}: choose one of {', '.join(PICK_MODES)}")
    model, meta = load_model(model_path, device)
    volume = read_volume(tomogram_path)
    check_pickable(meta, volume.voxel_size, str(tomogram_path), model_path)
    data = normalise(volume.data)
    del volume
    if mode == "tiled":
        segmentation = segment_tiled(model, data, device, precision=precision,
                                     progress=progress)
    else:
        segmentation = segment_sliding(model, data, device, window=meta.window,
                                       stride=meta.window // 2, precision=precision,
                                       progress=progress)
    return segmentation, meta


def pick_tomogram(
    model_path: str | os.PathLike,
    tomogram_path: str | os.PathLike,
    device: torch.device,
    mode: str = "tiled",
    min_score: float = 0.0,
    precision: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> ParticleTable:
    """Particles (centres in voxels ``(x, y, z)``, class, score) found in a tomogram."""
    segmentation, meta = segment_tomogram(model_path, tomogram_path, device, mode, precision,
                                          progress)
    return extract_particles(segmentation, meta.classes, meta.radii, min_score=min_score)
