"""The machine's conv3d compute floor for picking.

Measures torch's CPU conv3d throughput (GFLOP/s; a multiply-add counts as two
FLOPs, FLOPs = 2 * Cin * Cout * k^3 * output voxels) on the layer shapes of the
default 'deepfinder' U-Net, in fp32 and, where the CPU has native bfloat16
(``torch.ops.mkldnn._is_mkldnn_bf16_supported()``), in bf16. Each shape runs in
both memory layouts (contiguous and channels-last 3D, the one inference uses);
the best is kept. Figures are the median of ``--repeats`` timed runs after
``--warmup`` untimed ones, under ``torch.inference_mode``.

Two floors follow for a whole net:
- ``gflops`` (the headline): the best sustained rate on the representative
  32 -> 32 channel 3x3x3 layer on a 1 x 32 x 64^3 input;
- ``net_layer_s_per_mvoxel``: every conv layer of the net at its own shape and
  resolution in a 128^3 tile, summed (slower: the 1 -> 32 input layer and the 1x1x1 head run
  far below peak). It is a conv-only lower bound too; ``pick_speed.py`` uses the
  headline rate, the stricter floor.

Usage: python benchmarks/conv_floor.py [--out FILE.json]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from report import write_report
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sasi_scipion.engine.models import build_backbone
from sasi_scipion.engine.models.layers import PlaneStackedInputConv3d, UpsampledConcatConv3d

ARCH = "deepfinder"
NUM_OUTPUTS = 4
EDGE = 64
"""Edge of the representative layer's input (1 x 32 x 64^3)."""
LAYER_EDGE = 128
"""Full-resolution edge for the per-layer floor: a 128^3 tile (2 M voxels, about a
CPU tile of ``segment_tiled``) puts the 1/4-resolution layers at 32^3, not a
launch-bound 16^3."""


