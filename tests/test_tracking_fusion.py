"""Box projection, IoU matching and LATTE-style class/score confirmation and correction."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception import interfaces as itf
from squeeze_perception.tracking.fusion import (KITTI_IMAGE_SIZE, KITTI_P_RECT_02, KITTI_VELO_TO_RECT,
                                                FusionParams, box_corners, fuse, ground_measurements,
                                                iou_matrix, project_boxes, velo_to_image_matrix)

# A simple camera: Velodyne x forward -> optical z, y left -> -x, z up -> -y; f = 100, centre (200, 100).
VELO_TO_CAM = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)
P = np.array([[100, 0, 200, 0], [0, 100, 100, 0], [0, 0, 1, 0]], float)
M = velo_to_image_matrix(P, VELO_TO_CAM)
SIZE = (400, 200)


def _inst(x, y, z=0.0, l=2.0, w=2.0, h=2.0, cls=1, score=0.6, yaw=0.0):
    row = np.zeros(1, itf.INSTANCE_DTYPE)
    row["x"], row["y"], row["z"], row["length"], row["width"], row["height"] = x, y, z, l, w, h
    row["class_id"], row["score"], row["yaw"] = cls, score, yaw
    return row


def _det(box, cls=1, score=0.8):
    d = np.zeros(1, itf.DETECTION_DTYPE)
    d["u_min"], d["v_min"], d["u_max"], d["v_max"] = box
    d["class_id"], d["score"] = cls, score
    return d


def test_box_corners_rotate_about_the_centre():
    c = box_corners(_inst(1.0, 2.0, l=4.0, w=2.0, yaw=np.pi / 2))[0]
    np.testing.assert_allclose(c[:, 0].min(), 0.0, atol=1e-6)  # width 2 along x after 90 deg
    np.testing.assert_allclose(c[:, 1].max(), 4.0, atol=1e-6)  # length 4 along y
    np.testing.assert_allclose(c.mean(axis=0), [1.0, 2.0, 0.0], atol=1e-6)


def test_projection_of_a_cube_straight_ahead_is_hand_computable():
    # Cube 2 m, centre 10 m ahead: near face at depth 9 -> +-1 m * 100 / 9 = 11.1 px about the centre.
    boxes, valid, visible = project_boxes(_inst(10.0, 0.0), M, SIZE)
    assert valid[0] and visible[0] == pytest.approx(1.0)
    np.testing.assert_allclose(boxes[0], [200 - 100 / 9, 100 - 100 / 9, 200 + 100 / 9, 100 + 100 / 9], atol=1e-6)


def test_boxes_behind_or_outside_are_invalid():
    boxes, valid, visible = project_boxes(np.concatenate([_inst(-10.0, 0.0), _inst(10.0, 40.0)]), M, SIZE)
    assert not valid[0] and not valid[1]


def test_iou_matrix_hand_cases():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    np.testing.assert_allclose(iou_matrix(a, b)[0], [50 / 150, 0.0, 1.0])


def test_matching_class_confirms_with_noisy_or():
    inst = _inst(10.0, 0.0, score=0.6)
    box, _, _ = project_boxes(inst, M, SIZE)
    res = fuse(inst, _det(box[0], cls=1, score=0.5), M, SIZE)
    assert res.matched_detection.tolist() == [0]
    assert res.instances["score"][0] == pytest.approx(1 - 0.4 * 0.5)


def test_more_confident_camera_corrects_the_class():
    inst = np.concatenate([_inst(10.0, 0.0, cls=2, score=0.5), _inst(10.0, -4.0, cls=0, score=0.9)])
    boxes, _, _ = project_boxes(inst, M, SIZE)
    dets = np.concatenate([_det(boxes[0], cls=1, score=0.8), _det(boxes[1] + 2, cls=3, score=0.4)])
    res = fuse(inst, dets, M, SIZE)
    assert res.instances["class_id"].tolist() == [1, 3]  # unknown always takes the camera's class
    assert res.instances["score"].tolist() == pytest.approx([0.8, 0.4])


def test_less_confident_camera_leaves_the_lidar_class():
    inst = _inst(10.0, 0.0, cls=2, score=0.9)
    box, _, _ = project_boxes(inst, M, SIZE)
    res = fuse(inst, _det(box[0], cls=1, score=0.5), M, SIZE)
    assert res.instances["class_id"][0] == 2 and res.instances["score"][0] == pytest.approx(0.9)


def test_unseen_by_camera_in_view_is_damped_out_of_view_is_kept():
    inst = np.concatenate([_inst(10.0, 0.0, score=0.6), _inst(-10.0, 0.0, score=0.6)])
    res = fuse(inst, np.zeros(0, itf.DETECTION_DTYPE), M, SIZE, FusionParams(unconfirmed_factor=0.5))
    assert res.in_image.tolist() == [True, False]
    assert res.instances["score"].tolist() == pytest.approx([0.3, 0.6])


def test_without_camera_fusion_is_identity():
    inst = _inst(10.0, 0.0, score=0.6)
    res = fuse(inst, None, None, None)
    np.testing.assert_array_equal(res.instances, inst)


def test_low_iou_is_not_a_match():
    inst = _inst(10.0, 0.0)
    res = fuse(inst, _det([300, 10, 340, 40]), M, SIZE)
    assert res.matched_detection.tolist() == [-1] and res.unexplained_detections.tolist() == [0]


@pytest.mark.parametrize("x, y", [(8.0, 0.0), (20.0, 3.0), (30.0, -5.0)])
def test_ground_measurement_recovers_position_on_kitti_calibration(x, y):
    m = velo_to_image_matrix(KITTI_P_RECT_02, KITTI_VELO_TO_RECT)
    inst = _inst(x, y, z=-1.73 + 0.75, l=0.8, w=0.8, h=1.5, cls=2)
    box, valid, _ = project_boxes(inst, m, KITTI_IMAGE_SIZE)
    assert valid[0]
    rows, std = ground_measurements(_det(box[0], cls=2), m, ground_z_m=-1.73)
    assert len(rows) == 1 and rows["class_id"][0] == 2
    err = np.hypot(rows["x"][0] - x, rows["y"][0] - y)
    assert err < 0.5 and std[0, 0] > 0.1


def test_ground_measurement_noise_grows_with_range():
    m = velo_to_image_matrix(KITTI_P_RECT_02, KITTI_VELO_TO_RECT)
    stds = []
    for x in (10.0, 30.0):
        box, _, _ = project_boxes(_inst(x, 0.0, z=-1.0, l=0.8, w=0.8, h=1.5), m, KITTI_IMAGE_SIZE)
        stds.append(ground_measurements(_det(box[0], cls=2), m)[1][0, 0])
    assert stds[1] > 2 * stds[0]


def test_box_above_horizon_gives_no_ground_measurement():
    m = velo_to_image_matrix(KITTI_P_RECT_02, KITTI_VELO_TO_RECT)
    rows, _ = ground_measurements(_det([600, 20, 640, 60]), m)  # bottom edge above the horizon
    assert len(rows) == 0
