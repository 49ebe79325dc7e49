"""MRC input and output that keeps the voxel size and checks what it reads.

Every check that the header and the file size allow is made by
:func:`inspect_mrc` without reading the data, so that the Scipion protocols'
``_validate`` can refuse a bad tomogram before a run starts; :func:`map_volume` and
:func:`read_volume` make the same checks, then check the values.

:func:`map_volume` maps the data into memory (read-only, in the file's dtype: a
tomogram is read only where it is used, and never held whole); :func:`read_volume`
converts that map to ``float32`` in one pass, so a tomogram stored in 8 or 16 bits
costs only its ``float32`` copy, not that and a raw copy too. Mode 0 (bytes) is
signed in the MRC2014 standard, but IMOD writes unsigned bytes unless its header
flags say signed: a file with IMOD's stamp and without that flag is read as
``uint8`` (0..255), as IMOD and 3dmod read it.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import mrcfile
import numpy as np

from .atomic import atomic_output
from .defaults import VOXEL_SIZE_TOLERANCE
from .errors import SasiInputError, SasiWarning, input_name

REAL_MODES = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}
"""MRC data modes the engine reads (int8, int16, float32, uint16, float16): bytes per voxel."""
COMPLEX_MODES = (3, 4)
HEADER_BYTES = 1024
IMAGE_STACK_SPACE_GROUP = 0
STANDARD_AXES = (1, 2, 3)
"""``mapc, mapr, maps``: columns are x, rows y, sections z (the only order read)."""
IMOD_STAMP = 1146047817
"""IMOD's header stamp (``imodStamp``, bytes 152-155; ``imodFlags`` at 156-159, bit 0:
bytes are signed)."""
IMOD_STAMP_OFFSET = 152 - 112
"""Offset of ``imodStamp`` inside ``extra2`` (header bytes 112-195)."""
IMOD_SIGNED_BYTES = 1


@dataclass
class Volume:
    """A 3D map.

    Attributes:
        data: axis order ``(z, y, x)``; ``float32`` in memory (:func:`read_volume`), or
            a read-only memory map in the file's dtype (:func:`map_volume`).
        voxel_size: Ångström per voxel, or ``None`` when the header holds none.
    """

    data: np.ndarray
    voxel_size: float | None


@dataclass
class MrcInfo:
    """What the header of a checked MRC volume says.

    Attributes:
        shape: ``(z, y, x)`` voxels.
        voxel_size: Å per (cubic) voxel, or ``None`` when the header holds none.
    """

    shape: tuple[int, int, int]
    voxel_size: float | None


def _voxel_size(path: Path, sizes: tuple[float, float, float]) -> float | None:
    """The cubic voxel size of header sizes ``(x, y, z)``, ``None`` when all are 0."""
    if not all(math.isfinite(s) for s in sizes) or min(sizes) < 0:
        raise SasiInputError(
            f"{path}: the header's voxel size (x, y, z = {sizes[0]:g}, {sizes[1]:g}, "
            f"{sizes[2]:g} Å) is not a positive number; fix the header's pixel size"
        )
    if max(sizes) == 0:
        return None
    if max(sizes) - min(sizes) > VOXEL_SIZE_TOLERANCE * max(sizes):
        raise SasiInputError(
            f"{path}: voxels are not cubic (x, y, z = {sizes[0]:g}, {sizes[1]:g}, "
            f"{sizes[2]:g} Å); resample the tomogram to cubic voxels first"
        )
    return sizes[0]


def inspect_mrc(path: str | os.PathLike) -> MrcInfo:
    """Check an MRC volume from its header and size alone.

    Raises:
        SasiInputError: missing file, not an MRC file, a truncated file, a complex
            or unknown data mode, not a 3D volume (an image, an image stack with
            space group 0, a volume stack), or a voxel size that is negative,
            not finite or not cubic. The message names the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise SasiInputError(f"{path}: no such file; check the path")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
                header = mrc.header
                mode, ispg = int(header.mode), int(header.ispg)
                nx, ny, nz, mz = (int(header[k]) for k in ("nx", "ny", "nz", "mz"))
                extended = int(header.nsymbt)
                axes = (int(header.mapc), int(header.mapr), int(header.maps))
                sizes = tuple(float(mrc.voxel_size[k]) for k in ("x", "y", "z"))
        except (OSError, ValueError) as error:
            raise SasiInputError(
                f"{path}: not a readable MRC file ({error}); give an MRC map (.mrc/.rec)"
            ) from error
    not_mrc = any("Map ID string not found" in str(w.message) for w in caught)
    if mode in COMPLEX_MODES:
        raise SasiInputError(
            f"{path}: complex MRC data (mode {mode}), e.g. a Fourier transform; give the "
            "real-space tomogram"
        )
    if not_mrc and (mode not in REAL_MODES or min(nx, ny, nz) < 1):
        raise SasiInputError(
            f"{path}: not a readable MRC file (no MRC map identifier, no known data mode); "
            "give an MRC map (.mrc/.rec)"
        )
    if mode not in REAL_MODES:
        raise SasiInputError(
            f"{path}: MRC data mode {mode} is not supported (modes "
            f"{', '.join(str(m) for m in REAL_MODES)} are); convert the map to mode 2 (float32)"
        )
    expected = HEADER_BYTES + extended + nx * ny * nz * REAL_MODES[mode]
    if path.stat().st_size < expected:
        raise SasiInputError(
            f"{path}: truncated ({path.stat().st_size} bytes, its header promises "
            f"{expected}); copy or export the file again"
        )
    if min(nx, ny, nz) < 2:
        raise SasiInputError(
            f"{path}: expected a 3D volume, got shape {(nz, ny, nx)}; give a tomogram, "
            "not an image or a stack"
        )
    if ispg == IMAGE_STACK_SPACE_GROUP and mz == 1:
        raise SasiInputError(
            f"{path}: an image stack (space group 0, {nz} separate images), expected a 3D "
            "volume; give a tomogram, or set its space group to 1 if it is one"
        )
    if ispg > 400:
        raise SasiInputError(
            f"{path}: a stack of volumes (space group {ispg}); give one tomogram per file"
        )
    if sorted(axes) == list(STANDARD_AXES) and axes != STANDARD_AXES:
        raise SasiInputError(
            f"{path}: its axes are stored in the order (mapc, mapr, maps) = {axes}, not "
            "x, y, z; rewrite it in the standard order (e.g. 'clip flipyz' or "
            "'trimvol -yz' for a y/z swap)")
    return MrcInfo(shape=(nz, ny, nx), voxel_size=_voxel_size(path, sizes))


