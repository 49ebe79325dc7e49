"""Load and check what training needs: tomograms, labels, radii, voxel size.

A tomogram is an MRC file or a :class:`~.mrc_io.Volume` (a ``(z, y, x)`` array with
its voxel size in Å); labels are a coordinate file or a :class:`ParticleTable`
(voxels ``(x, y, z)``). Errors name the inputs as ``errors.input_name`` says: the
library's parameters (``tomograms[1]``), or the ``sasi`` command's flags.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from .coordinates import (
    ParticleTable,
    drop_duplicates,
    drop_outside,
    inside_volume,
)
from .defaults import VOXEL_SIZE_TOLERANCE
from .errors import SasiInputError, input_name
from .formats import Reference, read_coordinates
from .limits import BACKGROUND_CLASS, radius_problem, split_class_value
from .masks import sphere_label_volume
from .mrc_io import (
    MrcInfo,
    TomogramInput,
    Volume,
    check_tomogram_array,
    inspect_mrc,
    load_tomogram,
    size_problem,
    tomogram_source,
)
from .normalize import NormalisedVolume, Voxels, normalise
from .resample import resample, resampled_shape, resampling_problem, to_resampled_voxels

LOG = logging.getLogger(__package__)
ANY_CLASS = "*"
"""Key of ``radii`` that gives every class without a radius of its own."""
LabelsInput = Union[str, os.PathLike, ParticleTable]
"""Labels of one tomogram: a coordinate file (any format) or a table (voxels ``x, y, z``)."""


@dataclass
class TrainingData:
    """Normalised tomograms with their few labels.

    Attributes:
        volumes: normalised ``(z, y, x)`` tomograms: a ``NormalisedVolume`` over a
            file's memory map (or the given array) at its own voxel size, a ``float32``
            array when resampled.
        label_maps: ``uint8`` ``(z, y, x)`` sphere labels (0 = background, i+1 = class i).
        particles: labelled centres per tomogram, voxels ``(x, y, z)``.
        class_names: the K classes, sorted.
        radii: sphere radius per class, voxels.
        voxel_size: Å per voxel shared by all tomograms, or ``None`` when unknown.
        negatives: labelled points that are not particles (class ``BACKGROUND_CLASS``)
            per tomogram, voxels ``(x, y, z)``; empty tables when none.
    """

    volumes: list[Voxels]
    label_maps: list[np.ndarray]
    particles: list[ParticleTable]
    class_names: list[str]
    radii: list[float]
    voxel_size: float | None
    negatives: list[ParticleTable] | None = None


def parse_radii(specs: Sequence[str]) -> dict[str, float]:
    """Parse ``CLASS=R`` (or a bare ``R`` for every class: :data:`ANY_CLASS`) radius
    specifications, in voxels (``sasi --radius``)."""
    radii: dict[str, float] = {}
    for spec in specs:
        name, radius = split_class_value(spec)
        if not (math.isfinite(radius) and radius > 0):
            raise SasiInputError(
                f"{input_name('radii')} {spec}: expected CLASS=R or R with R a finite, "
                "positive number of voxels"
            )
        radii[name or ANY_CLASS] = radius
    return radii


def class_radii(class_names: Sequence[str], radii: Mapping[str, float],
                window: int) -> list[float]:
    """Radius per class (voxels) from ``radii`` (class name, or :data:`ANY_CLASS`, to
    voxels).

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
                f"class {name!r} has no radius; add {input_name('radii', name)}=R (R in voxels)"
            )
        problem = radius_problem(name, radius, window)
        if problem:
            raise SasiInputError(problem)
        result.append(radius)
    return result


def check_tomograms(given: Sequence[tuple[str, TomogramInput]], window: int) -> list[MrcInfo]:
    """Check tomograms ``(input name, tomogram)`` from their headers
    (``mrc_io.inspect_mrc``; an array's shape), then the size, and refuse one given
    twice; return their shapes and voxel sizes."""
    seen: dict[object, str] = {}
    for name, tomogram in given:
        key = id(tomogram.data) if isinstance(tomogram, Volume) else os.path.realpath(tomogram)
        if key in seen:
            given_as = "" if isinstance(tomogram, Volume) else f" {tomogram}"
            raise SasiInputError(f"{name}{given_as}: the tomogram {seen[key]} is already "
                                 "given; give each tomogram once")
        seen[key] = tomogram_source(tomogram, name)
    infos = [check_tomogram_array(t, name) if isinstance(t, Volume) else inspect_mrc(t)
             for name, t in given]
    for (name, tomogram), info in zip(given, infos):
        problem = size_problem(tomogram_source(tomogram, name), info.shape, window)
        if problem:
            raise SasiInputError(problem)
    return infos


