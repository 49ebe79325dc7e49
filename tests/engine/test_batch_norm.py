"""Batch normalisation in the DeepFinder U-Net: folded into its convolutions for
inference (the same logits in fp32, tiled and in the bf16 slab paths), statistics
summed over data-parallel shards equal to one process's, model files with and
without it, and ``--no-batch-norm``."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sasi_scipion.engine.cli import main
from sasi_scipion.engine.inference import segment_tiled
from sasi_scipion.engine.model_file import ModelMetadata, load_model, save_model
from sasi_scipion.engine.models import build_backbone, layers
from sasi_scipion.engine.models.deepfinder import DeepFinderUNet
from sasi_scipion.engine.models.layers import SharedBatchNorm3d, share_batch_statistics

CPU = torch.device("cpu")


def _trained_like(width: int = 8, seed: int = 0) -> DeepFinderUNet:
    """A batch-normalised net whose normalisations are far from the identity, as after
    training: running statistics and affine parameters of each channel drawn at random."""
    torch.manual_seed(seed)
    net = DeepFinderUNet(4, width=width, batch_norm=True)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.2, 3.0)
                module.weight.uniform_(0.5, 2.0)
                module.bias.uniform_(-0.5, 0.5)
        net.head.weight.mul_(3.0)  # probabilities that vary across the volume
        net.head.bias.zero_()
    return net.eval()


def test_every_convolution_is_followed_by_a_batch_normalisation() -> None:
    net = DeepFinderUNet(4, batch_norm=True)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    norms = [m for m in net.modules() if isinstance(m, SharedBatchNorm3d)]
    assert len(convs) == 13 and len(norms) == 12  # all but the 1x1x1 head
    assert not any(isinstance(m, nn.BatchNorm3d) for m in DeepFinderUNet(4).modules())


def test_folded_net_gives_the_same_logits_without_normalisation() -> None:
    net = _trained_like()
    plain = net.without_batch_norm()
    assert not any(isinstance(m, nn.BatchNorm3d) for m in plain.modules())
    assert not plain.batch_norm and not plain.training
    x = torch.randn(2, 1, 24, 28, 32)
    with torch.no_grad():
        expected, got = net(x), plain(x)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-5 * expected.abs().max().item(), rtol=0)
    # control: the same weights without the normalisations give other logits
    unnormalised = DeepFinderUNet(4, width=8)
    for name, target in unnormalised.named_modules():
        if isinstance(target, nn.Conv3d):
            source = net.get_submodule(_batch_norm_layout(name))
            target.load_state_dict(source.state_dict(), strict=False)  # biasless: bias stays
    with torch.no_grad():
        assert (unnormalised.eval()(x) - expected).abs().max() > 0.1 * expected.abs().max()


def _batch_norm_layout(name: str) -> str:
    """The batch-normalised net's name of the norm-free net's layer ``name``
    (``enc1.2`` -> ``enc1.3``: a normalisation after each convolution)."""
    block, _, index = name.partition(".")
    return name if not index else f"{block}.{int(index) // 2 * 3}"


def test_a_net_without_normalisation_folds_to_itself() -> None:
    net = DeepFinderUNet(4, width=8)
    assert net.without_batch_norm() is net


def test_tiled_picking_folds_exactly_in_fp32_and_closely_in_bf16(monkeypatch) -> None:
    """``segment_tiled`` folds the normalisations (fp32, several tiles: the unfolded
    net's whole-volume probabilities to float16 storage), and the folded net runs in
    the bf16 slab paths (several slabs per tile here) to bf16 rounding of them."""
    net = _trained_like()
    volume = np.random.default_rng(1).standard_normal((36, 40, 44)).astype(np.float32)
    with torch.no_grad():
        probs = torch.softmax(net(torch.from_numpy(volume)[None, None]), 1)[0].numpy()
    foreground = 1.0 - probs[0]
    assert foreground.std() > 0.01
    tiled = segment_tiled(net, volume, CPU, max_tile_voxels=20 * 24 * 24, precision="fp32")
    assert np.abs(tiled.foreground.astype(np.float32) - foreground).max() < 1e-3
    assert np.abs(tiled.scores.astype(np.float32) - probs.max(0)).max() < 1e-3
    monkeypatch.setattr(layers, "SLAB_VOXELS", 4 * 40 * 44)
    reduced = segment_tiled(net, volume, CPU, precision="bf16")
    assert np.abs(reduced.foreground.astype(np.float32) - foreground).max() < 0.2 * foreground.std()
    assert net.batch_norm and any(isinstance(m, nn.BatchNorm3d) for m in net.modules())


def test_batch_statistics_summed_over_shards_equal_the_whole_batch() -> None:
    """Two shards, each normalised by its own ``SharedBatchNorm3d`` (one per
    "process", threads here) with statistics summed across both, as
    ``Replica.sum_across`` does with gradients, equal ``nn.BatchNorm3d`` on the whole
    batch: outputs, input gradients and running statistics. One shard alone does not."""
    torch.manual_seed(0)
    whole = torch.randn(4, 6, 5, 6, 7) * 2 + 1
    upstream = torch.randn_like(whole)
    reference = nn.BatchNorm3d(6)
    whole_input = whole.clone().requires_grad_()
    expected = reference(whole_input)
    (expected * upstream).sum().backward()

    shards = [whole[:2].clone().requires_grad_(), whole[2:].clone().requires_grad_()]
    norms = [SharedBatchNorm3d(6), SharedBatchNorm3d(6)]
    barrier = threading.Barrier(2)
    parts: list[torch.Tensor | None] = [None, None]
    outputs: list[torch.Tensor | None] = [None, None]

    def run(rank: int) -> None:
        def sum_across(tensor: torch.Tensor) -> torch.Tensor:
            parts[rank] = tensor
            barrier.wait()
            total = parts[0] + parts[1]  # a differentiable all-reduce of two processes
            barrier.wait()
            return total
        share_batch_statistics(nn.Sequential(norms[rank]), sum_across)
        outputs[rank] = norms[rank](shards[rank])

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = torch.cat(outputs)
    (got * upstream).sum().backward()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([s.grad for s in shards]), whole_input.grad,
                               atol=1e-5, rtol=1e-4)
    for norm in norms:
        torch.testing.assert_close(norm.running_mean, reference.running_mean)
        torch.testing.assert_close(norm.running_var, reference.running_var)
        assert int(norm.num_batches_tracked) == 1
    alone = nn.BatchNorm3d(6)(whole[:2])
    assert (alone - expected[:2]).abs().max() > 0.1
    # unshared (one process), it is nn.BatchNorm3d
    share_batch_statistics(nn.Sequential(*norms), None)
    torch.testing.assert_close(SharedBatchNorm3d(6)(whole), nn.BatchNorm3d(6)(whole))


def _meta(**changes) -> ModelMetadata:
    values = dict(arch="deepfinder", arch_params={"batch_norm": True}, classes=["a", "b", "c"],
                  radii=[4.0, 5.0, 6.0], window=24, voxel_size=10.0,
                  normalisation="robust-zscore-v1", pretrained_only=False, iterations=3)
    values.update(changes)
    return ModelMetadata(**values)


def test_model_files_with_and_without_normalisation_load_as_written(tmp_path: Path) -> None:
    """A model file records the choice (``arch_params``) and loads back as the same net;
    a file without it (written before batch normalisation) is the paper's net."""
    net = _trained_like(width=32)
    save_model(tmp_path / "bn.pt", net, _meta())
    loaded, meta = load_model(tmp_path / "bn.pt", CPU)
    assert meta.arch_params == {"batch_norm": True} and loaded.batch_norm
    x = torch.randn(1, 1, 24, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))
    save_model(tmp_path / "old.pt", build_backbone("deepfinder", 4), _meta(arch_params={}))
    old, _ = load_model(tmp_path / "old.pt", CPU)
    assert not old.batch_norm
    assert not any(isinstance(m, nn.BatchNorm3d) for m in old.modules())


