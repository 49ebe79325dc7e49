"""The protocols through Scipion's queue on a real single-node SLURM cluster.

The cluster is the one ``scripts/test`` starts (``SASI_TEST_SLURM_BASE``), else one
this module starts from ``../shared/queue`` (needs root) and stops afterwards. It
declares two fake GPUs: SLURM then sets CUDA_VISIBLE_DEVICES for GPU jobs, and the
engine, finding no CUDA, fails with that variable in its error.

Proof that work ran inside jobs comes from SLURM itself (``jobcomp.log``: id, name,
state of every finished job) and from the line every heavy ``sasi`` command prints
first (``sasi train: host=... queue_job=<SLURM_JOB_ID> ...``).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sasi_scipion.engine.coordinates import read_particles

from .conftest import REPOSITORY

QUEUE_SCRIPTS = REPOSITORY.parent / "shared" / "queue"
BANNER = re.compile(r"^sasi (\w+): host=\S+ pid=\d+ queue_job=(\S+) cuda_visible_devices=(\S+)")
MEMORY_MB = "2048"
TIMEOUT_S = 600


@dataclass
class Slurm:
    """A running cluster: its folder and the environment its commands need."""

    base: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.base / "etc" / "slurm.conf")}

    def squeue(self) -> list[str]:
        """``id name state`` of every job still in the queue."""
        out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], env=self.env, check=True,
                             capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if line.strip()]

    def wait_until_empty(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.squeue():
            assert time.monotonic() < deadline, f"jobs left in the queue: {self.squeue()}"
            time.sleep(0.5)

    def finished_jobs(self) -> dict[str, dict[str, str]]:
        """``{job id: {Name, JobState, ...}}`` from jobcomp.log."""
        jobs = {}
        for line in (self.base / "log" / "jobcomp.log").read_text().splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            if "JobId" in fields:
                jobs[fields["JobId"]] = fields
        return jobs


@pytest.fixture(scope="module")
def slurm() -> Iterator[Slurm]:
    running = os.environ.get("SASI_TEST_SLURM_BASE")
    if running:
        yield Slurm(Path(running))
        return
    if os.geteuid() != 0 or not (QUEUE_SCRIPTS / "start_slurm.sh").exists():
        pytest.skip("needs root and ../shared/queue to start SLURM (scripts/test does it in CI)")
    base = Path(tempfile.mkdtemp(prefix="sasi-slurm-"))
    env = {**os.environ, "SLURM_BASE": str(base), "SLURM_FAKE_GPUS": "2"}
    try:
        subprocess.run(["bash", str(QUEUE_SCRIPTS / "start_slurm.sh")], env=env, check=True,
                       capture_output=True)
        yield Slurm(base)
    finally:
        subprocess.run(["bash", str(QUEUE_SCRIPTS / "stop_slurm.sh")], env=env,
                       capture_output=True)


@pytest.fixture(scope="module")
def project(workflow):
    """The workflow's project, loaded once and closed afterwards: a second Project on
    the same database in this process waits forever for an open one's write lock."""
    from pyworkflow.project import Manager

    loaded = Manager().loadProject(Path(workflow.project_path).name)
    yield loaded
    loaded.closeMapper()


def _queued(project, cls, partition: str, for_jobs: bool, **kwargs):
    protocol = project.newProtocol(cls, **kwargs)
    protocol._useQueue.set(True)
    protocol.setQueueParams([partition, {"JOB_MEMORY": MEMORY_MB,
                                         "QUEUE_FOR_JOBS": "Y" if for_jobs else "N"}])
    return protocol


