"""Plausibility limits as validated node parameters (the checks themselves: plausibility.py)."""
from __future__ import annotations

from typing import Any

from ..node_base import ParamSpec
from ..plausibility import MAX_CLASS_ID, PointLimits, TableLimits

_P = PointLimits()
_T = TableLimits()

POINT_LIMIT_PARAMS = [
    ParamSpec("max_range_m", _P.max_range_m, "Drop points farther than this from the sensor (m; counted as "
              "points_dropped_range)", min=0.1, max=100000.0),
    ParamSpec("min_range_m", _P.min_range_m, "Drop points closer than this to the sensor (m)", min=0.0, max=1000.0),
    ParamSpec("intensity_min", _P.intensity_min, "Drop points with intensity below this (counted as "
              "points_dropped_intensity)", min=-1e9, max=1e9),
    ParamSpec("intensity_max", _P.intensity_max, "Drop points with intensity above this (KITTI 0..1, "
              "Velodyne drivers 0..255; raise for 16-bit intensities)", min=-1e9, max=1e9),
]

TABLE_LIMIT_PARAMS = [
    ParamSpec("max_instance_range_m", _T.max_range_m, "Drop instance rows whose centre is farther than this (m)",
              min=0.1, max=100000.0),
    ParamSpec("max_box_size_m", _T.max_box_size_m, "Drop instance rows with a length, width or height above "
              "this (m) or not positive", min=0.01, max=10000.0),
    ParamSpec("max_box_px", _T.max_box_px, "Drop detection rows wider/taller than this or with a corner "
              "beyond +-this (pixels)", min=1.0, max=1e7),
    ParamSpec("max_class_id", MAX_CLASS_ID, "Drop rows with a class id outside 0..this (detections 1..this)",
              min=0, max=1000),
]


def point_limits(p: dict[str, Any]) -> PointLimits:
    return PointLimits(max_range_m=p["max_range_m"], min_range_m=p["min_range_m"],
                       intensity_min=p["intensity_min"], intensity_max=p["intensity_max"])


def table_limits(p: dict[str, Any]) -> TableLimits:
    return TableLimits(max_range_m=p["max_instance_range_m"], max_box_size_m=p["max_box_size_m"],
                       max_box_px=p["max_box_px"], max_class_id=p["max_class_id"])


def check_point_limit_change(current: dict[str, Any], changes: dict[str, Any]) -> str | None:
    """Cross-parameter check for on_parameters_changing: min below max."""
    keys = {s.name for s in POINT_LIMIT_PARAMS}
    if not keys & changes.keys():
        return None
    return point_limits({**current, **changes}).problems()
