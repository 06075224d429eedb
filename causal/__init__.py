"""causal: multi-scale ViT embeddings → causal forests → CATE, evaluated with RATE.

Public names are imported lazily (econml and the encoders are heavy)::

    from causal import rank_average_treatment_effect, aipw_scores, MultiScaleCATE, scale_search
    from causal import test_calibration, group_average_effects   # how far to trust τ̂
"""
from __future__ import annotations

import importlib

_LAZY = {
    "rank_average_treatment_effect": "causal.rate",
    "RATEResult": "causal.rate",
    "aipw_scores": "causal.scores",
    "MultiScaleCATE": "causal.estimators",
    "evaluate_rate": "causal.estimators",
    "scale_search": "causal.estimators",
    "test_calibration": "causal.calibration",
    "CalibrationTest": "causal.calibration",
    "group_average_effects": "causal.calibration",
    "interval_coverage": "causal.calibration",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'causal' has no attribute {name!r}")


__all__ = list(_LAZY)
