"""Load and check what training needs: tomograms, labels, radii, voxel size."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .coordinates import (
    ParticleTable,
    drop_duplicates,
    drop_outside,
    inside_volume,
)
from .defaults import VOXEL_SIZE_TOLERANCE
from .errors import SasiInputError
from .formats import Reference, read_coordinates
from .limits import BACKGROUND_CLASS, radius_problem, split_class_value
from .masks import sphere_label_volume
from .mrc_io import MrcInfo, inspect_mrc, read_tomogram, size_problem
from .normalize import normalise
from .resample import resample, resampled_shape, resampling_problem, to_resampled_voxels

ANY_CLASS = "*"


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
        negatives: labelled points that are not particles (class ``BACKGROUND_CLASS``)
            per tomogram, voxels ``(x, y, z)``; empty tables when none.
    """

    volumes: list[np.ndarray]
    label_maps: list[np.ndarray]
    particles: list[ParticleTable]
    class_names: list[str]
    radii: list[float]
    voxel_size: float | None
    negatives: list[ParticleTable] | None = None


def parse_radii(specs: Sequence[str]) -> dict[str, float]:
    """Parse ``CLASS=R`` (or a bare ``R`` for every class) radius options, in voxels."""
    radii: dict[str, float] = {}
    for spec in specs:
        name, radius = split_class_value(spec)
        if not (math.isfinite(radius) and radius > 0):
            raise SasiInputError(
                f"--radius {spec}: expected CLASS=R or R with R a finite, positive number "
                "of voxels"
            )
        radii[name or ANY_CLASS] = radius
    return radii


def class_radii(class_names: Sequence[str], radii: dict[str, float], window: int) -> list[float]:
    """Radius per class from parsed ``--radius`` options.

    Raises:
        SasiInputError: a class without a radius, a radius under a voxel or one
            whose particle does not fit a ``window``-voxel window
            (``limits.radius_problem``).
    """
    result = []
    for name in class_names:
        radius = radii.get(name, radii.get(ANY_CLASS))
        if radius is None:
            raise SasiInputError(
                f"class {name!r} has no radius; add --radius {name}=R (R in voxels)"
            )
        problem = radius_problem(name, radius, window)
        if problem:
            raise SasiInputError(problem)
        result.append(radius)
    return result


def check_tomograms(given: Sequence[tuple[str, str]], window: int) -> list[MrcInfo]:
    """Check tomograms ``(option, path)`` from their headers (``mrc_io.inspect_mrc``,
    then the size) and refuse one given twice; return what the headers say."""
    seen: dict[str, str] = {}
    for option, path in given:
        real = os.path.realpath(path)
        if real in seen:
            raise SasiInputError(
                f"{option} {path}: the tomogram {seen[real]} is already given; give each "
                "tomogram once"
            )
        seen[real] = path
    infos = [inspect_mrc(path) for _, path in given]
    for (_, path), info in zip(given, infos):
        problem = size_problem(path, info.shape, window)
        if problem:
            raise SasiInputError(problem)
    return infos


def _reference(info: MrcInfo, tomogram: str, voxel_size: float | None = None) -> Reference:
    """What the header of a labelled tomogram (its voxel size replaced by ``voxel_size``,
    Å, when given) tells its coordinate file's format."""
    return Reference(shape=info.shape, voxel_size=voxel_size or info.voxel_size,
                     name=Path(tomogram).stem,
                     fix=f"set the pixel size in the header of {tomogram}")


@dataclass
class LabelPlan:
    """The checked labels of the training tomograms, before any volume is read.

    Attributes:
        particles: labelled centres per tomogram inside it, duplicates removed.
        class_names: the K classes, sorted.
        radii: sphere radius per class, voxels.
        voxel_size: Å per voxel of the training grid (every tomogram is resampled to
            it), or ``None`` when unknown.
        negatives: points of class ``BACKGROUND_CLASS`` per tomogram, inside it.
        grids: ``(z, y, x)`` shape of each tomogram on the training grid (its own
            where its voxel size is the grid's or unknown); ``particles`` and
            ``negatives`` are in the voxels of these grids.
    """

    particles: list[ParticleTable]
    class_names: list[str]
    radii: list[float]
    voxel_size: float | None
    negatives: list[ParticleTable]
    grids: list[tuple[int, ...]]


