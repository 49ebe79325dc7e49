"""Backbone registry: every backbone maps ``(B, 1, z, y, x)`` to class logits
``(B, K+1, z, y, x)`` and exposes ``encode`` (embedding for SimCLR),
``size_multiple``, ``receptive_margin`` and the other members that ``Backbone``
(``backbone.py``) describes."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..defaults import BACKBONE_NAMES
from ..errors import SasiInputError
from .backbone import Backbone, RegionDecoder
from .deepfinder import DeepFinderUNet
from .resunet import ResUNet
from .vit import ViT3D

BACKBONES: dict[str, Callable[..., nn.Module]] = dict(
    zip(BACKBONE_NAMES, (DeepFinderUNet, ResUNet, ViT3D)))
"""Backbone classes by name (``defaults.BACKBONE_NAMES``, in that order)."""

__all__ = ["BACKBONES", "Backbone", "DeepFinderUNet", "RegionDecoder", "ResUNet", "ViT3D",
           "build_backbone"]


def build_backbone(arch: str, num_outputs: int, **arch_params: int) -> nn.Module:
    """Instantiate backbone ``arch`` with ``num_outputs`` = K + 1 logit channels."""
    if arch not in BACKBONES:
        raise SasiInputError(
            f"unknown architecture {arch!r}; choose one of: {', '.join(sorted(BACKBONES))}"
        )
    return BACKBONES[arch](num_outputs=num_outputs, **arch_params)
