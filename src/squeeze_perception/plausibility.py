"""Plausibility limits on decoded inputs (ROS-free): drop what no sensor or upstream stage can
mean, and say how many were dropped for which cause.

A decoder (msgs_conv) proves a message is well formed; these checks decide whether its values
are believable: points at 1e30 m, intensity 1e6 or negative, NaN/Inf or negative box sizes,
class ids 99 / -1. Each check returns the rows to keep and a count per cause, in a fixed order
(a row is counted under its first failing cause), so a node reports one line per cause and
the counters in its telemetry add up to the rows removed. Limits are node parameters
(docs/reliability.md); defaults fit the HDL-64E / KITTI set-up with room to spare.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .interfaces import CLASS_NAMES

MAX_CLASS_ID = len(CLASS_NAMES) - 1  # 0 unknown, 1 car, 2 pedestrian, 3 cyclist


@dataclass(frozen=True)
class PointLimits:
    """Believable LiDAR returns: range (m, from the sensor origin) and intensity."""

    max_range_m: float = 200.0
    min_range_m: float = 0.0
    intensity_min: float = 0.0
    intensity_max: float = 255.0

    def problems(self) -> str | None:
        if not self.min_range_m < self.max_range_m:
            return f"min_range_m {self.min_range_m} must be below max_range_m {self.max_range_m}"
        if not self.intensity_min < self.intensity_max:
            return f"intensity_min {self.intensity_min} must be below intensity_max {self.intensity_max}"
        return None


@dataclass(frozen=True)
class TableLimits:
    """Believable rows of the instance / detection tables the tracker consumes."""

    max_range_m: float = 200.0  # instance centre distance from the sensor
    max_box_size_m: float = 30.0  # instance length / width / height
    max_box_px: float = 20000.0  # detection box width / height and |u|, |v|
    max_class_id: int = MAX_CLASS_ID


def _first_cause(checks: list[tuple[str, np.ndarray]], n: int) -> tuple[np.ndarray, dict[str, int]]:
    """checks: (cause, bad mask) in order -> (keep mask, {cause: rows counted under it})."""
    keep = np.ones(n, dtype=bool)
    counts: dict[str, int] = {}
    for cause, bad in checks:
        new = bad & keep
        counts[cause] = int(new.sum())
        keep &= ~bad
    return keep, {k: v for k, v in counts.items() if v}


def check_points(points: np.ndarray, limits: PointLimits = PointLimits()) -> tuple[np.ndarray, dict[str, int]]:
    """points (N, >=4) [x, y, z, intensity] -> (keep mask, counts per cause).

    Causes, in order: `non_finite` (NaN/Inf in x y z intensity), `range` (outside
    [min_range_m, max_range_m]), `intensity` (outside [intensity_min, intensity_max]).
    """
    pts = np.asarray(points)
    n = len(pts)
    if n == 0:
        return np.ones(0, dtype=bool), {}
    with np.errstate(invalid="ignore", over="ignore"):
        # Column by column in float64 (the same sums, (x^2 + y^2) + z^2, as a row-wise sum): 0.9 ms
        # for a 120k-point scan instead of 5.9 ms through (N, 4) float64 copies and temporaries.
        x, y, z, inten = (pts[:, k].astype(np.float64) for k in range(4))
        finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(z) & np.isfinite(inten)
        r2 = x * x
        r2 += y * y
        r2 += z * z
        rng = np.sqrt(r2, out=r2)
        bad_range = finite & ((rng > limits.max_range_m) | (rng < limits.min_range_m))
        bad_int = finite & ((inten < limits.intensity_min) | (inten > limits.intensity_max))
    return _first_cause([("non_finite", ~finite), ("range", bad_range), ("intensity", bad_int)], n)


def _finite(table: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    ok = np.ones(len(table), dtype=bool)
    for name in names:
        ok &= np.isfinite(table[name].astype(np.float64))
    return ok


def check_instances(table: np.ndarray, limits: TableLimits = TableLimits()) -> tuple[np.ndarray, dict[str, int]]:
    """INSTANCE_DTYPE rows -> (kept rows, counts per cause).

    Causes: `non_finite` (any float field), `class_id` (outside 0..max_class_id), `size`
    (length/width/height <= 0 or > max_box_size_m), `range` (centre beyond max_range_m),
    `score` (outside 0..1), `num_points` (negative).
    """
    n = len(table)
    if n == 0:
        return table, {}
    floats = ("x", "y", "z", "length", "width", "height", "yaw", "score")
    with np.errstate(invalid="ignore", over="ignore"):
        finite = _finite(table, floats)
        cls = table["class_id"].astype(np.int64)
        sizes = np.stack([table[k].astype(np.float64) for k in ("length", "width", "height")], 1)
        rng = np.sqrt(sum(table[k].astype(np.float64) ** 2 for k in ("x", "y", "z")))
        score = table["score"].astype(np.float64)
        keep, counts = _first_cause([
            ("non_finite", ~finite),
            ("class_id", (cls < 0) | (cls > limits.max_class_id)),
            ("size", ((sizes <= 0) | (sizes > limits.max_box_size_m)).any(1)),
            ("range", rng > limits.max_range_m),
            ("score", (score < 0) | (score > 1)),
            ("num_points", table["num_points"].astype(np.int64) < 0),
        ], n)
    return table[keep], counts


def check_detections(table: np.ndarray, limits: TableLimits = TableLimits()) -> tuple[np.ndarray, dict[str, int]]:
    """DETECTION_DTYPE rows -> (kept rows, counts per cause).

    Causes: `non_finite`, `class_id` (outside 1..max_class_id: a detector box has a class),
    `box` (u_max < u_min or v_max < v_min), `size` (width / height or a coordinate beyond
    max_box_px), `score` (outside 0..1).
    """
    n = len(table)
    if n == 0:
        return table, {}
    with np.errstate(invalid="ignore", over="ignore"):
        uv = np.stack([table[k].astype(np.float64) for k in ("u_min", "v_min", "u_max", "v_max")], 1)
        finite = np.isfinite(uv).all(1) & np.isfinite(table["score"].astype(np.float64))
        cls = table["class_id"].astype(np.int64)
        w, h = uv[:, 2] - uv[:, 0], uv[:, 3] - uv[:, 1]
        score = table["score"].astype(np.float64)
        keep, counts = _first_cause([
            ("non_finite", ~finite),
            ("class_id", (cls < 1) | (cls > limits.max_class_id)),
            ("box", (w < 0) | (h < 0)),
            ("size", (w > limits.max_box_px) | (h > limits.max_box_px) | (np.abs(uv) > limits.max_box_px).any(1)),
            ("score", (score < 0) | (score > 1)),
        ], n)
    return table[keep], counts
