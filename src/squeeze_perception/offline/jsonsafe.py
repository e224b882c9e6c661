"""Strict JSON for the offline reports: NaN and inf (an AP or IoU with nothing to measure) become
null, so json.dumps(..., allow_nan=False) always succeeds and every reader gets valid JSON."""
from __future__ import annotations

import math

import numpy as np


def json_safe(value):
    """NaN / inf -> None and numpy scalars -> Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
