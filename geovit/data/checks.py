"""Checks every reader applies to what a file holds, with one wording.

Public API::

    require_real_numeric(where, key, dtype, expected="float")   # DataError unless real numbers
"""
from __future__ import annotations

import numpy as np

from geovit.errors import DataError


def require_real_numeric(where: object, key: str, dtype: np.dtype, expected: str = "float") -> None:
    """Refuse arrays that are not real numbers (complex, strings, objects, compound records).

    A complex array would otherwise be cast to its real part with only a warning, and a string
    array fail deep inside a cast.

    Args:
        where: the file (named in the message).
        key: the array's key or field inside the file.
        dtype: its dtype.
        expected: the dtype the format stores, for the message.

    Raises:
        DataError: naming the file, the key, the dtype found and what was expected.

    >>> require_real_numeric("a.h5", "u", np.dtype("float32"))
    >>> require_real_numeric("a.h5", "u", np.dtype("complex64"))
    Traceback (most recent call last):
    geovit.errors.DataError: a.h5: key 'u' is complex (complex64); expected real numbers (float); store real and imaginary parts as separate channels
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise DataError(f"{where}: key {key!r} is complex ({dtype}); expected real numbers ({expected}); "
                        "store real and imaginary parts as separate channels")
    if dtype.kind not in "fiub":
        raise DataError(f"{where}: key {key!r} has dtype {dtype}; expected real numbers ({expected})")
