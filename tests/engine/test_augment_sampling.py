"""Spatial augmentations and window sampling: volume and labels move together."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sasi_scipion.engine.augment import (
    ExactTransform,
    band_limit,
    center_crop,
    random_exact_transform,
    rotate_about_z,
)
from sasi_scipion.engine.coordinates import ParticleTable, write_particles
from sasi_scipion.engine.limits import context_size
from sasi_scipion.engine.masks import sphere_label_volume
from sasi_scipion.engine.mrc_io import write_volume
from sasi_scipion.engine.sampling import (
    SupervisedSampler,
    UnlabelledSampler,
    crop_padded,
    grid_starts,
    simclr_views,
)
from sasi_scipion.engine.training_data import ANY_CLASS, load_training_data


def test_context_size_holds_a_rotated_window() -> None:
    assert context_size(24) == 34
    assert context_size(24) >= math.sqrt(2) * 24


def test_quarter_turn_rotation_equals_rot90() -> None:
    x = torch.randn(2, 1, 6, 8, 8)
    rotated = rotate_about_z(x, torch.full((2,), math.pi / 2))
    assert torch.allclose(rotated, torch.rot90(x, 1, dims=(-1, -2)), atol=1e-5)


def test_rotation_moves_an_off_centre_point_counter_clockwise() -> None:
    x = torch.zeros(1, 1, 1, 33, 33)
    x[0, 0, 0, 16, 26] = 1.0  # on +x of the centre (16, 16)
    rotated = rotate_about_z(x, [math.pi / 2], mode="nearest")
    assert rotated[0, 0, 0, 26, 16] == 1.0  # now on +y
    assert rotated.sum() == 1.0


def test_nearest_rotation_keeps_integer_labels() -> None:
    labels = torch.randint(0, 4, (1, 1, 4, 10, 10))
    rotated = rotate_about_z(labels, [0.7], mode="nearest")
    assert rotated.dtype == labels.dtype
    assert set(rotated.unique().tolist()) <= {0, 1, 2, 3}


def test_exact_transform_permutes_voxels_and_randomness() -> None:
    # Distinct values per sample: a voxel-exact transform moves each voxel to a new
    # place, losing and duplicating none (its values are a permutation of the input's).
    x = torch.arange(3 * 2 * 5 * 6 * 6, dtype=torch.float32).reshape(3, 2, 5, 6, 6)
    rng = np.random.default_rng(1)
    transforms = {random_exact_transform(rng) for _ in range(40)}
    assert ExactTransform((False, False, False), 0) not in transforms
    assert len(transforms) > 10
    for transform in transforms:
        out = transform.apply(x)
        assert out.shape == x.shape
        assert torch.equal(out.flatten(-3).sort().values, x.flatten(-3))


def test_center_crop_takes_the_middle() -> None:
    x = torch.arange(6**3, dtype=torch.float32).reshape(1, 1, 6, 6, 6)
    assert torch.equal(center_crop(x, 2), x[..., 2:4, 2:4, 2:4])
    with pytest.raises(ValueError):
        center_crop(x, 8)


def test_crop_padded_centres_and_pads() -> None:
    volume = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7) + 1
    crop = crop_padded(volume, (0, 3, 6), 4)
    assert crop[2, 2, 2] == volume[0, 3, 6]
    assert crop[0].sum() == 0 and crop[:, :, 3].sum() == 0  # past the volume: zeros


def test_grid_starts_cover_the_axis() -> None:
    assert grid_starts(60, 24, 12) == [0, 12, 24, 36]
    assert grid_starts(50, 24, 12) == [0, 12, 24, 26]
    assert grid_starts(10, 24, 12) == [0]


@pytest.fixture
def labelled_volume() -> tuple[np.ndarray, np.ndarray, ParticleTable]:
    """A volume whose intensity equals its label map: any misalignment shows."""
    particles = ParticleTable([[20, 20, 20], [40, 30, 24], [12, 40, 16]], ["a", "a", "b"])
    labels = sphere_label_volume((40, 56, 56), particles, ["a", "b"], [5, 4])
    return labels.astype(np.float32), labels, particles


def test_supervised_windows_keep_volume_and_labels_aligned(labelled_volume) -> None:
    volume, labels, particles = labelled_volume
    sampler = SupervisedSampler([volume], [labels], [particles], ["a", "b"], window=24)
    x, y = sampler.sample(32, np.random.default_rng(0))
    assert x.shape == (32, 1, 24, 24, 24) and x.dtype == torch.float32
    assert y.shape == (32, 24, 24, 24) and y.dtype == torch.int64
    # Bilinear rotation blurs edges only: where the intensity is (nearly) an
    # integer it must equal the label moved by the same transform.
    crisp = (x[:, 0] - x[:, 0].round()).abs() < 0.05
    agreement = (x[:, 0].round().long() == y)[crisp].float().mean()
    assert agreement > 0.97
    assert (y > 0).any(dim=(1, 2, 3)).float().mean() > 0.5  # windows near particles


def test_band_limit_keeps_coarse_detail_and_removes_fine_detail() -> None:
    """A wave of 8 voxels per cycle survives a factor of 2 (cut-off 4 voxels per
    cycle), one of 3 voxels per cycle goes, and what stays is scaled back to the
    sample's spread (two unit waves: sqrt 2); a factor of 1 changes nothing."""
    x = torch.arange(24, dtype=torch.float64)
    slow, fast = torch.cos(2 * math.pi * x / 8), torch.cos(2 * math.pi * x / 3)
    volume = (slow + fast).expand(2, 1, 24, 24, 24).float()
    out = band_limit(volume, np.array([1.0, 2.0]))
    assert torch.equal(out[0], volume[0])
    np.testing.assert_allclose(out[1, 0, 5, 7].numpy(), math.sqrt(2) * slow.numpy(), atol=1e-5)
    assert float(out[1].std()) == pytest.approx(float(volume[1].std()), rel=1e-5)
    assert out.dtype == volume.dtype and out.shape == volume.shape


