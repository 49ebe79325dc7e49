"""Pick one tomogram with a trained model: segment, then extract particles."""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .batch_statistics import PICK_STATISTICS_BATCHES, picking_statistics
from .calibration import (
    CALIBRATION_L2,
    ClassCalibration,
    SphereMeans,
    feature_radii,
    fit_calibration,
)
from .contrast import contrast_skew, inversion_warning
from .coordinates import ParticleTable
from .defaults import (
    BATCH_SIZE,
    PICK_MODES,
    PROTOTYPE_FILTERS,
    PROTOTYPE_QUANTILE,
    STATISTICS_ADAPTATIONS,
    VOXEL_SIZE_TOLERANCE,
    ComponentMode,
    PickMode,
    Precision,
    PrototypeFilter,
    StatisticsAdaptation,
)
from .errors import SasiInputError, SasiWarning, input_name
from .inference import (
    Box,
    ProgressCallback,
    segment_sliding,
    segment_tiled,
    segmented_boxes,
)
from .model_file import Model, ModelMetadata
from .mrc_io import TomogramInput, Volume, load_tomogram, tomogram_source
from .normalize import NORMALISATION, NormalisedVolume, Voxels, normalise
from .postprocess import (
    DEFAULT_COMPONENTS,
    Segmentation,
    extract_particles,
    extract_particles_in,
    peak_search_reach,
    suppression_reach,
)
from .prototypes import LabelPrototypes, prototypes_apply
from .resample import resample, resampled_shape, resampling_problem, to_source_voxels
from .thresholds import label_recall, score_cutoffs

LOG = logging.getLogger(__package__)


def check_pickable(meta: ModelMetadata, model_name: str) -> None:
    """Refuse a pre-trained-only model or another normalisation; ``model_name``
    names the model in messages.

    Raises:
        SasiInputError: naming the fix.
    """
    if meta.pretrained_only:
        raise SasiInputError(
            f"{model_name}: a pre-trained model has no particle classes; train it first "
            "with 'sasi train --pretrained' and pick with the trained model"
        )
    if meta.normalisation != NORMALISATION:
        raise SasiInputError(
            f"{model_name}: uses input normalisation {meta.normalisation!r}, this engine "
            f"applies {NORMALISATION!r}; retrain the model with this version"
        )


def check_mode(mode: str) -> None:
    """Refuse a pick mode not in ``PICK_MODES``.

    Raises:
        SasiInputError: naming the choices.
    """
    if mode not in PICK_MODES:
        raise SasiInputError(
            f"{input_name('mode')} {mode}: choose one of {', '.join(PICK_MODES)}")


def model_grid(meta: ModelMetadata, volume: Volume, source: str) -> tuple[int, ...]:
    """The ``(z, y, x)`` shape ``volume`` (named ``source``) has at the model's voxel
    size: its own when the voxel sizes agree within ``VOXEL_SIZE_TOLERANCE`` or one of
    them is unknown, else the shape it is resampled to (``resample``).

    Raises:
        SasiInputError: voxel sizes too far apart, or a resampled tomogram smaller
            than the model's window.
    """
    shape = volume.data.shape
    if not (meta.voxel_size and volume.voxel_size) or abs(
            volume.voxel_size - meta.voxel_size) <= VOXEL_SIZE_TOLERANCE * meta.voxel_size:
        return shape
    problem = resampling_problem(volume.voxel_size, meta.voxel_size, source, "the model")
    if problem:
        raise SasiInputError(problem)
    resampled = resampled_shape(shape, volume.voxel_size, meta.voxel_size)
    if min(resampled) < meta.window:
        raise SasiInputError(
            f"{source}: {' x '.join(map(str, shape))} voxels of {volume.voxel_size:.3f} Å "
            f"are {' x '.join(map(str, resampled))} at the model's {meta.voxel_size:.3f} Å, "
            f"smaller than its {meta.window}-voxel window; pick a larger tomogram")
    return resampled


