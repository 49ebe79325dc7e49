"""The backbone registry: shapes, embeddings and sizes of every backbone; the
DeepFinder decoder's folded up-sampling against the literal one; exact tiled
inference and a true receptive margin for the residual U-Net; the ViT's fixed
window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sasi_scipion.engine.errors import SasiInputError
from sasi_scipion.engine.inference import plan_tiles, segment_tiled
from sasi_scipion.engine.models import BACKBONES, build_backbone, layers
from sasi_scipion.engine.models.deepfinder import DeepFinderUNet
from sasi_scipion.engine.models.layers import PlaneStackedInputConv3d
from sasi_scipion.engine.models.resunet import ResUNet

CPU = torch.device("cpu")
WINDOW = 24
ARCHS = ["deepfinder", "resunet", "vit"]
PARAMETER_RANGES = {
    "deepfinder": (0.85e6 * 0.95, 0.85e6 * 1.05),
    "resunet": (4e6, 9e6),
    "vit": (3e6, 4.5e6),
}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module", params=ARCHS)
def backbone(request) -> tuple[str, torch.nn.Module]:
    torch.manual_seed(0)
    return request.param, build_backbone(request.param, 4).eval()


def test_registry_lists_the_three_backbones() -> None:
    assert set(ARCHS) <= set(BACKBONES)


def test_unknown_architecture_is_an_input_error() -> None:
    with pytest.raises(SasiInputError, match="resunet.*vit"):
        build_backbone("transunet", 4)


def test_logits_shape_and_attributes(backbone) -> None:
    arch, net = backbone
    assert net.num_outputs == 4
    assert WINDOW % net.size_multiple == 0
    assert net.receptive_margin >= 0
    assert net.fixed_window == (WINDOW if arch == "vit" else None)
    with torch.no_grad():
        out = net(torch.randn(2, 1, WINDOW, WINDOW, WINDOW))
    assert out.shape == (2, 4, WINDOW, WINDOW, WINDOW)
    assert torch.isfinite(out).all()


def test_encode_matches_the_embedding_attributes(backbone) -> None:
    _, net = backbone
    with torch.no_grad():
        emb = net.encode(torch.randn(2, 1, WINDOW, WINDOW, WINDOW))
    side = WINDOW // net.embedding_stride
    assert WINDOW % net.embedding_stride == 0
    assert emb.shape == (2, net.embedding_channels, side, side, side)
    # The SimCLR projection head's in_features.
    assert emb.flatten(1).shape[1] == net.embedding_channels * side**3


def test_parameter_counts(backbone) -> None:
    arch, net = backbone
    low, high = PARAMETER_RANGES[arch]
    assert low <= _count(net) <= high, f"{arch}: {_count(net)} parameters"


def test_every_parameter_gets_a_gradient(backbone) -> None:
    arch, net = backbone
    net.zero_grad()
    x = torch.randn(1, 1, WINDOW, WINDOW, WINDOW)
    loss = net(x).logsumexp(1).mean() + net.encode(x).square().mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{arch}: {name}"
        assert p.grad.abs().sum() > 0, f"{arch}: {name} gets no gradient"
    net.zero_grad()


def _literal_deepfinder(net: DeepFinderUNet, x: torch.Tensor) -> torch.Tensor:
    """The DeepFinder U-Net as the paper draws it: up-sample, concatenate, convolve."""
    s1, s2, low = net.features(x)
    for block, skip in ((net.dec2, s2), (net.dec1, s1)):
        up = torch.nn.functional.interpolate(low, scale_factor=2, mode="nearest")
        low = torch.nn.functional.conv3d(torch.cat([up, skip], 1), block[0].weight,
                                         block[0].bias, padding=1)
        for layer in block[1:]:
            low = layer(low)
    return net.head(low)


def test_deepfinder_folded_upsampling_equals_upsample_concatenate_convolve() -> None:
    """The decoder convolves the low-resolution tensor with 2x2x2 parity kernels
    (without gradients) or transposes a 4x4x4 one (under autograd) instead of
    up-sampling and concatenating: same logits both ways and same gradients. A
    wrong fold fails: with the parities swapped the logits move by 4e-3, 400
    times the tolerance."""
    torch.manual_seed(0)
    net = DeepFinderUNet(3, width=8)
    x = torch.randn(2, 1, 20, 28, 36, requires_grad=True)
    folded = net(x)
    with torch.no_grad():
        interleaved = net(x)
    literal = _literal_deepfinder(net, x)
    assert folded.shape == interleaved.shape == literal.shape == (2, 3, 20, 28, 36)
    assert torch.allclose(folded, literal, atol=1e-5, rtol=0)
    assert torch.allclose(interleaved, literal, atol=1e-5, rtol=0)
    assert literal.abs().max() > 0.05
    weights = net.dec1[0].weight
    grads = [torch.autograd.grad(out.square().sum(), (x, weights)) for out in (folded, literal)]
    for folded_grad, literal_grad in zip(*grads):
        assert torch.allclose(folded_grad, literal_grad, atol=1e-4 * literal_grad.abs().max())


def test_plane_stacked_input_convolution_equals_the_plain_one() -> None:
    """The input layer convolves three z-shifted copies of the input with the
    kernel's z-taps: the same output and gradients as the 3x3x3 convolution of
    the single channel, whole or plane range by plane range."""
    torch.manual_seed(0)
    conv = PlaneStackedInputConv3d(1, 8, 3, padding=1)
    x = torch.randn(2, 1, 6, 10, 12, requires_grad=True)
    stacked = conv(x)
    plain = torch.nn.functional.conv3d(x, conv.weight, conv.bias, padding=1)
    assert stacked.shape == plain.shape == (2, 8, 6, 10, 12)
    assert torch.allclose(stacked, plain, atol=1e-6, rtol=0)
    for start, stop in ((0, 6), (0, 2), (2, 5), (4, 6)):
        assert torch.allclose(conv.output_planes(x, start, stop), plain[:, :, start:stop],
                              atol=1e-6, rtol=0)
    grads = [torch.autograd.grad(out.square().sum(), (x, conv.weight)) for out in (stacked, plain)]
    for stacked_grad, plain_grad in zip(*grads):
        assert stacked_grad.shape == plain_grad.shape
        assert torch.allclose(stacked_grad, plain_grad, atol=1e-5 * plain_grad.abs().max())
    with pytest.raises(ValueError, match="1-channel 3x3x3"):
        PlaneStackedInputConv3d(2, 8, 3, padding=1)


def _bf16_deepfinder() -> DeepFinderUNet:
    torch.manual_seed(0)
    net = DeepFinderUNet(4).eval()
    # larger biases, so that a wrong zero padding between slabs shows
    for module in net.modules():
        if isinstance(module, torch.nn.Conv3d):
            torch.nn.init.uniform_(module.bias, -0.3, 0.3)
    return net.to(torch.bfloat16).to(memory_format=torch.channels_last_3d)


def test_slabbed_full_resolution_layers_equal_the_layer_by_layer_pass(monkeypatch) -> None:
    """In reduced-precision CPU inference the full-resolution encoder, and the last
    decoder stage and head, run in z-slabs (4 planes here, several slabs per
    tensor): the same skip tensors, embedding and logits as the whole tensors
    (training's path), for a whole volume and for regions inside and at its faces."""
    monkeypatch.setattr(layers, "SLAB_VOXELS", 4 * 20 * 24)
    net = _bf16_deepfinder()
    x = torch.randn(1, 1, 36, 20, 24).to(torch.bfloat16)
    regions = [((0, 36), (0, 20), (0, 24)), ((8, 28), (4, 16), (4, 20)), ((0, 12), (8, 20), (0, 8))]
    with torch.inference_mode():
        slabbed = net.features(x)
        slabbed_logits = [net.decode_region(slabbed, region) for region in regions]
    with torch.enable_grad():  # gradients on: the layer-by-layer path
        whole = net.features(x)
        whole_logits = [net.decode_region(whole, region) for region in regions]
    for got, expected in zip([*slabbed, *slabbed_logits], [*whole, *whole_logits]):
        assert got.shape == expected.shape
        scale = expected.float().abs().max().item()
        assert scale > 0.05
        assert torch.allclose(got.float(), expected.float(), atol=1e-2 * scale, rtol=0)
    # control: the slabs' neighbouring planes matter (slabs computed on their own differ)
    with torch.inference_mode():
        alone = torch.cat([net.enc1(x[:, :, z:z + 4]) for z in range(0, 36, 4)], dim=2)
    assert (alone.float() - whole[0].float()).abs().max() > 0.1 * whole[0].float().abs().max()


def test_only_reduced_precision_cpu_inference_runs_in_slabs() -> None:
    x = torch.zeros(1, 1, 8, 8, 8)
    with torch.inference_mode():
        assert layers.runs_in_slabs(x.to(torch.bfloat16))
        assert layers.runs_in_slabs(x.to(torch.float16))
        assert not layers.runs_in_slabs(x)
    assert not layers.runs_in_slabs(x.to(torch.bfloat16))  # gradients enabled: training


def test_resunet_has_no_batch_or_spatial_statistics_normalisation() -> None:
    norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm,
             torch.nn.modules.instancenorm._InstanceNorm, torch.nn.LayerNorm)
    assert not any(isinstance(m, norms) for m in ResUNet(4).modules())
    # Hence a window's output does not depend on the rest of the batch.
    torch.manual_seed(1)
    net = ResUNet(4, width=8).eval()
    x = torch.randn(3, 1, WINDOW, WINDOW, WINDOW)
    with torch.no_grad():
        assert torch.allclose(net(x)[:1], net(x[:1]), atol=1e-5)


