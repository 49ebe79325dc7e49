"""GUI test support: a virtual X display (Xvfb), windows found by title and grabbed,
and Tk event pumping.

Screen grabs are ``(height, width, 3)`` uint8 RGB arrays. Xvfb and xdotool are
installed by ``scripts/setup-env``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import tkinter as tk
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageGrab

SCREEN = "1600x1000x24"
WAIT_S = 60.0
"""Longest wait for a window to appear, seconds (a loaded CI machine is slow)."""
BLANK_STD = 8.0
"""A grab whose grey levels spread less than this is blank (one flat colour)."""
SCREENSHOT_DIR = os.environ.get("SASI_SCREENSHOT_DIR")
"""When set, GUI tests save their grabs here (docs/images is made this way)."""
SCREENSHOT_WIDTH = 640
"""Saved screenshots are scaled down to at most this width, pixels."""


def start_virtual_display() -> str:
    """Start Xvfb on a free display and return it (``:N``).

    Xvfb lives until this process ends: Tk keeps its X connection after its windows
    are destroyed and ends the process when the server goes away, so a watchdog
    stops Xvfb, by its PID, once this process has exited.
    """
    missing = [p for p in ("Xvfb", "xdotool") if shutil.which(p) is None]
    assert not missing, f"{', '.join(missing)} missing: run scripts/setup-env as root"
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", SCREEN,
                               "-nolisten", "tcp"], pass_fds=(write,),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as handle:
        display = f":{handle.readline().strip()}"
    subprocess.Popen(["sh", "-c", 'while kill -0 "$0" 2>/dev/null; do sleep 1; done; '
                      'kill "$1"', str(os.getpid()), str(server.pid)],
                     start_new_session=True)
    return display


def find_windows(title: str) -> list[str]:
    """X ids of the visible windows whose title contains ``title``."""
    found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", title],
                           capture_output=True, text=True)
    return found.stdout.split()


def wait_for_window(title: str, pump: Callable[[], None] = lambda: None,
                    timeout_s: float = WAIT_S) -> str:
    """The X id of the first visible window titled ``title``, calling ``pump()`` (Tk
    events of this process) while waiting. Raises AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pump()
        ids = find_windows(title)
        if ids:
            return ids[0]
        time.sleep(0.1)
    raise AssertionError(f"no window titled {title!r} appeared within {timeout_s:.0f} s")


def grab(window: str) -> np.ndarray:
    """The pixels of X window ``window`` as shown on the screen."""
    shell = subprocess.run(["xdotool", "getwindowgeometry", "--shell", window],
                           capture_output=True, text=True, check=True).stdout
    geometry = dict(line.split("=", 1) for line in shell.split())
    x, y, w, h = (int(geometry[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
    image = ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=os.environ["DISPLAY"])
    return np.asarray(image.convert("RGB"))


def grab_drawn(window: str, pump: Callable[[], None] = lambda: None,
               timeout_s: float = WAIT_S) -> np.ndarray:
    """The first grab of ``window`` that is not blank (a window maps before its
    content is drawn), calling ``pump()`` between tries. Raises AssertionError with
    the last grab's spread after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        pump()
        pixels = grab(window)
        if not is_blank(pixels) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not is_blank(pixels), f"window {window} stayed blank for {timeout_s:.0f} s"
    return pixels


def is_blank(pixels: np.ndarray) -> bool:
    """Whether a grab is one flat colour (nothing drawn)."""
    return float(pixels.mean(axis=2).std()) < BLANK_STD


def save_screenshot(pixels: np.ndarray, name: str) -> None:
    """Save a grab as ``<SASI_SCREENSHOT_DIR>/<name>.png``, scaled down, when the
    variable is set."""
    if not SCREENSHOT_DIR:
        return
    image = Image.fromarray(pixels)
    if image.width > SCREENSHOT_WIDTH:
        image = image.resize((SCREENSHOT_WIDTH, round(image.height * SCREENSHOT_WIDTH
                                                      / image.width)), Image.LANCZOS)
    Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
    image.quantize(colors=128).save(Path(SCREENSHOT_DIR) / f"{name}.png", optimize=True)


def settle(widget: tk.Misc, rounds: int = 20) -> None:
    """Process ``rounds`` batches of pending Tk events (drawing, mapping windows)."""
    for _ in range(rounds):
        widget.update()


def toplevels(widget: tk.Misc) -> list[tk.Toplevel]:
    """The ``Toplevel`` windows whose parent is ``widget``."""
    return [w for w in widget.winfo_children() if isinstance(w, tk.Toplevel)]


def close_toplevels(widget: tk.Misc) -> None:
    """Destroy the ``Toplevel`` children of ``widget`` and let Tk unmap them."""
    for window in toplevels(widget):
        window.destroy()
    settle(widget)


def widgets(widget: tk.Misc, kind: type) -> list:
    """``widget`` and its descendants that are instances of ``kind``, depth first."""
    found = [widget] if isinstance(widget, kind) else []
    for child in widget.winfo_children():
        found += widgets(child, kind)
    return found
