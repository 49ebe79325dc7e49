"""Bounds on numbers given by the user, shared by the ``sasi`` command and the Scipion
protocols' ``_validate`` (numpy-free and torch-free, so the protocols can import it)."""

from __future__ import annotations

import math

from .errors import input_name

MAX_ITERATIONS = 1_000_000
"""Most optimisation steps a run may ask for: 100 times the paper's budget."""
MAX_SEED = 2**32 - 1
"""Seeds are whole numbers from 0 to this."""
MIN_RADIUS = 1.0
"""Smallest particle radius, voxels: a smaller particle has no inside to segment."""
MAX_BINNING = 8
"""A radius that needs more binning than this to fit is taken for a unit mistake."""
BACKGROUND_CLASS = "background"
"""Class name of labelled points that are not particles (gold, membrane, junk, empty
ice): training shows the network windows around them as background."""


def context_size(window: int) -> int:
    """Edge of the crop that stays fill-free after any rotation about z: ``ceil(sqrt(2) W)``,
    rounded up to an even number (34 for W = 24)."""
    size = math.ceil(math.sqrt(2.0) * window)
    return size + size % 2


def max_radius(window: int) -> float:
    """Largest particle radius (voxels) whose sphere fits the context crop that each
    ``window``-voxel training window is cut from (``context_size``), with a voxel to
    spare on each side: 16 for W = 24. A larger particle than the window itself
    trains (the paper's SHREC 2021 classes reach a radius of 14 voxels at W = 24):
    the window then sees a part of it, and the crop around it the whole."""
    return context_size(window) / 2 - 1


def radius_problem(name: str, radius: float, window: int) -> str | None:
    """Why ``radius`` (voxels) cannot be the radius of class ``name`` for a network
    trained on ``window``-voxel windows, with the fix; ``None`` when it can."""
    if not (math.isfinite(radius) and radius > 0):
        return f"class {name!r}: radius {radius:g} is not a positive number of voxels; give R > 0"
    if radius < MIN_RADIUS:
        return (f"class {name!r}: radius {radius:g} voxels is under {MIN_RADIUS:g} voxel; give "
                "the radius in voxels (pixels of the tomogram)")
    largest = max_radius(window)
    if radius > largest:
        factor = math.ceil(radius / largest)
        fix = (f"bin the tomograms and coordinates by {factor} (radius {radius / factor:.3g})"
               if factor <= MAX_BINNING else "give the radius in voxels (pixels of the tomogram)")
        return (f"class {name!r}: radius {radius:g} voxels does not fit the {window}-voxel "
                f"window (at most {largest:g}); {fix}")
    return None


def iterations_problem(iterations: int) -> str | None:
    """Why ``iterations`` cannot be a run's optimisation steps; ``None`` when it can."""
    if not 1 <= iterations <= MAX_ITERATIONS:
        return (f"{input_name('settings.iterations')} {iterations}: give 1 to "
                f"{MAX_ITERATIONS} steps (the paper's budget is about 10000)")
    return None


def seed_problem(seed: int) -> str | None:
    """Why ``seed`` cannot seed a run; ``None`` when it can."""
    if not 0 <= seed <= MAX_SEED:
        return f"{input_name('settings.seed')} {seed}: give a whole number from 0 to {MAX_SEED}"
    return None


def finite_problem(name: str, value: float, low: float, high: float = math.inf,
                   low_open: bool = False, high_open: bool = False) -> str | None:
    """Why ``value`` of input ``name`` (``errors.input_name``) is not a finite number
    in ``[low, high]`` (``low`` excluded with ``low_open``, ``high`` with
    ``high_open``); ``None`` when it is."""
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if math.isfinite(value) and above and below:
        return None
    bounds = f"{'above' if low_open else 'at least'} {low:g}" + (
        f" and {'below' if high_open else 'at most'} {high:g}" if math.isfinite(high) else "")
    return f"{name} {value:g}: give a finite number {bounds}"


def voxel_size_problem(voxel_size: float | None) -> str | None:
    """Why ``voxel_size`` (Å per voxel; ``None``: not given) cannot be a tomogram's voxel
    size; ``None`` when it can."""
    if voxel_size is None:
        return None
    return finite_problem(input_name("voxel_size"), voxel_size, 0.0, low_open=True)


def split_class_value(spec: str) -> tuple[str, float]:
    """``CLASS=V`` (or a bare ``V``) as ``(CLASS or "", V)``; V is NaN when it is not
    a number, so the caller's range check refuses it with its own message."""
    name, _, value = spec.rpartition("=")
    try:
        return name, float(value)
    except ValueError:
        return name, math.nan
