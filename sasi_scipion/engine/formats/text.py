"""Field-level helpers shared by the text coordinate formats."""

from __future__ import annotations


def is_number(text: str) -> bool:
    """Whether ``text`` parses as a float (``nan`` and ``inf`` included)."""
    try:
        float(text)
    except ValueError:
        return False
    return True
