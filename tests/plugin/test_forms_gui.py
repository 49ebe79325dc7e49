"""Protocol forms under a virtual X display: the train form opens as the project
window opens it, its wizard fills class names and radii from the chosen sets, and
'Use GPU' defaults to what the machine has (with a message naming the fix)."""

from __future__ import annotations

import pytest

from sasi_scipion.gpu_presence import gpu_present

from .xdisplay import close_toplevels, grab, is_blank, save_screenshot, settle, wait_for_window


def _train_with_labels(project, tiny_workflow):
    from sasi_scipion.protocols import ProtSaSiTrain

    train = project.newProtocol(ProtSaSiTrain)
    for cls in ("disc", "globule", "rod"):
        train.inputCoordinates.append(tiny_workflow.protocols[f"import_labels_{cls}"])
        train.inputCoordinates[-1].setExtended("outputCoordinates")
    return train


def _open_form(gui, protocol):
    """The form as the project window opens it (``FormWindow`` over the window)."""
    import pyworkflow.gui.project  # noqa: F401 (as in the GUI: form alone is a circular import)
    from pyworkflow.gui.form import FormWindow

    title = f"SaSi form {protocol.getClassName()}"
    form = FormWindow(title, protocol, lambda *args: None, gui)
    form.adjustSize()
    form.root.deiconify()
    return form, wait_for_window(title, lambda: settle(gui.root, 2))


@pytest.mark.slow
def test_train_form_wizard_fills_classes_and_radii(gui, project, tiny_workflow) -> None:
    train = _train_with_labels(project, tiny_workflow)
    try:
        form, window = _open_form(gui, train)
        settle(gui.root)
        assert set(form.wizards) >= {"classNames", "radii"}
        fields = [form.widgetDict[name] for name in ("classNames", "radii")]
        assert [field.get() for field in fields] == ["", ""]
        form.wizards["classNames"]().show(form)
        settle(gui.root)
        assert [field.get() for field in fields] == ["disc,globule,rod", "8,8,8"]
        assert train.classNames.get() == "disc,globule,rod"
        pixels = grab(window)
        assert not is_blank(pixels)
        save_screenshot(pixels, "form_train")
    finally:
        close_toplevels(gui.root)


@pytest.mark.slow
def test_pick_form_opens(gui, project, tiny_workflow) -> None:
    from sasi_scipion.protocols import ProtSaSiPick

    pick = project.newProtocol(ProtSaSiPick, inputTomograms=tiny_workflow.protocols[
        "import_tomograms"].Tomograms, inputModel=tiny_workflow.protocols["train"].outputModel)
    try:
        _, window = _open_form(gui, pick)
        settle(gui.root)
        pixels = grab(window)
        assert not is_blank(pixels)
        save_screenshot(pixels, "form_pick")
    finally:
        close_toplevels(gui.root)


def test_use_gpu_defaults_to_the_machine(project, tiny_workflow, monkeypatch) -> None:
    from sasi_scipion.protocols import ProtSaSiPick, ProtSaSiTrain, protocol_base

    assert project.newProtocol(ProtSaSiTrain).useGpu.get() == gpu_present()
    monkeypatch.setattr(protocol_base, "gpu_present", lambda: True)
    assert project.newProtocol(ProtSaSiPick).useGpu.get() is True
    monkeypatch.setattr(protocol_base, "gpu_present", lambda: False)
    assert project.newProtocol(ProtSaSiPick).useGpu.get() is False


def test_use_gpu_without_a_gpu_says_how_to_switch_it_off(project, tiny_workflow,
                                                         monkeypatch) -> None:
    from sasi_scipion.protocols import protocol_base

    train = _train_with_labels(project, tiny_workflow)
    train.useGpu.set(True)
    monkeypatch.setattr(protocol_base, "gpu_present", lambda: False)
    assert any("set 'Use GPU' to No" in e for e in train.validate())
    monkeypatch.setattr(protocol_base, "gpu_present", lambda: True)
    assert train.validate() == []
    train.useGpu.set(False)
    monkeypatch.setattr(protocol_base, "gpu_present", lambda: False)
    assert train.validate() == []
