"""Point-wise labels from 3D boxes: hand-placed boxes and the real KITTI object frames."""
from __future__ import annotations

import numpy as np

from squeeze_perception.kitti.calib import load_object_calib
from squeeze_perception.kitti.checks import check_object_frame
from squeeze_perception.kitti.default_calib import kitti_calibration
from squeeze_perception.kitti.labels import ObjectLabel, read_labels, read_velodyne_bin
from squeeze_perception.kitti.pointwise import (box_corners_velo, class_of_type, label_points, pointwise_labels,
                                                points_in_box)


def label_at_velo(calib, centre_bottom_velo, size_lwh, yaw_velo, kind="Car") -> ObjectLabel:
    """A KITTI label for a box given in the Velodyne frame (bottom centre, l w h, heading)."""
    loc = calib.velo_to_rect_points(np.array([centre_bottom_velo], float))[0]
    heading = calib.velo_to_rect[:3, :3] @ np.array([np.cos(yaw_velo), np.sin(yaw_velo), 0.0])
    ry = float(np.arctan2(-heading[2], heading[0]))
    length, width, height = size_lwh
    return ObjectLabel(kind, 0.0, 0, 0.0, np.array([0, 0, 10, 10.0]), np.array([height, width, length]), loc, ry)


def test_rotated_box_contains_exactly_the_points_inside():
    calib = kitti_calibration()
    lab = label_at_velo(calib, [10.0, 2.0, -1.73], (4.0, 2.0, 1.5), np.pi / 2)  # long axis along velo y
    pts = np.array([[10.0, 2.0, -1.0, 0], [10.0, 3.9, -1.0, 0],  # centre; 1.9 m along the long axis: inside
                    [10.9, 2.0, -1.0, 0],  # 0.9 m across: inside
                    [11.2, 2.0, -1.0, 0],  # 1.2 m across: outside (width 2)
                    [10.0, 2.0, -0.1, 0],  # above the 1.5 m top
                    [10.0, 2.0, -1.8, 0]])  # below the bottom
    assert points_in_box(pts, lab, calib).tolist() == [True, True, True, False, False, False]
    corners = box_corners_velo(lab, calib)
    np.testing.assert_allclose(corners[:, 2].min(), -1.73, atol=0.05)  # rectification tilts the box slightly
    np.testing.assert_allclose(corners[:, :2].mean(0), [10.0, 2.0], atol=0.02)


def test_pointwise_labels_assign_classes_and_instances():
    calib = kitti_calibration()
    car = label_at_velo(calib, [8.0, 0.0, -1.73], (4.0, 1.8, 1.5), 0.0, "Car")
    ped = label_at_velo(calib, [6.0, 4.0, -1.73], (0.8, 0.8, 1.8), 0.0, "Pedestrian")
    van = label_at_velo(calib, [20.0, 0.0, -1.73], (5.0, 2.0, 2.0), 0.0, "Van")
    dont = ObjectLabel("DontCare", -1, -1, -10, np.array([0, 0, 5, 5.0]), -np.ones(3), -1000 * np.ones(3), -10)
    pts = np.array([[8.0, 0.0, -1.0, 0], [6.0, 4.0, -0.5, 0], [20.0, 0.0, -1.0, 0], [40.0, 0.0, -1.0, 0]])
    classes, instances = pointwise_labels(pts, [dont, car, ped, van], calib)
    assert classes.tolist() == [1, 2, 0, 0]
    assert instances.tolist() == [1, 2, -1, -1]
    # The van's point is ignored (neither car nor background); 4-class consumers see it as 0.
    assert label_points(pts, [dont, car, ped, van], calib).ignored.tolist() == [False, False, True, False]
    assert class_of_type("Person_sitting") == 0 and class_of_type("Tram") == 0 and class_of_type("Cyclist") == 3


