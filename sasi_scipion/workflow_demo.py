"""The README's main job: the whole SaSi workflow in a new headless Scipion project.

Simulates tomograms (the embedded synthetic default), imports them with tomo's
``ProtImportTomograms``, imports a few labels per class (one coordinate set per
class) and the full truth with ``ProtImportCoordinates3D``, runs SaSi pretrain,
train, pick and evaluate, exports the picks with ``ProtExportCoordinates3D``,
and prints where the project is, the F1 and how to open it in the Scipion GUI.
While a protocol runs, the progress its command writes to the protocol's log
(iterations, elapsed time, ETA) is echoed on stderr.

Run: ``python -m sasi_scipion.workflow_demo [--work DIR] [--iterations N]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from .engine.coordinates import read_particles
from .engine.demo import few_labels
from .engine.simulate import simulate_dataset
from .evaluation_report import headline
from .gui_launch import DEFAULT_WORK, SCIPION_SUBFOLDER, how_to_open
from .log_follow import following
from .scipion_env import configure

DEFAULT_SHAPE = (64, 160, 160)
ITERATIONS_PER_CORE_S = 0.3
"""Training iterations per second per CPU core on the demo's data, roughly: 0.65 it/s
on 2 Zen 4 cores (benchmarks/RESULTS.md, "Training speed"). For the up-front estimate."""
FIXED_COST_S = 90
"""Seconds of the demo outside training (imports, picking, evaluation), roughly."""
CORES_USED = 8
"""Cores beyond this barely speed training up (for the estimate only)."""


@dataclass
class WorkflowResult:
    """What the workflow made: the project, its protocols by role and the F1."""

    project_path: str
    data_dir: str
    f1: float
    protocols: dict = field(default_factory=dict)


def _write_txt(path: Path, xyz: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{x:.3f} {y:.3f} {z:.3f}\n" for x, y, z in xyz))


def prepare_data(folder: Path, tomograms: int, shape: tuple[int, int, int], labels: int,
                 seed: int) -> dict:
    """Simulate tomograms; write per class a folder of label files (``labels/<class>``,
    the training tomogram only) and of truth files (``truth/<class>``, every tomogram)
    in tomo's text format (``x y z`` per line, named after the tomogram)."""
    dataset = simulate_dataset(folder / "tomograms", tomograms=tomograms, shape_zyx=shape,
                               seed=seed)
    for index, name in enumerate(dataset["tomograms"]):
        truth = read_particles(folder / "tomograms" / f"{name}.tsv")
        chosen = few_labels(truth, labels, seed) if index == 0 else None
        for cls in dataset["classes"]:
            _write_txt(folder / "truth" / cls / f"{name}.txt", truth.xyz[truth.classes == cls])
            if chosen is not None:
                _write_txt(folder / "labels" / cls / f"{name}.txt",
                           chosen.xyz[chosen.classes == cls])
    return dataset


