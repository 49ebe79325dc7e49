"""Whether this machine shows an NVIDIA GPU, without torch or CUDA (form defaults).

The GUI builds forms on the machine it runs on, so the default of 'Use GPU' is
this machine's answer; a queue's nodes may differ (the user switches it on there).
"""

from __future__ import annotations

import glob
import os

NVIDIA_DEVICE_GLOB = "/dev/nvidia[0-9]*"
"""Device files the NVIDIA driver creates, one per GPU."""
NVIDIA_PROC_GPUS = "/proc/driver/nvidia/gpus"
"""One entry per GPU the driver sees."""


def gpu_present() -> bool:
    """True when the NVIDIA driver shows at least one GPU here and CUDA_VISIBLE_DEVICES
    does not hide them all (set but empty)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    listed = os.path.isdir(NVIDIA_PROC_GPUS) and bool(os.listdir(NVIDIA_PROC_GPUS))
    return listed or bool(glob.glob(NVIDIA_DEVICE_GLOB))