def _labels(labels: LabelsInput, info: MrcInfo, tomogram: TomogramInput, name: str,
            voxel_size: float | None) -> ParticleTable:
    """The labels of one tomogram with duplicates removed: a table as given, or a
    coordinate file read in the voxels of the tomogram (``info``; its voxel size
    replaced by ``voxel_size``, Å, when given); ``name`` names the tomogram."""
    if isinstance(labels, ParticleTable):
        return drop_duplicates(labels, name)
    source = tomogram_source(tomogram, name)
    fix = (f"give {name} a voxel size" if isinstance(tomogram, Volume)
           else f"set the pixel size in the header of {tomogram}")
    reference = Reference(shape=info.shape, voxel_size=voxel_size or info.voxel_size,
                          name=Path(source).stem, fix=fix)
    return drop_duplicates(read_coordinates(labels, reference), str(labels))


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


def training_grid(infos: Sequence[MrcInfo], sources: Sequence[str], window: int,
                  voxel_size: float | None = None, target: float | None = None,
                  target_name: str | None = None,
                  ) -> tuple[float | None, list[tuple[int, ...]]]:
    """The voxel size (Å) training works at and each tomogram's ``(z, y, x)`` shape
    there: ``target`` (``target_name``'s: a pre-trained model's, or the labelled
    tomograms') when given, else ``voxel_size`` (which replaces every tomogram's
    own), else the first known one. A tomogram at another voxel size is resampled
    to it (``resample``; a note goes to the engine's logger), one of unknown voxel
    size taken as it is. ``sources`` name the tomograms.

    Raises:
        SasiInputError: voxel sizes too far apart to resample, or a tomogram smaller
            than ``window`` once resampled.
    """
    sizes = [voxel_size or info.voxel_size for info in infos]
    grid_size = target or next((size for size in sizes if size), None)
    if target is None:
        target_name = next((src for src, size in zip(sources, sizes) if size), None)
    grids = []
    for info, source, size in zip(infos, sources, sizes):
        if not (size and grid_size) or abs(size - grid_size) <= VOXEL_SIZE_TOLERANCE * grid_size:
            grids.append(info.shape)
            continue
        problem = resampling_problem(size, grid_size, source, str(target_name))
        if problem:
            raise SasiInputError(problem)
        grid = resampled_shape(info.shape, size, grid_size)
        if min(grid) < window:
            raise SasiInputError(
                f"{source}: {' x '.join(map(str, info.shape))} voxels of {size:.3f} Å are "
                f"{' x '.join(map(str, grid))} at the training voxel size {grid_size:.3f} Å "
                f"({target_name}'s), smaller than the {window}-voxel window; give larger "
                "tomograms")
        LOG.info("%s: %.3f Å per voxel; resampled to %.3f Å (%s voxels) to train with %s",
                 source, size, grid_size, " x ".join(map(str, grid)), target_name)
        grids.append(grid)
    return grid_size, grids


def load_on_grid(tomogram: TomogramInput, name: str, window: int, grid: Sequence[int],
                 voxel_size: float | None = None) -> Voxels:
    """The normalised tomogram ``(z, y, x)`` on its training ``grid``; ``name`` names
    it in messages. On its own grid, a ``NormalisedVolume`` over the file's memory map
    (or the caller's array, not changed): training windows are read from it, and the
    whole volume is never copied. Resampled (another grid), a ``float32`` array
    normalised where it lies."""
    data = load_tomogram(tomogram, name, window, voxel_size).data
    if data.shape != tuple(grid):
        return normalise(resample(data, grid), in_place=True)
    return NormalisedVolume(data)


def _on_grid(table: ParticleTable, shape: tuple[int, ...], grid: tuple[int, ...]
             ) -> ParticleTable:
    """``table`` (voxels of a ``shape`` tomogram) in the voxels of its training grid."""
    if tuple(grid) == tuple(shape):
        return table
    return ParticleTable(to_resampled_voxels(table.xyz, shape, grid), table.classes,
                         table.scores)


