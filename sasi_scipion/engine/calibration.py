"""Class calibration: the class decision refitted on the user's own labels.

A briefly trained network finds particles before it tells their classes apart:
its head's class outputs lean to a few classes (on the accuracy benchmark,
medium profile, N = 10, 150 steps, the argmax at the true centres of the test
tomograms was right for 28 % of the particles, and 4 of the 12 classes took
95 % of them). The log-probabilities still hold the information: after training,
the model segments its training tomogram(s), and at each labelled particle the
``K + 1`` log-probabilities averaged over a sphere of ``FEATURE_RADIUS_FRACTION``
of its class radius form a feature vector of known class. A multinomial logistic
regression on these (standardised, L2-penalised) maps a voxel's log-probabilities
to ``K`` calibrated class logits; picking uses them for the class of each particle
voxel, while whether a voxel is particle at all (its background probability) is
the network's. The map is linear in the log-probabilities, so the calibrated logit
of a sphere's mean is the mean of its voxels' calibrated logits.

Background points the user labelled (class ``background``: gold, membranes, junk)
add a reject class to the fit, with the smallest class's feature sphere: a voxel's
particle probability is then the network's times one minus its calibrated reject
probability, so what looks like the labelled distractors stops being particle.

Arrays: log-probabilities ``(K + 1, z, y, x)`` (channel 0 background), centres
in voxels ``(z, y, x)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

FEATURE_RADIUS_FRACTION = 0.5
"""Each labelled particle's features are the mean log-probabilities within this
fraction of its class radius (at least ``MIN_FEATURE_RADIUS`` voxels)."""
MIN_FEATURE_RADIUS = 1.5
"""Smallest feature sphere radius, voxels."""
CALIBRATION_L2 = 1e-3
"""L2 penalty on the (standardised) weights, per labelled particle's mean loss."""


@dataclass(frozen=True)
class ClassCalibration:
    """Calibrated class logits ``weight @ log p + bias`` of a voxel's log-probabilities.

    Attributes:
        weight: ``(K, K + 1)``, or ``(K + 1, K + 1)`` with a reject class (last row).
        bias: ``(K,)`` or ``(K + 1,)``.
        labels: labelled particles and background points it was fitted on.
    """

    weight: np.ndarray
    bias: np.ndarray
    labels: int

    @property
    def rejects(self) -> bool:
        """Whether the last logit is the reject (background point) class."""
        return self.weight.shape[0] == self.weight.shape[1]

    def class_logits(self, log_probs: torch.Tensor) -> torch.Tensor:
        """``(K, ...)`` calibrated class logits of log-probabilities ``(K + 1, ...)``
        (``(K + 1, ...)`` with the reject class last)."""
        weight = torch.as_tensor(self.weight, dtype=log_probs.dtype, device=log_probs.device)
        bias = torch.as_tensor(self.bias, dtype=log_probs.dtype, device=log_probs.device)
        flat = log_probs.reshape(log_probs.shape[0], -1)
        return (weight @ flat + bias[:, None]).reshape(len(bias), *log_probs.shape[1:])

    def as_dict(self) -> dict[str, list | int]:
        """JSON-ready form (model files)."""
        return {"weight": self.weight.tolist(), "bias": self.bias.tolist(),
                "labels": self.labels}

    @classmethod
    def from_dict(cls, values: dict) -> ClassCalibration | None:
        """The calibration of :meth:`as_dict`; ``None`` for an empty table (models
        written before calibration, pre-trained and one-class models)."""
        if not values:
            return None
        return cls(np.asarray(values["weight"], dtype=np.float64),
                   np.asarray(values["bias"], dtype=np.float64), int(values["labels"]))


