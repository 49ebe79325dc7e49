"""Form wizards of the SaSi protocols (the wand button beside a field)."""

from __future__ import annotations

from pwem.wizards import EmWizard

from .protocols import ProtSaSiTrain

RADIUS_DECIMALS = 1


class SaSiTrainClassesWizard(EmWizard):
    """Fills 'Class names' and 'Particle radii (px)' of 'train' from the chosen
    coordinate sets: one name per class (the set labels, with the group id when a
    set holds several groups) and half of each set's box size in pixels of the
    training tomograms; the user edits them from there."""

    _targets = [(ProtSaSiTrain, ["classNames", "radii"])]

    def show(self, form, *params) -> None:
        protocol = form.protocol
        sets = [pointer.get() for pointer in protocol.inputCoordinates]
        if not sets or any(s is None for s in sets):
            form.showWarning("Choose the labelled particles (coordinate sets) first.")
            return
        protocol.classNames.set("")
        protocol.radii.set("")
        names = [name for _, _, name in protocol.classPlan()]
        radii = [round(r, RADIUS_DECIMALS) for r in protocol.classRadii()]
        form.setVar("classNames", ",".join(names))
        form.setVar("radii", ",".join(f"{r:g}" for r in radii))
