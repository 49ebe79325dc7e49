"""Training windows: class-balanced labelled windows and unlabelled sliding windows.

Volumes are normalised ``float32`` ``(z, y, x)`` arrays; particle centres are
voxels ``(x, y, z)``. Windows are cubes of edge W (24 in the paper).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .augment import band_limit, center_crop, random_flips, rotate_about_z
from .coordinates import ParticleTable
from .limits import context_size
from .normalize import Voxels


def crop_padded(volume: Voxels, centre_zyx: Sequence[int], size: int) -> np.ndarray:
    """The ``size``-cube of ``volume`` centred on ``centre_zyx`` (voxel indices), with
    zeros where it extends past the volume. The centre voxel lands at index ``size // 2``."""
    out = np.zeros((size, size, size), dtype=volume.dtype)
    starts = [int(c) - size // 2 for c in centre_zyx]
    src, dst = [], []
    for start, n in zip(starts, volume.shape):
        lo, hi = max(start, 0), min(start + size, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[tuple(dst)] = volume[tuple(src)]
    return out


BAND_LIMITED_SHARE = 0.5
"""Share of the supervised windows band-limited when ``band_limit`` is above 1."""


class SupervisedSampler:
    """Class-balanced windows around labelled particles (method card item 2).

    Each sample draws a class uniformly (background points, when given, count as one
    more class), then one labelled point of that class; the window centre is
    shifted uniformly within ±50 % of W; a ``context_size(W)`` crop is rotated
    about z by a uniform angle and cropped back to W (no fill values); then
    flipped at random along each axis. The
    label map goes through the same shift, rotation (nearest) and flips. With
    ``band_limit`` R > 1, each window is band-limited (``augment.band_limit``, before
    the rotation) with probability ``BAND_LIMITED_SHARE`` to a voxel size uniformly
    between 1 and R times the training one's, so that the net also learns the
    particles as coarser tomograms show them (the label map is unchanged).

    Args:
        volumes: normalised tomograms ``(z, y, x)``.
        label_maps: ``uint8`` sphere labels of the same shapes.
        particles: labelled centres per tomogram, voxels ``(x, y, z)``.
        class_names: the K classes; labels ``i + 1`` belong to ``class_names[i]``.
        window: window edge W in voxels.
        negatives: labelled points that are not particles, per tomogram, voxels
            ``(x, y, z)`` (their windows keep the label map's values: background
            unless a labelled particle reaches into them); ``None`` or empty: none.
        band_limit: largest voxel-size ratio of the band-limited windows (1: none).
    """

    def __init__(self, volumes: Sequence[Voxels], label_maps: Sequence[np.ndarray],
                 particles: Sequence[ParticleTable], class_names: Sequence[str],
                 window: int = 24, negatives: Sequence[ParticleTable] | None = None,
                 band_limit: float = 1.0) -> None:
        self.volumes = list(volumes)
        self.label_maps = list(label_maps)
        self.window = window
        self.context = context_size(window)
        self.band_limit = band_limit
        self.centres: list[list[tuple[int, np.ndarray]]] = []
        for name in class_names:
            entries = [
                (t, np.rint(xyz[::-1]).astype(int))
                for t, table in enumerate(particles)
                for xyz in table.xyz[table.classes == name]
            ]
            if not entries:
                raise ValueError(f"class {name!r} has no labelled particle")
            self.centres.append(entries)
        background = [(t, np.rint(xyz[::-1]).astype(int))
                      for t, table in enumerate(negatives or []) for xyz in table.xyz]
        if background:
            self.centres.append(background)

    def add_particles(self, tomogram: int, xyz: np.ndarray, class_index: int) -> None:
        """Draw windows around more particles of class ``class_index`` in tomogram
        ``tomogram`` too (centres in voxels ``(x, y, z)``, ``(n, 3)``); the label map
        must already hold them."""
        self.centres[class_index].extend(
            (tomogram, np.rint(point[::-1]).astype(int)) for point in np.reshape(xyz, (-1, 3)))

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` windows: ``x`` ``(B, 1, W, W, W)`` float32, ``y`` ``(B, W, W, W)`` int64."""
        half = self.window // 2
        xs, ys = [], []
        for _ in range(batch):
            entries = self.centres[rng.integers(len(self.centres))]
            tomo, centre = entries[rng.integers(len(entries))]
            centre = centre + rng.integers(-half, half + 1, size=3)
            xs.append(crop_padded(self.volumes[tomo], centre, self.context))
            ys.append(crop_padded(self.label_maps[tomo], centre, self.context))
        angles = rng.uniform(0.0, 2.0 * np.pi, size=batch)
        flips = rng.integers(0, 2, size=(batch, 3))
        x = torch.from_numpy(np.stack(xs)[:, None])
        y = torch.from_numpy(np.stack(ys)[:, None].astype(np.float32))
        if self.band_limit > 1.0:  # no draw otherwise: the same windows as without
            limited = rng.random(batch) < BAND_LIMITED_SHARE
            x = band_limit(x, np.where(limited, rng.uniform(1.0, self.band_limit, batch), 1.0))
        x = random_flips(center_crop(rotate_about_z(x, angles), self.window), flips)
        y = random_flips(center_crop(rotate_about_z(y, angles, "nearest"), self.window), flips)
        return x.contiguous(), y[:, 0].round().long().contiguous()


class UnlabelledSampler:
    """Windows of the sliding grid (W, stride W/2) over unlabelled tomograms, in a
    random order that is reshuffled after every pass (method card item 6).

    Args:
        volumes: normalised tomograms ``(z, y, x)``.
        window: window edge W in voxels.
        stride: grid step in voxels (paper: W / 2).
    """

    def __init__(self, volumes: Sequence[Voxels], window: int = 24, stride: int = 12) -> None:
        if not volumes:
            raise ValueError("no unlabelled volume")
        self.volumes = list(volumes)
        self.window = window
        self.context = context_size(window)
        self.centres = [
            (t, np.array([z, y, x]) + window // 2)
            for t, volume in enumerate(self.volumes)
            for z in grid_starts(volume.shape[0], window, stride)
            for y in grid_starts(volume.shape[1], window, stride)
            for x in grid_starts(volume.shape[2], window, stride)
        ]
        self._order: list[int] = []

    def __len__(self) -> int:
        return len(self.centres)

    def sample(self, batch: int, rng: np.random.Generator) -> torch.Tensor:
        """``batch`` context crops ``(B, 1, C, C, C)`` (C = ``context_size(W)``) centred on
        the next windows of the grid."""
        crops = []
        for _ in range(batch):
            if not self._order:
                self._order = list(rng.permutation(len(self.centres)))
            tomo, centre = self.centres[self._order.pop()]
            crops.append(crop_padded(self.volumes[tomo], centre, self.context))
        return torch.from_numpy(np.stack(crops)[:, None])


def grid_starts(size: int, window: int, stride: int) -> list[int]:
    """Window origins along one axis: every ``stride`` voxels, the last one flush with the end."""
    last = max(size - window, 0)
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def simclr_views(crops: torch.Tensor, window: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two augmented views ``(B, 1, W, W, W)`` of the same context crops ``(B, 1, C, C, C)``.

    Each view is rotated about z by its own uniform angle, shifted along z
    within the context margin (a shift in y or x would expose fill values after
    the rotation), cropped to W and flipped at random along each axis.
    """
    size = crops.shape[-1]
    z_slack = crops.shape[-3] - window
    yx_start = (size - window) // 2
    views = []
    for _ in range(2):
        rotated = rotate_about_z(crops, rng.uniform(0.0, 2.0 * np.pi, size=len(crops)))
        z_starts = rng.integers(0, z_slack + 1, size=len(crops))
        cropped = torch.stack([
            rotated[b, :, z : z + window, yx_start : yx_start + window,
                    yx_start : yx_start + window]
            for b, z in enumerate(z_starts)
        ])
        views.append(random_flips(cropped, rng.integers(0, 2, size=(len(crops), 3))).contiguous())
    return views[0], views[1]
