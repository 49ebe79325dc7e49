"""Evaluate pairs reference classes with picked classes by name, never by order."""

from __future__ import annotations

from sasi_scipion.protocols.protocol_evaluate import match_classes


def test_same_name_or_label_suffix() -> None:
    picked = ["apoferritin", "ribosome"]  # the engine's (sorted) class order
    assert match_classes(["truth_ribosome", "apoferritin"], picked) == {
        "truth_ribosome": "ribosome", "apoferritin": "apoferritin"}


def test_longest_suffix_wins_and_unknown_names_match_nothing() -> None:
    assert match_classes(["truth_big_rod"], ["rod", "big_rod"]) == {"truth_big_rod": "big_rod"}
    assert match_classes(["membrane", "xribosome"], ["ribosome"]) == {
        "membrane": None, "xribosome": None}
