"""Errors that geovit raises for bad input.

Every error a user can trigger with bad data, bad arguments or a foreign checkpoint is a
:class:`GeovitError`. The CLI prints its message (no traceback) and exits with status 2.
Messages name the file / argument / field and say what was expected.
"""
from __future__ import annotations


class GeovitError(ValueError):
    """Bad input: the message names the file or argument and what was expected."""


class DataError(GeovitError):
    """A data file or folder does not have the layout, keys, shapes or values expected."""


class CheckpointError(GeovitError):
    """A checkpoint does not belong to the family asked for, or its tensors do not fit."""
