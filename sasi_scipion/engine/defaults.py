"""Names and defaults shared by the engine and the Scipion plugin's forms.

Plain Python (no numpy, no torch, no pyworkflow), so that the protocols import it
without loading torch: a constant the forms need is defined here once and the
engine modules import it from here.
"""

from __future__ import annotations

from typing import Literal, get_args

BackboneName = Literal["deepfinder", "resunet", "vit"]
BACKBONE_NAMES: tuple[str, ...] = get_args(BackboneName)
"""Backbone names, in the order of the forms' 'Network' choices; the first is the
default (the SaSi paper's U-Net). ``models.BACKBONES`` maps them to classes, whose
instances ``models.Backbone`` describes."""
DEFAULT_BACKBONE = BACKBONE_NAMES[0]
BATCH_NORM = True
"""Whether new DeepFinder U-Nets get a batch normalisation after every convolution
(``--no-batch-norm`` and the forms' 'Batch normalisation' switch turn it off for the
paper's net): with it the net learned the accuracy benchmark's 12 classes in 150
steps, without it hardly (``docs/method.md``)."""
PickMode = Literal["tiled", "sliding"]
PICK_MODES: tuple[str, ...] = get_args(PickMode)
"""Inference modes of ``sasi pick``; the first is the default."""
SslSchedule = Literal["iss", "pss", "none"]
SSL_SCHEDULES: tuple[str, ...] = get_args(SslSchedule)
"""SimCLR schedules of ``sasi train`` (``auto`` picks one of them)."""
SelfTrainingMode = Literal["off", "ignore", "labels"]
SELF_TRAINING_MODES: tuple[str, ...] = get_args(SelfTrainingMode)
"""What ``sasi train`` does with the unlabelled particles its model finds half-way
(``self_training``): ``off``, ``ignore`` (left out of the loss instead of taught as
background), ``labels`` (taught as extra labels of the class picked)."""
SELF_TRAINING_FATES: dict[str, str] = {"ignore": "left out of the loss",
                                       "labels": "taught as labels"}
"""What each self-training mode but ``off`` does with the particles it finds, in the
words of the train protocol's summary and methods."""
DEFAULT_SELF_TRAINING: SelfTrainingMode = "off"
"""The self-training mode of ``sasi train`` and the train form unless told otherwise
(``docs/method.md``, "Unlabelled particles")."""
SSL_AUTO = "auto"
"""``--ssl`` value that means ``iss``, or ``none`` with a pre-trained model."""
ComponentMode = Literal["argmax", "foreground", "peaks"]
COMPONENT_MODES: tuple[str, ...] = get_args(ComponentMode)
"""How voxels are grouped into particles (see ``postprocess``)."""
DEFAULT_COMPONENTS = "peaks"
"""The component mode ``sasi pick`` uses unless told otherwise."""
PrototypeFilter = Literal["auto", "on", "off"]
PROTOTYPE_FILTERS: tuple[str, ...] = get_args(PrototypeFilter)
"""When ``sasi pick`` drops picks unlike the training labels (``prototypes``): ``auto``
(the default) for one-class models, where it was measured to help, ``on`` for every
model that has label prototypes, ``off`` never."""
StatisticsAdaptation = Literal["auto", "on", "off"]
STATISTICS_ADAPTATIONS: tuple[str, ...] = get_args(StatisticsAdaptation)
"""When ``sasi pick`` re-estimates the model's batch-normalisation statistics over the
tomogram it picks (``picking.adapted_model``): ``auto`` (the default) for a tomogram
coarser than the model whose statistics were estimated over its training tomograms
(a model of several classes), where it was measured to recover what the coarser
tomogram's missing detail otherwise costs (``docs/method.md``), ``on`` for every
tomogram, ``off`` never."""
PROTOTYPE_QUANTILE = 0.1
"""Default cut-off of the prototype filter: the quantile of a class's leave-one-out
label similarities below which picks of that class are dropped (``docs/method.md``)."""
LOW_LABEL_RECALL = 0.5
"""A trained model that finds fewer than this fraction of a class's labelled
particles again in its own training tomograms has not learned that class
(``thresholds.label_recall_warning``, the train protocol's summary)."""
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
"""Inference precisions of ``sasi pick``."""
TrainingPrecision = Literal["auto", "fp32", "bf16"]
TRAINING_PRECISIONS: tuple[str, ...] = get_args(TrainingPrecision)
"""Arithmetic of training steps (``TrainingSettings.precision``); ``auto`` is resolved
per device by ``device.training_precision``."""
BATCH_SIZE = 16
"""Windows per supervised or SimCLR training batch (the paper's value)."""
WINDOW = 24
"""Edge of the training window, voxels (the paper's value): tomograms and particles
must fit it."""
DEFAULT_ITERATIONS = {"cpu": 600, "cuda": 10000}
"""Default budget per device type: on 2 CPU cores 6 to 9 minutes of bf16 training on a
Xeon with AMX (355 to 512 s for 12 classes) or a Zen 4 (AVX512-BF16; 472 to 541 s), 15
to 23 minutes of float32 on AVX2 CPUs (``benchmarks/RESULTS.md``); the paper's scale
(about 10k iterations) on a GPU."""
VOXEL_SIZE_TOLERANCE = 0.01
"""Relative difference of voxel sizes still taken as equal."""
MAX_RESAMPLING_FACTOR = 4.0
"""Largest ratio of voxel sizes that picking and training resample on the fly
(``resample``); beyond it a header is far more likely wrong (many tools write 1 Å)
than the data so different."""
UNSCORED_CLASSES = ("4V94", "vesicle")
"""Classes that the SHREC and CZII rules do not score by default."""
