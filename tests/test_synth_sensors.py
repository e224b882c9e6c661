"""Synthetic LiDAR and camera: hand-checkable geometry, KITTI-like scan statistics, consistent labels."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from squeeze_perception.kitti.checks import check_object_frame
from squeeze_perception.kitti.default_calib import kitti_calibration
from squeeze_perception.kitti.hdl64e import HDL64E_BEAM_HEIGHT_M, HDL64E_ELEVATION_DEG, KITTI_VELODYNE_HEIGHT_M
from squeeze_perception.kitti.lidar_2d import read_lidar_2d, scan_to_lidar_2d
from squeeze_perception.kitti.pointwise import class_of_type, points_in_box
from squeeze_perception.kitti.projection import spherical_project
from squeeze_perception.offline.synth.camera import NOISE_PERIOD, Camera, Lighting, _binomial_blur, value_noise
from squeeze_perception.offline.synth.frame import FrameRenderer
from squeeze_perception.offline.synth.generate import object_frame
from squeeze_perception.offline.synth.lidar import Hdl64e, ego_occluded
from squeeze_perception.offline.synth.materials import Material
from squeeze_perception.offline.synth.meshes import box
from squeeze_perception.offline.synth.raycast import RayScene
from squeeze_perception.offline.synth.writer import encode_png, write_object_frame


@pytest.fixture(scope="module")
def frames():
    """Three independent synthetic object frames (a few seconds in all)."""
    return [object_frame(0, "training", i) for i in range(3)]


def flat_ground_scene() -> RayScene:
    return RayScene(box((400, 400, 0.02), (0, 0, -0.01), Material.GRASS, (80, 120, 60)), [])


def test_lidar_on_flat_ground_hits_where_each_beam_meets_the_road():
    lidar = Hdl64e()
    rotation, origin = np.eye(3), np.array([0.0, 0.0, KITTI_VELODYNE_HEIGHT_M])
    scan = lidar.scan(flat_ground_scene(), rotation, origin, np.random.default_rng(0))
    assert len(scan.points) > 0
    np.testing.assert_allclose(scan.points[:, 2], -KITTI_VELODYNE_HEIGHT_M, atol=0.08)
    horizontal = np.hypot(scan.points[:, 0], scan.points[:, 1])
    for row in (40, 63):
        expected = (KITTI_VELODYNE_HEIGHT_M + HDL64E_BEAM_HEIGHT_M[row]) / np.tan(np.radians(-HDL64E_ELEVATION_DEG[row]))
        assert np.median(horizontal[scan.rows == row]) == pytest.approx(expected, rel=0.01)
    # Beams above the horizon never reach a flat ground; the lowest beams lose the hood and rear.
    assert not np.any(HDL64E_ELEVATION_DEG[scan.rows] > 0)
    assert scan.class_id.max() == 0 and scan.instance_id.max() == -1
    az = np.degrees(np.arctan2(scan.points[:, 1], scan.points[:, 0]))
    assert not np.any((scan.rows == 63) & (np.abs(az) < 15))
    assert np.any((scan.rows == 63) & (np.abs(np.abs(az) - 90) < 15))


def test_ego_occlusion_only_blocks_the_lowest_beams_ahead_and_behind():
    assert ego_occluded(np.array([-24.9, -24.9, -24.9, -15.0]), np.radians([0.0, 180.0, 90.0, 0.0])).tolist() == \
        [True, True, False, False]


def test_intensity_is_in_kitti_range_and_brighter_for_paint_than_asphalt():
    lidar = Hdl64e()
    sheet = box((0.1, 40, 6), (12, 0, 3), Material.LANE_PAINT, (255, 255, 255))
    scene = RayScene(box((400, 400, 0.02), (0, 0, -0.01), Material.ASPHALT, (80, 80, 80)), [(sheet, 0, -1)])
    scan = lidar.scan(scene, np.eye(3), np.array([0.0, 0.0, 1.73]), np.random.default_rng(1))
    assert scan.points[:, 3].min() >= 0 and scan.points[:, 3].max() <= 0.99
    wall = scan.material == Material.LANE_PAINT
    road = scan.material == Material.ASPHALT
    assert wall.sum() > 100 and road.sum() > 100
    assert np.median(scan.points[wall, 3]) > np.median(scan.points[road, 3])


def test_scan_statistics_match_kitti(frames, kitti_real):
    real = [read_lidar_2d(p) for p in sorted((kitti_real / "lidar_2d").glob("*.npy"))]
    real_empty = np.mean([np.mean(r[..., 4] == 0) for r in real])
    for f in frames:
        n = len(f.scan.points)
        assert 95_000 <= n <= 130_000, n  # KITTI full scans: ~100-125k points
        empty = 1 - spherical_project(f.scan.points, "front", rows=f.scan.rows).mask.mean()
        # Real lidar_2d frames leave ~13 % of the 64x512 front cells empty; synthetic ones are close.
        assert abs(empty - real_empty) < 0.12, (empty, real_empty)


def test_class_point_fractions_are_plausible(frames):
    classes = np.concatenate([f.scan.class_id for f in frames])
    fractions = np.bincount(classes, minlength=4) / len(classes)
    assert fractions[0] > 0.7  # background dominates, as in KITTI
    assert 0.005 < fractions[1] < 0.25  # cars
    assert fractions[2] < 0.05 and fractions[3] < 0.05


def test_every_labelled_object_contains_its_points_and_projects_onto_its_box(frames):
    calib = kitti_calibration()
    n_checked = 0
    for f in frames:
        checks = check_object_frame(f.labels, f.scan.points, calib, (1242, 375))
        for c in checks:
            assert c.bbox_in_image
            truth = next(t for t in f.truths if t.label is c.label)
            own = f.scan.points[f.scan.instance_id == truth.agent.instance_id]
            if truth.agent.class_id > 0 and len(own):
                assert points_in_box(own, c.label, calib, margin=0.1).mean() > 0.99
                assert c.points_inside >= len(own) * 0.99
            if c.label.truncated < 0.05 and not np.isnan(c.projection_iou):
                # The 2D box hugs the shape; the 3D box's projection is larger for thin riders and walkers.
                assert c.projection_iou > (0.75 if c.label.type == "Car" else 0.55)
            assert class_of_type(c.label.type) == truth.agent.class_id
            n_checked += 1
    assert n_checked >= 5


def test_lidar_2d_of_a_synthetic_scan_has_the_real_layout(frames):
    f = frames[0]
    tensor = scan_to_lidar_2d(f.scan.points, f.scan.class_id, f.scan.rows)
    assert tensor.shape == (64, 512, 6) and tensor.dtype == np.float32
    occupied = tensor[..., 4] > 0
    np.testing.assert_allclose(np.linalg.norm(tensor[..., :3], axis=-1)[occupied], tensor[..., 4][occupied], rtol=1e-5)
    assert set(np.unique(tensor[..., 5]).astype(int)) <= {0, 1, 2, 3}
    assert np.all(tensor[..., 5][~occupied] == 0)


def test_camera_sees_the_world_through_the_kitti_calibration():
    calib = kitti_calibration()
    cam = Camera(calib)
    # A red wall 20 m ahead: every pixel below the horizon row that looks at it is reddish.
    wall = box((0.2, 60, 30), (20, 0, 0), Material.PAINT, (200, 20, 20))
    scene = RayScene(box((400, 400, 0.02), (0, 0, -1.74), Material.ASPHALT, (80, 80, 80)), [(wall, 0, 7)])
    img, inst = cam.render(scene, np.eye(3), np.zeros(3), Lighting.random(np.random.default_rng(0)),
                           np.random.default_rng(0), shadows=False)
    assert img.shape == (375, 1242, 3) and inst.shape == (375, 1242)
    # The point (20, 0, 0) projects near the principal point; that pixel shows the wall.
    uv, _ = calib.project_velo(np.array([[19.9, 0.0, 0.0]]))
    u, v = np.round(uv[0]).astype(int)
    assert inst[v, u] == 7
    assert img[v, u, 0] > img[v, u, 2] + 30


def test_value_noise_is_bounded_smooth_and_deterministic():
    u = np.linspace(0, 20, 4001)
    n = value_noise(u, np.full_like(u, 3.3), seed=4)
    assert n.min() >= 0 and n.max() < 1 and n.std() > 0.05
    assert np.abs(np.diff(n)).max() < 0.02  # 0.005 apart -> tiny steps: smooth, no jumps
    np.testing.assert_array_equal(n, value_noise(u, np.full_like(u, 3.3), seed=4))


def test_frames_are_reproducible():
    a = object_frame(5, "testing", 2)
    b = object_frame(5, "testing", 2)
    np.testing.assert_array_equal(a.scan.points, b.scan.points)
    np.testing.assert_array_equal(a.image, b.image)
    assert [lab.to_line() for lab in a.labels] == [lab.to_line() for lab in b.labels]
    assert FrameRenderer().calib.P2.shape == (3, 4)


def test_camera_only_frame_has_the_same_image_and_labels_and_writes_no_lidar(frames, tmp_path):
    camera_only = object_frame(0, "training", 0, lidar=False)
    assert not camera_only.has_lidar and len(camera_only.scan.points) == 0
    np.testing.assert_array_equal(camera_only.image, frames[0].image)
    assert [lab.to_line() for lab in camera_only.labels] == [lab.to_line() for lab in frames[0].labels]
    write_object_frame(tmp_path, "training", 0, camera_only, "train")
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["object/training/calib/000000.txt", "object/training/image_2/000000.png",
                       "object/training/label_2/000000.txt"]
    with Image.open(tmp_path / "object/training/image_2/000000.png") as im:
        np.testing.assert_array_equal(np.asarray(im), camera_only.image)


def test_png_encoder_round_trips_rgb_and_grey():
    rng = np.random.default_rng(0)
    for shape in ((7, 5, 3), (4, 9), (3, 2, 4)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        with Image.open(io.BytesIO(encode_png(img))) as im:
            np.testing.assert_array_equal(np.asarray(im), img)


def test_lighting_varies_sun_sky_exposure_noise_and_blur():
    draws = [Lighting.random(np.random.default_rng(s)) for s in range(60)]
    elevation = np.degrees(np.arcsin([d.sun_dir[2] for d in draws]))
    assert elevation.min() < 15 and elevation.max() > 55
    assert np.ptp([d.exposure for d in draws]) > 0.4 and np.ptp([d.sun_colour.max() for d in draws]) > 0.5
    assert np.ptp([d.sky_colour[2] for d in draws]) > 0.1 and np.ptp([d.noise_sigma for d in draws]) > 2
    assert 0 < np.mean([d.blur for d in draws]) < 0.5
    # A blurred image keeps its mean and loses pixel-to-pixel contrast.
    img = np.random.default_rng(1).random((20, 30, 3), dtype=np.float32)
    blurred = _binomial_blur(img)
    assert blurred.mean() == pytest.approx(img.mean(), rel=1e-5) and np.diff(blurred, axis=1).std() < 0.5 * np.diff(img, axis=1).std()


def test_value_noise_lookup_table_wraps_without_seams():
    # Across the table's period the noise stays continuous (the padded row and column are the first ones).
    u = np.linspace(NOISE_PERIOD - 2, NOISE_PERIOD + 2, 801)
    n = value_noise(u, np.full_like(u, 5.5), seed=0)
    assert np.abs(np.diff(n)).max() < 0.02
    np.testing.assert_allclose(value_noise(u - NOISE_PERIOD, np.full_like(u, 5.5)), n, atol=1e-3)


def test_lidar_2d_only_dataset_writes_the_full_runs_grids_and_nothing_else(frames, tmp_path):
    from squeeze_perception.kitti.lidar_2d import scan_to_lidar_2d
    from squeeze_perception.offline.synth.generate import dataset_tasks, run_tasks

    tasks = dataset_tasks(tmp_path, 0, object_train=2, object_test=0, sequences=1, frames=5, camera=False)
    assert [t.kind for t in tasks] == ["object", "object"]  # no drives without a camera
    run_tasks(tasks)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == \
        ["lidar_2d/train/000000.npy", "lidar_2d/train/000001.npy"]
    for i in range(2):
        full = scan_to_lidar_2d(frames[i].scan.points, frames[i].scan.class_id, frames[i].scan.rows)
        np.testing.assert_array_equal(np.load(tmp_path / "lidar_2d" / "train" / f"{i:06d}.npy"), full)
    assert all(t.outputs_exist() for t in tasks)
    with pytest.raises(ValueError, match="camera, the LiDAR or both"):
        dataset_tasks(tmp_path, 0, 1, 0, 0, 1, lidar=False, camera=False)