@pytest.mark.parametrize("extra, batch_norm", [((), True), (("--no-batch-norm",), False)])
def test_train_records_batch_normalisation_and_no_batch_norm_leaves_it_out(
        small_tomogram: Path, small_labels: Path, tmp_path: Path, extra, batch_norm) -> None:
    out = tmp_path / "m.pt"
    assert main(["train", "--tomogram", str(small_tomogram), "--coords", str(small_labels),
                 "--radius", "3", "--out", str(out), "--iterations", "2", "--device", "cpu",
                 "--ssl", "none", *extra]) == 0
    model, meta = load_model(out, CPU)
    assert meta.arch_params == {"batch_norm": batch_norm}
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert len(norms) == (12 if batch_norm else 0)
    # the normalisations learned running statistics from the training windows
    assert all(int(m.num_batches_tracked) >= 2 for m in norms)
    assert all(not torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in norms)


def test_no_batch_norm_is_refused_for_other_networks_and_normalised_pretrained_models(
        small_tomogram: Path, small_labels: Path, tmp_path: Path, capsys) -> None:
    common = ["--tomogram", str(small_tomogram), "--iterations", "1", "--device", "cpu",
              "--no-batch-norm"]
    assert main(["pretrain", "--out", str(tmp_path / "p.pt"), "--arch", "resunet",
                 *common]) == 2
    assert "--no-batch-norm: only the deepfinder network" in capsys.readouterr().err
    pretrained = tmp_path / "pre.pt"
    save_model(pretrained, DeepFinderUNet(2, batch_norm=True),
               _meta(classes=[], radii=[], pretrained_only=True))
    assert main(["train", "--coords", str(small_labels), "--radius", "3",
                 "--out", str(tmp_path / "m.pt"), "--pretrained", str(pretrained),
                 *common]) == 2
    err = capsys.readouterr().err
    assert "the --pretrained model has batch normalisation" in err
    assert not (tmp_path / "m.pt").exists()