def _unsigned_bytes(header: np.recarray) -> bool:
    """Whether mode-0 data of ``header`` are unsigned: IMOD's stamp without its
    signed-bytes flag."""
    words = np.frombuffer(header.extra2.tobytes(), dtype=header.nx.dtype,
                          count=2, offset=IMOD_STAMP_OFFSET)
    return int(words[0]) == IMOD_STAMP and not int(words[1]) & IMOD_SIGNED_BYTES


def map_volume(path: str | os.PathLike, check_values: bool = True) -> Volume:
    """A 3D MRC map after :func:`inspect_mrc`, its data ``(z, y, x)`` a read-only
    memory map of the file in the file's own dtype (``uint8`` for IMOD's unsigned
    bytes): nothing is held in memory but what is read from it. With
    ``check_values``, its values are checked in z slabs (:func:`_check_values`).

    Raises:
        SasiInputError: as :func:`inspect_mrc`; NaN/inf values or a constant map
            (when ``check_values``).
    """
    path = Path(path)
    info = inspect_mrc(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with mrcfile.mmap(path, mode="r", permissive=True) as mrc:
                if mrc.data is None:
                    raise ValueError("no data block")
                dtype = (np.dtype(np.uint8) if int(mrc.header.mode) == 0
                         and _unsigned_bytes(mrc.header) else mrc.data.dtype)
                offset = int(mrc.data.offset)
            data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=info.shape)
        except (OSError, ValueError) as error:
            raise SasiInputError(
                f"{path}: not a readable MRC file ({error}); give an MRC map (.mrc/.rec)"
            ) from error
    if check_values:
        _check_values(path, data)
    return Volume(data=data, voxel_size=info.voxel_size)