# -- residual U-Net: receptive margin and exact tiled inference ---------------


@pytest.fixture(scope="module")
def narrow_resunet() -> ResUNet:
    """A narrow residual U-Net: same receptive field as the default width."""
    torch.manual_seed(0)
    return ResUNet(4, width=4).eval()


def _probe_shape(axis: int, long: int) -> tuple[int, ...]:
    """A volume long along ``axis`` (fast; the net is the same along every axis)."""
    return tuple(long if a == axis else 16 for a in range(3))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_resunet_receptive_margin_is_an_upper_bound(narrow_resunet, axis) -> None:
    """Perturbing one input voxel changes only outputs within the margin of it
    (all four phases of the stride-4 grid); the bound is tight."""
    net = narrow_resunet.double()
    margin = net.receptive_margin
    x = torch.randn(1, 1, *_probe_shape(axis, 2 * margin + 16), dtype=torch.float64)
    reach = 0
    with torch.no_grad():
        base = net(x)[0]
        for phase in range(4):
            voxel = [8, 8, 8]
            voxel[axis] = margin + 4 + phase
            bumped = x.clone()
            bumped[(0, 0, *voxel)] += 10.0
            changed = torch.nonzero((net(bumped)[0] - base).abs().amax(0) > 1e-9)
            reach = max(reach, int((changed[:, axis] - voxel[axis]).abs().max()))
    net.float()
    assert margin - 4 <= reach <= margin


