"""Consistency checks that real and synthetic KITTI object frames must both pass.

* a label's 3D box, projected with P2, lands on its 2D box (IoU) inside the image;
* the LiDAR points inside a label's 3D box are there at all (an object the LiDAR sees).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calib import KittiCalibration
from .labels import ObjectLabel
from .pointwise import box_iou, points_in_box, projected_box_2d


@dataclass
class LabelCheck:
    label: ObjectLabel
    projection_iou: float  # projected 3D box (clipped to the image) vs the 2D box; nan when behind the camera
    points_inside: int
    bbox_in_image: bool


def check_object_frame(labels: list[ObjectLabel], points: np.ndarray, calib: KittiCalibration,
                       image_size: tuple[int, int], margin: float = 0.1) -> list[LabelCheck]:
    """One LabelCheck per non-DontCare label. image_size = (width, height)."""
    width, height = image_size
    out = []
    for lab in labels:
        if lab.type == "DontCare":
            continue
        proj = projected_box_2d(lab, calib)
        if proj is None:
            iou = float("nan")
        else:
            clipped = np.clip(proj, [0, 0, 0, 0], [width - 1, height - 1, width - 1, height - 1])
            iou = box_iou(clipped, lab.bbox)
        in_image = bool(lab.bbox[0] >= -1 and lab.bbox[1] >= -1 and lab.bbox[2] <= width + 1 and lab.bbox[3] <= height + 1
                        and lab.bbox[2] > lab.bbox[0] and lab.bbox[3] > lab.bbox[1])
        out.append(LabelCheck(lab, iou, int(points_in_box(points, lab, calib, margin).sum()), in_image))
    return out
