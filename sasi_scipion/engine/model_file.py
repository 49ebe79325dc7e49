"""The SaSi model file: one ``.pt`` with weights and everything needed to pick.

The file is a plain dictionary of tensors, strings, numbers, lists and dicts,
read with ``torch.load(..., weights_only=True)`` so that a file from elsewhere
cannot run code. A sidecar ``<stem>.json`` holds the same metadata without the
weights, for tools (the Scipion plugin) that must not import torch.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import warnings
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import ENGINE_VERSION
from .atomic import atomic_output
from .calibration import calibration_problem
from .contrast import CONTRASTS
from .errors import SasiModelFormatError
from .model_card import (
    FORMAT,
    FORMAT_VERSION,
    WRITTEN_BY_SASI,
    archive_problem,
    check_model_header,
    sidecar_paths,
)
from .models import build_backbone
from .prototypes import prototypes_problem


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
        score_cutoffs: per component mode (``postprocess.COMPONENT_MODES``), one
            score cut-off per class chosen from the training labels
            (``thresholds.score_cutoffs``); empty for older and pre-trained models.
        contrast: ``"dark"`` or ``"bright"``: protein in the training tomograms, measured
            at the labels (``contrast.label_contrast``); ``None`` for older and
            pre-trained models.
        contrast_skew: mean skewness of the normalised training tomograms
            (``contrast.contrast_skew``), which picking compares; ``None`` when unknown.
        class_calibration: the class decision fitted on the training labels
            (``calibration.ClassCalibration.as_dict``); empty for older, pre-trained and
            one-class models.
        label_recall: per class, the fraction of its labelled particles that the
            model's own picks of its training tomograms find again
            (``thresholds.label_recall``); empty for older and pre-trained models.
        label_prototypes: the encoder prototypes of the training labels
            (``prototypes.LabelPrototypes.as_dict``); empty for older and pre-trained
            models.
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
    score_cutoffs: dict[str, list[float]] = field(default_factory=dict)
    contrast: str | None = None
    contrast_skew: float | None = None
    class_calibration: dict[str, Any] = field(default_factory=dict)
    label_recall: list[float] = field(default_factory=list)
    label_prototypes: dict[str, Any] = field(default_factory=dict)
    engine_version: str = ENGINE_VERSION

    @property
    def num_outputs(self) -> int:
        """Network output channels: background + K classes (2 for a pre-trained model)."""
        return len(self.classes) + 1 if self.classes else 2


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


def load_safely(path: str | os.PathLike, what: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` (tensors and plain values only, so a
    file from elsewhere cannot run code) with one-line errors.

    Args:
        path: the file.
        what: what the file should be, for messages (``"SaSi model file"``).
        fix: what to do instead, ending the messages.

    Raises:
        SasiModelFormatError: a missing, empty, non-PyTorch, truncated or damaged
            file, or one that holds Python objects; PyTorch's own message (which
            suggests the unsafe ``weights_only=False``) is never shown.
    """
    path = Path(path)
    if not path.is_file():
        raise SasiModelFormatError(f"{path}: no such {what}; check the path")
    reason = archive_problem(path)
    if reason is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            reason = "it holds Python objects, which are never loaded"
        except Exception:  # any failure of a damaged archive gets the same verdict
            reason = "the archive is damaged or not a PyTorch file"
    raise SasiModelFormatError(f"{path}: not a {what} ({reason}); {fix}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _payload_problem(payload: dict[str, Any]) -> str | None:
    """What is wrong with the fields of a model file's dictionary (``None``: nothing)."""
    required = [f.name for f in fields(ModelMetadata)
                if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in [*required, "state_dict"] if name not in payload]
    if missing:
        return f"field(s) {', '.join(missing)} missing"
    state, classes, radii = payload["state_dict"], payload["classes"], payload["radii"]
    window, voxel_size = payload["window"], payload["voxel_size"]
    if not (isinstance(state, dict) and state and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        return "its weights are not a table of tensors"
    if not (isinstance(classes, list) and all(isinstance(c, str) and c for c in classes)
            and len(set(classes)) == len(classes)):
        return "its classes are not distinct names"
    if not (isinstance(radii, list) and len(radii) == len(classes)
            and all(_is_number(r) and r > 0 for r in radii)):
        return "its radii are not one positive number per class"
    if not (isinstance(window, int) and not isinstance(window, bool) and window > 0):
        return "its window is not a positive whole number"
    if not (voxel_size is None or (_is_number(voxel_size) and voxel_size > 0)):
        return "its voxel size is not a positive number"
    if not isinstance(payload["arch_params"], dict):
        return "its network settings are not a table"
    if payload["pretrained_only"] is not (not classes):
        return "its classes do not match its pre-trained flag"
    if not isinstance(payload["normalisation"], str):
        return "its normalisation is not a name"
    if not (isinstance(payload["iterations"], int) and payload["iterations"] >= 0):
        return "its iteration count is not a whole number"
    cutoffs = payload.get("score_cutoffs", {})
    if not (isinstance(cutoffs, dict) and all(
            isinstance(mode, str) and isinstance(values, list) and len(values) == len(classes)
            and all(_is_number(v) and 0 <= v <= 1 for v in values)
            for mode, values in cutoffs.items())):
        return "its score cut-offs are not one number in [0, 1] per class"
    if payload.get("contrast") not in (None, *CONTRASTS):
        return f"its contrast is not one of {', '.join(CONTRASTS)}"
    if not (payload.get("contrast_skew") is None or _is_number(payload["contrast_skew"])):
        return "its contrast skewness is not a number"
    recall = payload.get("label_recall", [])
    if not (isinstance(recall, list) and len(recall) in (0, len(classes))
            and all(_is_number(v) and 0 <= v <= 1 for v in recall)):
        return "its label recall is not one number in [0, 1] per class"
    return (calibration_problem(payload.get("class_calibration", {}), len(classes))
            or prototypes_problem(payload.get("label_prototypes", {}), len(classes)))


def read_model_file(path: str | os.PathLike) -> tuple[ModelMetadata, dict[str, torch.Tensor]]:
    """Read metadata and weights without unpickling arbitrary objects.

    Raises:
        SasiModelFormatError: missing, empty, truncated or damaged file, not a SaSi
            model, a newer format, an architecture this version does not know,
            or fields of the wrong kind (an edited or damaged file).
    """
    path = Path(path)
    payload = load_safely(path, "SaSi model file", WRITTEN_BY_SASI)
    check_model_header(payload, path, "SaSi model file")
    problem = _payload_problem(payload)
    if problem:
        raise SasiModelFormatError(
            f"{path}: not a usable SaSi model file ({problem}); the file is damaged or was "
            f"edited: {WRITTEN_BY_SASI}"
        )
    names = set(ModelMetadata.__dataclass_fields__)
    meta = ModelMetadata(**{k: v for k, v in payload.items() if k in names})
    return meta, payload["state_dict"]


def check_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights ``state`` (from file ``source``) that do not fit ``model`` exactly.

    Raises:
        SasiModelFormatError: tensors missing, unexpected or of another shape.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or reshaped:
        example = (missing or unexpected or reshaped)[0]
        raise SasiModelFormatError(
            f"{source}: its weights do not fit its network ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(reshaped)} of another shape, e.g. "
            f"{example!r}); the file is damaged or was edited: {WRITTEN_BY_SASI}"
        )


def build_network(meta: ModelMetadata, state: dict[str, torch.Tensor],
                  source: str) -> nn.Module:
    """The network a model file describes, with its weights (on the CPU).

    Raises:
        SasiModelFormatError: network settings or weights that do not fit.
    """
    try:
        model = build_backbone(meta.arch, meta.num_outputs, **meta.arch_params)
    except (TypeError, ValueError) as error:
        raise SasiModelFormatError(
            f"{source}: its network settings {meta.arch_params} do not build a {meta.arch} "
            f"({error}); {WRITTEN_BY_SASI}"
        ) from error
    check_weights(model, state, source)
    model.load_state_dict(state)
    return model


def load_model(path: str | os.PathLike, device: torch.device) -> tuple[nn.Module, ModelMetadata]:
    """Rebuild the network of a model file on ``device`` in evaluation mode."""
    meta, state = read_model_file(path)
    return build_network(meta, state, str(path)).to(device).eval(), meta


def model_summary(meta: ModelMetadata, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What ``sasi info`` shows of a model (JSON-ready): backbone, classes, radii
    (voxels), window (voxels), voxel size (Å), whether pre-trained only, iterations,
    contrast, how many labelled particles its class calibration was fitted on (``None``:
    no calibration), the fraction of each class's labels it finds again in its training
    tomograms (``label_recall``, ``None`` when unknown), whether it has label prototypes
    (``prototypes``), which batch-norm statistics it keeps (``training_run.final_decisions``;
    ``None`` when unknown or without batch normalisation), the self-training mode and how
    many unlabelled particles it found (``self_labels_found``, ``None``: it did not run),
    parameter count (weights and buffers) and engine version."""
    return {"arch": meta.arch, "classes": meta.classes, "radii": meta.radii,
            "window": meta.window, "voxel_size": meta.voxel_size,
            "pretrained_only": meta.pretrained_only, "iterations": meta.iterations,
            "contrast": meta.contrast,
            "class_calibration_labels": meta.class_calibration.get("labels"),
            "label_recall": (dict(zip(meta.classes, meta.label_recall))
                             if meta.label_recall else None),
            "label_prototypes": bool(meta.label_prototypes),
            "batch_norm_statistics": meta.settings.get("batch_norm_statistics"),
            "self_training": meta.settings.get("self_training"),
            "self_labels_found": meta.settings.get("self_labels_found"),
            "parameters": int(sum(t.numel() for t in state.values())),
            "engine_version": meta.engine_version}


@dataclass
class Model:
    """A SaSi model: a network and what picking needs besides its weights.

    Attributes:
        network: the backbone (``models.BACKBONES``), mapping ``(B, 1, z, y, x)``
            normalised windows to ``(B, K + 1, z, y, x)`` logits (channel 0:
            background, channel i + 1: ``metadata.classes[i]``).
        metadata: classes, radii (voxels), window (voxels), voxel size (Å), training
            settings and loss history, score cut-offs, contrast.
    """

    network: nn.Module
    metadata: ModelMetadata

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        """Read a model file safely (``weights_only``; see :func:`read_model_file`),
        on the CPU in evaluation mode.

        Raises:
            SasiModelFormatError: not a usable SaSi model file.
        """
        network, meta = load_model(path, torch.device("cpu"))
        return cls(network, meta)

    def save(self, path: str | os.PathLike) -> None:
        """Write the model file ``path`` (``.pt``) and its JSON side-car atomically."""
        save_model(path, self.network, self.metadata)

    def info(self) -> dict[str, Any]:
        """A JSON-ready summary (:func:`model_summary`, as ``sasi info`` prints it)."""
        return model_summary(self.metadata, self.network.state_dict())

    @property
    def classes(self) -> list[str]:
        """The particle classes, in output-channel order (empty when pre-trained only)."""
        return list(self.metadata.classes)

    @property
    def radii(self) -> dict[str, float]:
        """Particle radius per class, voxels."""
        return dict(zip(self.metadata.classes, self.metadata.radii))
