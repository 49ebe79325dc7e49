"""ISS / PSS self-supervision schedules, SimCLR collapse detection, weight averaging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sasi_scipion.engine.coordinates import ParticleTable
from sasi_scipion.engine.masks import sphere_label_volume
from sasi_scipion.engine.models.deepfinder import DeepFinderUNet
from sasi_scipion.engine.training import (
    COLLAPSE_STEPS,
    SIMCLR_COLLAPSE,
    SaSiTrainer,
    TrainingSettings,
    collapse_iteration,
    simclr_collapse_loss,
    simclr_collapsed,
    ssl_iterations,
)
from sasi_scipion.engine.training_data import TrainingData

CPU = torch.device("cpu")


def test_iss_runs_ssl_first() -> None:
    mask = ssl_iterations(TrainingSettings(iterations=100, ssl="iss", ssl_fraction=0.1))
    assert mask[:10].all() and not mask[10:].any()


def test_pss_spreads_ssl_blocks_over_the_first_half() -> None:
    mask = ssl_iterations(TrainingSettings(iterations=1000, ssl="pss", ssl_fraction=0.1,
                                           pss_blocks=10))
    assert mask.sum() == 100
    assert not mask[500:].any()
    starts = [i for i in range(1000) if mask[i] and (i == 0 or not mask[i - 1])]
    assert starts == list(range(0, 500, 50))


def test_none_has_no_ssl() -> None:
    assert not ssl_iterations(TrainingSettings(iterations=50, ssl="none")).any()


def _ssl_history(losses: list[float]) -> list[dict]:
    return [{"iteration": i + 1, "phase": "ssl", "loss": v, "loss_ssl": v}
            for i, v in enumerate(losses)]


def test_simclr_collapse_is_the_loss_stuck_at_ln_2b_minus_1() -> None:
    stuck = math.log(31)  # batch 16: 2 x 16 - 1 others for every view
    assert simclr_collapse_loss(16) == pytest.approx(3.434, abs=1e-3)
    assert not simclr_collapsed(_ssl_history([stuck] * (COLLAPSE_STEPS - 1)), 16)
    assert simclr_collapsed(_ssl_history([2.0] * 5 + [stuck * 0.995] * COLLAPSE_STEPS), 16)
    learning = [stuck] * (COLLAPSE_STEPS - 1) + [stuck * 0.9]
    assert not simclr_collapsed(_ssl_history(learning), 16)
    # supervised records in between do not hide a collapse
    mixed = _ssl_history([stuck] * COLLAPSE_STEPS)
    mixed.insert(3, {"iteration": 99, "phase": "supervised", "loss": 1.0, "loss_sup": 1.0})
    assert simclr_collapsed(mixed, 16)
    assert collapse_iteration(mixed) is None
    mixed[-1]["warning"] = SIMCLR_COLLAPSE
    assert collapse_iteration(mixed) == mixed[-1]["iteration"]


def _tiny_trainer(settings: TrainingSettings) -> SaSiTrainer:
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(24, 32, 32)).astype(np.float32)
    particles = ParticleTable([[10, 12, 12], [20, 20, 12]], ["a", "a"])
    labels = sphere_label_volume(volume.shape, particles, ["a"], [3])
    data = TrainingData([volume], [labels], [particles], ["a"], [3], 10.0)
    torch.manual_seed(0)
    return SaSiTrainer(DeepFinderUNet(2, width=4), data, [volume], settings, CPU)


def test_ema_saves_the_ramped_moving_average_of_the_weights() -> None:
    settings = TrainingSettings(iterations=4, ssl="none", consistency=False, infill=False,
                                batch_size=2, ema_decay=0.5)
    trainer = _tiny_trainer(settings)
    weight = trainer.model.head.weight
    expected = None
    for iteration in range(settings.iterations):
        trainer.step(iteration)
        current = weight.detach().clone()
        # the first update copies; then rate = min(0.5, (1 + n) / (10 + n))
        rate = min(0.5, (1 + iteration) / (10 + iteration))
        expected = current if expected is None else expected + (current - expected) * (1 - rate)
    averaged = trainer.trained_model().head.weight
    assert torch.allclose(averaged, expected, atol=1e-7)
    assert not torch.allclose(averaged, weight)
    plain = _tiny_trainer(TrainingSettings(iterations=1, ssl="none", consistency=False,
                                           infill=False, batch_size=2))
    assert plain.trained_model() is plain.model


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"),
                         [(True, True, "bf16"), (False, True, "bf16"), (True, False, "bf16"),
                          (False, False, "fp32")])
def test_auto_precision_trains_in_bf16_on_a_cpu_with_native_bf16_only(
        monkeypatch, amx: bool, avx512_bf16: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    settings = TrainingSettings(iterations=1, ssl="none", consistency=False, infill=False,
                                batch_size=2)
    assert settings.precision == "auto"
    assert settings.for_device(CPU).precision == expected
    assert settings.for_device(torch.device("cuda")).precision == "fp32"
    for chosen in ("fp32", "bf16"):
        assert TrainingSettings(precision=chosen).for_device(CPU).precision == chosen
    trainer = _tiny_trainer(settings)
    assert trainer.settings.precision == expected
    dtypes = []
    first_conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv3d))
    first_conv.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    trainer.step(0)
    assert dtypes and set(dtypes) == {torch.bfloat16 if expected == "bf16" else torch.float32}
