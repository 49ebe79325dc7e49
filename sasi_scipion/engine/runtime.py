"""Where a ``sasi`` command runs: host, process, queue job, visible GPUs, threads.

The line is printed at the start of every heavy command so that a facility can
read from a job's log which node, SLURM job and GPUs did the work.
"""

from __future__ import annotations

import os
import socket

import torch

QUEUE_JOB_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "JOB_ID", "LSB_JOBID")
"""Job-id variables of SLURM, PBS/Torque, SGE and LSF, in that order."""


def queue_job_id() -> str | None:
    """The id of the batch-queue job this process runs in, or ``None`` outside a queue."""
    for name in QUEUE_JOB_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


def describe_runtime() -> str:
    """``host=... pid=... queue_job=... cuda_visible_devices=... cpu_threads=...``,
    plus ``rank=R/W`` inside a distributed (``torchrun``) training."""
    fields = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queue_job": queue_job_id() or "none",
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
        "cpu_threads": torch.get_num_threads(),
    }
    if "WORLD_SIZE" in os.environ:
        fields["rank"] = f"{os.environ.get('RANK', '0')}/{os.environ['WORLD_SIZE']}"
    return " ".join(f"{key}={value}" for key, value in fields.items())
