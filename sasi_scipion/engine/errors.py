"""Errors the ``sasi`` command reports as one line with exit status 2."""

ERROR_FILE_VARIABLE = "SASI_ERROR_FILE"
"""When set, a failing ``sasi`` command also writes its one-line reason to this file
(the Scipion plugin reads it to say why a step failed, even among parallel steps)."""


class SasiInputError(Exception):
    """Bad input from the user: the message names the problem and the fix."""


class SasiModelFormatError(SasiInputError):
    """A model file that is not a SaSi model of a format this version reads."""
