"""Sizes of road users: the KITTI object-label statistics (one source for the synthetic world,
which draws its objects from them, and for the segmentation pipeline's size gate, which rejects
instances no object of their class could produce).

kitti type -> ((mean height, width, length), (std height, width, length)), metres.
"""
from __future__ import annotations

SIZE_STATS = {
    "Car": ((1.526, 1.629, 3.884), (0.136, 0.102, 0.426)),
    "Van": ((2.206, 1.902, 5.079), (0.320, 0.173, 0.648)),
    "Truck": ((3.252, 2.586, 10.109), (0.484, 0.216, 2.837)),
    "Pedestrian": ((1.761, 0.660, 0.842), (0.113, 0.142, 0.234)),
    "Cyclist": ((1.737, 0.597, 1.764), (0.095, 0.124, 0.176)),
}

# Interface class name -> the KITTI type whose statistics bound it.
CLASS_KITTI_TYPE = {"car": "Car", "pedestrian": "Pedestrian", "cyclist": "Cyclist"}