def prepare_tomogram(
    meta: ModelMetadata,
    tomogram: TomogramInput,
    invert_contrast: bool = False,
    voxel_size: float | None = None,
    model_name: str = "model",
) -> tuple[Voxels, tuple[int, ...]]:
    """The tomogram as the model sees it, and its own ``(z, y, x)`` shape: normalised,
    at the model's voxel size (a tomogram at another is resampled first: ``model_grid``;
    its voxels then map back with ``resample.to_source_voxels``, and a note goes to the
    engine's logger), negated with ``invert_contrast``. Its voxel size is ``voxel_size``
    (Å) when given, else its own. At its own voxel size it is a ``NormalisedVolume``
    over the file's memory map (or the given array): normalised as tiles are read, never
    copied whole by tiled picking; a resampled one is a ``float32`` array at the
    model's grid. Warns
    (:class:`SasiWarning`) when the prepared tomogram looks inverted relative to the
    model (``contrast.inversion_warning``). ``model_name`` names the model in messages.

    Raises:
        SasiInputError: a model that cannot pick, or a tomogram it cannot read.
    """
    name = input_name("tomogram")
    check_pickable(meta, model_name)
    volume = load_tomogram(tomogram, name, meta.window, voxel_size)
    source = tomogram_source(tomogram, name)
    source_shape = volume.data.shape
    grid = model_grid(meta, volume, source)
    data: Voxels
    if grid != source_shape:
        LOG.info("%s: resampling %s voxels of %.3f Å to %s at the model's %.3f Å; picks "
                 "are given in the tomogram's own voxels", source,
                 " x ".join(map(str, source_shape)), volume.voxel_size,
                 " x ".join(map(str, grid)), meta.voxel_size)
        data = normalise(resample(volume.data, grid), in_place=True)
        if invert_contrast:
            np.negative(data, out=data)
    else:
        data = NormalisedVolume(volume.data, negate=invert_contrast)
    del volume
    warning = inversion_warning(contrast_skew(data), meta.contrast_skew, source)
    if warning:
        warnings.warn(warning, SasiWarning, stacklevel=3)
    return data, source_shape


def check_adaptation(setting: str) -> None:
    """Refuse a statistics adaptation not in ``STATISTICS_ADAPTATIONS``.

    Raises:
        SasiInputError: naming the choices.
    """
    if setting not in STATISTICS_ADAPTATIONS:
        raise SasiInputError(f"{input_name('adapt_statistics')} {setting}: choose one of "
                             f"{', '.join(STATISTICS_ADAPTATIONS)}")


def adaptation_applies(setting: StatisticsAdaptation, meta: ModelMetadata,
                       coarser: bool) -> bool:
    """Whether picking re-estimates the batch-normalisation statistics over the tomogram
    (:func:`adapted_model`): always with ``on``, never with ``off``; with ``auto``
    for a tomogram ``coarser`` than the model (resampled to more voxels than it has)
    when the model's own statistics were estimated over its training tomograms
    (``batch_norm_statistics`` ``tomogram``: every model of several classes;
    ``training_run.final_decisions``), the same estimate made over the data picked."""
    check_adaptation(setting)
    if setting != "auto":
        return setting == "on"
    return coarser and meta.settings.get("batch_norm_statistics") == "tomogram"


def adapted_model(model: Model, data: Voxels, device: torch.device) -> Model:
    """A copy of ``model`` whose batch-normalisation running statistics are re-estimated
    over ``PICK_STATISTICS_BATCHES`` batches of uniformly placed windows of the prepared
    tomogram ``data`` (``(z, y, x)``, :func:`prepare_tomogram`;
    ``batch_statistics.picking_statistics`` with the model's window, batch size and
    seed), weights unchanged; ``model`` itself is left as it is.

    A tomogram coarser than the model lacks the fine detail its training data had, so
    every feature's spread shrinks and the statistics of the training tomograms no
    longer normalise it (measured, ``docs/method.md``: at 13.5 Å four 10 Å models
    lost 0.06 to 0.26 pooled F1 with their own statistics, and -0.013 to 0.053 with
    these)."""
    adapted = Model(copy.deepcopy(model.network).to(device), model.metadata)
    meta = model.metadata
    picking_statistics(adapted.network, [data], meta.window,
                       int(meta.settings.get("batch_size", BATCH_SIZE)),
                       int(meta.settings.get("seed", 0)), device,
                       batches=PICK_STATISTICS_BATCHES)
    return adapted


