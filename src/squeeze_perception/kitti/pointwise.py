"""Point-wise labels from KITTI 3D boxes (thesis ch. 4.3): the one labeler that training-data
conversion and segmentation evaluation share (`label_points`).

How each KITTI label type is treated, following the KITTI object benchmark:
- Car, Pedestrian, Cyclist: the points inside the box take the class (car 1, pedestrian 2,
  cyclist 3) and the label's row index as instance id.
- Van and Person_sitting, the "neighbouring classes" the devkit ignores when evaluating Car and
  Pedestrian: their points are *ignored*, neither object nor background. An evaluation leaves
  them out of both prediction and ground truth; a consumer without an ignore label (lidar_2d
  grids, class statistics) sees them as 0, unknown.
- Truck, Tram, Misc (and any other type): background (0). The devkit counts a car detection on
  a truck as a false positive, so a car prediction on a truck's points is one too.
- DontCare: a 2D region of the image with no 3D box, where objects were not labelled. Points
  in front of the camera that project into such a region and lie in no box are ignored.
Overlapping boxes: a point inside several boxes belongs to the box whose 3D centre is nearest
(equal distances: the earlier label row). This does not depend on the order of the label file.

Boundary band (evaluation): KITTI's 3D boxes are tight, and the scan is not motion-compensated,
so returns from an object's surface can lie a few decimetres outside its box. On real frame
000134 the rear face of the nearest car lies 0.1-0.35 m behind its box's rear face, which made
300-430 car points "background" and a correct car prediction on them a false positive.
`ignore_band` > 0 ignores the points that lie in no box but within that distance of an object
box (car, pedestrian, cyclist and the ignored types): they are neither object nor background.
PointRCNN (Shi et al., CVPR 2019) ignores the same 0.2 m band around each box in its
foreground segmentation loss for the same reason; `EVAL_IGNORE_BAND_M` is that value.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..interfaces import CLASS_IDS
from .calib import KittiCalibration
from .labels import ObjectLabel

OBJECT_TYPE_TO_CLASS = {"Car": CLASS_IDS["car"], "Pedestrian": CLASS_IDS["pedestrian"],
                        "Cyclist": CLASS_IDS["cyclist"]}
IGNORED_TYPES = frozenset({"Van", "Person_sitting"})
DONTCARE = "DontCare"
EVAL_IGNORE_BAND_M = 0.2  # evaluation's boundary band (see the module docstring); 0 for training targets
# Kept under its old name for callers that map types for drawing or statistics.
KITTI_TYPE_TO_CLASS = OBJECT_TYPE_TO_CLASS


def class_of_type(kitti_type: str) -> int:
    """The class id a KITTI type trains as: car/pedestrian/cyclist, else 0 (unknown) — ignored
    types included, since a 4-class target has no ignore label."""
    return OBJECT_TYPE_TO_CLASS.get(kitti_type, CLASS_IDS["unknown"])


def box_corners_velo(label: ObjectLabel, calib: KittiCalibration) -> np.ndarray:
    """(8, 3) corners of a label's 3D box in the Velodyne frame."""
    return calib.rect_to_velo(label.corners_rect())


def _inside_rect(pts_rect: np.ndarray, label: ObjectLabel, margin: float) -> np.ndarray:
    h, w, length = label.dimensions
    rel = pts_rect - label.location
    c, s = np.cos(label.rotation_y), np.sin(label.rotation_y)
    # Into the box frame: undo the rotation about the camera's y axis (see ObjectLabel.corners_rect).
    along = c * rel[:, 0] - s * rel[:, 2]
    across = s * rel[:, 0] + c * rel[:, 2]
    up = -rel[:, 1]  # camera y points down; the box spans 0..h above its bottom centre
    return ((np.abs(along) <= length / 2 + margin) & (np.abs(across) <= w / 2 + margin)
            & (up >= -margin) & (up <= h + margin))


def points_in_box(points: np.ndarray, label: ObjectLabel, calib: KittiCalibration, margin: float = 0.0) -> np.ndarray:
    """(N,) bool: which Velodyne points lie inside the label's 3D box (grown by margin metres)."""
    return _inside_rect(calib.velo_to_rect_points(np.asarray(points)[:, :3]), label, margin)


def _has_box(label: ObjectLabel) -> bool:
    return label.type != DONTCARE and bool(np.all(np.asarray(label.dimensions) > 0))


@dataclass
class PointLabels:
    classes: np.ndarray  # (N,) int32 class id 0..3; ignored points hold 0
    instances: np.ndarray  # (N,) int32 label row index of car/pedestrian/cyclist points, else -1
    ignored: np.ndarray  # (N,) bool: leave out of evaluation (Van, Person_sitting, DontCare regions)


def label_points(points: np.ndarray, labels: list[ObjectLabel], calib: KittiCalibration,
                 margin: float = 0.0, ignore_band: float = 0.0) -> PointLabels:
    """Class, instance and ignore flag per Velodyne point from the frame's labels (rules above).
    ignore_band: metres around each object box (beyond `margin`) whose points outside every box
    are ignored (module docstring, "Boundary band")."""
    pts = np.asarray(points)
    n = len(pts)
    owner = np.full(n, -1, np.int64)
    if n == 0:
        return PointLabels(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, bool))
    pts_rect = calib.velo_to_rect_points(pts[:, :3])
    best = np.full(n, np.inf)
    for i, lab in enumerate(labels):
        if not _has_box(lab):
            continue
        inside = np.flatnonzero(_inside_rect(pts_rect, lab, margin))
        if len(inside) == 0:
            continue
        centre = np.asarray(lab.location, np.float64) - np.array([0.0, lab.dimensions[0] / 2, 0.0])
        dist = np.linalg.norm(pts_rect[inside] - centre, axis=1)
        nearer = dist < best[inside]  # strict: on equal distance the earlier row keeps the point
        best[inside[nearer]] = dist[nearer]
        owner[inside[nearer]] = i
    # Per label row, plus a last entry for points in no box (owner -1 indexes it).
    row_class = np.array([class_of_type(lab.type) for lab in labels] + [CLASS_IDS["unknown"]], np.int32)
    row_ignored = np.array([lab.type in IGNORED_TYPES for lab in labels] + [False], bool)
    classes = row_class[owner]
    instances = np.where(classes > 0, owner, -1).astype(np.int32)
    ignored = row_ignored[owner]
    if ignore_band > 0:
        free = np.flatnonzero(owner < 0)
        for i, lab in enumerate(labels):
            if _has_box(lab) and (row_class[i] > 0 or row_ignored[i]) and len(free):
                ignored[free[_inside_rect(pts_rect[free], lab, margin + ignore_band)]] = True
    regions = [lab.bbox for lab in labels if lab.type == DONTCARE]
    if regions:
        free = np.flatnonzero(owner < 0)
        uv, depth = calib.project_velo(pts[free, :3])
        for left, top, right, bottom in regions:
            hit = (depth > 0) & (uv[:, 0] >= left) & (uv[:, 0] <= right) & (uv[:, 1] >= top) & (uv[:, 1] <= bottom)
            ignored[free[hit]] = True
    return PointLabels(classes, instances, ignored)


def pointwise_labels(points: np.ndarray, labels: list[ObjectLabel], calib: KittiCalibration,
                     margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(class id, instance id) per point for 4-class consumers (training grids, statistics):
    `label_points` with ignored points as class 0, instance -1."""
    lab = label_points(points, labels, calib, margin)
    return lab.classes, lab.instances


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