def plan_labels(
    tomograms: Sequence[TomogramInput], labels: Sequence[LabelsInput],
    radii: Mapping[str, float], window: int, voxel_size: float | None = None,
    target_voxel_size: float | None = None,
) -> LabelPlan:
    """Check every labelled input from the tomograms' headers and the labels.

    Args:
        tomograms: the labelled tomograms.
        labels: one coordinate file or table per tomogram (in its own voxels), in the
            same order.
        radii: class name (or :data:`ANY_CLASS`) to particle radius, voxels of the
            training grid.
        window: the network's window edge, voxels.
        voxel_size: Å per voxel replacing the tomograms' own.
        target_voxel_size: Å per voxel of the training grid (a pre-trained model's);
            default: the first tomogram's. Tomograms at another voxel size are
            planned resampled to it, their labels with them (``training_grid``).

    Raises:
        SasiInputError: unpaired inputs, a bad tomogram, duplicate tomograms, a class
            with no radius, a radius for a class that has no particle, a class whose
            particles all lie outside their tomograms, radii that do not fit the
            window, or voxel sizes too far apart.
    """
    tomo, coords = input_name("tomograms"), input_name("labels")
    if not tomograms:
        raise SasiInputError(f"no {tomo} given; give at least one tomogram with {coords}")
    if len(tomograms) != len(labels):
        raise SasiInputError(
            f"{len(tomograms)} {tomo} but {len(labels)} {coords}; give one "
            "coordinate file per tomogram, in the same order"
        )
    if BACKGROUND_CLASS in radii:
        raise SasiInputError(
            f"{input_name('radii', BACKGROUND_CLASS)}={radii[BACKGROUND_CLASS]:g}: points of "
            f"class {BACKGROUND_CLASS!r} are not particles and need no radius; remove the option"
        )
    names = [input_name("tomograms", i) for i in range(len(tomograms))]
    infos = check_tomograms(list(zip(names, tomograms)), window)
    label_names = [str(t) if not isinstance(t, ParticleTable) else input_name("labels", i)
                   for i, t in enumerate(labels)]
    grid_size, grids = training_grid(
        infos, [tomogram_source(t, n) for t, n in zip(tomograms, names)], window, voxel_size,
        target_voxel_size, "the pre-trained model" if target_voxel_size else None)
    both = [_on_grid(_labels(table, info, tomogram, name, voxel_size), info.shape, grid)
            for table, info, tomogram, name, grid in zip(labels, infos, tomograms, names, grids)]
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
            f"{input_name('radii', unused[0])}={radii[unused[0]]:g}: no particle of class "
            f"{unused[0]!r} in the coordinate files (classes: {', '.join(labelled)}); fix the "
            "class name or remove the option"
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
    tables = [drop_outside(table, grid, name)
              for table, grid, name in zip(read, grids, label_names)]
    return LabelPlan(
        particles=tables,
        class_names=class_names,
        radii=class_radii(class_names, radii, window),
        voxel_size=grid_size,
        negatives=[drop_outside(table, grid, f"{name} ({BACKGROUND_CLASS})")
                   for table, grid, name in zip(negatives, grids, label_names)],
        grids=grids,
    )


def load_training_data(
    tomograms: Sequence[TomogramInput], labels: Sequence[LabelsInput],
    radii: Mapping[str, float], window: int, voxel_size: float | None = None,
    target_voxel_size: float | None = None,
) -> TrainingData:
    """Check (:func:`plan_labels`), read, resample where needed and label the training
    tomograms (one label file or table per tomogram); ``voxel_size`` (Å) replaces the
    tomograms' own; ``target_voxel_size`` (Å) is the grid to train on (default: the
    first tomogram's)."""
    plan = plan_labels(tomograms, labels, radii, window, voxel_size, target_voxel_size)
    volumes = [load_on_grid(t, input_name("tomograms", i), window, grid, voxel_size)
               for i, (t, grid) in enumerate(zip(tomograms, plan.grids))]
    label_maps = [
        sphere_label_volume(data.shape, table, plan.class_names, plan.radii)
        for data, table in zip(volumes, plan.particles)
    ]
    return TrainingData(
        volumes=volumes,
        label_maps=label_maps,
        particles=plan.particles,
        class_names=plan.class_names,
        radii=plan.radii,
        voxel_size=plan.voxel_size,
        negatives=plan.negatives,
    )


def load_unlabelled(tomograms: Sequence[TomogramInput], window: int,
                    parameter: str = "tomograms", voxel_size: float | None = None,
                    target_voxel_size: float | None = None,
                    target_name: str = "the labelled tomograms",
                    ) -> tuple[list[Voxels], float | None]:
    """Normalised tomograms for self-supervision on one grid (:func:`load_on_grid`),
    and its voxel size (Å):
    ``target_voxel_size`` (``target_name``'s) when given, else ``voxel_size``, else
    the first tomogram's own; others are resampled to it. ``parameter`` names them
    in errors."""
    if not tomograms:
        raise SasiInputError(f"no {input_name(parameter)} given; give at least one tomogram")
    names = [input_name(parameter, i) for i in range(len(tomograms))]
    infos = check_tomograms(list(zip(names, tomograms)), window)
    grid_size, grids = training_grid(
        infos, [tomogram_source(t, n) for t, n in zip(tomograms, names)], window, voxel_size,
        target_voxel_size, target_name if target_voxel_size else None)
    return [load_on_grid(t, n, window, grid, voxel_size)
            for t, n, grid in zip(tomograms, names, grids)], grid_size
