"""SaSi engine: few-shot, self-augmented, self-interpreted particle picking.

Plain numpy / torch / mrcfile / cc3d; nothing here imports pyworkflow, so the
engine runs alone (``sasi`` command) in any environment.

Conventions used throughout the engine:
- Volumes are numpy ``float32`` arrays with axis order ``(z, y, x)``.
- Coordinates are voxel units, 0-based, ``(x, y, z)`` order: the value at a
  particle centre is ``volume[round(z), round(y), round(x)]``.
- Voxel sizes are in Ångström per voxel; radii are in voxels.
"""

ENGINE_VERSION = "0.1.0"