def read_volume(path: str | os.PathLike, check_values: bool = True) -> Volume:
    """Read a 3D MRC map into memory as ``float32`` ``(z, y, x)`` (:func:`map_volume`,
    converted in one pass: a tomogram stored in 8 or 16 bits costs only its ``float32``
    copy).

    Raises:
        SasiInputError: as :func:`map_volume`.
    """
    mapped = map_volume(path, check_values=False)
    data = np.array(mapped.data, dtype=np.float32)
    if check_values:
        _check_values(path, data)
    return Volume(data=data, voxel_size=mapped.voxel_size)


def check_tomogram_array(volume: Volume, name: str, values: bool = False) -> MrcInfo:
    """Check a tomogram given as an array, as :func:`inspect_mrc` (and with ``values``,
    :func:`read_volume`) checks a file; ``name`` names it in messages.

    Raises:
        SasiInputError: not a 3D numeric array, a voxel size that is not a positive
            number, or (with ``values``) NaN/inf values or a constant volume.
    """
    data = volume.data
    if not (isinstance(data, np.ndarray) and data.ndim == 3
            and np.issubdtype(data.dtype, np.number) and not np.iscomplexobj(data)):
        raise SasiInputError(
            f"{name}: expected a real 3D (z, y, x) numpy array, got "
            f"{getattr(data, 'shape', type(data).__name__)}; give one tomogram per item")
    if volume.voxel_size is not None and not (
            math.isfinite(volume.voxel_size) and volume.voxel_size > 0):
        raise SasiInputError(f"{name}: voxel size {volume.voxel_size:g} is not a positive "
                             "number of Å per voxel; give the voxel size, or None")
    if values:
        _check_values(name, data)
    shape = tuple(int(n) for n in data.shape)
    return MrcInfo(shape=shape, voxel_size=volume.voxel_size)  # type: ignore[arg-type]


READ_SLAB_VOXELS = 16_000_000
"""Voxels that a pass over a whole volume (value checks, contrast, run fingerprints)
reads at a time: its memory stays bounded however large the tomogram."""