def test_kitti_types_ignored_background_and_dontcare_regions():
    calib = kitti_calibration()
    sitting = label_at_velo(calib, [6.0, 4.0, -1.73], (0.8, 0.8, 1.3), 0.0, "Person_sitting")
    truck = label_at_velo(calib, [20.0, 0.0, -1.73], (10.0, 2.5, 3.0), 0.0, "Truck")
    far = np.array([[30.0, -5.0, -1.0, 0.0]])  # in no box
    (u, v), = calib.project_velo(far[:, :3])[0]
    dont = ObjectLabel("DontCare", -1, -1, -10, np.array([u - 5, v - 5, u + 5, v + 5]), -np.ones(3),
                       -1000 * np.ones(3), -10)
    # Mirrored through camera 2's projection centre c (M [c; 1] = 0): same pixel, negative depth.
    m = calib.velo_to_image[:3]
    c = -np.linalg.solve(m[:, :3], m[:, 3])
    behind = np.hstack([2 * c - far[0, :3], 0.0])[None]
    (ub, vb), = calib.project_velo(behind[:, :3])[0]
    assert abs(ub - u) < 1e-6 and abs(vb - v) < 1e-6 and calib.project_velo(behind[:, :3])[1][0] < 0
    pts = np.vstack([[[6.0, 4.0, -1.0, 0], [20.0, 0.0, -1.0, 0]], far, behind, [[30.0, 5.0, -1.0, 0]]])
    lab = label_points(pts, [sitting, truck, dont], calib)
    # Person_sitting: ignored (the devkit's neighbour of Pedestrian). Truck: background, counted.
    # The point seen inside the DontCare region: ignored. Behind the camera or elsewhere: background.
    assert lab.classes.tolist() == [0, 0, 0, 0, 0]
    assert lab.ignored.tolist() == [True, False, True, False, False]
    assert lab.instances.tolist() == [-1] * 5


def test_overlapping_boxes_give_a_point_to_the_nearest_box_centre_in_any_label_order():
    calib = kitti_calibration()
    # Two cars 4 m long whose boxes overlap between x = 9 and x = 10 (centres 8 and 11).
    a = label_at_velo(calib, [8.0, 0.0, -1.73], (4.0, 1.8, 1.5), 0.0, "Car")
    b = label_at_velo(calib, [11.0, 0.0, -1.73], (4.0, 1.8, 1.5), 0.0, "Car")
    cyclist = label_at_velo(calib, [11.0, 0.0, -1.73], (1.8, 0.6, 1.7), 0.0, "Cyclist")
    # x = 9.3: 1.3 m from a's centre, 1.7 m from b's -> a.  x = 9.8: 1.8 vs 1.2 -> b.
    pts = np.array([[9.3, 0.0, -1.0, 0], [9.8, 0.0, -1.0, 0]])
    assert label_points(pts, [a, b], calib).instances.tolist() == [0, 1]
    assert label_points(pts, [b, a], calib).instances.tolist() == [1, 0]  # same boxes, same owners
    # A cyclist inside a car's box, same x and y: ground at z = -1.73, so the car's centre is at
    # z = -1.73 + 1.5/2 = -0.98 and the cyclist's at -1.73 + 1.7/2 = -0.88. A point at z = -0.88
    # is 0 m from the cyclist's centre and 0.10 m from the car's: it is the cyclist's.
    p = np.array([[11.0, 0.0, -0.88, 0]])
    assert label_points(p, [b, cyclist], calib).classes.tolist() == [3]