def training_grid(infos: Sequence[MrcInfo], paths: Sequence[str], window: int,
                  voxel_size: float | None = None, target: float | None = None,
                  target_name: str = "the first tomogram",
                  ) -> tuple[float | None, list[tuple[int, ...]]]:
    """The voxel size (Å) training works at and each tomogram's ``(z, y, x)`` shape
    there: ``target`` when given (a pre-trained model's), else ``voxel_size``
    (``--voxel-size``, which replaces every header's), else the first known header's.
    A tomogram at another voxel size is resampled to it (``resample``), one of
    unknown voxel size taken as it is.

    Raises:
        SasiInputError: voxel sizes too far apart to resample, or a tomogram smaller
            than ``window`` once resampled.
    """
    sizes = [voxel_size or info.voxel_size for info in infos]
    grid_size = target or next((size for size in sizes if size), None)
    if target is None and sizes and sizes[0] is None and grid_size:
        target_name = next(p for p, size in zip(paths, sizes) if size)
    grids = []
    for info, path, size in zip(infos, paths, sizes):
        if not (size and grid_size) or abs(size - grid_size) <= VOXEL_SIZE_TOLERANCE * grid_size:
            grids.append(info.shape)
            continue
        problem = resampling_problem(size, grid_size, path, target_name)
        if problem:
            raise SasiInputError(problem)
        grid = resampled_shape(info.shape, size, grid_size)
        if min(grid) < window:
            raise SasiInputError(
                f"{path}: {' x '.join(map(str, info.shape))} voxels of {size:.3f} Å are "
                f"{' x '.join(map(str, grid))} at the training voxel size {grid_size:.3f} Å "
                f"({target_name}'s), smaller than the {window}-voxel window; give larger "
                "tomograms")
        print(f"{path}: {size:.3f} Å per voxel; resampled to {grid_size:.3f} Å "
              f"({' x '.join(map(str, grid))} voxels) to train with {target_name}",
              file=sys.stderr)
        grids.append(grid)
    return grid_size, grids


def read_on_grid(path: str, window: int, grid: Sequence[int],
                 voxel_size: float | None = None) -> np.ndarray:
    """The normalised tomogram ``path`` ``(z, y, x)`` on its training ``grid``
    (resampled when that is not its own shape)."""
    data = read_tomogram(path, window, voxel_size).data
    return normalise(resample(data, grid) if data.shape != tuple(grid) else data)


def plan_labels(
    tomogram_paths: Sequence[str], coords_paths: Sequence[str], radius_specs: Sequence[str],
    window: int, voxel_size: float | None = None, target_voxel_size: float | None = None,
) -> LabelPlan:
    """Check every labelled input from the tomograms' headers and the coordinate files.
    ``voxel_size`` (Å, ``--voxel-size``) replaces the headers' voxel sizes; tomograms
    at another voxel size than the training grid's (``training_grid``:
    ``target_voxel_size`` when given, else the first tomogram's) are planned
    resampled to it, their coordinates with them. Radii are voxels of that grid.

    Raises:
        SasiInputError: unpaired files, a bad tomogram header, duplicate tomograms,
            a class with no radius, a ``--radius`` for a class that has no
            particle, a class whose particles all lie outside their tomograms,
            radii that do not fit the window, or voxel sizes too far apart.
    """
    if not tomogram_paths:
        raise SasiInputError("no --tomogram given; give at least one tomogram with --coords")
    if len(tomogram_paths) != len(coords_paths):
        raise SasiInputError(
            f"{len(tomogram_paths)} --tomogram but {len(coords_paths)} --coords; give one "
            "coordinate file per tomogram, in the same order"
        )
    radii = parse_radii(radius_specs)
    if BACKGROUND_CLASS in radii:
        raise SasiInputError(
            f"--radius {BACKGROUND_CLASS}={radii[BACKGROUND_CLASS]:g}: points of class "
            f"{BACKGROUND_CLASS!r} are not particles and need no radius; remove the option"
        )
    infos = check_tomograms([("--tomogram", path) for path in tomogram_paths], window)
    grid_size, grids = training_grid(
        infos, tomogram_paths, window, voxel_size, target_voxel_size,
        "the pre-trained model" if target_voxel_size else "the first tomogram")
    both = [_on_grid(drop_duplicates(read_coordinates(path, _reference(info, tomogram,
                                                                       voxel_size)), path),
                     info.shape, grid)
            for path, info, tomogram, grid in zip(coords_paths, infos, tomogram_paths, grids)]
    negatives = [table.subset(table.classes == BACKGROUND_CLASS) for table in both]
    read = [table.subset(table.classes != BACKGROUND_CLASS) for table in both]
    if not any(len(table) for table in read):
        raise SasiInputError(
            f"the coordinate files hold only {BACKGROUND_CLASS!r} points; label at least "
            "one particle of each class to learn"
        )
    labelled = sorted({name for table in read for name in table.class_names})
    unused = [name for name in radii if name != ANY_CLASS and name not in labelled]
    if unused:
        raise SasiInputError(
            f"--radius {unused[0]}={radii[unused[0]]:g}: no particle of class {unused[0]!r} "
            f"in the coordinate files (classes: {', '.join(labelled)}); fix the class name "
            "or remove the option"
        )
    inside = [table.subset(inside_volume(table, grid)) for table, grid in zip(read, grids)]
    class_names = sorted({name for table in inside for name in table.class_names})
    if not class_names:
        raise SasiInputError(
            "no labelled particle lies inside its tomogram; check the coordinates' units "
            "(voxels) and axis order (x y z)"
        )
    lost = [name for name in labelled if name not in class_names]
    if lost:
        raise SasiInputError(
            f"class {lost[0]!r}: every one of its particles lies outside its tomogram; check "
            "their coordinates (voxels, x y z) or remove the class from the coordinate files"
        )
    tables = [drop_outside(table, grid, path)
              for table, grid, path in zip(read, grids, coords_paths)]
    return LabelPlan(
        particles=tables,
        class_names=class_names,
        radii=class_radii(class_names, radii, window),
        voxel_size=grid_size,
        negatives=[drop_outside(table, grid, f"{path} ({BACKGROUND_CLASS})")
                   for table, grid, path in zip(negatives, grids, coords_paths)],
        grids=grids,
    )


