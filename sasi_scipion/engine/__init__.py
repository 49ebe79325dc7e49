"""SaSi engine: few-shot, self-augmented, self-interpreted particle picking.

Plain numpy / torch / mrcfile / cc3d; nothing here imports pyworkflow, so the
engine runs alone (``sasi`` command) in any environment. The library calls
(``train``, ``pretrain``, ``pick``, ``evaluate``, ``load_model``; ``docs/api.md``)
are importable from here; they load torch on first use, so that importing this
package (as the Scipion plugin does) stays torch-free.

Conventions used throughout the engine:
- Volumes are numpy ``float32`` arrays with axis order ``(z, y, x)``.
- Coordinates are voxel units, 0-based, ``(x, y, z)`` order: the value at a
  particle centre is ``volume[round(z), round(y), round(x)]``.
- Voxel sizes are in Ångström per voxel; radii are in voxels.
"""

from __future__ import annotations

import importlib
from typing import Any

ENGINE_VERSION = "0.1.0"

API_NAMES = ("ANY_CLASS", "Evaluation", "Model", "ParticleTable", "SasiInputError",
             "SasiWarning", "TrainingSettings", "Volume", "evaluate", "load_model", "pick",
             "pretrain", "train")
"""What ``api`` exports (its ``__all__``), available from this package too."""
__all__ = ["ENGINE_VERSION", *API_NAMES]


def __getattr__(name: str) -> Any:
    """The library calls of ``api``, imported (with torch) when first asked for."""
    if name in API_NAMES:
        return getattr(importlib.import_module(".api", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
