"""Box completion: grow a partly seen object's box to its class's size, away from the sensor (ROS-free).

Why: the LiDAR sees one or two faces of an object, so the box fitted to its points is as deep as
those faces. A car straight ahead shows its rear: the fitted box is 1.8 m wide and a few
decimetres deep, turned across the road, and its bird's-eye IoU with the true 1.8 x 3.7 m box is
0.19 on real frame 000134 (docs/segmentation.md, "Box completion"). The tracker takes that box's
centre, 1-2 m short of the car's.

Rule (per row of car / pedestrian / cyclist; others untouched): the fitted box's axis nearer the
line of sight from the sensor is the *depth* axis, the other the *face* axis. A face longer than
the class's mean width plus half the gap to its mean length is the object's side (depth = its
width), otherwise its front or back (depth = its length). Each extent grows to the class's mean
(KITTI label statistics, `object_sizes.SIZE_STATS`) and never shrinks; the visible face stays
where it was measured, so the centre moves away from the sensor by half of what the depth gained.
The yaw follows the longer side. Height and z stay as fitted (they need the ground, and the size
gate has judged them already). Run after the size gate: it judges what was measured.
"""
from __future__ import annotations

import numpy as np

from ..interfaces import CLASS_IDS
from ..object_sizes import CLASS_KITTI_TYPE, SIZE_STATS


def class_mean_footprints() -> dict[int, tuple[float, float]]:
    """Interface class id -> (mean length, mean width) in metres of its KITTI boxes."""
    out = {}
    for name, kitti_type in CLASS_KITTI_TYPE.items():
        (_h, w, l), _std = SIZE_STATS[kitti_type]
        out[CLASS_IDS[name]] = (max(l, w), min(l, w))
    return out


def complete_boxes(table: np.ndarray, sensor_xy=(0.0, 0.0),
                   footprints: dict[int, tuple[float, float]] | None = None) -> np.ndarray:
    """A copy of an instance table (interfaces.INSTANCE_DTYPE) with every object box grown to its
    class's mean footprint as the module docstring says; `sensor_xy`: the sensor in the table's frame."""
    out = np.array(table, copy=True)
    if not len(out):
        return out
    footprints = class_mean_footprints() if footprints is None else footprints
    sensor = np.asarray(sensor_xy, np.float64)
    for row in out:
        prior = footprints.get(int(row["class_id"]))
        if prior is None:
            continue
        mean_l, mean_w = prior
        centre = np.array([row["x"], row["y"]], np.float64)
        yaw = float(row["yaw"])
        u = np.array([np.cos(yaw), np.sin(yaw)])  # along "length"
        v = np.array([-u[1], u[0]])  # along "width"
        ray = centre - sensor
        dist = float(np.linalg.norm(ray))
        ray = ray / dist if dist > 1e-6 else u
        if abs(u @ ray) >= abs(v @ ray):
            depth_axis, depth, face_axis, face = u, float(row["length"]), v, float(row["width"])
        else:
            depth_axis, depth, face_axis, face = v, float(row["width"]), u, float(row["length"])
        side_view = face > mean_w + 0.5 * (mean_l - mean_w)
        new_face = max(face, mean_l if side_view else mean_w)
        new_depth = max(depth, mean_w if side_view else mean_l)
        away = depth_axis if depth_axis @ ray >= 0 else -depth_axis
        centre = centre + away * (new_depth - depth) / 2
        if new_face >= new_depth:
            length_axis, length, width = face_axis, new_face, new_depth
        else:
            length_axis, length, width = depth_axis, new_depth, new_face
        row["x"], row["y"] = centre
        row["length"], row["width"] = length, width
        yaw = float(np.arctan2(length_axis[1], length_axis[0]))  # a box's heading is its long side's, in
        row["yaw"] = yaw - np.pi if yaw > np.pi / 2 else yaw + np.pi if yaw <= -np.pi / 2 else yaw  # (-pi/2, pi/2]
    return out
