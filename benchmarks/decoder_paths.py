"""Training steps with the decoder's two ways of convolving the up-sampled tensor.

``UpsampledConcatConv3d`` computes the up-sampled part of a decoder stage's first
convolution as a stride-2 transposed convolution under autograd (training) and as
the parity interleave (``add_upsampled_part``) without gradients (inference). This
times default ``SaSiTrainer.step`` calls with each path in turn, in one process on
one trainer (the demo's data, as ``train_speed.py``): ``interleave`` makes training
use inference's path too, ``transposed`` is what training runs. Each of ``--rounds``
rounds times ``--iterations`` steps of each kind (supervised with consistency, the
first half of a run; supervised, the second half) after one warm-up step, the
paths' order reversed every round.

Usage: python benchmarks/decoder_paths.py [--iterations 5] [--rounds 3] --out FILE.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from conv_floor import cpu_model
from report import write_report
from train_speed import default_trainer, prepare

from sasi_scipion.engine.models.layers import UpsampledConcatConv3d

TRAINING_FORWARD = UpsampledConcatConv3d.forward


def interleaved_forward(self: UpsampledConcatConv3d, low: torch.Tensor, skip: torch.Tensor,
                        window: tuple[slice, ...] | None = None) -> torch.Tensor:
    """``UpsampledConcatConv3d.forward`` through the parity interleave, with gradients."""
    out = torch.nn.functional.conv3d(skip, self.weight[:, low.shape[1]:], self.bias, padding=1)
    self.add_upsampled_part(out, low, window)
    return out


PATHS = {"interleave": interleaved_forward, "transposed": TRAINING_FORWARD}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=5, help="timed steps per kind")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sasi-decoder-paths-") as folder:
        work = Path(folder)
        trainer = default_trainer(work, prepare(work), torch.device("cpu"))
        total = trainer.settings.iterations
        first_step = {"supervised+consistency": int(round(trainer.settings.ssl_fraction * total)),
                      "supervised": total // 2}
        seconds: dict[str, dict[str, list[float]]] = {p: {k: [] for k in first_step}
                                                      for p in PATHS}
        for round_ in range(args.rounds):
            for path in list(PATHS)[::-1 if round_ % 2 else 1]:
                UpsampledConcatConv3d.forward = PATHS[path]  # type: ignore[method-assign]
                for kind, first in first_step.items():
                    trainer.step(first)
                    start = time.perf_counter()
                    for i in range(args.iterations):
                        trainer.step(first + 1 + i)
                    seconds[path][kind].append(
                        round((time.perf_counter() - start) / args.iterations, 3))
                print(f"round {round_ + 1}, {path}: {seconds[path]}")
        UpsampledConcatConv3d.forward = TRAINING_FORWARD  # type: ignore[method-assign]
    medians = {p: {k: statistics.median(v) for k, v in kinds.items()}
               for p, kinds in seconds.items()}
    ratios = {k: round(medians["transposed"][k] / medians["interleave"][k], 3)
              for k in first_step}
    write_report([], args.out, cpu_model=cpu_model(), seconds_per_step=seconds,
                 median_seconds_per_step=medians, transposed_over_interleave=ratios)


if __name__ == "__main__":
    main()
