"""SaSi for Scipion: few-shot cryo-ET particle picking.

The Scipion ``Plugin`` class lives in :mod:`sasi_scipion.plugin` and is
exposed here lazily, so that the engine (``sasi_scipion.engine``, the ``sasi``
command) imports without pyworkflow or a Scipion configuration.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "Plugin":
        from .plugin import Plugin

        return Plugin
    raise AttributeError(f"module 'sasi_scipion' has no attribute {name!r}")