def test_band_limited_windows_are_the_same_windows_with_less_detail(labelled_volume) -> None:
    """With ``band_limit`` 2, the same draws give the same label maps; about half the
    windows lose detail (their sharp label edges), the others are unchanged."""
    volume, labels, particles = labelled_volume
    plain = SupervisedSampler([volume], [labels], [particles], ["a", "b"], window=24)
    limited = SupervisedSampler([volume], [labels], [particles], ["a", "b"], window=24,
                                band_limit=2.0)
    x, y = plain.sample(40, np.random.default_rng(5))
    xb, yb = limited.sample(40, np.random.default_rng(5))
    assert torch.equal(y, yb)
    changed = (xb - x).abs().amax(dim=(1, 2, 3, 4)) > 1e-4
    assert 10 <= int(changed.sum()) <= 30
    edges = [float((v[:, 0].diff(dim=-1) ** 2).mean()) for v in (x[changed], xb[changed])]
    assert edges[1] < 0.9 * edges[0]  # less fine detail where band-limited


def test_supervised_sampling_is_class_balanced_and_seeded(labelled_volume) -> None:
    volume, labels, particles = labelled_volume
    sampler = SupervisedSampler([volume], [labels], [particles], ["a", "b"], window=24)
    _, y = sampler.sample(200, np.random.default_rng(3))
    counts = [(y == c).any(dim=(1, 2, 3)).sum().item() for c in (1, 2)]
    assert min(counts) > 60  # class b has one particle, a has two: still balanced
    x1, y1 = sampler.sample(4, np.random.default_rng(7))
    x2, y2 = sampler.sample(4, np.random.default_rng(7))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_background_points_are_sampled_as_one_more_class(labelled_volume) -> None:
    volume, labels, particles = labelled_volume
    volume = volume.copy()
    volume[28:31, 42:45, 42:45] = 7.0  # a marked distractor around (x, y, z) = (43, 43, 29)
    negatives = [ParticleTable([[43, 43, 29]], ["background"])]

    def marked_share(sampler: SupervisedSampler) -> float:
        x, y = sampler.sample(300, np.random.default_rng(5))
        marked = (x[:, 0] > 6.5).any(dim=(1, 2, 3))
        assert (y[x[:, 0] > 6.5] == 0).all()  # taught as background
        return marked.float().mean().item()

    with_points = marked_share(SupervisedSampler([volume], [labels], [particles], ["a", "b"],
                                                 window=24, negatives=negatives))
    without = marked_share(SupervisedSampler([volume], [labels], [particles], ["a", "b"],
                                             window=24))
    # one draw in three (two classes + background) centres a window within W/2 of it
    assert with_points > 0.28 and with_points > without + 0.15


def test_training_data_keeps_background_points_apart(tmp_path) -> None:
    tomogram = tmp_path / "t.mrc"
    write_volume(tomogram, np.random.default_rng(0).normal(size=(32, 48, 48))
                 .astype(np.float32), 10.0)
    coords = tmp_path / "l.tsv"
    write_particles(coords, ParticleTable([[10, 12, 8], [30, 20, 16], [40, 40, 20], [5, 40, 9]],
                                          ["a", "b", "background", "background"]))
    data = load_training_data([str(tomogram)], [str(coords)], {ANY_CLASS: 3.0}, 24)
    assert data.class_names == ["a", "b"]
    assert data.negatives[0].xyz.tolist() == [[40, 40, 20], [5, 40, 9]]
    assert set(np.unique(data.label_maps[0])) == {0, 1, 2}  # no sphere for background


def test_supervised_sampler_needs_every_class() -> None:
    particles = ParticleTable([[5, 5, 5]], ["a"])
    with pytest.raises(ValueError, match="'b'"):
        SupervisedSampler([np.zeros((8, 8, 8), np.float32)], [np.zeros((8, 8, 8), np.uint8)],
                          [particles], ["a", "b"])


def test_unlabelled_sampler_visits_every_grid_window_once_per_pass() -> None:
    volume = np.arange(36 * 36 * 36, dtype=np.float32).reshape(36, 36, 36)
    sampler = UnlabelledSampler([volume], window=24, stride=12)
    assert len(sampler) == 8
    crops = sampler.sample(8, np.random.default_rng(0))
    assert crops.shape == (8, 1, 34, 34, 34)
    centres = {float(c[0, 17, 17, 17]) for c in crops}
    assert len(centres) == 8  # eight different windows, none repeated


def test_simclr_views_are_two_different_views_of_each_window() -> None:
    rng = np.random.default_rng(0)
    noise = torch.randn(6, 1, 34, 34, 34, generator=torch.Generator().manual_seed(0))
    crops = noise + torch.arange(6.0).view(6, 1, 1, 1, 1)  # window i has mean about i
    view1, view2 = simclr_views(crops, 24, rng)
    assert view1.shape == view2.shape == (6, 1, 24, 24, 24)
    assert not torch.allclose(view1, view2)
    # Rotation, z shift and flips preserve the set of values up to interpolation:
    # the two views of a window share its mean; views of different windows do not.
    same = (view1.mean(dim=(1, 2, 3, 4)) - view2.mean(dim=(1, 2, 3, 4))).abs().mean()
    other = (view1.mean(dim=(1, 2, 3, 4)) - view2.roll(1, 0).mean(dim=(1, 2, 3, 4))).abs().mean()
    assert same < 0.1 < 0.9 < other