def segment_prepared(
    model: Model,
    data: Voxels,
    device: torch.device,
    mode: PickMode = "tiled",
    precision: Precision = "auto",
    progress: ProgressCallback | None = None,
    calibrated: bool = True,
) -> Segmentation:
    """Segment a tomogram prepared by :func:`prepare_tomogram` (argmax class and its
    probability per voxel). With ``calibrated`` (the default), particle voxels take
    the class of the model's class calibration (``calibration``), when it has one;
    else the network's argmax class."""
    check_mode(mode)
    meta = model.metadata
    network = model.network.to(device).eval()
    calibration = ClassCalibration.from_dict(meta.class_calibration) if calibrated else None
    if mode == "tiled":
        return segment_tiled(network, data, device, precision=precision,
                             progress=progress, calibration=calibration)
    return segment_sliding(network, data, device, window=meta.window,
                           stride=meta.window // 2, precision=precision,
                           progress=progress, calibration=calibration)


def segment_tomogram(
    model: Model,
    tomogram: TomogramInput,
    device: torch.device,
    mode: PickMode = "tiled",
    precision: Precision = "auto",
    progress: ProgressCallback | None = None,
    invert_contrast: bool = False,
    voxel_size: float | None = None,
    model_name: str = "model",
    calibrated: bool = True,
) -> tuple[Segmentation, tuple[int, ...]]:
    """Segment a tomogram at the model's voxel size (:func:`prepare_tomogram`, then
    :func:`segment_prepared`, whose arguments these are); return the segmentation and
    the tomogram's own ``(z, y, x)`` shape."""
    check_mode(mode)  # before reading the tomogram
    data, source_shape = prepare_tomogram(model.metadata, tomogram, invert_contrast,
                                          voxel_size, model_name)
    return segment_prepared(model, data, device, mode, precision, progress,
                            calibrated), source_shape


def model_cutoffs(meta: ModelMetadata, components: ComponentMode) -> list[float]:
    """The model's per-class score cut-offs for ``components`` (0 for every class of a
    model that has none: an older or pre-trained model)."""
    return meta.score_cutoffs.get(components, [0.0] * len(meta.classes))


def model_prototypes(meta: ModelMetadata, setting: PrototypeFilter,
                     model_name: str = "model") -> LabelPrototypes | None:
    """The model's label prototypes when picking with filter ``setting`` uses them
    (``prototypes.prototypes_apply``), else ``None``.

    Raises:
        SasiInputError: ``setting`` not one of ``PROTOTYPE_FILTERS``, or ``on`` for a
            model without prototypes.
    """
    option = input_name("prototype_filter")
    if setting not in PROTOTYPE_FILTERS:
        raise SasiInputError(f"{option} {setting}: choose one of {', '.join(PROTOTYPE_FILTERS)}")
    if setting == "on" and not meta.label_prototypes:
        raise SasiInputError(
            f"{model_name}: has no label prototypes (trained before sasi recorded them); "
            f"retrain it, or pick with {option} off")
    if not prototypes_apply(setting, len(meta.classes), bool(meta.label_prototypes)):
        return None
    return LabelPrototypes.from_dict(meta.label_prototypes)


