"""Scaled-down 3D vision transformer in the spirit of VideoMAE (about 3.2 M
parameters for K = 3).

A ``24^3`` window is cut into cubic patches of 4 voxels (a stride-4 convolution),
giving ``6^3 = 216`` tokens of ``dim`` = 192 channels plus a learnable position
embedding for exactly that grid. Six pre-norm transformer blocks (3 heads, MLP
ratio 4, GELU) follow and a final LayerNorm. The encoder embedding (SimCLR) is
the token grid ``(B, dim, 6, 6, 6)``. The light decoder maps every token by one
linear layer to ``4^3 * 32`` values, rearranges them to a full-resolution
``(B, 32, 24, 24, 24)`` map, concatenates the input and mixes with two 3x3x3
convolutions (ReLU) before a 1x1x1 convolution to the K + 1 class logits.

The net only works on one input size (``fixed_window`` = 24); inference runs it
on whole windows (``segment_sliding``), so ``receptive_margin`` is 0.

Tensors are ``(batch, channels, z, y, x)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Block(nn.Module):
    """Pre-norm transformer block: attention and MLP, each on a residual path."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim * mlp_ratio), nn.GELU(), nn.Linear(dim * mlp_ratio, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT3D(nn.Module):
    """A 3D ViT on ``24^3`` windows with a voxel-wise decoder.

    Attributes:
        num_outputs: K + 1 output channels.
        fixed_window: the only input edge the net accepts (24).
        size_multiple: 24 (inputs are whole windows).
        receptive_margin: 0 (inference runs whole windows, not tiles).
        embedding_channels: token channels (``dim``).
        embedding_stride: patch size (4).
    """

    fixed_window: int | None = 24
    size_multiple = 24
    receptive_margin = 0
    patch = 4

    def __init__(self, num_outputs: int, dim: int = 192, depth: int = 6, heads: int = 3,
                 mlp_ratio: int = 4, decoder_channels: int = 32) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.num_outputs = num_outputs
        self.embedding_channels = dim
        self.embedding_stride = self.patch
        self.grid = self.fixed_window // self.patch
        self.decoder_channels = decoder_channels
        self.patch_embed = nn.Conv3d(1, dim, self.patch, stride=self.patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid**3, dim))
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.to_voxels = nn.Linear(dim, self.patch**3 * decoder_channels)
        self.mix = nn.Sequential(
            nn.Conv3d(decoder_channels + 1, decoder_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv3d(decoder_channels, decoder_channels, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Conv3d(decoder_channels, num_outputs, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 5 or tuple(x.shape[-3:]) != (self.fixed_window,) * 3:
            raise ValueError(
                f"the vit backbone takes (B, 1, {self.fixed_window}, {self.fixed_window}, "
                f"{self.fixed_window}) windows, not {tuple(x.shape)}"
            )

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised tokens ``(B, grid^3, dim)`` of a checked input."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Token grid ``(B, dim, 6, 6, 6)`` of input ``(B, 1, 24, 24, 24)``."""
        self._check(x)
        tokens = self._tokens(x)
        g = self.grid
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, g, g, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K+1, 24, 24, 24)`` of input ``(B, 1, 24, 24, 24)``."""
        self._check(x)
        b, g, p, c = x.shape[0], self.grid, self.patch, self.decoder_channels
        voxels = self.to_voxels(self._tokens(x)).view(b, g, g, g, c, p, p, p)
        voxels = voxels.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, c, g * p, g * p, g * p)
        return self.head(self.mix(torch.cat([voxels, x.to(voxels.dtype)], dim=1)))
