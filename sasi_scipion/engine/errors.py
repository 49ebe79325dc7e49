"""Errors the ``sasi`` command reports as one line with exit status 2."""


class SasiInputError(Exception):
    """Bad input from the user: the message names the problem and the fix."""


class SasiModelFormatError(SasiInputError):
    """A model file that is not a SaSi model of a format this version reads."""
