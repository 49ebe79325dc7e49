"""Resolve ``--device auto|cpu|cuda[:i]`` to a torch device, with clear errors; CPU
threads for picking (``use_all_cpus``); the training precision ``auto`` stands for on
a device (``training_precision``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from .errors import SasiInputError

if TYPE_CHECKING:
    from .defaults import TrainingPrecision


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn a device option into a ``torch.device``.

    ``auto`` takes the first visible CUDA GPU when there is one, else the CPU.
    ``cuda`` / ``cuda:i`` index the GPUs visible to this process, so a queue
    system's ``CUDA_VISIBLE_DEVICES`` is honoured.

    Raises:
        SasiInputError: an unknown spec, or CUDA asked for where none is usable.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
            raise SasiInputError(
                f"--device {spec}: no usable CUDA GPU here (torch {torch.__version__}, "
                f"CUDA_VISIBLE_DEVICES={visible}); use --device cpu, or install a CUDA "
                "build of torch on a GPU machine"
            )
        index = int(spec.split(":")[1]) if ":" in spec and spec.split(":")[1].isdigit() else 0
        if ":" in spec and not spec.split(":")[1].isdigit():
            raise SasiInputError(f"--device {spec}: expected cuda:N with N a GPU index")
        count = torch.cuda.device_count()
        if index >= count:
            raise SasiInputError(
                f"--device {spec}: only {count} GPU(s) visible; use an index below {count}"
            )
        return torch.device(f"cuda:{index}")
    raise SasiInputError(f"--device {spec}: unknown device; use auto, cpu, cuda or cuda:N")


def use_all_cpus(device: torch.device) -> None:
    """On the CPU, one torch thread per CPU this process may run on (its affinity: a
    queue's allocation, ``taskset``), rather than torch's default. The entry points
    call it before they segment a tomogram: ``api.pick`` (so ``sasi pick`` and the
    demo), and ``api.train`` / ``sasi train`` before the score cut-offs after
    training; training itself keeps torch's default (or a data-parallel worker's
    share, ``distributed.join_process_group``)."""
    if device.type == "cpu" and hasattr(os, "sched_getaffinity"):
        torch.set_num_threads(len(os.sched_getaffinity(0)))


def training_precision(precision: TrainingPrecision, device: torch.device) -> TrainingPrecision:
    """The arithmetic of training steps on ``device``: ``auto`` is ``bf16`` autocast on a
    CPU with native bf16 dot products, AMX tiles or AVX512-BF16 (at the same accuracy
    the default run took half the time on an AMX Xeon and 0.6 of it on a Zen 4,
    ``docs/method.md``), else ``fp32`` (a GPU, or a CPU that would emulate bf16);
    ``fp32`` and ``bf16`` stand for themselves."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cpu" and native_bf16_dot_products() else "fp32"


def native_bf16_dot_products() -> bool:
    """Whether this CPU multiplies bf16 natively: AMX tiles (Intel Sapphire Rapids and
    later) or AVX512-BF16 (e.g. AMD Zen 4 and later, Intel Cooper Lake)."""
    return any(getattr(torch.cpu, check, lambda: False)()
               for check in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
