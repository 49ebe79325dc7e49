"""Batch-normalisation statistics of the data picking sees, re-estimated after training.

Training draws its supervised windows around the labelled particles (class-balanced,
``sampling.SupervisedSampler``), and each batch normalisation's running mean and
variance follow those windows with momentum 0.1 while the weights still change.
Picking normalises with the running statistics, over tiles of whole tomograms that
are mostly background: a different distribution. On the accuracy benchmark a
one-class model trained this way found none of its own labels (label recall 0);
the same weights with statistics re-estimated over uniformly placed windows of the
training tomogram found 89 % of them and every 1BXN of the test tomograms
(``docs/method.md``). :func:`picking_statistics` replaces the running statistics by
their cumulative mean over ``STATISTICS_BATCHES`` batches of windows placed
uniformly in the training tomograms, weights unchanged (as AdaBN does for a new
domain); training does so after its last step for every model of several classes
and for a one-class model that otherwise misses its labels
(``training_run.final_decisions``).

Volumes are normalised ``(z, y, x)`` (``normalize.Voxels``); windows ``(B, 1, W, W, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .normalize import Voxels

STATISTICS_BATCHES = 32
"""Batches of uniformly placed windows the running statistics are averaged over after
training."""
PICK_STATISTICS_BATCHES = 8
"""Batches of windows over the tomogram being picked when picking re-estimates the
statistics there (``picking.adapted_model``): 4, 8 and 32 batches gave about the same
F1 on a coarser tomogram (``docs/method.md``), and each costs picking time."""


def uniform_windows(volumes: Sequence[Voxels], window: int, batch: int,
                    rng: np.random.Generator) -> torch.Tensor:
    """``batch`` windows of edge ``window`` at uniform positions: each in a volume drawn
    with probability proportional to its number of window positions."""
    positions = np.array([np.prod([n - window + 1 for n in v.shape]) for v in volumes],
                         dtype=np.float64)
    chosen = rng.choice(len(volumes), size=batch, p=positions / positions.sum())
    windows = []
    for index in chosen:
        volume = volumes[index]
        z, y, x = (int(rng.integers(0, n - window + 1)) for n in volume.shape)
        windows.append(volume[z:z + window, y:y + window, x:x + window])
    return torch.from_numpy(np.stack(windows)[:, None].astype(np.float32, copy=False))


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The batch normalisations of ``model``."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def running_statistics(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    """Copies of the running buffers (mean, variance, batch count) of every batch
    normalisation of ``model``, in :func:`batch_norms` order, for
    :func:`restore_running_statistics`; the weights are not copied."""
    return [{name: buffer.clone() for name, buffer in norm.named_buffers(recurse=False)}
            for norm in batch_norms(model)]


def restore_running_statistics(model: nn.Module,
                               saved: Sequence[dict[str, torch.Tensor]]) -> None:
    """Put back the running buffers :func:`running_statistics` copied from ``model``."""
    for norm, buffers in zip(batch_norms(model), saved, strict=True):
        for name, value in buffers.items():
            getattr(norm, name).copy_(value)


def picking_statistics(model: nn.Module, volumes: Sequence[Voxels], window: int,
                       batch: int, seed: int, device: torch.device,
                       batches: int = STATISTICS_BATCHES) -> int:
    """Re-estimate the running mean and variance of every batch normalisation of
    ``model`` (on ``device``) as the cumulative mean over ``batches`` batches of
    ``batch`` :func:`uniform_windows` of ``volumes``, drawn from ``seed``;
    no gradient, weights unchanged, statistics shared across data-parallel processes
    off meanwhile (only this process runs it). Returns the number of batch
    normalisations (0: nothing changed; the model is left in evaluation mode)."""
    norms = batch_norms(model)
    if not norms:
        return 0
    saved = [(norm.momentum, norm.__dict__.get("sum_across")) for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
        norm.sum_across = None
    rng = np.random.default_rng(seed)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(uniform_windows(volumes, window, batch, rng).to(device))
    for norm, (momentum, shared) in zip(norms, saved):
        norm.momentum = momentum
        if shared is None:
            norm.__dict__.pop("sum_across", None)
        else:
            norm.sum_across = shared
    model.eval()
    return len(norms)
