"""Dataset loaders. Import the concrete classes from their modules or from here."""
from __future__ import annotations

import importlib

#: public name -> module that defines it (imported lazily so that heavy deps load on demand)
_LAZY = {
    "So2Sat": "geovit.data.so2sat",
    "LEVIRCD": "geovit.data.levircd",
    "WHUCD": "geovit.data.levircd",
    "CLCD": "geovit.data.levircd",
    "JUMPCP": "geovit.data.jumpcp",
    "CHAMMI": "geovit.data.chammi",
    "pad_channels_collate": "geovit.data.collate",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geovit.data' has no attribute {name!r}")


__all__ = list(_LAZY)