def _wait(project, protocol, slurm: Slurm, on_poll=None) -> None:
    """Poll until the protocol is no longer active and its jobs have left the queue."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        project._updateProtocol(protocol)
        if not protocol.isActive():
            break
        if on_poll is not None:
            on_poll(protocol)
        assert time.monotonic() < deadline, f"{protocol.getRunName()} still active"
        time.sleep(1)
    slurm.wait_until_empty()


def _run(project, protocol, slurm: Slurm, on_poll=None):
    project.launchProtocol(protocol)
    _wait(project, protocol, slurm, on_poll)
    assert protocol.isFinished(), protocol.getErrorMessage()
    return protocol


def _banners(paths) -> list[tuple[str, str, str, Path]]:
    """``(command, queue job, CUDA_VISIBLE_DEVICES, file)`` of every sasi start line."""
    found = []
    for path in paths:
        for line in Path(path).read_text(errors="replace").splitlines():
            match = BANNER.match(line)
            if match:
                found.append((*match.groups(), Path(path)))
    return found


def _job_logs(protocol) -> list[Path]:
    return sorted(Path(protocol._getLogsPath()).glob("*.err")) \
        + sorted(Path(protocol._getLogsPath()).glob("*.out"))


def _head_node_logs(protocol) -> list[Path]:
    return [Path(p) for p in protocol.getLogPaths() if os.path.exists(p)]


def _assert_same_picks(pick, reference) -> None:
    for path in sorted(Path(reference._getExtraPath()).glob("*_picks.tsv")):
        mine = read_particles(pick._getExtraPath(path.name), allow_empty=True)
        theirs = read_particles(path, allow_empty=True)
        assert len(mine) == len(theirs), path.name
        order_mine, order_theirs = np.lexsort(mine.xyz.T), np.lexsort(theirs.xyz.T)
        assert np.allclose(mine.xyz[order_mine], theirs.xyz[order_theirs], atol=1e-3)
        assert list(mine.classes[order_mine]) == list(theirs.classes[order_theirs])


def _chain(workflow, project, slurm: Slurm, for_jobs: bool, on_pick_poll=None,
           training_processes: int = 1):
    """Pretrain, train (on ``training_processes`` CPU processes) and pick through the
    queue, on the CPU; return the protocols."""
    from sasi_scipion.protocols import ProtSaSiPick, ProtSaSiPretrain, ProtSaSiTrain

    tomograms = workflow.protocols["import_tomograms"].Tomograms
    pretrain = _run(project, _queued(project, ProtSaSiPretrain, "cpu", for_jobs,
                                     inputTomograms=tomograms, iterations=2, useGpu=False),
                    slurm)
    train = _queued(project, ProtSaSiTrain, "cpu", for_jobs, iterations=4, useGpu=False,
                    pretrainedModel=pretrain.outputModel, numberOfGpus=training_processes)
    for role in ("import_labels_disc", "import_labels_rod"):
        train.inputCoordinates.append(workflow.protocols[role])
        train.inputCoordinates[-1].setExtended("outputCoordinates")
    train = _run(project, train, slurm)
    pick = _run(project, _queued(project, ProtSaSiPick, "cpu", for_jobs, useGpu=False,
                                 inputTomograms=tomograms,
                                 inputModel=workflow.protocols["train"].outputModel,
                                 numberOfThreads=2), slurm, on_pick_poll)
    return pretrain, train, pick


def test_queue_for_jobs_runs_each_sasi_command_in_its_own_job(workflow, project, slurm) -> None:
    growth: list[tuple[int, int]] = []

    def watch_output(pick) -> None:
        picks = getattr(pick, "output3DCoordinates", None)
        growth.append((len(slurm.squeue()), picks.getSize() if picks is not None else 0))

    chain = _chain(workflow, project, slurm, for_jobs=True, on_pick_poll=watch_output)
    finished = slurm.finished_jobs()
    expected = {"pretrain": 1, "train": 1, "pick": 2}
    for protocol, command in zip(chain, ("pretrain", "train", "pick")):
        assert not _banners(_head_node_logs(protocol)), "a sasi command ran on the head node"
        banners = _banners(_job_logs(protocol))
        assert [b[0] for b in banners] == [command] * expected[command]
        for _, job, cuda, log in banners:
            assert finished[job]["JobState"] == "COMPLETED"
            assert finished[job]["Name"].startswith(f"scipion-{protocol.strId()}-")
            assert log.stem == finished[job]["Name"].removeprefix("scipion-")
            assert cuda == "unset"
        scripts = list(Path(protocol._getLogsPath()).glob("*.job"))
        assert len(scripts) == expected[command]
        assert all("#SBATCH --gres=gpu:0" in s.read_text() for s in scripts)
    pick = chain[2]
    _assert_same_picks(pick, workflow.protocols["pick"])
    final = pick.output3DCoordinates.getSize()
    assert any(0 < size < final and jobs for jobs, size in growth), \
        f"the output did not grow while jobs ran: {growth}"


def test_queue_for_protocol_runs_the_whole_protocol_as_one_job(workflow, project, slurm) -> None:
    chain = _chain(workflow, project, slurm, for_jobs=False, training_processes=2)
    finished = slurm.finished_jobs()
    # train: the sasi command and the two torchrun processes it starts
    for protocol, command, count in zip(chain, ("pretrain", "train", "pick"), (1, 3, 2)):
        jobs = [job for job, fields in finished.items()
                if fields["Name"] == f"scipion-{protocol.strId()}"]
        assert len(jobs) == 1 and finished[jobs[0]]["JobState"] == "COMPLETED"
        banners = _banners(_head_node_logs(protocol))
        assert [b[0] for b in banners] == [command] * count
        assert {b[1] for b in banners} == set(jobs)
    train_log = "".join(p.read_text() for p in _head_node_logs(chain[1]))
    assert "rank=0/2" in train_log and "rank=1/2" in train_log
    assert chain[1].outputModel.getPath().endswith("model.pt")
    _assert_same_picks(chain[2], workflow.protocols["pick"])


def test_gpu_request_reaches_the_job_and_its_failure_the_protocol(workflow, project, slurm) -> None:
    from sasi_scipion.protocols import ProtSaSiTrain

    train = _queued(project, ProtSaSiTrain, "gpu", True, iterations=2, useGpu=True,
                    gpuList="0 1", numberOfGpus=2)
    train.inputCoordinates.append(workflow.protocols["import_labels_disc"])
    train.inputCoordinates[-1].setExtended("outputCoordinates")
    project.launchProtocol(train)
    _wait(project, train, slurm)
    assert train.isFailed()
    message = train.getErrorMessage()
    assert "sasi train failed: --device cuda: no usable CUDA GPU" in message
    assert "CUDA_VISIBLE_DEVICES=0,1" in message and "Last lines of" in message
    (command, job, cuda, _), = _banners(_job_logs(train))
    assert command == "train" and cuda == "0,1"
    assert slurm.finished_jobs()[job]["JobState"] == "FAILED"
    script, = Path(train._getLogsPath()).glob("*.job")
    assert "#SBATCH --gres=gpu:2" in script.read_text()
    assert "#SBATCH --partition=gpu" in script.read_text()
    assert "--processes 2 --device cuda" in script.read_text()


@pytest.mark.parametrize("for_jobs", [True, False], ids=["queue-for-jobs", "queue-for-protocol"])
def test_stopping_a_queued_protocol_cancels_its_jobs(workflow, project, slurm, for_jobs) -> None:
    from sasi_scipion.protocols import ProtSaSiPretrain

    pretrain = _queued(project, ProtSaSiPretrain, "cpu", for_jobs, iterations=100000,
                       useGpu=False,
                       inputTomograms=workflow.protocols["import_tomograms"].Tomograms)
    project.launchProtocol(pretrain)
    deadline = time.monotonic() + TIMEOUT_S
    logs = _job_logs if for_jobs else _head_node_logs
    while not _banners(logs(pretrain)):  # training has started inside its job
        assert time.monotonic() < deadline, "the training job never started"
        project._updateProtocol(pretrain)
        time.sleep(1)
    running = [line.split()[0] for line in slurm.squeue()]
    assert len(running) == 1
    project.stopProtocol(pretrain)
    slurm.wait_until_empty(timeout_s=30)
    assert slurm.finished_jobs()[running[0]]["JobState"] == "CANCELLED"
    project._updateProtocol(pretrain)
    assert pretrain.isAborted()
    # sasi ends on SIGTERM after the tensor operation it is in and its clean-up
    # (temporary files removed): allow it a moment, as SLURM's KillWait would
    deadline = time.monotonic() + 60
    while True:
        leftover = subprocess.run(["pgrep", "-f", f"{pretrain._getExtraPath()}"],
                                  capture_output=True, text=True).stdout
        if not leftover.strip() or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not leftover.strip(), f"sasi processes left behind: {leftover}"


def test_a_job_cancelled_by_slurm_fails_the_protocol_with_its_log(workflow, project,
                                                                  slurm) -> None:
    from sasi_scipion.protocols import ProtSaSiPretrain

    pretrain = _queued(project, ProtSaSiPretrain, "cpu", True, iterations=100000,
                       useGpu=False,
                       inputTomograms=workflow.protocols["import_tomograms"].Tomograms)
    project.launchProtocol(pretrain)
    deadline = time.monotonic() + TIMEOUT_S
    while not _banners(_job_logs(pretrain)):
        assert time.monotonic() < deadline, "the training job never started"
        time.sleep(1)
    (_, job, _, _), = _banners(_job_logs(pretrain))
    subprocess.run(["scancel", job], env=slurm.env, check=True)  # an operator, a time limit
    _wait(project, pretrain, slurm)
    assert pretrain.isFailed()
    message = pretrain.getErrorMessage()
    # the engine saw the SIGTERM and said so (its error file), then the job log's tail
    assert "sasi pretrain failed: terminated (SIGTERM)" in message
    assert "Last lines of" in message
    assert f"JOB {job} ON" in message and "CANCELLED" in message
    assert slurm.finished_jobs()[job]["JobState"] == "CANCELLED"