def calibration_problem(values: object, classes: int) -> str | None:
    """What is wrong with a model file's calibration table for ``classes`` classes
    (``None``: nothing)."""
    if values == {}:
        return None
    if not (isinstance(values, dict) and set(values) == {"weight", "bias", "labels"}):
        return "its class calibration is not a table of weight, bias and labels"
    weight, bias = np.asarray(values["weight"], dtype=object), np.asarray(values["bias"],
                                                                            dtype=object)
    if not any(weight.shape == (rows, classes + 1) and bias.shape == (rows,)
               for rows in (classes, classes + 1)):
        return f"its class calibration is not {classes} (or {classes + 1}) x " \
               f"{classes + 1} weights and as many biases"
    numbers = [*weight.ravel(), *bias]
    if not all(isinstance(v, float | int) and not isinstance(v, bool) and np.isfinite(v)
               for v in numbers):
        return "its class calibration holds values that are not finite numbers"
    return None


class SphereMeans:
    """Mean log-probabilities within a sphere around each of ``n`` centres, summed
    over the regions of a segmentation as they are computed (tile by tile).

    Args:
        centres: ``(n, 3)`` voxels ``(z, y, x)``.
        radii: ``(n,)`` sphere radii, voxels.
        channels: ``K + 1``.
    """

    def __init__(self, centres: np.ndarray, radii: np.ndarray, channels: int) -> None:
        self.centres = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
        self.radii = np.asarray(radii, dtype=np.float64)
        self.sums = np.zeros((len(self.centres), channels))
        self.counts = np.zeros(len(self.centres))

    def add(self, log_probs: torch.Tensor, region: tuple[slice, slice, slice]) -> None:
        """Add ``log_probs`` ``(K + 1, dz, dy, dx)``, the values of the voxels of
        ``region`` (absolute, half-open slices) of the volume."""
        starts = np.array([s.start for s in region])
        stops = np.array([s.stop for s in region])
        for i, (centre, radius) in enumerate(zip(self.centres, self.radii)):
            low = np.maximum(np.ceil(centre - radius).astype(int), starts)
            high = np.minimum(np.floor(centre + radius).astype(int) + 1, stops)
            if (high <= low).any():
                continue
            grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(low, high)], indexing="ij")
            inside = sum((g - c) ** 2 for g, c in zip(grids, centre)) <= radius**2
            if not inside.any():
                continue
            block = log_probs[:, low[0] - starts[0]:high[0] - starts[0],
                              low[1] - starts[1]:high[1] - starts[1],
                              low[2] - starts[2]:high[2] - starts[2]]
            self.sums[i] += block[:, torch.from_numpy(inside)].double().sum(dim=1).numpy()
            self.counts[i] += int(inside.sum())

    def means(self) -> np.ndarray:
        """``(n, K + 1)`` mean log-probabilities (NaN for a centre no voxel reached)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums / self.counts[:, None]


def feature_radii(class_indices: np.ndarray, radii: Sequence[float]) -> np.ndarray:
    """Feature sphere radius (voxels) of particles of the given 0-based classes."""
    return np.maximum(FEATURE_RADIUS_FRACTION * np.asarray(radii, dtype=np.float64)[
        class_indices], MIN_FEATURE_RADIUS)


def fit_calibration(features: np.ndarray, classes: np.ndarray, num_classes: int,
                    l2: float = CALIBRATION_L2) -> ClassCalibration | None:
    """Multinomial logistic regression from features ``(n, K + 1)`` to 0-based
    ``classes`` ``(n,)`` (``K``: a background point, the reject class), with the
    standardisation folded into the weights.

    ``None`` when there is nothing to decide (one class and no background point) or
    a class has no usable labelled particle (every class needs one for the map to
    name it)."""
    usable = np.isfinite(features).all(axis=1)
    features, classes = features[usable], np.asarray(classes)[usable]
    outputs = num_classes + int((classes == num_classes).any())
    if outputs < 2 or len(np.unique(classes[classes < num_classes])) < num_classes:
        return None
    mean = features.mean(axis=0)
    scale = features.std(axis=0) + 1e-6
    x = torch.from_numpy((features - mean) / scale)
    y = torch.from_numpy(classes.astype(np.int64))
    weight = torch.zeros(outputs, features.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(outputs, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=500, tolerance_grad=1e-9,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = functional.cross_entropy(x @ weight.T + bias, y) + l2 * (weight**2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    folded = weight.detach().numpy() / scale
    return ClassCalibration(folded, bias.detach().numpy() - folded @ mean, int(len(classes)))