def pick_tomogram(
    model: Model,
    tomogram: TomogramInput,
    device: torch.device,
    mode: PickMode = "tiled",
    min_score: float | None = None,
    precision: Precision = "auto",
    progress: ProgressCallback | None = None,
    components: ComponentMode = DEFAULT_COMPONENTS,
    invert_contrast: bool = False,
    voxel_size: float | None = None,
    model_name: str = "model",
    calibrated: bool = True,
    prototype_filter: PrototypeFilter = "auto",
    prototype_quantile: float = PROTOTYPE_QUANTILE,
    adapt_statistics: StatisticsAdaptation = "auto",
) -> ParticleTable:
    """Particles (centres in voxels ``(x, y, z)``, class, score) found in a tomogram.

    ``min_score`` drops particles scoring lower; ``None``: the model's per-class
    cut-offs from its training labels (:func:`model_cutoffs`). ``invert_contrast``
    negates the tomogram first (protein bright here, dark in the training data, or
    the reverse). ``voxel_size`` (Å) replaces the tomogram's own. A tomogram at another
    voxel size than the model's is picked resampled to it, and the centres are given
    in the tomogram's own voxels. ``prototype_filter`` (:func:`model_prototypes`)
    drops picks less similar to their class's label prototype than the
    ``prototype_quantile`` of the labels' own similarities
    (``prototypes.LabelPrototypes.keep``). ``adapt_statistics``
    (:func:`adaptation_applies`): when to pick with the batch-normalisation statistics
    re-estimated over this tomogram (:func:`adapted_model`). The other arguments are
    :func:`segment_prepared`'s.

    Raises:
        SasiInputError: naming the input and the fix.
    """
    if not 0.0 <= prototype_quantile <= 1.0:
        raise SasiInputError(f"{input_name('prototype_quantile')} {prototype_quantile:g}: "
                             "give a quantile from 0 to 1")
    meta = model.metadata
    prototypes = model_prototypes(meta, prototype_filter, model_name)
    check_mode(mode)  # before reading the tomogram
    check_adaptation(adapt_statistics)
    data, source_shape = prepare_tomogram(meta, tomogram, invert_contrast, voxel_size,
                                          model_name)
    coarser = int(np.prod(data.shape)) > int(np.prod(source_shape))
    if adaptation_applies(adapt_statistics, meta, coarser):
        LOG.info("%s: batch-normalisation statistics re-estimated over this tomogram "
                 "(%s)", tomogram_source(tomogram, input_name("tomogram")),
                 "coarser than the model" if adapt_statistics == "auto"
                 else f"{input_name('adapt_statistics')} on")
        model = adapted_model(model, data, device)
    segmentation = segment_prepared(model, data, device, mode, precision, progress,
                                    calibrated)
    if prototypes is None:
        del data  # post-processing a large tomogram needs the memory
    cut = model_cutoffs(meta, components) if min_score is None else min_score
    picks = extract_particles(segmentation, meta.classes, meta.radii, min_score=cut,
                              components=components)
    if prototypes is not None:
        keep = prototypes.keep(model.network.to(device).eval(), data, picks, meta.classes,
                               prototype_quantile)
        LOG.info("kept %d of %d picks like the labels (label prototypes, quantile %g)",
                 int(keep.sum()), len(picks), prototype_quantile)
        picks = picks.subset(keep)
    if segmentation.labels.shape != source_shape:
        picks.xyz = to_source_voxels(picks.xyz, source_shape, segmentation.labels.shape)
    return picks


class LabelDecisions(NamedTuple):
    """What training decides from its labels after the last step (:func:`label_decisions`).

    Attributes:
        calibration: the class calibration, or ``None`` (``calibration.fit_calibration``).
        score_cutoffs: per-class cut-offs for the default component mode
            (``thresholds.score_cutoffs``).
        label_recall: per class, the fraction of the labelled particles the model's own
            picks find again (``thresholds.label_recall``).
    """

    calibration: ClassCalibration | None
    score_cutoffs: dict[str, list[float]]
    label_recall: list[float]


