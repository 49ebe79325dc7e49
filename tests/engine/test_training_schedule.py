"""ISS / PSS self-supervision schedules."""

from __future__ import annotations

from sasi_scipion.engine.training import TrainingSettings, ssl_iterations


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