def test_real_object_frames_pass_the_label_checks(kitti_real):
    base = kitti_real / "object" / "training"
    for name in ("000000", "000001", "000002"):
        calib = load_object_calib(base / "calib" / f"{name}.txt")
        labels = read_labels(base / "label_2" / f"{name}.txt")
        points = read_velodyne_bin(base / "velodyne" / f"{name}.bin")
        from PIL import Image

        size = Image.open(base / "image_2" / f"{name}.png").size
        checks = check_object_frame(labels, points, calib, size)
        assert checks
        for c in checks:
            assert c.bbox_in_image
            assert c.projection_iou > 0.8, (name, c.label.type, c.projection_iou)
            assert c.points_inside > 0, (name, c.label.type)
        classes, _ = pointwise_labels(points, labels, calib)
        wanted = {class_of_type(lab.type) for lab in labels if lab.type != "DontCare"} - {0}
        assert wanted <= set(np.unique(classes).tolist())


def test_real_object_frames_become_labelled_lidar_2d(kitti_real, tmp_path):
    from squeeze_perception.kitti.lidar_2d import read_lidar_2d
    from squeeze_perception.offline.synth.cli import main

    assert main(["lidar2d", "--root", str(kitti_real), "--split", "training", "--out", str(tmp_path)]) == 0
    tensors = {p.stem: read_lidar_2d(p) for p in sorted(tmp_path.glob("*.npy"))}
    assert sorted(tensors) == ["000000", "000001", "000002"]
    # 000000 holds one pedestrian, 000001 a car and a cyclist in the front view.
    assert np.any(tensors["000000"][..., 5] == 2)
    assert np.any(tensors["000001"][..., 5] == 1) and np.any(tensors["000001"][..., 5] == 3)
    assert all(0.05 < np.mean(t[..., 4] == 0) < 0.3 for t in tensors.values())


def test_boundary_band_ignores_points_just_outside_object_boxes_only():
    """ignore_band: a return 0.15 m behind a car box is ignored (neither car nor background), one
    0.3 m behind stays background, points inside keep their class, and a truck (background type)
    grows no band. Without the band (training targets) nothing changes."""
    calib = kitti_calibration()
    car = label_at_velo(calib, [10.0, 0.0, -1.73], (4.0, 1.8, 1.5), 0.0, "Car")
    truck = label_at_velo(calib, [30.0, 0.0, -1.73], (8.0, 2.5, 3.0), 0.0, "Truck")
    pts = np.array([[10.0, 0.0, -1.0, 0],  # inside the car
                    [7.85, 0.0, -1.0, 0],  # 0.15 m behind the car's rear face (x = 8)
                    [7.7, 0.0, -1.0, 0],  # 0.3 m behind it
                    [25.85, 0.0, -1.0, 0]])  # 0.15 m behind the truck's rear face (x = 26)
    banded = label_points(pts, [car, truck], calib, ignore_band=0.2)
    assert banded.classes.tolist() == [1, 0, 0, 0]
    assert banded.ignored.tolist() == [False, True, False, False]
    plain = label_points(pts, [car, truck], calib)
    assert plain.ignored.tolist() == [False, False, False, False]
    assert plain.classes.tolist() == banded.classes.tolist()


def test_boundary_band_on_real_frame_000134_covers_the_cars_rear_face(kitti_real):
    """The reason for the band: the nearest car's rear-face returns of real frame 000134 lie
    0.1-0.35 m outside its box. With the 0.2 m band most of them leave the background."""
    from squeeze_perception.kitti.pointwise import EVAL_IGNORE_BAND_M

    root = kitti_real / "object_reduced" / "training"
    pts = read_velodyne_bin(root / "velodyne_reduced" / "000134.bin")
    calib = load_object_calib(root / "calib" / "000134.txt")
    labels = read_labels(root / "label_2" / "000134.txt")
    car = labels[0]
    assert car.type == "Car" and car.location[2] < 13  # the car 12.65 m ahead
    behind = points_in_box(pts, car, calib, margin=0.35) & ~points_in_box(pts, car, calib)
    plain = label_points(pts, labels, calib)
    banded = label_points(pts, labels, calib, ignore_band=EVAL_IGNORE_BAND_M)
    assert behind.sum() > 200
    assert banded.ignored[behind].sum() > 0.5 * behind.sum() > plain.ignored[behind].sum()
