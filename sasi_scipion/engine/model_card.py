"""The model file's JSON side-car, read without torch.

``sasi train`` and ``sasi pretrain`` write ``<stem>.json`` (the model file's
metadata without its weights) and ``<stem>.log.jsonl`` (the loss log) beside
the model ``<stem>.pt``. The Scipion plugin, its protocols and viewers read
them here, so that loading the plugin never imports torch.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from .defaults import BACKBONE_NAMES
from .errors import SasiModelFormatError

FORMAT = "sasi-model"
FORMAT_VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"
"""First bytes of the zip archive that ``torch.save`` writes."""
WRITTEN_BY_SASI = "give a .pt written by 'sasi train' or 'sasi pretrain'"


def sidecar_paths(model_path: str | os.PathLike) -> tuple[Path, Path]:
    """``(<stem>.json, <stem>.log.jsonl)`` beside a model path ``<stem>.pt``."""
    path = Path(model_path)
    return path.with_suffix(".json"), path.with_suffix(".log.jsonl")


def archive_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a whole PyTorch archive (empty, another format, truncated or
    damaged); ``None`` when it is one. The file must exist."""
    with open(path, "rb") as handle:
        magic = handle.read(len(ZIP_MAGIC))
    if not magic:
        return "the file is empty"
    if magic != ZIP_MAGIC:
        return "not a PyTorch archive"
    if not zipfile.is_zipfile(path):
        return "the archive is truncated or damaged"
    return None


def read_model_card(model_path: str | os.PathLike) -> dict[str, Any]:
    """The side-car of model ``model_path`` (a ``.pt``): the metadata of
    ``model_file.ModelMetadata`` as a dict (``classes``, ``radii`` in voxels,
    ``window`` in voxels, ``voxel_size`` in Å per voxel or ``None``, ``arch``, ...),
    checked without torch: the model file is a whole archive and the side-car a SaSi
    card of a format and backbone this version knows.

    Raises:
        SasiModelFormatError: a missing model file or side-car, a damaged one, or a
            card of another format, a newer version or an unknown backbone.
    """
    path = Path(model_path)
    if not path.is_file():
        raise SasiModelFormatError(f"{path}: no such SaSi model file; check the path")
    problem = archive_problem(path)
    if problem:
        raise SasiModelFormatError(f"{path}: not a SaSi model file ({problem}); "
                                   f"{WRITTEN_BY_SASI}")
    card_path = sidecar_paths(path)[0]
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SasiModelFormatError(
            f"{card_path}: the side-car that 'sasi train' writes beside the model is missing "
            f"or damaged ({error}); keep the .json with the .pt, or {WRITTEN_BY_SASI}"
        ) from error
    check_model_header(card, card_path, "SaSi model side-car")
    return card


def check_model_header(record: Any, source: str | os.PathLike, what: str) -> None:
    """Refuse a model file's or side-car's ``record`` (from ``source``, a ``what``)
    that is not a SaSi model of a format version and backbone this version knows.

    Raises:
        SasiModelFormatError: naming the fix.
    """
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise SasiModelFormatError(f"{source}: not a {what}; {WRITTEN_BY_SASI}")
    version = record.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise SasiModelFormatError(
            f"{source}: model format {version} is newer than this version reads "
            f"({FORMAT_VERSION}); upgrade sasi-scipion")
    if record.get("arch") not in BACKBONE_NAMES:
        raise SasiModelFormatError(
            f"{source}: architecture {record.get('arch')!r} is unknown to this version "
            f"(known: {', '.join(sorted(BACKBONE_NAMES))}); upgrade sasi-scipion")
