"""Fusion contract, written from the pinhole model and the documented rules (docs/tracking.md).

A hand camera keeps every number exact: Velodyne x forward -> optical z (depth), y left -> -u,
z up -> -v, focal 100 px, principal point (200, 100). A velo point (x, y, z) projects to
u = 200 - 100 y / x, v = 100 - 100 z / x. A ground point (x, y, -h) has v = 100 + 100 h / x,
so the ray through the bottom centre of a box recovers it exactly.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from squeeze_perception import interfaces as itf
from squeeze_perception.tracking.fusion import (CLASS_SIZE_PRIOR, KITTI_P_RECT_02, KITTI_VELO_TO_RECT,
                                                FusionParams, box_corners, detection_boxes, fuse,
                                                ground_measurements, iou_matrix, project_boxes,
                                                velo_to_image_matrix)

# the same hand camera and row builders as the basic fusion tests (prepend import mode puts tests/ on sys.path)
from test_tracking_fusion import M, P, SIZE, VELO_TO_CAM, _det, _inst  # noqa: E402

F = 100.0


def _ground_det(x, y, h, cls=2, score=0.7, depth_offset=0.0):
    """Camera box whose bottom-centre ray meets the ground (z = -h) at (x, y); camera at
    velo (-depth_offset, 0, 0) looking along x."""
    depth = x + depth_offset
    u = 200.0 - F * y / depth
    v = 100.0 + F * h / depth
    return _det([u - 5.0, v - 30.0, u + 5.0, v], cls=cls, score=score)


# ---------------------------------------------------------------- velo_to_image_matrix / box_corners
def test_velo_to_image_is_p_times_the_rigid_transform():
    np.testing.assert_allclose(M, [[200, -100, 0, 0], [100, 0, -100, 0], [1, 0, 0, 0]])
    assert velo_to_image_matrix(P.tolist(), VELO_TO_CAM.astype(int).tolist()).dtype == float


def test_box_corners_are_the_rotated_footprint_at_any_yaw():
    yaw, l, w, h = 0.5, 4.0, 2.0, 1.5
    c = box_corners(_inst(3.0, -2.0, z=0.5, l=l, w=w, h=h, yaw=yaw))[0]
    rot = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    want = []
    for sx in (1, -1):
        for sy in (1, -1):
            for sz in (1, -1):
                xy = np.array([3.0, -2.0]) + rot @ np.array([sx * l / 2, sy * w / 2])
                want.append([xy[0], xy[1], 0.5 + sz * h / 2])
    got = sorted(map(tuple, np.round(c, 6)))
    assert got == sorted(map(tuple, np.round(np.array(want), 6)))


# ---------------------------------------------------------------- project_boxes
def test_empty_projection_has_the_documented_shapes():
    boxes, valid, visible = project_boxes(np.zeros(0, itf.INSTANCE_DTYPE), M, SIZE)
    assert boxes.shape == (0, 4) and valid.shape == (0,) and visible.shape == (0,)
    assert valid.dtype == bool


def test_hull_cut_by_the_right_image_edge_is_clipped_there_and_half_visible():
    # Cube 2 m centred 9 m ahead: near face at depth 8 -> +-100/8 = 12.5 px around (200, 100).
    boxes, valid, visible = project_boxes(_inst(9.0, 0.0), M, (200, 200))
    np.testing.assert_array_equal(boxes[0], [187.5, 87.5, 200.0, 112.5])
    assert valid[0] and visible[0] == 0.5


def test_hull_larger_than_the_image_is_clipped_to_every_border():
    boxes, valid, visible = project_boxes(_inst(3.0, 0.0, l=2.0, w=20.0, h=20.0), M, SIZE)
    np.testing.assert_array_equal(boxes[0], [0.0, 0.0, 400.0, 200.0])
    assert valid[0] and 0 < visible[0] < 0.5


def test_box_behind_the_camera_is_invalid_and_not_visible():
    _, valid, visible = project_boxes(_inst(-10.0, 0.0), M, SIZE)
    assert not valid[0] and visible[0] == 0.0


def test_sub_pixel_box_fully_in_view_is_valid_and_fully_visible():
    # 5 cm cube at 10 m: a hull of about 0.5 x 0.5 px, entirely inside the image.
    _, valid, visible = project_boxes(_inst(10.0, 0.0, l=0.05, w=0.05, h=0.05), M, SIZE)
    assert valid[0] and visible[0] == pytest.approx(1.0)


def test_default_min_depth_is_one_metre():
    near = _inst(2.5, 0.0, l=2.0, w=0.2, h=0.2)  # nearest corner 1.5 m ahead
    assert project_boxes(near, M, SIZE)[1][0]
    assert not project_boxes(near, M, SIZE, min_depth_m=2.0)[1][0]


def test_corner_exactly_at_min_depth_is_not_closer_so_it_is_projected():
    # FusionParams: "boxes with a corner closer than this to the camera are not projected".
    box = _inst(2.0, 0.0, l=2.0, w=0.2, h=0.2)  # corners at depth 1.0 and 3.0 exactly
    assert project_boxes(box, M, SIZE, min_depth_m=1.0)[1][0]
    assert not project_boxes(box, M, SIZE, min_depth_m=1.0 + 1e-9)[1][0]


def test_degenerate_boxes_project_without_numpy_warnings():
    # One corner in the camera plane at the optical centre (0/0 and x/0), and a zero-size box.
    boxes = np.concatenate([_inst(1.0, 1.0), _inst(10.0, 0.0, l=0.0, w=0.0, h=0.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, valid, visible = project_boxes(boxes, M, SIZE)
    assert not valid[0] and np.all(np.isfinite(visible))


# ---------------------------------------------------------------- iou_matrix / detection_boxes
def test_iou_of_non_square_boxes():
    a = np.array([[0, 0, 10, 20]], float)  # area 200
    b = np.array([[0, 10, 10, 40]], float)  # area 300, overlap 100
    assert iou_matrix(a, b)[0, 0] == pytest.approx(100 / 400)
    assert iou_matrix(b, a)[0, 0] == pytest.approx(100 / 400)


def test_iou_of_identical_sub_pixel_boxes_is_one():
    a = np.array([[0.0, 0.0, 0.5, 0.25]])
    assert iou_matrix(a, a)[0, 0] == pytest.approx(1.0)


def test_iou_of_zero_area_boxes_is_zero():
    a = np.array([[3.0, 3.0, 3.0, 3.0]])
    assert iou_matrix(a, a)[0, 0] == 0.0


def test_detection_boxes_of_no_detections():
    assert detection_boxes(np.zeros(0, itf.DETECTION_DTYPE)).shape == (0, 4)


# ---------------------------------------------------------------- fuse
@pytest.mark.parametrize("missing", ["detections", "matrix", "size"])
def test_any_missing_camera_input_means_lidar_only(missing):
    inst = np.concatenate([_inst(10.0, 0.0), _inst(10.0, 3.0, score=0.4)])
    args = {"detections": _det([0, 0, 10, 10]), "matrix": M, "size": SIZE}
    args[missing] = None
    res = fuse(inst, args["detections"], args["matrix"], args["size"])
    np.testing.assert_array_equal(res.instances, inst)
    assert res.matched_detection.tolist() == [-1, -1] and np.issubdtype(res.matched_detection.dtype, np.integer)
    assert res.in_image.dtype == bool and res.in_image.tolist() == [False, False]
    assert len(res.unexplained_detections) == 0
    assert np.issubdtype(res.unexplained_detections.dtype, np.integer)


def test_result_arrays_are_index_and_mask_typed():
    inst = _inst(10.0, 0.0)
    box, _, _ = project_boxes(inst, M, SIZE)
    res = fuse(inst, _det(box[0]), M, SIZE)
    assert np.issubdtype(res.matched_detection.dtype, np.integer) and res.in_image.dtype == bool
    assert np.issubdtype(res.unexplained_detections.dtype, np.integer)


def test_equally_confident_camera_does_not_override_the_lidar_class():
    inst = _inst(10.0, 0.0, cls=2, score=0.5)
    box, _, _ = project_boxes(inst, M, SIZE)
    res = fuse(inst, _det(box[0], cls=1, score=0.5), M, SIZE)
    assert res.matched_detection.tolist() == [0]
    assert res.instances["class_id"][0] == 2 and res.instances["score"][0] == pytest.approx(0.5)


def test_matched_detection_zero_is_explained_the_other_is_not():
    inst = _inst(10.0, 0.0)
    box, _, _ = project_boxes(inst, M, SIZE)
    dets = np.concatenate([_det(box[0]), _det([350, 150, 390, 190])])
    res = fuse(inst, dets, M, SIZE)
    assert res.matched_detection.tolist() == [0]
    assert res.unexplained_detections.tolist() == [1]


def test_iou_exactly_at_the_threshold_is_a_match():
    inst = _inst(9.0, 0.0)  # hull [187.5, 87.5, 212.5, 112.5], area 625
    det = _det([187.5, 87.5, 212.5, 137.5])  # area 1250, contains the hull: IoU exactly 0.5
    res = fuse(inst, det, M, SIZE, FusionParams(iou_threshold=0.5))
    assert res.matched_detection.tolist() == [0]


def test_exactly_half_visible_counts_as_in_image():
    res = fuse(_inst(9.0, 0.0, score=0.6), np.zeros(0, itf.DETECTION_DTYPE), M, (200, 200),
               FusionParams(min_visible_fraction=0.5, unconfirmed_factor=0.5))
    assert res.in_image.tolist() == [True] and res.instances["score"][0] == pytest.approx(0.3)


def test_box_behind_the_camera_never_matches_its_mirror_image_nor_counts_as_in_image():
    # Behind the camera the corners project (inverted) onto the same hull as the box in front.
    front, behind = _inst(10.0, 0.0), _inst(-10.0, 0.0, score=0.6)
    box, _, _ = project_boxes(front, M, SIZE)
    res = fuse(behind, _det(box[0]), M, SIZE, FusionParams(min_visible_fraction=0.0))
    assert res.matched_detection.tolist() == [-1] and res.in_image.tolist() == [False]
    assert res.instances["score"][0] == pytest.approx(0.6)
    assert res.unexplained_detections.tolist() == [0]


def test_fusion_uses_its_min_depth_parameter():
    inst = _inst(3.0, 0.0, l=2.0, w=1.0, h=1.0)  # nearest corner 2 m ahead
    box, valid, _ = project_boxes(inst, M, SIZE)
    assert valid[0]
    res = fuse(inst, _det(box[0]), M, SIZE, FusionParams(min_depth_m=5.0))
    assert res.matched_detection.tolist() == [-1] and res.in_image.tolist() == [False]


# ---------------------------------------------------------------- ground_measurements
def test_ground_estimate_is_the_ray_hit_plus_half_the_prior_length_along_the_ray():
    h = 1.5
    rows, std = ground_measurements(_ground_det(10.0, 2.0, h, cls=2, score=0.7), M, ground_z_m=-h)
    assert len(rows) == 1 and rows.dtype == itf.INSTANCE_DTYPE and std.shape == (1, 2)
    r = rows[0]
    length, width, height = CLASS_SIZE_PRIOR[2]
    direction = np.array([10.0, 2.0]) / np.hypot(10.0, 2.0)
    np.testing.assert_allclose([r["x"], r["y"]], np.array([10.0, 2.0]) + direction * length / 2, atol=1e-4)
    assert r["z"] == pytest.approx(-h + height / 2)  # the box stands on the ground
    assert (r["length"], r["width"], r["height"]) == pytest.approx((length, width, height))
    assert r["yaw"] == pytest.approx(np.arctan2(2.0, 10.0), abs=1e-5)  # length along the ray
    assert r["class_id"] == 2 and r["score"] == pytest.approx(0.7)
    assert r["instance_id"] == -1 and r["num_points"] == 0  # no LiDAR instance, no points


def test_ground_estimate_half_a_metre_ahead_is_kept_and_shifted_by_half_a_length():
    rows, _ = ground_measurements(_ground_det(0.5, 0.0, 1.5, cls=1), M, ground_z_m=-1.5)
    assert len(rows) == 1
    assert rows["x"][0] == pytest.approx(0.5 + CLASS_SIZE_PRIOR[1][0] / 2, abs=1e-4)
    assert rows["y"][0] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("cls", [-1, 4, 7])
def test_ground_estimate_of_an_out_of_range_class_is_unknown(cls):
    rows, _ = ground_measurements(_ground_det(10.0, 0.0, 1.73, cls=cls), M)
    assert rows["class_id"].tolist() == [0]
    assert rows["length"][0] == pytest.approx(CLASS_SIZE_PRIOR[0][0])


def test_rays_missing_the_ground_or_too_far_are_skipped_not_the_rest():
    h = 1.73
    horizon = _det([190.0, 70.0, 210.0, 100.0])  # bottom on the horizon: ray parallel to the ground
    sky = _det([190.0, 40.0, 210.0, 90.0])  # bottom above the horizon: meets the ground behind
    far = _ground_det(60.5, 0.0, h)  # beyond the default 60 m
    good = _ground_det(20.0, 1.0, h)
    rows, std = ground_measurements(np.concatenate([horizon, sky, far, good]), M, ground_z_m=-h)
    assert len(rows) == 1 and std.shape == (1, 2)
    assert rows["x"][0] == pytest.approx(20.0 + 0.4 * 20 / np.hypot(20, 1), abs=1e-3)
    assert len(ground_measurements(far, M, ground_z_m=-h, max_range_m=61.0)[0]) == 1


def test_no_ground_estimate_gives_typed_empty_tables():
    rows, std = ground_measurements(_det([190.0, 40.0, 210.0, 90.0]), M)
    assert rows.dtype == itf.INSTANCE_DTYPE and rows.shape == (0,) and std.shape == (0, 2)


def test_std_is_per_row_and_isotropic():
    dets = np.concatenate([_ground_det(x, 0.0, 1.73) for x in (5.0, 10.0, 20.0)])
    rows, std = ground_measurements(dets, M)
    assert std.shape == (3, 2) and np.array_equal(std[:, 0], std[:, 1])
    assert np.all(np.diff(std[:, 0]) > 0)


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_along_ray_std_grows_as_pixel_std_range_squared_over_focal_times_height(offset):
    # One pixel in v moves the ground hit by range^2 / (f h): differences between ranges
    # cancel every range-independent term. Camera height 1 m; offset moves the camera back.
    cam = velo_to_image_matrix(P, np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, offset], [0, 0, 0, 1]]))
    h = 1.0

    def sd(x, **kw):
        return ground_measurements(_ground_det(x, 0.0, h, depth_offset=offset), cam, ground_z_m=-h, **kw)[1][0, 0]

    assert sd(30.0) - sd(20.0) == pytest.approx(2.0 * (30 ** 2 - 20 ** 2) / (F * h), rel=1e-3)
    assert sd(30.0, pixel_std=4.0) - sd(30.0) == pytest.approx(2.0 * 30 ** 2 / (F * h), rel=1e-3)
    assert sd(30.0) == sd(30.0, pixel_std=2.0)  # documented default


def test_longer_class_prior_adds_less_than_its_half_length_of_uncertainty():
    # Same ray, 5 m ahead: only the prior length differs between a car and a pedestrian.
    h = 1.0
    car = ground_measurements(_ground_det(5.0, 0.0, h, cls=1), M, ground_z_m=-h)[1][0, 0]
    ped = ground_measurements(_ground_det(5.0, 0.0, h, cls=2), M, ground_z_m=-h)[1][0, 0]
    assert car > ped
    assert car - ped < (CLASS_SIZE_PRIOR[1][0] - CLASS_SIZE_PRIOR[2][0]) / 2


def test_across_ray_std_is_five_percent_of_range_on_kitti():
    m = velo_to_image_matrix(KITTI_P_RECT_02, KITTI_VELO_TO_RECT)
    box, valid, _ = project_boxes(_inst(12.0, 0.0, z=-1.73 + 0.875, l=0.8, w=0.6, h=1.75), m, (1242, 375))
    assert valid[0]
    rows, std = ground_measurements(_det(box[0], cls=2), m)
    rng = np.hypot(rows["x"][0], rows["y"][0]) - 0.4
    assert std[0, 0] == pytest.approx(0.05 * rng, rel=0.02)