def label_decisions(model: nn.Module, volumes: Sequence[Voxels],
                    labels: Sequence[ParticleTable], class_names: Sequence[str],
                    radii: Sequence[float], device: torch.device,
                    negatives: Sequence[ParticleTable] | None = None,
                    calibration_l2: float = CALIBRATION_L2) -> LabelDecisions:
    """The class calibration (``calibration.fit_calibration``), the score cut-offs and
    the label recall (:func:`label_picks`) of a model, from its segmentations of its
    own normalised training volumes ``(z, y, x)`` and their labels (positions in
    voxels ``(x, y, z)``), and the background points of each volume (``negatives``:
    the calibration's reject class), with L2 penalty ``calibration_l2``: one pass
    that gathers the labelled points' log-probabilities, then one that picks with
    the calibration (other component modes pick without cut-offs unless given
    ``min_score``)."""
    features, classes = [], []
    smallest = int(np.argmin(radii))
    for volume, table, background in zip(volumes, labels, negatives or [None] * len(volumes)):
        indices = np.array([class_names.index(c) for c in table.classes], dtype=np.int64)
        centres, sphere_radii = table.xyz[:, ::-1], feature_radii(indices, radii)
        if background is not None and len(background):
            indices = np.concatenate([indices, np.full(len(background), len(class_names))])
            centres = np.concatenate([centres, background.xyz[:, ::-1]])
            sphere_radii = np.concatenate([sphere_radii, np.repeat(
                feature_radii(np.array([smallest]), radii), len(background))])
        probe = SphereMeans(centres, sphere_radii, len(class_names) + 1)
        segment_tiled(model, volume, device, log_probability_sink=probe.add,
                      regions=label_regions(centres, volume.shape, radii))
        features.append(probe.means())
        classes.append(indices)
    calibration = fit_calibration(np.concatenate(features), np.concatenate(classes),
                                  len(class_names), calibration_l2)
    picks = label_picks(model, volumes, labels, class_names, radii, device, calibration)
    return LabelDecisions(
        calibration, {DEFAULT_COMPONENTS: score_cutoffs(picks, labels, class_names, radii)},
        label_recall(picks, labels, class_names, radii))


def label_picks(model: nn.Module, volumes: Sequence[Voxels],
                labels: Sequence[ParticleTable], class_names: Sequence[str],
                radii: Sequence[float], device: torch.device,
                calibration: ClassCalibration | None) -> list[ParticleTable]:
    """The picks (default component mode, no cut-off) with ``calibration`` (``None``:
    the network's classes) near the labels of each normalised training volume (the
    arguments of :func:`label_decisions`), from which the score cut-offs
    (``thresholds.score_cutoffs``) and the label recall (``thresholds.label_recall``)
    are taken. Only the segmented tiles are post-processed
    (``postprocess.extract_particles_in``): the same picks as the whole volume's."""
    picks = []
    for volume, table in zip(volumes, labels):
        regions = label_regions(table.xyz[:, ::-1], volume.shape, radii)
        segmentation = segment_tiled(model, volume, device, calibration=calibration,
                                     regions=regions)
        picks.append(extract_particles_in(
            segmentation, segmented_boxes(model, volume.shape, device, regions),
            class_names, radii, components=DEFAULT_COMPONENTS))
    return picks


def label_regions(centres_zyx: np.ndarray, shape_zyx: tuple[int, ...],
                  radii: Sequence[float]) -> list[Box]:
    """The boxes around labelled points ``(z, y, x)`` (voxels) that decide the model's
    picks near them: the largest class radius (a pick's own sphere), the distance
    within which a better neighbour suppresses it (``postprocess.suppression_reach``)
    and the peak search's reach (``postprocess.peak_search_reach``), clipped to the
    volume. Segmenting only the tiles that meet them
    (``inference.segment_tiled``'s ``regions``) gives the same calibration features
    and cut-offs as the whole volume, in a fraction of the time on a large tomogram."""
    reach = (float(max(radii)) + suppression_reach(radii)
             + peak_search_reach(float(min(radii))))
    centres = np.asarray(centres_zyx, dtype=np.float64).reshape(-1, 3)
    low = np.clip(np.floor(centres - reach), 0, None).astype(int)
    high = np.minimum(np.ceil(centres + reach).astype(int) + 1, np.asarray(shape_zyx))
    return [((int(a[0]), int(b[0])), (int(a[1]), int(b[1])), (int(a[2]), int(b[2])))
            for a, b in zip(low, high)]
