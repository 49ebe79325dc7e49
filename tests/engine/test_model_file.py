"""The model file: round trip, sidecar, safe loading, format checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sasi_scipion.engine.errors import SasiModelFormatError
from sasi_scipion.engine.model_file import (
    FORMAT,
    ModelMetadata,
    load_model,
    read_model_file,
    save_model,
    sidecar_paths,
)
from sasi_scipion.engine.models import build_backbone


def _meta(**changes) -> ModelMetadata:
    values = dict(arch="deepfinder", arch_params={}, classes=["a", "b"], radii=[4.0, 6.5],
                  window=24, voxel_size=10.0, normalisation="robust-zscore-v1",
                  pretrained_only=False, iterations=3, settings={"seed": 1},
                  loss_history=[{"iteration": 1, "phase": "supervised", "loss": 0.5}])
    values.update(changes)
    return ModelMetadata(**values)


def test_round_trip_rebuilds_the_same_network(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_backbone("deepfinder", 3)
    save_model(tmp_path / "m.pt", model, _meta())
    loaded, meta = load_model(tmp_path / "m.pt", torch.device("cpu"))
    x = torch.randn(1, 1, 24, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))
    assert meta.classes == ["a", "b"] and meta.radii == [4.0, 6.5]
    assert meta.loss_history[0]["loss"] == 0.5


def test_sidecar_holds_metadata_without_weights(tmp_path: Path) -> None:
    save_model(tmp_path / "m.pt", build_backbone("deepfinder", 3), _meta())
    card_path, log_path = sidecar_paths(tmp_path / "m.pt")
    assert card_path == tmp_path / "m.json" and log_path == tmp_path / "m.log.jsonl"
    card = json.loads(card_path.read_text())
    assert card["format"] == FORMAT and card["classes"] == ["a", "b"]
    assert card["voxel_size"] == 10.0 and "state_dict" not in card


def test_unknown_architecture_is_refused(tmp_path: Path) -> None:
    save_model(tmp_path / "m.pt", build_backbone("deepfinder", 3), _meta())
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["arch"] = "transformer-xxl"
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(SasiModelFormatError, match="unknown to this version"):
        read_model_file(tmp_path / "m.pt")


def test_newer_format_is_refused(tmp_path: Path) -> None:
    save_model(tmp_path / "m.pt", build_backbone("deepfinder", 3), _meta())
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(SasiModelFormatError, match="upgrade sasi-scipion"):
        read_model_file(tmp_path / "m.pt")
