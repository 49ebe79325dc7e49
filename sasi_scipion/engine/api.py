"""The engine as a Python library: train, pre-train, pick and evaluate in memory.

Conventions: volumes are ``(z, y, x)`` arrays; particle centres are voxels, 0-based,
columns ``(x, y, z)`` (the value at a centre is ``volume[z, y, x]``); radii are in
voxels, voxel sizes in Å per voxel. A tomogram is an MRC file path or a
:class:`Volume` (an array with its voxel size; a bare array is a volume of unknown
voxel size); labels are a coordinate file (any format ``sasi`` reads) or a
:class:`ParticleTable`.

Bad input raises :class:`SasiInputError` naming the parameter (``tomograms[1]``,
``radii['disc']``, ``settings.iterations``) and the fix; warnings about inputs that
are still used are :class:`SasiWarning` s; progress notes go to the
``sasi_scipion.engine`` logger. The ``sasi`` command is a layer over these calls.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from . import API_NAMES
from .atomic import remove_partials
from .coordinates import ParticleTable
from .defaults import (
    DEFAULT_BACKBONE,
    DEFAULT_COMPONENTS,
    PROTOTYPE_QUANTILE,
    UNSCORED_CLASSES,
    BackboneName,
    ComponentMode,
    PickMode,
    Precision,
    PrototypeFilter,
    StatisticsAdaptation,
)
from .device import resolve_device, use_all_cpus
from .errors import SasiInputError, SasiWarning, input_name  # noqa: F401 (exported)
from .formats import read_coordinates
from .limits import finite_problem
from .metrics import Evaluation, evaluate_distance, evaluate_occupancy
from .model_file import Model
from .mrc_io import TomogramInput, Volume, read_volume
from .picking import pick_tomogram
from .progress import Callback
from .resumable import ResumableRun
from .training import TrainingSettings
from .training_data import ANY_CLASS, LabelsInput, class_radii  # noqa: F401 (exported)
from .training_run import PretrainedInput, TrainingRun, prepare_pretrain, prepare_train

__all__ = list(API_NAMES)

LOG = logging.getLogger(__package__)

Progress = Callable[[int, int], None]
"""Called with ``(steps done, total steps)`` after each training iteration or tile."""
Tomogram = TomogramInput | np.ndarray


def _tomograms(tomograms: Sequence[Tomogram] | Tomogram, parameter: str) -> list[TomogramInput]:
    """``tomograms`` as a list of paths and :class:`Volume` s (bare arrays wrapped)."""
    if isinstance(tomograms, (str, os.PathLike, Volume, np.ndarray)):
        raise SasiInputError(f"{parameter}: one tomogram where a sequence is expected; give "
                             "a list of paths or Volumes, e.g. [path]")
    return [_tomogram(t) for t in tomograms]


def _tomogram(tomogram: Tomogram) -> TomogramInput:
    return Volume(tomogram, None) if isinstance(tomogram, np.ndarray) else tomogram


def _run(run: TrainingRun, progress: Progress | None,
         checkpoint: str | os.PathLike | None) -> Model:
    """Train ``run`` to the end, through a checkpoint file when one is given."""
    report = Callback(run.trainer.settings.iterations, progress)
    if checkpoint is None:
        history = run.trainer.run(report)
    else:
        path = Path(checkpoint)
        remove_partials(path)
        resumable = ResumableRun(run, path)
        if resumable.history:
            LOG.info("%s: resuming from %s after iteration %d", run.label, path,
                     len(resumable.history))
        history = resumable.train(report)
    use_all_cpus(run.trainer.device)  # the score cut-offs segment the labelled tomograms
    model = run.model(history)
    if checkpoint is not None:
        resumable.finish()
    return model


def train(
    tomograms: Sequence[Tomogram],
    labels: Sequence[LabelsInput],
    radii: Mapping[str, float],
    *,
    settings: TrainingSettings | None = None,
    unlabelled: Sequence[Tomogram] = (),
    pretrained: PretrainedInput | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    arch: BackboneName = DEFAULT_BACKBONE,
    batch_norm: bool | None = None,
    voxel_size: float | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> Model:
    """Few-shot training: learn the classes of a few labelled particles.

    Args:
        tomograms: the labelled tomograms (paths or :class:`Volume` s, ``(z, y, x)``).
        labels: one coordinate file or :class:`ParticleTable` per tomogram, in the
            same order: centres in voxels ``(x, y, z)``, a class per particle; points
            of class ``background`` are not particles (gold, membrane, junk).
        radii: particle radius per class, voxels; the key :data:`ANY_CLASS` (``"*"``)
            gives every class without its own.
        settings: hyper-parameters; ``None``: those of ``sasi train`` (SimCLR on the
            ISS schedule, none with ``pretrained``; the device's default budget).
        unlabelled: more tomograms for self-supervision and consistency guidance.
        pretrained: a model from :func:`pretrain` (or its file) to start from; its
            backbone and batch normalisation replace ``arch`` and ``batch_norm``.
        device: ``auto`` (first visible GPU, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        progress: called with ``(iterations done, iterations)`` after each iteration.
        arch: backbone, one of ``defaults.BACKBONE_NAMES``.
        batch_norm: batch normalisation after every convolution of the DeepFinder
            U-Net; ``None``: ``defaults.BATCH_NORM`` (on).
        voxel_size: Å per voxel of every tomogram, replacing their own.
        checkpoint: a file to keep a checkpoint of the training in (every 3 minutes;
            ``sasi train --resume`` keeps ``M.pt.ckpt``). When it holds the checkpoint
            of an interrupted call with the same inputs and settings, training goes on
            from there, to the model an uninterrupted call gives; it is removed when
            training ends. ``None``: no checkpoint.

    Returns:
        The trained :class:`Model` (on the CPU), with per-class score cut-offs chosen
        from how it scores the labelled particles.

    Raises:
        SasiInputError: naming the parameter and the fix, before any training (or a
            ``checkpoint`` of another run).
    """
    if settings is None:
        settings = TrainingSettings(ssl="none" if pretrained is not None else "iss")
    run = prepare_train(_tomograms(tomograms, "tomograms"), list(labels), radii, settings,
                        resolve_device(device), unlabelled=_tomograms(unlabelled, "unlabelled"),
                        pretrained=pretrained, arch=arch, batch_norm=batch_norm,
                        voxel_size=voxel_size)
    return _run(run, progress, checkpoint)


def pretrain(
    tomograms: Sequence[Tomogram],
    *,
    settings: TrainingSettings | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    arch: BackboneName = DEFAULT_BACKBONE,
    batch_norm: bool | None = None,
    voxel_size: float | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> Model:
    """Self-supervised (SimCLR) pre-training on unlabelled tomograms: every iteration
    is a SimCLR step; ``settings`` infill, consistency and SSL schedule are ignored.
    The arguments are :func:`train`'s.

    Returns:
        A pre-trained :class:`Model` (no classes) to give :func:`train` as ``pretrained``.

    Raises:
        SasiInputError: naming the parameter and the fix, before any training (or a
            ``checkpoint`` of another run).
    """
    run = prepare_pretrain(_tomograms(tomograms, "tomograms"), settings or TrainingSettings(),
                           resolve_device(device), arch=arch, batch_norm=batch_norm,
                           voxel_size=voxel_size)
    return _run(run, progress, checkpoint)


def load_model(path: str | os.PathLike) -> Model:
    """Read a model file (``.pt``) safely: tensors and plain values only, so that a file
    from elsewhere cannot run code.

    Raises:
        SasiModelFormatError: a missing, damaged or edited file, or not a SaSi model.
    """
    return Model.load(path)


def pick(
    model: Model | str | os.PathLike,
    tomogram: Tomogram,
    *,
    mode: PickMode = "tiled",
    min_score: float | None = None,
    device: str = "auto",
    progress: Progress | None = None,
    components: ComponentMode = DEFAULT_COMPONENTS,
    precision: Precision = "auto",
    invert_contrast: bool = False,
    voxel_size: float | None = None,
    class_calibration: bool = True,
    prototype_filter: PrototypeFilter = "auto",
    prototype_quantile: float = PROTOTYPE_QUANTILE,
    adapt_statistics: StatisticsAdaptation = "auto",
) -> ParticleTable:
    """Find the particles of a tomogram.

    Args:
        model: a trained :class:`Model` or its file.
        tomogram: a path or :class:`Volume` ``(z, y, x)``; at another voxel size than
            the model's it is picked resampled to the model's, the centres given in
            its own voxels.
        mode: ``tiled`` (fast) or ``sliding`` (the paper's windows of W, stride W/2).
        min_score: drop particles scoring lower (0 to 1); ``None``: the model's
            per-class cut-offs chosen from its training labels.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        progress: called with ``(tiles done, tiles)``.
        components: ``peaks`` (one particle per peak of the smoothed probability),
            ``argmax`` (the paper's per-class components) or ``foreground``.
        precision: ``auto`` (fp16 on a GPU, bf16 on a CPU that has it), ``fp32``,
            ``bf16`` or ``fp16``.
        invert_contrast: negate the tomogram first (protein bright here, dark in the
            training data, or the reverse).
        voxel_size: Å per voxel of the tomogram, replacing its own.
        class_calibration: decide classes with the model's class calibration, fitted
            on its training labels (``False``: the network's argmax class, the paper's).
        prototype_filter: drop picks unlike the training labels in the encoder's
            features (``prototypes``): ``auto`` for a one-class model, ``on`` for any
            model that has label prototypes, ``off`` never.
        prototype_quantile: with the filter, drop picks less similar to their class's
            label prototype than this quantile (0 to 1) of the labels' own
            leave-one-out similarities (higher: fewer, surer picks).
        adapt_statistics: pick with the network's batch-normalisation statistics
            re-estimated over this tomogram: ``auto`` for a tomogram coarser than the
            model (a model whose statistics come from its training tomograms: several
            classes), ``on`` always, ``off`` never.

    Returns:
        Centres in voxels ``(x, y, z)``, class and score per particle.

    Raises:
        SasiInputError: naming the parameter and the fix.
    """
    if min_score is not None:
        problem = finite_problem(input_name("min_score"), min_score, 0.0, 1.0)
        if problem:
            raise SasiInputError(problem)
    use_all_cpus(resolve_device(device))
    name = input_name("model")
    if not isinstance(model, Model):
        model, name = Model.load(model), str(model)
    return pick_tomogram(model, _tomogram(tomogram), resolve_device(device), mode, min_score,
                         precision, progress, components, invert_contrast, voxel_size, name,
                         class_calibration, prototype_filter, prototype_quantile,
                         adapt_statistics)


def _table(table: ParticleTable | str | os.PathLike, allow_empty: bool) -> ParticleTable:
    return (table if isinstance(table, ParticleTable)
            else read_coordinates(table, allow_empty=allow_empty))


def evaluate(
    picks: ParticleTable | str | os.PathLike,
    truth: ParticleTable | str | os.PathLike,
    *,
    occupancy: np.ndarray | str | os.PathLike | None = None,
    radii: Mapping[str, float] | None = None,
    unscored: Sequence[str] = UNSCORED_CLASSES,
) -> Evaluation:
    """Precision, recall and F1 of ``picks`` against ``truth`` (tables or coordinate
    files, voxels ``(x, y, z)``), pooled over classes and per class.

    Args:
        picks: the picked particles (with scores: the best duplicate is the hit).
        truth: the true particles.
        occupancy: the SHREC 2021 rule: an integer ``(z, y, x)`` map (or its MRC file)
            holding at each voxel the 1-based row of its particle in ``truth``, 0 for
            solvent; a pick is a hit inside its particle's occupancy.
        radii: the distance rule (without ``occupancy``): hit radius per class,
            voxels (the key :data:`ANY_CLASS` gives every class without its own).
        unscored: classes the SHREC rule does not score.

    Raises:
        SasiInputError: neither ``occupancy`` nor ``radii``, or a bad map or radius.
    """
    picks, truth = _table(picks, allow_empty=True), _table(truth, allow_empty=False)
    if occupancy is not None:
        if not isinstance(occupancy, np.ndarray):
            occupancy = read_volume(occupancy, check_values=False).data
        return evaluate_occupancy(picks, truth, occupancy.astype(np.int64), unscored=unscored)
    if radii is None:
        raise SasiInputError(f"{input_name('radii')}: the distance rule needs radii; give "
                             f"{input_name('radii')} (voxels per class), or "
                             f"{input_name('occupancy')} for the SHREC rule")
    names = sorted(set(truth.class_names))
    return evaluate_distance(picks, truth, dict(zip(names, class_radii(names, radii, 10**6))))