def _on_grid(table: ParticleTable, shape: tuple[int, ...], grid: tuple[int, ...]
             ) -> ParticleTable:
    """``table`` (voxels of a ``shape`` tomogram) in the voxels of its training grid."""
    if tuple(grid) == tuple(shape):
        return table
    return ParticleTable(to_resampled_voxels(table.xyz, shape, grid), table.classes,
                         table.scores)


def load_training_data(
    tomogram_paths: Sequence[str], coords_paths: Sequence[str], radius_specs: Sequence[str],
    window: int, voxel_size: float | None = None, target_voxel_size: float | None = None,
) -> TrainingData:
    """Check (``plan_labels``), read, resample where needed and label the training
    tomograms (one coordinate file per tomogram); ``voxel_size`` (Å,
    ``--voxel-size``) replaces the headers'; ``target_voxel_size`` (Å) is the grid to
    train on (default: the first tomogram's)."""
    plan = plan_labels(tomogram_paths, coords_paths, radius_specs, window, voxel_size,
                       target_voxel_size)
    volumes = [read_on_grid(path, window, grid, voxel_size)
               for path, grid in zip(tomogram_paths, plan.grids)]
    labels = [
        sphere_label_volume(data.shape, table, plan.class_names, plan.radii)
        for data, table in zip(volumes, plan.particles)
    ]
    return TrainingData(
        volumes=volumes,
        label_maps=labels,
        particles=plan.particles,
        class_names=plan.class_names,
        radii=plan.radii,
        voxel_size=plan.voxel_size,
        negatives=plan.negatives,
    )


def load_unlabelled(paths: Sequence[str], window: int, option: str = "--tomogram",
                    voxel_size: float | None = None, target_voxel_size: float | None = None,
                    target_name: str = "the labelled tomograms",
                    ) -> tuple[list[np.ndarray], float | None]:
    """Normalised tomograms for self-supervision on one grid, and its voxel size (Å):
    ``target_voxel_size`` (``target_name``'s) when given, else ``voxel_size``
    (``--voxel-size``), else the first header's; others are resampled to it."""
    if not paths:
        raise SasiInputError(f"no {option} given; give at least one tomogram")
    infos = check_tomograms([(option, path) for path in paths], window)
    grid_size, grids = training_grid(infos, paths, window, voxel_size, target_voxel_size,
                                     target_name if target_voxel_size else
                                     "the first tomogram")
    return [read_on_grid(p, window, grid, voxel_size) for p, grid in zip(paths, grids)], grid_size
