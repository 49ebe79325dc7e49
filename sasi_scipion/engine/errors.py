"""Errors of bad input, and how their messages name the inputs.

The library names its parameters (``tomograms[1]``, ``radii['disc']``,
``settings.iterations``); the ``sasi`` command runs inside :func:`named_as_flags`
so that the same messages name its flags (``--tomogram``, ``--radius disc``,
``--iterations``). Plain Python, so that the Scipion plugin imports it without torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

ERROR_FILE_VARIABLE = "SASI_ERROR_FILE"
"""When set, a failing ``sasi`` command also writes its one-line reason to this file
(the Scipion plugin reads it to say why a step failed, even among parallel steps)."""

_FLAGS: ContextVar[Mapping[str, str] | None] = ContextVar("sasi_flags", default=None)


class SasiInputError(Exception):
    """Bad input from the user: the message names the input and the fix."""


class SasiModelFormatError(SasiInputError):
    """A model file that is not a SaSi model of a format this version reads."""


class SasiWarning(UserWarning):
    """Something the user should know about an input that the engine still uses
    (dropped duplicates, a header that disagrees, a tomogram that looks inverted)."""


def input_name(parameter: str, key: int | str | None = None) -> str:
    """How a message names input ``parameter`` (item ``key`` of a sequence or mapping).

    In the library: ``tomograms``, ``tomograms[1]``, ``radii['disc']``; inside
    :func:`named_as_flags`: the flag, ``--tomogram`` (a sequence's item is one more
    flag) or ``--radius disc`` (a mapping's item is ``KEY=VALUE`` after the flag).
    """
    flags = _FLAGS.get()
    if flags is not None:
        flag = flags[parameter]
        return f"{flag} {key}" if isinstance(key, str) else flag
    if key is None:
        return parameter
    return f"{parameter}[{key!r}]"


@contextlib.contextmanager
def named_as_flags(flags: Mapping[str, str]) -> Iterator[None]:
    """Within this block, :func:`input_name` gives the flag ``flags[parameter]``."""
    token = _FLAGS.set(flags)
    try:
        yield
    finally:
        _FLAGS.reset(token)
