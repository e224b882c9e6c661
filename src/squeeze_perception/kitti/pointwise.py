"""Point-wise labels from 3D boxes (thesis ch. 4.3): every point inside an object's box takes its class."""
from __future__ import annotations

import numpy as np

from ..interfaces import CLASS_IDS
from .calib import KittiCalibration
from .labels import ObjectLabel

# KITTI label types -> the shared class ids (Van, Truck, Tram, Misc stay 'unknown' like SqueezeSeg).
KITTI_TYPE_TO_CLASS = {"Car": CLASS_IDS["car"], "Pedestrian": CLASS_IDS["pedestrian"],
                       "Person_sitting": CLASS_IDS["pedestrian"], "Cyclist": CLASS_IDS["cyclist"]}


def class_of_type(kitti_type: str) -> int:
    return KITTI_TYPE_TO_CLASS.get(kitti_type, CLASS_IDS["unknown"])


def box_corners_velo(label: ObjectLabel, calib: KittiCalibration) -> np.ndarray:
    """(8, 3) corners of a label's 3D box in the Velodyne frame."""
    return calib.rect_to_velo(label.corners_rect())


def points_in_box(points: np.ndarray, label: ObjectLabel, calib: KittiCalibration, margin: float = 0.0) -> np.ndarray:
    """(N,) bool: which Velodyne points lie inside the label's 3D box (grown by margin metres)."""
    pts_rect = calib.velo_to_rect_points(np.asarray(points)[:, :3])
    h, w, length = label.dimensions
    rel = pts_rect - label.location
    c, s = np.cos(label.rotation_y), np.sin(label.rotation_y)
    # Into the box frame: undo the rotation about the camera's y axis (see ObjectLabel.corners_rect).
    along = c * rel[:, 0] - s * rel[:, 2]
    across = s * rel[:, 0] + c * rel[:, 2]
    up = -rel[:, 1]  # camera y points down; the box spans 0..h above its bottom centre
    return ((np.abs(along) <= length / 2 + margin) & (np.abs(across) <= w / 2 + margin)
            & (up >= -margin) & (up <= h + margin))


def pointwise_labels(points: np.ndarray, labels: list[ObjectLabel], calib: KittiCalibration,
                     margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(class id, instance id) per point from the frame's boxes; instance = label index, -1 for none.

    DontCare rows carry no box and are skipped; a point inside two boxes keeps the first.
    """
    n = len(points)
    classes = np.zeros(n, np.int32)
    instances = np.full(n, -1, np.int32)
    for i, lab in enumerate(labels):
        if lab.type == "DontCare" or np.any(lab.dimensions <= 0):
            continue
        inside = points_in_box(points, lab, calib, margin) & (instances < 0)
        cls = class_of_type(lab.type)
        classes[inside] = cls
        instances[inside] = i if cls != CLASS_IDS["unknown"] else -1
    return classes, instances


def projected_box_2d(label: ObjectLabel, calib: KittiCalibration) -> np.ndarray | None:
    """[left, top, right, bottom] of the 3D box projected into image 2, None when behind the camera."""
    corners = box_corners_velo(label, calib)
    uv, depth = calib.project_velo(corners)
    if np.any(depth <= 0.1):
        return None
    return np.array([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0