def run_workflow(work: str | os.PathLike, tomograms: int = 2,
                 shape: tuple[int, int, int] = DEFAULT_SHAPE, labels: int = 5,
                 pretrain_iterations: int = 20, iterations: int = 300, seed: int = 0,
                 threads: int = 1, project_name: str | None = None,
                 log: TextIO | None = None) -> WorkflowResult:
    """Build and run the demo project under ``work`` (see the module docstring); each
    step's start, progress and end go to ``log`` (default stderr)."""
    log = log or sys.stderr
    work = Path(work).resolve()
    configure(work / SCIPION_SUBFOLDER)
    from pyworkflow.plugin import Domain
    from pyworkflow.project import Manager

    from .protocols import ProtSaSiEvaluate, ProtSaSiPick, ProtSaSiPretrain, ProtSaSiTrain

    import_tomograms = Domain.importFromPlugin("tomo.protocols", "ProtImportTomograms")
    import_coords = Domain.importFromPlugin("tomo.protocols", "ProtImportCoordinates3D")
    export_coords = Domain.importFromPlugin("tomo.protocols", "ProtExportCoordinates3D")

    dataset = prepare_data(work / "data", tomograms, shape, labels, seed)
    project = Manager().createProject(project_name or f"sasi_demo_{time.strftime('%H%M%S')}")
    os.chdir(project.path)
    done: dict = {}

    def launch(role: str, cls: type, label: str, **kwargs):
        protocol = project.newProtocol(cls, **kwargs)
        protocol.setObjLabel(label)
        return _run(project, protocol, done, role, log)

    tomos = launch("import_tomograms", import_tomograms, "import tomograms",
                   filesPath=str(work / "data" / "tomograms"), filesPattern="tomo_???.mrc",
                   samplingRate=dataset["voxel_size"])
    box = {c: int(2 * round(r)) for c, r in dataset["radii"].items()}
    label_sets, truth_sets = [], []
    for cls in dataset["classes"]:
        for kind, sets in (("labels", label_sets), ("truth", truth_sets)):
            protocol = launch(f"import_{kind}_{cls}", import_coords, f"{cls}" if kind ==
                              "labels" else f"truth {cls}", importFrom=1,
                              filesPath=str(work / "data" / kind / cls), filesPattern="*.txt",
                              boxSize=box[cls], importTomograms=tomos.Tomograms)
            sets.append(protocol)
    common = {"useGpu": False}
    pretrain = launch("pretrain", ProtSaSiPretrain, "sasi pretrain",
                      inputTomograms=tomos.Tomograms, iterations=pretrain_iterations,
                      seed=seed, **common)
    train = project.newProtocol(ProtSaSiTrain, iterations=iterations, seed=seed,
                                pretrainedModel=pretrain.outputModel, **common)
    train.setObjLabel("sasi train")
    for protocol in label_sets:
        train.inputCoordinates.append(protocol)
        train.inputCoordinates[-1].setExtended("outputCoordinates")
    train = _run(project, train, done, "train", log)
    pick = launch("pick", ProtSaSiPick, "sasi pick", inputTomograms=tomos.Tomograms,
                  inputModel=train.outputModel, numberOfThreads=threads, **common)
    evaluate = project.newProtocol(ProtSaSiEvaluate, inputCoordinates=pick.output3DCoordinates)
    evaluate.setObjLabel("sasi evaluate")
    for protocol in truth_sets:
        evaluate.referenceCoordinates.append(protocol)
        evaluate.referenceCoordinates[-1].setExtended("outputCoordinates")
    evaluate = _run(project, evaluate, done, "evaluate", log)
    launch("export", export_coords, "export picks", inputCoordinates=pick.output3DCoordinates,
           outputFormat=0)
    return WorkflowResult(project.path, str(work / "data"), evaluate.pooledF1.get(), done)


def _run(project, protocol, done: dict, role: str, log: TextIO):
    """Validate, run and wait for a protocol; raise with its error when it fails."""
    errors = protocol.validate()
    if errors:
        raise RuntimeError(f"{protocol.getObjLabel()}: {'; '.join(errors)}")
    print(f"[workflow] {protocol.getObjLabel()}: running", file=log, flush=True)
    with following(lambda: protocol.getLogPaths()[1:2], log,
                   f"    {protocol.getObjLabel()} | "):
        project.launchProtocol(protocol, wait=True)
    if not protocol.isFinished():
        raise RuntimeError(f"{protocol.getObjLabel()} failed: {protocol.getErrorMessage()}")
    done[role] = protocol
    print(f"[workflow] {protocol.getObjLabel()}: done", file=log, flush=True)
    return protocol


def estimated_minutes(iterations: int, pretrain_iterations: int,
                      cores: int | None = None) -> int:
    """A rough duration of the demo on ``cores`` CPU cores (default: this machine's),
    whole minutes, at least 1."""
    cores = min(cores or os.cpu_count() or 1, CORES_USED)
    seconds = (iterations + pretrain_iterations) / (ITERATIONS_PER_CORE_S * cores)
    return max(1, round((seconds + FIXED_COST_S) / 60))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default=DEFAULT_WORK,
                        help=f"work folder (default {DEFAULT_WORK}, which git ignores)")
    parser.add_argument("--iterations", type=int, default=300, help="training steps")
    parser.add_argument("--pretrain-iterations", type=int, default=20)
    parser.add_argument("--labels", type=int, default=5, help="labelled particles per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"SaSi demo: about {estimated_minutes(args.iterations, args.pretrain_iterations)} "
          f"minutes on {os.cpu_count()} CPU cores (training {args.iterations} iterations is "
          "most of it); each step's progress and ETA follow.", file=sys.stderr, flush=True)
    start = time.perf_counter()
    result = run_workflow(args.work, labels=args.labels, iterations=args.iterations,
                          pretrain_iterations=args.pretrain_iterations, seed=args.seed)
    evaluation = result.protocols["evaluate"].getEvaluation()
    print(f"\nSaSi demo workflow finished in {time.perf_counter() - start:.0f} s")
    print(f"project: {result.project_path}")
    print(f"picks against the truth: {headline(evaluation)}")
    print("open it in the Scipion GUI with:\n"
          f"  {how_to_open(args.work, Path(result.project_path).name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