def z_slabs(shape: Sequence[int]) -> Iterator[slice]:
    """Slices of the first axis of an array of ``shape`` that cover it in order, each of
    about ``READ_SLAB_VOXELS`` voxels (at least one plane)."""
    planes = max(1, READ_SLAB_VOXELS // max(1, math.prod(shape[1:])))
    for start in range(0, shape[0], planes):
        yield slice(start, start + planes)


def _check_values(source: str | os.PathLike, data: np.ndarray) -> None:
    """Refuse NaN or infinite values, or a volume whose voxels all have one value;
    ``data`` ``(z, y, x)`` (in memory or memory-mapped) is read in :func:`z_slabs`."""
    low, high = math.inf, -math.inf
    for planes in z_slabs(data.shape):
        slab = data[planes]
        if not np.isfinite(slab).all():
            raise SasiInputError(
                f"{source}: holds NaN or infinite values; fix or re-export the tomogram"
            )
        low, high = min(low, float(slab.min())), max(high, float(slab.max()))
    if high == low:
        raise SasiInputError(
            f"{source}: all voxels have the same value; this tomogram is empty"
        )


def size_problem(path: str | os.PathLike, shape: tuple[int, int, int],
                 window: int) -> str | None:
    """Why a tomogram of ``shape`` ``(z, y, x)`` is too small for ``window``-voxel
    windows; ``None`` when it is not."""
    if min(shape) < window:
        return (f"{path}: {shape[0]} x {shape[1]} x {shape[2]} voxels (z, y, x) is smaller "
                f"than the {window}-voxel window; give a tomogram of at least {window} "
                "voxels along each axis")
    return None


def unknown_voxel_size_warning(path: str | os.PathLike) -> str:
    """The warning for a tomogram whose header holds no voxel size."""
    return (f"{path}: the header holds no voxel size, so voxel sizes cannot be compared; "
            "set the pixel size in its header")


def header_disagrees_warning(path: str | os.PathLike, header: float | None, given: float,
                             source: str | None = None) -> str | None:
    """The warning for a tomogram whose header voxel size ``header`` (Å, ``None``:
    none) differs from the voxel size ``given`` by ``source`` (Å; default: the
    ``voxel_size`` input); ``None`` when they agree within :data:`VOXEL_SIZE_TOLERANCE`
    or the header holds none."""
    if header is None or abs(header - given) <= VOXEL_SIZE_TOLERANCE * given:
        return None
    source = source or input_name("voxel_size")
    return (f"{path}: the header says {header:.3f} Å per voxel, {source} says "
            f"{given:.3f} Å; using {given:.3f} Å (fix the header to silence this)")


def tomogram_voxel_size(path: str | os.PathLike, header: float | None,
                        given: float | None) -> float | None:
    """The voxel size (Å) to work with for a tomogram: ``given`` (``voxel_size``, the
    Scipion protocols' sampling rate) when there is one, with a :class:`SasiWarning`
    when the header disagrees; else the header's (``None``: unknown)."""
    if given is None:
        return header
    warning = header_disagrees_warning(path, header, given)
    if warning:
        warnings.warn(warning, SasiWarning, stacklevel=2)
    return given


def read_tomogram(path: str | os.PathLike, window: int,
                  voxel_size: float | None = None) -> Volume:
    """:func:`map_volume` for a tomogram the network works on (memory-mapped, in the
    file's dtype): refuses one smaller than ``window``. Its voxel size is
    ``voxel_size`` (Å) when given, with a :class:`SasiWarning` when the header
    disagrees (:func:`tomogram_voxel_size`); else the header's, with a warning when
    the header holds none."""
    volume = map_volume(path)
    problem = size_problem(path, volume.data.shape, window)
    if problem:
        raise SasiInputError(problem)
    if voxel_size is None and volume.voxel_size is None:
        warnings.warn(unknown_voxel_size_warning(path), SasiWarning, stacklevel=2)
    volume.voxel_size = tomogram_voxel_size(path, volume.voxel_size, voxel_size)
    return volume


TomogramInput = Union[str, os.PathLike, Volume]
"""A tomogram: an MRC file, or a ``(z, y, x)`` volume with its voxel size (Å)."""


def tomogram_source(tomogram: TomogramInput, name: str) -> str:
    """How messages name a tomogram: its path, or the input ``name`` of an array."""
    return name if isinstance(tomogram, Volume) else str(tomogram)


def load_tomogram(tomogram: TomogramInput, name: str, window: int,
                  voxel_size: float | None = None) -> Volume:
    """A tomogram the network works on, ``(z, y, x)``: a file memory-mapped by
    :func:`read_tomogram` (in the file's dtype), or an array checked as a file would
    be, as ``float32`` (``name`` names it in messages). Its voxel size is
    ``voxel_size`` (Å) when given, else its own."""
    if not isinstance(tomogram, Volume):
        return read_tomogram(tomogram, window, voxel_size)
    info = check_tomogram_array(tomogram, name, values=True)
    problem = size_problem(name, info.shape, window)
    if problem:
        raise SasiInputError(problem)
    return Volume(np.asarray(tomogram.data, dtype=np.float32),
                  tomogram_voxel_size(name, tomogram.voxel_size, voxel_size))


def write_volume(
    path: str | os.PathLike, data: np.ndarray, voxel_size: float | None
) -> None:
    """Write ``data`` (``(z, y, x)``) to ``path`` atomically, with its voxel size in Å."""
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    with atomic_output(path) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(data))
        if voxel_size:
            mrc.voxel_size = float(voxel_size)
