"""What the engine reads of a backbone (``Backbone``), beyond its being an ``nn.Module``.

Every backbone (``models.BACKBONES``) is an ``nn.Module`` mapping ``(B, 1, z, y, x)``
normalised windows to ``(B, K + 1, z, y, x)`` logits. Inference (``inference``),
training (``training``) and the model file (``model_file``) read the attributes
and call the methods below; ``RegionDecoder`` adds the two methods tiled inference
uses when a net has them (``hasattr``), and two more members are read where present
(``getattr``):

- ``without_batch_norm() -> nn.Module``: the net with its batch normalisation folded
  into the convolutions (the DeepFinder U-Net); inference picks with that net.
- ``autocast_free: bool``: the net (once folded) is only convolutions, ReLU,
  pooling, nearest up-sampling and concatenation, so reduced-precision inference
  may convert it to bf16 or fp16 instead of autocasting (default ``False``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn

Region = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
"""``((z0, z1), (y0, y1), (x0, x1))``: a box in input voxels, half-open."""


class Backbone(Protocol):
    """A backbone as the engine uses it (an ``nn.Module``; see the module docstring).

    Attributes:
        num_outputs: K + 1 logit channels (background + K classes).
        size_multiple: input sizes and tile offsets must be multiples of it (the
            pooling grid; a ViT's window).
        receptive_margin: voxels of context on each side that can influence an output
            voxel; tiled inference gives every tile at least this margin.
        fixed_window: ``None`` for a fully convolutional net; else the one input edge
            the net accepts (a ViT), and inference runs it on windows of that edge.
        embedding_channels: channels of ``encode``'s embedding.
        embedding_stride: spatial down-sampling of ``encode``'s embedding.
    """

    num_outputs: int
    size_multiple: int
    receptive_margin: int
    fixed_window: int | None
    embedding_channels: int
    embedding_stride: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K + 1, z, y, x)`` of ``x`` ``(B, 1, z, y, x)``."""
        ...

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The SimCLR embedding ``(B, embedding_channels, z/s, y/s, x/s)`` (s the stride)."""
        ...

    # the nn.Module methods inference calls
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...

    def eval(self) -> Any: ...


class RegionDecoder(Backbone, Protocol):
    """A backbone that decodes one region of its input at a time (the DeepFinder
    U-Net): tiled inference encodes a whole tile once and decodes only its core."""

    def features(self, x: torch.Tensor) -> Any:
        """The encoder outputs of ``x`` that ``decode_region`` reads."""
        ...

    def decode_region(self, features: Any, region: Region) -> torch.Tensor:
        """Logits ``(B, K + 1, *region extents)``: ``self(x)`` cropped to ``region``."""
        ...