def bf16_supported() -> bool:
    """Whether the CPU has native bfloat16 (AVX512-BF16 or AMX) for oneDNN."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def flops_per_voxel(arch: str = ARCH, num_outputs: int = NUM_OUTPUTS, edge: int = 24,
                    as_written: bool = True) -> float:
    """FLOPs of one forward pass of ``arch`` per output voxel, counted by
    ``torch.utils.flop_counter`` on one ``edge``^3 input (convolutions and matmuls,
    a multiply-add is two); ``backbones.py`` reports it per backbone.

    ``as_written`` (the floor's count): the DeepFinder convolutions that the
    engine computes another way count as the literal convolution, the net as
    the paper draws it: a decoder convolution that folds its up-sampling
    (``UpsampledConcatConv3d``, fewer FLOPs) and the input convolution over
    stacked planes and a zero channel (``PlaneStackedInputConv3d``, more).
    Otherwise the count is what the engine computes."""
    torch.manual_seed(0)
    model = build_backbone(arch, num_outputs).eval()
    literal_minus_computed = 0.0
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        if as_written:
            before: list[int] = []

            def count_from(module: nn.Module, inputs: tuple) -> None:
                before.append(counter.get_total_flops())

            def add_literal(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
                nonlocal literal_minus_computed
                literal = 2 * module.in_channels * math.prod(module.kernel_size) * output.numel()
                literal_minus_computed += literal - (counter.get_total_flops() - before.pop())

            for module in model.modules():
                if isinstance(module, (UpsampledConcatConv3d, PlaneStackedInputConv3d)):
                    module.register_forward_pre_hook(count_from)
                    module.register_forward_hook(add_literal)
        model(torch.zeros(1, 1, edge, edge, edge))
    return (counter.get_total_flops() + literal_minus_computed) / edge**3


def conv_layers(arch: str = ARCH, edge: int = LAYER_EDGE) -> list[dict]:
    """Every ``Conv3d`` of ``arch`` with its ('same' padding: output) extents when
    the net sees ``edge``^3, and its FLOPs as written (from its parameters' shapes:
    folded and zero-padded convolutions count as the literal ones)."""
    torch.manual_seed(0)
    model = build_backbone(arch, NUM_OUTPUTS).eval()
    layers: list[dict] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        layers.append({"in_channels": module.in_channels, "out_channels": module.out_channels,
                       "kernel": module.kernel_size[0], "input_zyx": list(output.shape[2:]),
                       "flops": 2 * module.in_channels * module.out_channels
                       * module.kernel_size[0] ** 3 * output[0, 0].numel()})

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv3d)]
    with torch.no_grad():
        model(torch.zeros(1, 1, edge, edge, edge))
    for handle in handles:
        handle.remove()
    return layers


def time_conv(in_channels: int, out_channels: int, kernel: int, zyx: tuple[int, int, int],
              dtype: torch.dtype, channels_last: bool, warmup: int = 3,
              repeats: int = 7, device: str = "cpu") -> float:
    """Median seconds of one ``Conv3d`` forward ('same' padding, batch 1) on ``device``
    (on a GPU each run waits for the device to finish)."""
    torch.manual_seed(0)
    conv = nn.Conv3d(in_channels, out_channels, kernel, padding=kernel // 2)
    conv = conv.to(device, dtype).eval()
    x = torch.randn(1, in_channels, *zyx, device=device).to(dtype)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last_3d)
        x = x.to(memory_format=torch.channels_last_3d)
    wait = torch.cuda.synchronize if torch.device(device).type == "cuda" else lambda: None
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            conv(x)
            wait()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def best_gflops(in_channels: int, out_channels: int, kernel: int, zyx: tuple[int, int, int],
                dtype: torch.dtype, warmup: int = 3, repeats: int = 7,
                device: str = "cpu") -> dict:
    """GFLOP/s of the faster layout (contiguous or channels-last 3D) for one layer."""
    flops = 2 * in_channels * out_channels * kernel**3 * zyx[0] * zyx[1] * zyx[2]
    rates = {}
    for channels_last in (False, True):
        seconds = time_conv(in_channels, out_channels, kernel, zyx, dtype, channels_last,
                            warmup, repeats, device)
        rates["channels_last" if channels_last else "contiguous"] = flops / seconds / 1e9
    layout = max(rates, key=rates.__getitem__)
    return {"gflops": round(rates[layout], 1), "layout": layout,
            "gflops_by_layout": {k: round(v, 1) for k, v in rates.items()}}


def measure_floor(warmup: int = 3, repeats: int = 7, per_layer: bool = True) -> dict:
    """Conv3d GFLOP/s per precision and the net's FLOPs per voxel (see module docstring).

    Returns a dict with ``flops_per_voxel``, ``bf16_supported`` and, per precision
    (``fp32``, and ``bf16`` where supported), ``gflops`` (representative layer),
    ``layout`` and, with ``per_layer``, ``net_layer_s_per_mvoxel`` (summed per-layer
    conv time per million output voxels) with its layer table.
    """
    torch.set_num_threads(torch.get_num_threads())
    result: dict = {"arch": ARCH, "flops_per_voxel": round(flops_per_voxel()),
                    "bf16_supported": bf16_supported(),
                    "representative_layer": f"Conv3d(32, 32, 3) on 1 x 32 x {EDGE}^3"}
    dtypes = {"fp32": torch.float32}
    if result["bf16_supported"]:
        dtypes["bf16"] = torch.bfloat16
    layers = conv_layers() if per_layer else []
    for name, dtype in dtypes.items():
        entry = best_gflops(32, 32, 3, (EDGE, EDGE, EDGE), dtype, warmup, repeats)
        entry["floor_voxels_per_s"] = round(entry["gflops"] * 1e9 / result["flops_per_voxel"])
        if per_layer:
            rows, total = [], 0.0
            for layer in layers:
                zyx = tuple(layer["input_zyx"])
                rate = best_gflops(layer["in_channels"], layer["out_channels"], layer["kernel"],
                                   zyx, dtype, 2, max(3, repeats // 2))
                seconds = layer["flops"] / (rate["gflops"] * 1e9)
                total += seconds
                rows.append({**layer, "gflops": rate["gflops"], "layout": rate["layout"]})
            entry["net_layer_s_per_mvoxel"] = round(total / LAYER_EDGE**3 * 1e6, 4)
            entry["net_layer_voxels_per_s"] = round(LAYER_EDGE**3 / total)
            entry["best_layer_gflops"] = max(row["gflops"] for row in rows)
            entry["layers"] = rows
        result[name] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out")
    args = parser.parse_args()
    floor = measure_floor(args.warmup, args.repeats)
    rows = [{"precision": name, **{k: v for k, v in floor[name].items() if k != "layers"}}
            for name in ("fp32", "bf16") if name in floor]
    write_report(rows, args.out, cpu_model=cpu_model(), flops_per_voxel=floor["flops_per_voxel"],
                 bf16_supported=floor["bf16_supported"],
                 representative_layer=floor["representative_layer"],
                 layers={name: floor[name]["layers"] for name in ("fp32", "bf16")
                         if name in floor})


def cpu_model() -> str:
    """The CPU as ``/proc/cpuinfo`` names it: model name, family/model and its
    bfloat16-relevant flags (else ``platform.processor()``)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    if "model name" not in fields:
        import platform

        return platform.processor() or platform.machine()
    flags = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
             if f in fields.get("flags", "").split()]
    return (f"{fields['model name']} (family {fields.get('cpu family', '?')}, model "
            f"{fields.get('model', '?')}; {' '.join(flags) or 'no AVX-512'})")

if __name__ == "__main__":
    main()
