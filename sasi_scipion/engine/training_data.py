"""Load and check what training needs: tomograms, labels, radii, voxel size."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .coordinates import ParticleTable, drop_outside, read_particles
from .errors import SasiInputError
from .masks import sphere_label_volume
from .mrc_io import read_volume
from .normalize import normalise

ANY_CLASS = "*"
VOXEL_SIZE_TOLERANCE = 0.01
"""Relative difference of voxel sizes still taken as equal."""


@dataclass
class TrainingData:
    """Normalised tomograms with their few labels.

    Attributes:
        volumes: normalised ``float32`` ``(z, y, x)`` tomograms.
        label_maps: ``uint8`` ``(z, y, x)`` sphere labels (0 = background, i+1 = class i).
        particles: labelled centres per tomogram, voxels ``(x, y, z)``.
        class_names: the K classes, sorted.
        radii: sphere radius per class, voxels.
        voxel_size: Å per voxel shared by all tomograms, or ``None`` when unknown.
    """

    volumes: list[np.ndarray]
    label_maps: list[np.ndarray]
    particles: list[ParticleTable]
    class_names: list[str]
    radii: list[float]
    voxel_size: float | None


def parse_radii(specs: Sequence[str]) -> dict[str, float]:
    """Parse ``CLASS=R`` (or a bare ``R`` for every class) radius options, in voxels."""
    radii: dict[str, float] = {}
    for spec in specs:
        name, _, value = spec.rpartition("=")
        try:
            radius = float(value)
        except ValueError:
            radius = float("nan")
        if not radius > 0:
            raise SasiInputError(
                f"--radius {spec}: expected CLASS=R or R with R a positive number of voxels"
            )
        radii[name or ANY_CLASS] = radius
    return radii


def common_voxel_size(sizes: Sequence[float | None], sources: Sequence[str]) -> float | None:
    """The voxel size shared by all inputs (Å), ``None`` if none is known.

    Raises:
        SasiInputError: two known voxel sizes differ by more than 1 %.
    """
    known = [(s, src) for s, src in zip(sizes, sources) if s]
    for size, source in known[1:]:
        if abs(size - known[0][0]) > VOXEL_SIZE_TOLERANCE * known[0][0]:
            raise SasiInputError(
                f"{source}: voxel size {size:.3f} Å differs from {known[0][1]} "
                f"({known[0][0]:.3f} Å); rescale the tomograms to one voxel size first"
            )
    return known[0][0] if known else None


def class_radii(class_names: Sequence[str], radii: dict[str, float], window: int) -> list[float]:
    """Radius per class from parsed ``--radius`` options.

    Raises:
        SasiInputError: a class without a radius.
    """
    result = []
    for name in class_names:
        radius = radii.get(name, radii.get(ANY_CLASS))
        if radius is None:
            raise SasiInputError(
                f"class {name!r} has no radius; add --radius {name}=R (R in voxels)"
            )
        if radius > window / 2 - 1:
            print(
                f"warning: class {name!r}: radius {radius:g} voxels barely fits the {window}-voxel "
                "window; bin the tomograms so particles are smaller than the window",
                file=sys.stderr,
            )
        result.append(radius)
    return result


def load_training_data(
    tomogram_paths: Sequence[str], coords_paths: Sequence[str], radius_specs: Sequence[str],
    window: int,
) -> TrainingData:
    """Read, check and label the training tomograms (one coordinate file per tomogram)."""
    if not tomogram_paths:
        raise SasiInputError("no --tomogram given; give at least one tomogram with --coords")
    if len(tomogram_paths) != len(coords_paths):
        raise SasiInputError(
            f"{len(tomogram_paths)} --tomogram but {len(coords_paths)} --coords; give one "
            "coordinate file per tomogram, in the same order"
        )
    radii = parse_radii(radius_specs)
    raw, tables, sizes = [], [], []
    for tomo_path, coords_path in zip(tomogram_paths, coords_paths):
        volume = read_volume(tomo_path)
        table = drop_outside(read_particles(coords_path), volume.data.shape, coords_path)
        raw.append(volume.data)
        tables.append(table)
        sizes.append(volume.voxel_size)
    voxel_size = common_voxel_size(sizes, list(tomogram_paths))
    class_names = sorted({name for table in tables for name in table.class_names})
    if not class_names:
        raise SasiInputError(
            "no labelled particle lies inside its tomogram; check the coordinates' units "
            "(voxels) and axis order (x y z)"
        )
    radius_list = class_radii(class_names, radii, window)
    labels = [
        sphere_label_volume(data.shape, table, class_names, radius_list)
        for data, table in zip(raw, tables)
    ]
    return TrainingData(
        volumes=[normalise(data) for data in raw],
        label_maps=labels,
        particles=tables,
        class_names=class_names,
        radii=radius_list,
        voxel_size=voxel_size,
    )


def load_unlabelled(paths: Sequence[str]) -> tuple[list[np.ndarray], float | None]:
    """Normalised tomograms for self-supervision, and their shared voxel size (Å)."""
    if not paths:
        raise SasiInputError("no --tomogram given; give at least one tomogram")
    volumes = [read_volume(p) for p in paths]
    voxel_size = common_voxel_size([v.voxel_size for v in volumes], list(paths))
    return [normalise(v.data) for v in volumes], voxel_size
