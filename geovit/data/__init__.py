"""Dataset loaders. Import the concrete classes from their modules or from here."""
from __future__ import annotations

from geovit._lazy import lazy_getattr

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

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = list(_LAZY)
