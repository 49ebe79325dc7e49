"""The protocol names the README and docs/plugin.md give are those of the GUI's menu."""

from __future__ import annotations

import re
from pathlib import Path

from pyworkflow.plugin import Domain

REPOSITORY = Path(__file__).resolve().parents[2]
PROTOCOLS = ("ProtSaSiPretrain", "ProtSaSiTrain", "ProtSaSiPick", "ProtSaSiEvaluate")
LABEL = re.compile(r"\bsasi\w* - \w+")


def test_documented_labels_are_the_menu_labels() -> None:
    protocols = Domain.getProtocols()
    menu = {protocols[name].getClassLabel() for name in PROTOCOLS}
    for document in ("README.md", "docs/plugin.md"):
        written = set(LABEL.findall((REPOSITORY / document).read_text()))
        assert written == menu, document
