"""Checkpoints of a training run, so that a killed run resumes where it stopped.

A checkpoint ``M.pt.ckpt`` sits beside the model file ``M.pt`` that the run
will write. It holds the trainer's whole evolving state (:func:`evolving_state`:
weights, optimiser, every random generator, sampler orders), the loss history
and the progress log so far, and a fingerprint of the run (inputs, settings,
initial weights) so that only the same run resumes from it. It is written
atomically and read with ``weights_only=True`` like a model file, and removed
once the model file is written.

What counts as evolving state is found generically, so that attributes added
to the trainer later are saved without a change here:

- any attribute with ``state_dict`` / ``load_state_dict`` (``nn.Module`` s,
  optimisers, learning-rate schedulers ...);
- ``numpy.random.Generator`` and ``torch.Generator`` attributes;
- the private (``_name``) attributes of plain values (the trainer's own
  counters, a sampler's window order ...);
- the same, recursively, inside helper objects of this package (samplers);
- torch's global CPU and CUDA random states.

Everything else (settings, data, the device) is rebuilt from the command line.
A private attribute of a kind not listed here raises ``TypeError`` rather than
being skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import atomic_output
from .errors import SasiInputError
from .model_file import load_safely
from .mrc_io import z_slabs
from .normalize import Voxels

FORMAT = "sasi-checkpoint"
FORMAT_VERSION = 1
SUFFIX = ".ckpt"
PACKAGE = __name__.rsplit(".", 1)[0]
"""Objects of classes defined under this package are searched for state."""


def checkpoint_path(out: str | os.PathLike) -> Path:
    """``M.pt.ckpt`` beside the model file ``M.pt``."""
    out = Path(out)
    return out.with_name(out.name + SUFFIX)


def _has_state_dict(value: Any) -> bool:
    return callable(getattr(value, "state_dict", None)) and callable(
        getattr(value, "load_state_dict", None))


def _is_helper(value: Any) -> bool:
    return hasattr(value, "__dict__") and not isinstance(value, type) and \
        type(value).__module__.startswith(PACKAGE)


def _plain(value: Any, where: str) -> Any:
    """``value`` in a form ``torch.load(weights_only=True)`` reads back."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return {"ndarray": torch.from_numpy(value.copy())}
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, where) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v, where) for k, v in value.items()}
    raise TypeError(f"cannot checkpoint {where} of type {type(value).__name__}: teach "
                    "checkpoint._plain this kind of state")


def _unplain(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"ndarray"}:
        return value["ndarray"].numpy()
    if isinstance(value, (list, tuple)):
        return type(value)(_unplain(v) for v in value)
    if isinstance(value, dict):
        return {k: _unplain(v) for k, v in value.items()}
    return value


def _attributes(obj: Any, where: str, seen: set[int]) -> dict[str, Any]:
    seen.add(id(obj))
    state: dict[str, Any] = {}
    for name, value in vars(obj).items():
        path = f"{where}.{name}"
        if id(value) in seen:
            continue
        if _has_state_dict(value):
            state[name] = value.state_dict()
        elif isinstance(value, np.random.Generator):
            state[name] = value.bit_generator.state
        elif isinstance(value, torch.Generator):
            state[name] = value.get_state()
        elif _is_helper(value):
            inner = _attributes(value, path, seen)
            if inner:
                state[name] = inner
        elif name.startswith("_"):
            state[name] = _plain(value, path)
    return state


def evolving_state(obj: Any) -> dict[str, Any]:
    """Everything about ``obj`` (a trainer) that training changes (module docstring)."""
    return {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "attributes": _attributes(obj, type(obj).__name__, set()),
    }


def _restore_attributes(obj: Any, state: dict[str, Any]) -> None:
    for name, saved in state.items():
        value = getattr(obj, name)
        if _has_state_dict(value):
            value.load_state_dict(saved)
        elif isinstance(value, np.random.Generator):
            value.bit_generator.state = saved
        elif isinstance(value, torch.Generator):
            value.set_state(saved)
        elif _is_helper(value):
            _restore_attributes(value, saved)
        else:
            setattr(obj, name, _unplain(saved))


def restore_state(obj: Any, state: dict[str, Any]) -> None:
    """Put back what :func:`evolving_state` took from an ``obj`` built the same way."""
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    _restore_attributes(obj, state["attributes"])


def run_fingerprint(description: dict[str, Any], arrays: Sequence[Voxels],
                    initial: dict[str, torch.Tensor]) -> str:
    """A digest of what determines a run: its JSON-ready ``description`` (command,
    settings, classes ...), its input ``arrays`` (a ``NormalisedVolume`` by its
    normalised values; each read in ``mrc_io.z_slabs`` along its first axis) and its
    ``initial`` weights."""
    digest = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode())
    for array in arrays:
        digest.update(str(array.shape).encode())
        for planes in z_slabs(array.shape):  # in order: the whole array's digest
            digest.update(np.ascontiguousarray(array[planes]).data)
    for name, tensor in initial.items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_checkpoint(path: Path, fingerprint: str, iteration: int, trainer_state: dict,
                     history: list[dict], log: list[dict]) -> None:
    """Write a checkpoint at ``iteration`` (steps done) atomically."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "fingerprint": fingerprint,
               "iteration": iteration, "trainer": trainer_state, "history": history,
               "log": log}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: Path, fingerprint: str) -> dict[str, Any]:
    """The checkpoint at ``path`` of the run with ``fingerprint``.

    Raises:
        SasiInputError: a damaged file, or the checkpoint of another run.
    """
    fix = f"delete {path} to start again"
    payload = load_safely(path, "SaSi checkpoint", fix)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or \
            payload.get("format_version") != FORMAT_VERSION:
        raise SasiInputError(f"{path}: not a SaSi checkpoint of this version; {fix}")
    if payload.get("fingerprint") != fingerprint:
        raise SasiInputError(
            f"{path}: checkpoint of another run (other inputs, settings or seed); run the "
            f"command that made it, or {fix}"
        )
    return payload
