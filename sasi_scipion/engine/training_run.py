"""One training or pre-training run, set up from its inputs.

The only place that turns tomograms, labels and settings into a trainer: the
library's ``train`` and ``pretrain`` (``api``) run what it builds in memory, the
``sasi train`` and ``sasi pretrain`` commands (``train_command``) run it with
checkpoints, a log and data-parallel processes. Messages name the inputs as
``errors.input_name`` says; progress notes go to the ``sasi_scipion.engine`` logger.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from .batch_statistics import (
    batch_norms,
    picking_statistics,
    restore_running_statistics,
    running_statistics,
)
from .checkpoint import run_fingerprint
from .contrast import contrast_skew, label_contrast
from .coordinates import ParticleTable
from .defaults import (
    BATCH_NORM,
    DEFAULT_BACKBONE,
    DEFAULT_COMPONENTS,
    LOW_LABEL_RECALL,
    WINDOW,
    BackboneName,
)
from .distributed import ALONE, Replica
from .errors import SasiInputError, SasiWarning, input_name
from .model_file import Model, ModelMetadata, build_network, read_model_file
from .models import BACKBONES, build_backbone
from .mrc_io import TomogramInput
from .normalize import NORMALISATION, Voxels
from .picking import LabelDecisions, label_decisions, label_picks
from .prototypes import fit_prototypes
from .self_training import PSEUDO_LABEL_QUANTILE, unlabelled_picks
from .thresholds import label_recall_warning, score_cutoffs
from .training import (
    SaSiTrainer,
    SelfLabeller,
    TrainingSettings,
    collapse_iteration,
    self_labels_found,
)
from .training_data import LabelsInput, TrainingData, load_training_data, load_unlabelled

LOG = logging.getLogger(__package__)
"""Progress notes of set-up and saving (the ``sasi`` command prints them on stderr)."""
PretrainedInput = Union[str, os.PathLike, Model]
"""A pre-trained model: a model file or a :class:`~.model_file.Model`."""


@dataclass
class TrainingRun:
    """A trainer ready to optimise, and what its model file will record.

    Attributes:
        trainer: the optimisation of the network (``training.SaSiTrainer``).
        label: ``"train"`` or ``"pretrain"``, for progress lines.
        description: what determines the run besides the settings, the input arrays
            and the initial weights (JSON-ready; ``checkpoint.run_fingerprint``).
        arrays: the input arrays (volumes, label maps, centres).
        metadata: the model file's metadata from the loss history.
    """

    trainer: SaSiTrainer
    label: str
    description: dict[str, Any]
    arrays: list[Voxels]
    metadata: Callable[[list[dict]], ModelMetadata]

    def fingerprint(self) -> str:
        """The digest that ties a checkpoint to this run (``checkpoint.run_fingerprint``)."""
        return run_fingerprint({**self.description, "settings": vars(self.trainer.settings)},
                               self.arrays, self.trainer.model.state_dict())

    def model(self, history: list[dict]) -> Model:
        """The trained model (on the CPU, in evaluation mode) after the iterations of
        ``history``."""
        meta = self.metadata(history)
        return Model(self.trainer.trained_model().cpu().eval(), meta)


def check_network(arch: str, batch_norm: bool | None) -> None:
    """Refuse an unknown backbone, or a batch normalisation choice for one without.

    Raises:
        SasiInputError: naming ``arch`` or ``batch_norm``.
    """
    if arch not in BACKBONES:
        raise SasiInputError(f"{input_name('arch')} {arch}: unknown network; choose one of "
                             f"{', '.join(sorted(BACKBONES))}")
    if batch_norm is not None and arch != DEFAULT_BACKBONE:
        raise SasiInputError(f"{input_name('batch_norm')}: only the {DEFAULT_BACKBONE} network "
                             "has a batch normalisation to leave out, not "
                             f"{input_name('arch')} {arch}")


def network_params(arch: str, batch_norm: bool | None,
                   pretrained: ModelMetadata | None = None) -> dict[str, bool]:
    """Constructor arguments of a new network ``arch`` (``ModelMetadata.arch_params``):
    a pre-trained model's own, so that its weights fit; else, in a DeepFinder U-Net,
    batch normalisation as ``batch_norm`` says (``None``: ``defaults.BATCH_NORM``).

    Raises:
        SasiInputError: ``batch_norm`` that the pre-trained model's weights do not have.
    """
    if pretrained is not None:
        has = bool(pretrained.arch_params.get("batch_norm"))
        if batch_norm is not None and batch_norm != has:
            flag = input_name("batch_norm")
            raise SasiInputError(
                f"{flag}: the {input_name('pretrained')} model has batch normalisation and "
                f"its weights need it; leave the option out or pre-train with {flag}" if has
                else f"{flag}: the {input_name('pretrained')} model has no batch "
                     "normalisation; leave the option out or pre-train with it")
        return dict(pretrained.arch_params)
    if arch != DEFAULT_BACKBONE:
        return {}
    return {"batch_norm": BATCH_NORM if batch_norm is None else batch_norm}


def _load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> int:
    """Copy the tensors of ``state`` whose name and shape match; return how many."""
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    own.update(matching)
    model.load_state_dict(own)
    return len(matching)


def _read_pretrained(pretrained: PretrainedInput) -> tuple[ModelMetadata, dict, str]:
    """A pre-trained model's metadata and weights, checked (its weights must fit its
    own network), and how messages name it."""
    if isinstance(pretrained, Model):
        meta, state, name = (pretrained.metadata, pretrained.network.state_dict(),
                             input_name("pretrained"))
    else:
        name = str(pretrained)
        meta, state = read_model_file(pretrained)
        build_network(meta, state, name)
    if meta.window != WINDOW:
        raise SasiInputError(f"{name}: window {meta.window}, expected {WINDOW}; give a model "
                             "trained by this version of sasi")
    return meta, state, name


def _check_run(settings: TrainingSettings, arch: str, batch_norm: bool | None) -> None:
    """Refuse settings out of range and a network choice that does not exist."""
    problem = settings.problem()
    if problem:
        raise SasiInputError(problem)
    check_network(arch, batch_norm)


def prepare_train(
    tomograms: Sequence[TomogramInput], labels: Sequence[LabelsInput],
    radii: Mapping[str, float], settings: TrainingSettings, device: torch.device, *,
    unlabelled: Sequence[TomogramInput] = (), pretrained: PretrainedInput | None = None,
    arch: BackboneName = DEFAULT_BACKBONE, batch_norm: bool | None = None,
    voxel_size: float | None = None, replica: Replica = ALONE,
    trainer_class: type[SaSiTrainer] = SaSiTrainer,
) -> TrainingRun:
    """Check and load everything a few-shot training run needs (``api.train`` states
    the arguments); with ``pretrained``, its backbone and weights replace ``arch``.
    ``trainer_class`` optimises the network (a subclass of ``SaSiTrainer`` lets a
    benchmark change one thing, e.g. the autocast precision).

    Raises:
        SasiInputError: naming the input and the fix.
    """
    _check_run(settings, arch, batch_norm)
    pre_meta, state, pre_name = (_read_pretrained(pretrained) if pretrained is not None
                                 else (None, None, None))
    # every tomogram is resampled to the pre-trained model's voxel size, else the first's
    data = load_training_data(tomograms, labels, radii, WINDOW, voxel_size,
                              pre_meta.voxel_size if pre_meta is not None else None)
    extra, extra_size = (load_unlabelled(unlabelled, WINDOW, "unlabelled", voxel_size,
                                         data.voxel_size)
                         if unlabelled else ([], None))
    voxel = data.voxel_size or extra_size
    if pre_meta is not None:
        arch = pre_meta.arch
    settings = settings.for_device(device)
    arch_params = network_params(arch, batch_norm, pre_meta)
    torch.manual_seed(settings.seed)  # the initial weights too depend on the seed only
    model = build_backbone(arch, len(data.class_names) + 1, **arch_params)
    if state is not None:
        LOG.info("train: started from %s (%d tensors)", pre_name, _load_matching(model, state))
    trainer = trainer_class(model, data, data.volumes + extra, settings, device, replica)
    contrast = label_contrast(data.volumes, data.label_maps)
    skew = float(np.mean([contrast_skew(volume) for volume in data.volumes]))

    def metadata(history: list[dict]) -> ModelMetadata:
        trained = trainer.trained_model()
        LOG.info("train: fitting the class calibration and choosing score cut-offs from "
                 "the labelled particles, and their label prototypes")
        (calibration, cutoffs, recall), statistics = final_decisions(trained, data, settings,
                                                                      device)
        warning = label_recall_warning(data.class_names, recall)
        if warning:
            warnings.warn(warning, SasiWarning, stacklevel=2)
        prototypes = fit_prototypes(trained, data.volumes, data.particles, data.class_names)
        return ModelMetadata(
            arch=arch, arch_params=arch_params, classes=data.class_names, radii=data.radii,
            window=WINDOW, voxel_size=voxel, normalisation=NORMALISATION,
            pretrained_only=False, iterations=settings.iterations,
            settings={**vars(settings), "pretrained": pre_name,
                      "labels": sum(len(t) for t in data.particles),
                      "background_points": sum(len(t) for t in data.negatives or []),
                      "processes": replica.world_size,
                      "ssl_collapsed_at": collapse_iteration(history),
                      "self_labels_found": self_labels_found(history),
                      "batch_norm_statistics": statistics},
            loss_history=history, score_cutoffs=cutoffs, label_recall=recall,
            contrast=contrast,
            contrast_skew=skew,
            class_calibration=calibration.as_dict() if calibration is not None else {},
            label_prototypes=prototypes.as_dict())

    description = {"command": "train", "arch": arch, "arch_params": arch_params,
                   "classes": data.class_names, "radii": data.radii, "voxel_size": voxel}
    arrays = [*data.volumes, *data.label_maps, *(t.xyz for t in data.particles), *extra]
    return TrainingRun(trainer, "train", description, arrays, metadata)


def self_labeller(data: TrainingData, settings: TrainingSettings,
                  device: torch.device) -> SelfLabeller:
    """What finds the unlabelled particles of ``data``'s tomograms for self-training:
    a copy of the model being trained, with its batch-normalisation statistics and
    class calibration chosen as at the end of training (:func:`final_decisions`),
    picks near the labels (``picking.label_picks``); the picks that score at least
    their class's cut-off from the labels (``ignore``; ``labels``: at least the
    ``PSEUDO_LABEL_QUANTILE`` of its labels' scores) and lie on no labelled particle
    or background point are the finds (``self_training.unlabelled_picks``)."""
    def find(model: nn.Module) -> list[ParticleTable]:
        snapshot = copy.deepcopy(model)
        decisions, _ = final_decisions(snapshot, data, settings, device)
        picks = label_picks(snapshot, data.volumes, data.particles, data.class_names,
                            data.radii, device, decisions.calibration)
        cutoffs = (score_cutoffs(picks, data.particles, data.class_names, data.radii,
                                 factor=1.0, quantile=PSEUDO_LABEL_QUANTILE)
                   if settings.self_training == "labels"
                   else decisions.score_cutoffs[DEFAULT_COMPONENTS])
        negatives = data.negatives or [None] * len(picks)
        found = [unlabelled_picks(p, labels, background, data.class_names, data.radii,
                                  cutoffs)
                 for p, labels, background in zip(picks, data.particles, negatives)]
        LOG.info("train: self-training (%s) with %d unlabelled particles found near the "
                 "labels", settings.self_training, sum(len(t) for t in found))
        return found
    return find


def final_decisions(model: nn.Module, data: TrainingData, settings: TrainingSettings,
                    device: torch.device) -> tuple[LabelDecisions, str | None]:
    """The label decisions (``picking.label_decisions``) of a trained ``model``, after
    choosing its batch-normalisation statistics (``batch_statistics``); returns them
    and which statistics it keeps: ``"tomogram"`` (re-estimated over the whole
    training tomograms), ``"training"`` (the training steps' own) or ``None`` (no
    batch normalisation).

    Measured (``docs/method.md``): with several classes the re-estimated statistics
    raised pooled F1 on every model, so they are always taken; with one class they
    lowered precision, so a one-class model keeps its own unless it then finds under
    ``LOW_LABEL_RECALL`` of its labels, and the re-estimated ones find more.
    """
    def decide() -> LabelDecisions:
        return label_decisions(model, data.volumes, data.particles, data.class_names,
                               data.radii, device, data.negatives)

    def reestimate() -> None:
        picking_statistics(model, data.volumes, WINDOW, settings.batch_size, settings.seed,
                           device)

    if not batch_norms(model):
        return decide(), None
    if len(data.class_names) > 1:
        reestimate()
        return decide(), "tomogram"
    own = running_statistics(model)
    first = decide()
    if min(first.label_recall) >= LOW_LABEL_RECALL:
        return first, "training"
    reestimate()
    second = decide()
    if min(second.label_recall) > min(first.label_recall):
        LOG.info("train: the model found %.0f%% of its labels with the training steps' "
                 "batch-norm statistics and %.0f%% with the whole tomograms': keeping those",
                 100 * min(first.label_recall), 100 * min(second.label_recall))
        return second, "tomogram"
    restore_running_statistics(model, own)
    return first, "training"


def prepare_pretrain(
    tomograms: Sequence[TomogramInput], settings: TrainingSettings, device: torch.device, *,
    arch: BackboneName = DEFAULT_BACKBONE, batch_norm: bool | None = None,
    voxel_size: float | None = None, replica: Replica = ALONE,
) -> TrainingRun:
    """Check and load a SimCLR pre-training run (``api.pretrain`` states the
    arguments): every step is a SimCLR step, without infill or consistency.

    Raises:
        SasiInputError: naming the input and the fix.
    """
    _check_run(settings, arch, batch_norm)
    volumes, voxel = load_unlabelled(tomograms, WINDOW, voxel_size=voxel_size)
    settings = replace(settings.for_device(device), infill=False, consistency=False,
                       ssl="iss", ssl_fraction=1.0)
    arch_params = network_params(arch, batch_norm)
    torch.manual_seed(settings.seed)
    trainer = SaSiTrainer(build_backbone(arch, 2, **arch_params), None, volumes, settings,
                          device, replica)

    def metadata(history: list[dict]) -> ModelMetadata:
        return ModelMetadata(
            arch=arch, arch_params=arch_params, classes=[], radii=[], window=WINDOW,
            voxel_size=voxel, normalisation=NORMALISATION, pretrained_only=True,
            iterations=settings.iterations,
            settings={**vars(settings), "processes": replica.world_size,
                      "ssl_collapsed_at": collapse_iteration(history)},
            loss_history=history)

    description = {"command": "pretrain", "arch": arch, "arch_params": arch_params,
                   "voxel_size": voxel}
    return TrainingRun(trainer, "pretrain", description, list(volumes), metadata)
