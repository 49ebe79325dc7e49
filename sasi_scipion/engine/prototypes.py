"""Label prototypes: whether a pick looks like the user's labels to the network's encoder.

A model trained on one class picks every complex of a similar size: on the
accuracy benchmark (medium profile, 10 labels of 1BXN) four in five of its picks
were other complexes. Its encoder tells them apart (cosine similarity to the
labels' mean bottleneck vector separated 1BXN from the 11 other complexes at ROC
AUC 0.993 on true centres). So at the end of training each labelled particle gets a
vector: the encoder embedding (``Backbone.encode``) of a ``PROTOTYPE_CROP``-voxel cube
around it, averaged over the central 2 x 2 x 2 embedding cells, scaled to unit
length. A class's prototype is the unit mean of its labels' vectors; each label's
cosine similarity to the mean of the *other* labels of its class (leave one out)
shows how similar an unseen particle of that class tends to be. Picking measures
the same vector at each pick and drops picks less similar to their class's
prototype than a quantile of those leave-one-out similarities
(``defaults.PROTOTYPE_QUANTILE``; a class with a single label keeps every pick);
``defaults.PROTOTYPE_FILTERS`` says for which models.

Arrays: volumes ``(z, y, x)``, normalised as for the network (``normalize.Voxels``);
centres in voxels
``(x, y, z)`` (``coordinates.ParticleTable``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .coordinates import ParticleTable
from .defaults import PROTOTYPE_QUANTILE, PrototypeFilter
from .normalize import Voxels
from .sampling import crop_padded

PROTOTYPE_CROP = 40
"""Edge (voxels) of the cube the encoder sees around a point; a net that takes one
window edge only (``Backbone.fixed_window``) sees its window instead."""
PROTOTYPE_BATCH = 32
"""Cubes per encoder call."""


def prototype_crop(network: nn.Module) -> int:
    """The cube edge (voxels) ``network`` sees around a point (:data:`PROTOTYPE_CROP`
    rounded up to its size multiple, or its fixed window)."""
    fixed = getattr(network, "fixed_window", None)
    if fixed:
        return int(fixed)
    multiple = int(network.size_multiple)
    return -(-PROTOTYPE_CROP // multiple) * multiple


def encoder_vectors(network: nn.Module, volume: Voxels, centres_xyz: np.ndarray
                    ) -> np.ndarray:
    """``(n, C)`` unit encoder vectors of ``network`` (in evaluation mode) at
    ``centres_xyz`` ``(n, 3)`` (voxels ``(x, y, z)``, rounded) of the normalised
    ``volume`` ``(z, y, x)``; cubes reaching past the volume are padded with zeros."""
    crop = prototype_crop(network)
    stride = int(network.embedding_stride)
    middle = crop // (2 * stride)  # the embedding cell just past the cube's centre
    cells = slice(max(middle - 1, 0), middle + 1)
    device = next(network.parameters()).device
    centres = np.round(np.asarray(centres_xyz, dtype=np.float64).reshape(-1, 3)[:, ::-1])
    vectors = []
    for first in range(0, len(centres), PROTOTYPE_BATCH):
        cubes = np.stack([crop_padded(volume, c.astype(int), crop)
                          for c in centres[first:first + PROTOTYPE_BATCH]])
        with torch.no_grad():
            embedding = network.encode(torch.from_numpy(cubes)[:, None].to(device))
        centre = embedding[:, :, cells, cells, cells].float().mean(dim=(2, 3, 4))
        vectors.append(nn.functional.normalize(centre, dim=1).cpu().numpy())
    channels = int(network.embedding_channels)
    return np.concatenate(vectors) if vectors else np.zeros((0, channels), dtype=np.float32)


@dataclass(frozen=True)
class LabelPrototypes:
    """Per class: the prototype of its labels and their leave-one-out similarities.

    Attributes:
        vectors: ``(K, C)`` unit prototypes, in the model's class order.
        label_similarities: per class, each label's cosine similarity to the mean of
            the other labels of its class (empty for a class with one label).
    """

    vectors: np.ndarray
    label_similarities: tuple[np.ndarray, ...]

    def cutoffs(self, quantile: float) -> np.ndarray:
        """``(K,)`` similarity cut-offs: the ``quantile`` of each class's label
        similarities (``-inf``, keeping every pick, for a class with one label)."""
        return np.array([np.quantile(s, quantile) if len(s) else -np.inf
                         for s in self.label_similarities])

    def similarities(self, vectors: np.ndarray, class_indices: np.ndarray) -> np.ndarray:
        """``(n,)`` cosine similarity of unit ``vectors`` ``(n, C)`` to the prototype of
        each one's 0-based class."""
        return np.einsum("nc,nc->n", vectors, self.vectors[np.asarray(class_indices, int)])

    def keep(self, network: nn.Module, volume: Voxels, picks: ParticleTable,
             class_names: Sequence[str], quantile: float = PROTOTYPE_QUANTILE) -> np.ndarray:
        """``(n,)`` whether each of ``picks`` (in voxels of the normalised ``volume``,
        classes among ``class_names``) is at least as similar to its class's prototype
        as the ``quantile`` cut-off (:meth:`cutoffs`)."""
        if not len(picks):
            return np.zeros(0, dtype=bool)
        indices = np.array([list(class_names).index(c) for c in picks.classes])
        similarity = self.similarities(encoder_vectors(network, volume, picks.xyz), indices)
        return similarity >= self.cutoffs(quantile)[indices]

    def as_dict(self) -> dict[str, list]:
        """JSON-ready form (model files)."""
        return {"vectors": self.vectors.tolist(),
                "label_similarities": [s.tolist() for s in self.label_similarities]}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> LabelPrototypes | None:
        """The prototypes of :meth:`as_dict`; ``None`` for an empty table (models
        written before prototypes, and pre-trained models)."""
        if not values:
            return None
        return cls(np.asarray(values["vectors"], dtype=np.float64),
                   tuple(np.asarray(s, dtype=np.float64) for s in values["label_similarities"]))


