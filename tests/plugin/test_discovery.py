"""pyworkflow finds the plugin, its protocols, objects and viewers."""

from __future__ import annotations

from pyworkflow.plugin import Domain


def test_plugin_and_protocols_are_discovered() -> None:
    plugin = Domain.getPluginModule("sasi_scipion")
    assert plugin.Plugin.getVar("SASI_ENV_ACTIVATION") == ""
    protocols = Domain.getProtocols()
    for name in ("ProtSaSiPretrain", "ProtSaSiTrain", "ProtSaSiPick", "ProtSaSiEvaluate"):
        assert name in protocols
    assert "SaSiModel" in Domain.getObjects()
    viewers = Domain.getViewers()
    assert {"SaSiTrainingViewer", "SaSiPicksViewer", "SaSiEvaluationViewer"} <= set(viewers)


def test_sasi_program_honours_a_separate_environment(monkeypatch) -> None:
    from sasi_scipion.plugin import Plugin

    assert Plugin.getSasiProgram().endswith("sasi")
    monkeypatch.setitem(Plugin._vars, "SASI_ENV_ACTIVATION", ". /opt/sasi/bin/activate")
    assert Plugin.getSasiProgram() == ". /opt/sasi/bin/activate && sasi"
    # runJob's /bin/sh may be dash, which has no 'source': it becomes '.'
    monkeypatch.setitem(Plugin._vars, "SASI_ENV_ACTIVATION", "source /opt/sasi/bin/activate")
    assert Plugin.getSasiProgram() == ". /opt/sasi/bin/activate && sasi"


def test_citation_is_known() -> None:
    from sasi_scipion import bibtex

    assert "Adethya2025" in bibtex.__doc__ and "2505.19948" in bibtex.__doc__
