"""Detection / instance / track tables as `vision_msgs` messages, when that package exists.

`vision_msgs` has no PyPI wheel, so it is present only on an apt (or source) ROS 2 install.
The nodes call `load_vision_msgs()` once: with the package they publish the standard arrays
beside the tables (RViz plugins, Autoware / Isaac ROS / yolo_ros style consumers read them);
without it they publish the tables only. Every builder takes the `vision_msgs.msg` module as
an argument, so this file imports no ROS package and tests can hand in a stand-in module.

Mapping (also stated in docs/interfaces.md):
- Detection2D: `bbox.center.position` = box centre (px), `bbox.size_x/size_y` = width/height (px),
  one result with `hypothesis.class_id` = class name ("car", ...) and `hypothesis.score` = score.
- Detection3D: `bbox.center.position` = box centre (m), `bbox.center.orientation` = yaw about z,
  `bbox.size` = (length, width, height), one result (class name, score); `id` = the instance id
  (instances) or the track id (tracks). Detection3D has no velocity field: track velocities
  stay in the track table and the velocity arrows of the track markers.
"""
from __future__ import annotations

import importlib
import math
from types import ModuleType
from typing import Any

import numpy as np

from . import interfaces as itf


def load_vision_msgs() -> ModuleType | None:
    """`vision_msgs.msg`, or None when the package is not installed (the tables-only case)."""
    try:
        return importlib.import_module("vision_msgs.msg")
    except ImportError:
        return None


def class_name(class_id: int) -> str:
    cid = int(class_id)
    return itf.CLASS_NAMES[cid] if 0 <= cid < len(itf.CLASS_NAMES) else str(cid)


def _hypothesis(vm: ModuleType, class_id: int, score: float):
    result = vm.ObjectHypothesisWithPose()
    result.hypothesis.class_id = class_name(class_id)
    result.hypothesis.score = float(score)
    return result


def detection2d_array(dets: np.ndarray, header: Any, vm: ModuleType):
    """DETECTION_DTYPE rows (image pixels) -> vision_msgs/Detection2DArray with `header`."""
    out = vm.Detection2DArray()
    out.header = header
    items = []
    for row in dets:
        det = vm.Detection2D()
        det.header = header
        u0, v0, u1, v1 = (float(row[k]) for k in ("u_min", "v_min", "u_max", "v_max"))
        det.bbox.center.position.x = (u0 + u1) / 2.0
        det.bbox.center.position.y = (v0 + v1) / 2.0
        det.bbox.center.theta = 0.0
        det.bbox.size_x = u1 - u0
        det.bbox.size_y = v1 - v0
        det.results = [_hypothesis(vm, row["class_id"], row["score"])]
        items.append(det)
    out.detections = items
    return out


def _boxes3d(rows: np.ndarray, id_field: str, header: Any, vm: ModuleType):
    out = vm.Detection3DArray()
    out.header = header
    items = []
    for row in rows:
        det = vm.Detection3D()
        det.header = header
        det.id = str(int(row[id_field]))
        pose = det.bbox.center
        pose.position.x, pose.position.y, pose.position.z = (float(row[k]) for k in ("x", "y", "z"))
        half_yaw = float(row["yaw"]) / 2.0
        # yaw about z as a unit quaternion (x = y = 0)
        pose.orientation.x, pose.orientation.y = 0.0, 0.0
        pose.orientation.z, pose.orientation.w = math.sin(half_yaw), math.cos(half_yaw)
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = (float(row[k]) for k in ("length", "width", "height"))
        det.results = [_hypothesis(vm, row["class_id"], row["score"])]
        items.append(det)
    out.detections = items
    return out


def instances_detection3d_array(instances: np.ndarray, header: Any, vm: ModuleType):
    """INSTANCE_DTYPE rows -> vision_msgs/Detection3DArray; `id` = instance_id."""
    return _boxes3d(instances, "instance_id", header, vm)


def tracks_detection3d_array(tracks: np.ndarray, header: Any, vm: ModuleType):
    """TRACK_DTYPE rows -> vision_msgs/Detection3DArray; `id` = track_id (stable across frames)."""
    return _boxes3d(tracks, "track_id", header, vm)
