"""pyworkflow objects of the SaSi plugin."""

from __future__ import annotations

import json

import pyworkflow.object as pwobj
from pwem.objects import EMObject

from .engine.defaults import LOW_LABEL_RECALL, SELF_TRAINING_FATES


class SaSiModel(EMObject):
    """A trained (or only pre-trained) SaSi network: the ``.pt`` model file and what
    picking needs to know about it. Radii are in voxels of the tomograms it was
    trained on (``voxelSize`` Å per voxel)."""

    def __init__(self, path: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._path = pwobj.String(path)
        self._classNames = pwobj.String("[]")
        self._radii = pwobj.String("[]")
        self._voxelSize = pwobj.Float()
        self._window = pwobj.Integer(24)
        self._arch = pwobj.String("deepfinder")
        self._pretrainedOnly = pwobj.Boolean(False)
        self._sslCollapsedAt = pwobj.Integer()
        self._labelPrototypes = pwobj.Boolean(False)
        self._labelRecall = pwobj.String("[]")
        self._selfTraining = pwobj.String()
        self._selfLabelsFound = pwobj.Integer()

    def getPath(self) -> str:
        """Path of the ``.pt`` model file."""
        return self._path.get()

    def getClassNames(self) -> list[str]:
        return json.loads(self._classNames.get() or "[]")

    def getRadii(self) -> list[float]:
        """Particle radius per class, voxels."""
        return json.loads(self._radii.get() or "[]")

    def getVoxelSize(self) -> float | None:
        """Å per voxel of the training tomograms."""
        return self._voxelSize.get()

    def getArch(self) -> str:
        return self._arch.get()

    def isPretrainedOnly(self) -> bool:
        return bool(self._pretrainedOnly.get())

    def hasLabelPrototypes(self) -> bool:
        """Whether training recorded the labels' encoder prototypes (picking's
        prototype filter)."""
        return bool(self._labelPrototypes.get())

    def getLabelRecall(self) -> dict[str, float]:
        """Per class, the fraction of its labelled particles the model finds again in
        its own training tomograms (empty for models trained before SaSi measured it)."""
        return dict(zip(self.getClassNames(), json.loads(self._labelRecall.get() or "[]")))

    def labelRecallLines(self) -> list[str]:
        """Summary lines: how many of its labels the model finds again, and a warning
        naming the fix when a class is below ``LOW_LABEL_RECALL``."""
        recall = self.getLabelRecall()
        if not recall:
            return []
        lines = ["Labelled particles picked as their class in the training tomograms: " + ", ".join(
            f"{name} {fraction:.0%}" for name, fraction in recall.items())]
        low = [name for name, fraction in recall.items() if fraction < LOW_LABEL_RECALL]
        if low:
            lines.append(f"Warning: the model has not learned {', '.join(low)} (it picks "
                         f"fewer than {LOW_LABEL_RECALL:.0%} of those labels as their class): "
                         "train again with another random seed, more iterations or more "
                         "labels")
        return lines

    def getSslCollapsedAt(self) -> int | None:
        """The iteration at which SimCLR collapsed during training, or ``None``."""
        return self._sslCollapsedAt.get()

    def collapseWarning(self) -> list[str]:
        """A summary line when SimCLR collapsed during this model's training."""
        at = self.getSslCollapsedAt()
        return [f"Warning: SimCLR collapsed at iteration {at} (its loss stayed at "
                "ln(2B - 1)): self-supervision taught this model nothing; see the run's "
                "log"] if at else []

    def selfTrainingLines(self) -> list[str]:
        """A summary line saying how many unlabelled particles self-training found in
        the training tomograms and what training did with them (none when it was off)."""
        found = self._selfLabelsFound.get()
        if found is None:
            return []
        mode = self._selfTraining.get()
        return [f"Self-training: {found} unlabelled particle(s) found half-way, "
                f"{SELF_TRAINING_FATES.get(mode, mode)}"]

    def setFromMetadata(self, card: dict) -> None:
        """Fill from the model file's JSON side-car (``M.json`` beside ``M.pt``)."""
        self._classNames.set(json.dumps(card["classes"]))
        self._radii.set(json.dumps(card["radii"]))
        self._voxelSize.set(card.get("voxel_size"))
        self._window.set(card["window"])
        self._arch.set(card["arch"])
        self._pretrainedOnly.set(card["pretrained_only"])
        settings = card.get("settings", {})
        self._sslCollapsedAt.set(settings.get("ssl_collapsed_at"))
        self._selfTraining.set(settings.get("self_training"))
        self._selfLabelsFound.set(settings.get("self_labels_found"))
        self._labelPrototypes.set(bool(card.get("label_prototypes")))
        self._labelRecall.set(json.dumps(card.get("label_recall", [])))

    def __str__(self) -> str:
        if self.isPretrainedOnly():
            return f"SaSiModel (pre-trained {self.getArch()}, {self.getVoxelSize()} Å/px)"
        return (f"SaSiModel ({self.getArch()}: {', '.join(self.getClassNames())}; "
                f"{self.getVoxelSize()} Å/px)")
