"""Data-parallel training over the processes ``torchrun`` starts (one per GPU).

Design, chosen so that K processes compute what one process computes:

- Every process draws the same *global* batch from the same seeded random
  generator (sampling, augmentation and infill are cheap), then keeps its
  contiguous share (:meth:`Replica.shard`): batch size B becomes B / K windows
  of network work per process.
- Losses stay global: the Dice sums are added over the processes and the
  SimCLR projections gathered from all of them before the NT-Xent loss (both
  with gradients), the voxel-mean Focal term is a mean of equal shares.
- After ``backward`` the gradients are averaged over the processes (one flat
  all-reduce per step, :meth:`Replica.average_gradients`); every process then
  takes the same optimiser step. There is no ``DistributedDataParallel``
  wrapper: SaSi calls the encoder alone in SimCLR steps and the network twice
  in consistency steps, patterns its hooks do not follow, and one all-reduce of
  under 25 MB per step costs little next to the 3D convolutions.

The result equals the single-process run up to the order of floating-point
sums (and the nondeterminism of cuDNN on GPUs). Backends: NCCL on GPUs, gloo
on the CPU. Rank 0 alone writes the model file and the progress log.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.nn.functional import all_reduce as all_reduce_with_grad

from .errors import SasiInputError

WORKER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
"""What ``torchrun`` sets in each process it starts."""


class _GatherBatches(torch.autograd.Function):
    """Concatenate every process's ``(n, ...)`` tensor in rank order; the backward
    pass sums the incoming gradients over the processes and keeps this process's rows."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows = (rank * len(tensor), (rank + 1) * len(tensor))
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start, stop = ctx.rows
        return grad[start:stop], None, None


@dataclass(frozen=True)
class Replica:
    """This process's place in a data-parallel run (rank 0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """The process that logs and writes files."""
        return self.rank == 0

    def check_divides(self, size: int, what: str) -> None:
        """Raise unless ``size`` splits into equal shares over the processes."""
        if size % self.world_size:
            raise SasiInputError(
                f"{what} {size} does not split evenly over {self.world_size} processes: "
                f"use a multiple of {self.world_size}"
            )

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's contiguous share of a global batch (first axis)."""
        if self.world_size == 1:
            return batch
        share = len(batch) // self.world_size
        return batch[self.rank * share : (self.rank + 1) * share]

    def sum_across(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the processes, differentiable (identity when alone)."""
        return tensor if self.world_size == 1 else all_reduce_with_grad(tensor)

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's rows in rank order, differentiable (identity when alone)."""
        if self.world_size == 1:
            return tensor
        return _GatherBatches.apply(tensor, self.rank, self.world_size)

    def mean_of(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a detached value over the processes."""
        value = value.detach().clone()
        if self.world_size > 1:
            dist.all_reduce(value)
            value /= self.world_size
        return value

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over the processes (one flat all-reduce)."""
        if self.world_size == 1:
            return
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Give every process rank 0's weights (they already agree when seeded alike)."""
        if self.world_size == 1:
            return
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, 0)

    def broadcast_rows(self, rows: np.ndarray, device: torch.device) -> np.ndarray:
        """Rank 0's float64 ``(n, c)`` array in every process (``c`` the same in all;
        ``n`` may differ), sent through ``device`` (the backend's device)."""
        if self.world_size == 1:
            return rows
        count = torch.tensor([len(rows)], dtype=torch.int64, device=device)
        dist.broadcast(count, 0)
        tensor = (torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float64)).to(device)
                  if self.is_main else
                  torch.empty((int(count.item()), rows.shape[1]), dtype=torch.float64,
                              device=device))
        dist.broadcast(tensor, 0)
        return tensor.cpu().numpy()


ALONE = Replica()
"""The replica of a single-process run."""


def in_worker() -> bool:
    """True inside a process that ``torchrun`` started."""
    return all(name in os.environ for name in WORKER_VARIABLES)


def join_process_group(device_type: str) -> tuple[Replica, int]:
    """Join the run ``torchrun`` set up; return the replica and the local rank.

    Each process takes an equal share of the CPU cores (gloo) or its own GPU
    (NCCL, GPU ``LOCAL_RANK`` of those in CUDA_VISIBLE_DEVICES).
    """
    rank, world, local = (int(os.environ[name]) for name in WORKER_VARIABLES)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local)
    else:
        cores = len(os.sched_getaffinity(0))
        torch.set_num_threads(max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    dist.init_process_group(backend)
    return Replica(rank, world), local


def leave_process_group() -> None:
    """Tear the process group down (no-op when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def relaunch_with_torchrun(processes: int, argv: Sequence[str]) -> int:
    """Run ``sasi ARGV`` again as ``processes`` processes of one node under ``torchrun``
    (standalone rendezvous on a free local port); return its exit status."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={processes}", "-m", "sasi_scipion.engine.cli", *argv]
    print(f"sasi: starting {processes} training processes: torchrun "
          f"--standalone --nproc-per-node={processes}", file=sys.stderr, flush=True)
    return subprocess.run(command, check=False).returncode