def test_resunet_receptive_margin_from_input_gradients(narrow_resunet, axis: int = 0) -> None:
    """The input-gradient support of one output voxel, per phase, stays within the margin."""
    net = narrow_resunet.double()
    margin = net.receptive_margin
    reach = 0
    for phase in range(4):
        x = torch.randn(1, 1, *_probe_shape(axis, 2 * margin + 16), dtype=torch.float64,
                        requires_grad=True)
        voxel = [8, 8, 8]
        voxel[axis] = margin + 4 + phase
        net(x)[(0, slice(None), *voxel)].sum().backward()
        support = torch.nonzero(x.grad[0, 0])
        reach = max(reach, int((support[:, axis] - voxel[axis]).abs().max()))
    net.float()
    assert margin - 4 <= reach <= margin


@pytest.fixture(scope="module")
def tiny_resunet() -> ResUNet:
    """The narrowest residual U-Net, for the (slow) tiled-inference comparisons."""
    torch.manual_seed(0)
    return ResUNet(4, width=2).eval()


def _whole_volume_probs(net: torch.nn.Module, volume: np.ndarray) -> np.ndarray:
    m = net.size_multiple
    padded = np.zeros([-(-n // m) * m for n in volume.shape], np.float32)
    padded[: volume.shape[0], : volume.shape[1], : volume.shape[2]] = volume
    with torch.no_grad():
        probs = torch.softmax(net(torch.from_numpy(padded)[None, None]), 1)[0].numpy()
    return probs[:, : volume.shape[0], : volume.shape[1], : volume.shape[2]]


def _mismatch(seg, probs: np.ndarray) -> tuple[float, int]:
    """Largest score difference and the number of decided voxels whose label differs."""
    best = np.sort(probs, axis=0)
    decided = (best[-1] - best[-2]) > 1e-4  # argmax ties may flip with rounding
    score_error = float(np.abs(seg.scores.astype(np.float32) - probs.max(0)).max())
    wrong = int((seg.labels[decided] != probs.argmax(0)[decided]).sum())
    return score_error, wrong


TILED_SHAPE = (24, 104, 100)  # tiled 2 x 2 along y and x: seams on both axes
TILE_BUDGET = 24 * 64 * 64


def test_resunet_tiled_inference_equals_one_whole_volume_pass(tiny_resunet) -> None:
    net = tiny_resunet
    volume = np.random.default_rng(0).normal(size=TILED_SHAPE).astype(np.float32)
    margin = -(-net.receptive_margin // net.size_multiple) * net.size_multiple
    assert len(plan_tiles(volume.shape, margin, net.size_multiple, TILE_BUDGET)) == 4
    seg = segment_tiled(net, volume, CPU, max_tile_voxels=TILE_BUDGET, precision="fp32")
    probs = _whole_volume_probs(net, volume)
    assert seg.labels.shape == volume.shape
    assert len(np.unique(seg.labels)) > 1  # the output really depends on the input
    score_error, wrong = _mismatch(seg, probs)
    # float16 storage of the score bounds the difference (about 5e-4 near 1).
    assert score_error < 1e-3
    assert wrong == 0


def test_tiling_with_a_too_small_margin_is_caught(tiny_resunet) -> None:
    """Control: the same comparison fails when tiles crop less than the receptive field."""

    class ShortSighted(ResUNet):
        receptive_margin = 8

    net = ShortSighted(4, width=2)
    net.load_state_dict(tiny_resunet.state_dict())
    net.eval()
    volume = np.random.default_rng(0).normal(size=TILED_SHAPE).astype(np.float32)
    seg = segment_tiled(net, volume, CPU, max_tile_voxels=TILE_BUDGET, precision="fp32")
    score_error, wrong = _mismatch(seg, _whole_volume_probs(net, volume))
    assert score_error > 1e-3 or wrong > 0


# -- ViT: one input size ------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 32, 32, 32), (1, 1, 24, 24, 20), (1, 24, 24, 24)])
def test_vit_rejects_other_input_sizes(shape) -> None:
    net = build_backbone("vit", 4)
    with pytest.raises(ValueError, match="24"):
        net(torch.zeros(shape))
    with pytest.raises(ValueError, match="24"):
        net.encode(torch.zeros(shape))


def test_vit_segments_a_volume_by_whole_windows() -> None:
    torch.manual_seed(0)
    net = build_backbone("vit", 4, dim=48, depth=1, heads=3)
    volume = np.random.default_rng(0).normal(size=(30, 36, 20)).astype(np.float32)
    seg = segment_tiled(net, volume, CPU, precision="fp32")
    assert seg.labels.shape == volume.shape
    assert np.isfinite(seg.scores.astype(np.float32)).all()
    assert (seg.scores.astype(np.float32) >= 0.25 - 1e-3).all()  # a max over 4 classes
