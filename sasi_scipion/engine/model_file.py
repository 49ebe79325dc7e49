"""The SaSi model file: one ``.pt`` with weights and everything needed to pick.

The file is a plain dictionary of tensors, strings, numbers, lists and dicts,
read with ``torch.load(..., weights_only=True)`` so that a file from elsewhere
cannot run code. A sidecar ``<stem>.json`` holds the same metadata without the
weights, for tools (the Scipion plugin) that must not import torch.
"""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import ENGINE_VERSION
from .atomic import atomic_output
from .errors import SasiModelFormatError
from .models import BACKBONES, build_backbone

FORMAT = "sasi-model"
FORMAT_VERSION = 1


@dataclass
class ModelMetadata:
    """What a model file records besides the weights.

    Attributes:
        arch: backbone name in ``models.BACKBONES``.
        arch_params: keyword arguments of the backbone constructor.
        classes: the K class names, in output-channel order (channel i + 1).
        radii: particle radius per class, voxels.
        window: training window edge W, voxels.
        voxel_size: Å per voxel of the training tomograms, or ``None``.
        normalisation: name of the input normalisation (``normalize.NORMALISATION``).
        pretrained_only: True for a self-supervised pre-trained model (no classes).
        iterations: optimisation steps run.
        settings: training settings (JSON-ready).
        loss_history: logged iterations (``iteration``, ``phase``, ``loss``, terms).
    """

    arch: str
    arch_params: dict[str, int]
    classes: list[str]
    radii: list[float]
    window: int
    voxel_size: float | None
    normalisation: str
    pretrained_only: bool
    iterations: int
    settings: dict[str, Any] = field(default_factory=dict)
    loss_history: list[dict[str, Any]] = field(default_factory=list)
    engine_version: str = ENGINE_VERSION

    @property
    def num_outputs(self) -> int:
        """Network output channels: background + K classes (2 for a pre-trained model)."""
        return len(self.classes) + 1 if self.classes else 2


def sidecar_paths(model_path: str | os.PathLike) -> tuple[Path, Path]:
    """``(<stem>.json, <stem>.log.jsonl)`` beside a model path ``<stem>.pt``."""
    path = Path(model_path)
    return path.with_suffix(".json"), path.with_suffix(".log.jsonl")


def save_model(path: str | os.PathLike, model: nn.Module, meta: ModelMetadata) -> None:
    """Write the model file and its JSON sidecar atomically."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(meta),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    card = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(meta)}
    card.pop("loss_history")
    with atomic_output(sidecar_paths(path)[0]) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")


def read_model_file(path: str | os.PathLike) -> tuple[ModelMetadata, dict[str, torch.Tensor]]:
    """Read metadata and weights without unpickling arbitrary objects.

    Raises:
        SasiModelFormatError: missing file, not a SaSi model, a newer format, or
            an architecture this version does not know.
    """
    path = Path(path)
    if not path.is_file():
        raise SasiModelFormatError(f"{path}: no such model file; check the path")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        raise SasiModelFormatError(
            f"{path}: not a SaSi model file (cannot be read safely: "
            f"{str(error).splitlines()[0]}); give a .pt written by 'sasi train' or 'sasi pretrain'"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise SasiModelFormatError(
            f"{path}: not a SaSi model file; give a .pt written by 'sasi train' or 'sasi pretrain'"
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise SasiModelFormatError(
            f"{path}: model format {payload['format_version']} is newer than this engine reads "
            f"({FORMAT_VERSION}); upgrade sasi-scipion"
        )
    if payload.get("arch") not in BACKBONES:
        raise SasiModelFormatError(
            f"{path}: architecture {payload.get('arch')!r} is unknown to this version "
            f"(known: {', '.join(sorted(BACKBONES))}); upgrade sasi-scipion"
        )
    names = set(ModelMetadata.__dataclass_fields__)
    meta = ModelMetadata(**{k: v for k, v in payload.items() if k in names})
    return meta, payload["state_dict"]


def load_model(path: str | os.PathLike, device: torch.device) -> tuple[nn.Module, ModelMetadata]:
    """Rebuild the network of a model file on ``device`` in evaluation mode."""
    meta, state = read_model_file(path)
    model = build_backbone(meta.arch, meta.num_outputs, **meta.arch_params)
    model.load_state_dict(state)
    return model.to(device).eval(), meta