def fit_prototypes(network: nn.Module, volumes: Sequence[Voxels],
                   labels: Sequence[ParticleTable], class_names: Sequence[str]
                   ) -> LabelPrototypes:
    """The prototypes of the labelled particles ``labels`` (one table per normalised
    training volume ``(z, y, x)``) under ``network`` (in evaluation mode); every class
    of ``class_names`` has at least one label."""
    network.eval()
    vectors = np.concatenate([encoder_vectors(network, volume, table.xyz)
                              for volume, table in zip(volumes, labels)])
    classes = np.concatenate([np.asarray(table.classes, dtype=object) for table in labels])
    prototypes, similarities = [], []
    for name in class_names:
        own = vectors[classes == name].astype(np.float64)
        total = own.sum(axis=0)
        prototypes.append(total / np.linalg.norm(total))
        others = total[None] - own  # each label's class mean without itself
        norms = np.linalg.norm(others, axis=1)
        similarities.append(np.einsum("nc,nc->n", own, others) / norms
                            if len(own) > 1 else np.zeros(0))
    return LabelPrototypes(np.stack(prototypes), tuple(similarities))


def prototypes_apply(setting: PrototypeFilter, classes: int, has_prototypes: bool) -> bool:
    """Whether picking with filter ``setting`` drops picks unlike the labels, for a model
    of ``classes`` classes that has (or lacks) prototypes (``defaults.PROTOTYPE_FILTERS``)."""
    return has_prototypes and (setting == "on" or (setting == "auto" and classes == 1))


def prototypes_problem(values: object, classes: int) -> str | None:
    """What is wrong with a model file's prototype table for ``classes`` classes
    (``None``: nothing)."""
    if values == {}:
        return None
    if not (isinstance(values, dict) and set(values) == {"vectors", "label_similarities"}):
        return "its label prototypes are not a table of vectors and label similarities"
    vectors = np.asarray(values["vectors"], dtype=object)
    similarities = values["label_similarities"]
    if not (vectors.ndim == 2 and vectors.shape[0] == classes and vectors.shape[1] > 0
            and isinstance(similarities, list) and len(similarities) == classes
            and all(isinstance(s, list) for s in similarities)):
        return f"its label prototypes are not {classes} vectors and {classes} lists " \
               "of label similarities"
    numbers = [*vectors.ravel(), *(v for s in similarities for v in s)]
    if not all(isinstance(v, float | int) and not isinstance(v, bool) and np.isfinite(v)
               for v in numbers):
        return "its label prototypes hold values that are not finite numbers"
    return None
