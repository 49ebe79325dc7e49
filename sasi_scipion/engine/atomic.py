"""Safe outputs: write-then-rename, and the checks every command makes on its output
paths before it starts work."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import SasiInputError

PART_MARK = ".part"
"""Temporary files are ``.<name>.<random>.part<suffix>`` beside their final path."""
FILE_MODE = 0o666
"""Mode a new file asks for; the process umask takes its bits away, as for any tool."""


def _partial_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{PART_MARK}{final.suffix}")


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary file keeps the final suffix (``.mrc``, ``.pt`` ...) so that
    writers that look at the extension behave, and it is created with
    :data:`FILE_MODE` less the umask (group-readable outputs in a shared project
    folder when the umask says so). On any exception the temporary file is
    removed and ``path`` is left untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = _partial_name(final)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_partials(path: str | os.PathLike) -> int:
    """Delete the temporary files that a killed writer of ``path`` left beside it (a
    ``kill -9`` or a node failure runs no clean-up); return how many."""
    final = Path(path)
    stale = list(final.parent.glob(f".{final.name}.*{PART_MARK}{final.suffix}"))
    for partial in stale:
        partial.unlink(missing_ok=True)
    return len(stale)


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _writable_folder_problem(path: Path) -> str | None:
    """Why files cannot be created at ``path`` (``None`` when they can): the nearest
    existing folder above it must be a writable folder."""
    folder = path.parent.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder; give a path in a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} is not writable; write the output where you may write"
    return None


def check_outputs(outputs: Sequence[tuple[str, str | os.PathLike]],
                  inputs: Sequence[tuple[str, str | os.PathLike]]) -> None:
    """Refuse, before any work, output paths that would clobber something.

    Args:
        outputs: ``(option, path)`` of every file the command will write: the
            ``--out`` file first, then its side-cars.
        inputs: ``(option, path)`` of every file the command reads.

    Raises:
        SasiInputError: an output that is one of the inputs (by real path, so
            through links too), an existing folder, or in a place where files
            cannot be created; the message names the fix.
    """
    option, main = outputs[0]
    for _, raw in outputs:
        out = Path(raw)
        written = "" if out == Path(main) else f" would write {out}, which"
        for source, raw_input in inputs:
            if _same_file(out, Path(raw_input)):
                raise SasiInputError(
                    f"{option} {main}{written} is also the {source} input {raw_input}: "
                    f"write to a new file, never over an input"
                )
        if out.is_dir():
            raise SasiInputError(
                f"{option} {main}{written} is an existing folder: give a file path, "
                "not a folder"
            )
        problem = _writable_folder_problem(out)
        if problem:
            raise SasiInputError(f"{option} {main}: {problem}")
