"""ROS-free pipeline: every point labelled, FOV handling, bad input, missing weights, and the
stage plumbing with a stub network whose output is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from squeeze_perception.backends import ModelLoadError
from squeeze_perception.offline.segmentation.train import save_weights
from squeeze_perception.segmentation.models import build_squeezeseg
from squeeze_perception.segmentation.pipeline import PointsError, SegmentationPipeline


def _scene(rng) -> np.ndarray:
    """A car-sized box of points 10 m ahead, a ring of road points, one point behind."""
    car = np.c_[rng.uniform(9, 13, 5000), rng.uniform(-1, 1, 5000), rng.uniform(-1.5, 0, 5000)]
    az = rng.uniform(-np.pi, np.pi, 4000)
    r = rng.uniform(5, 30, 4000)
    road = np.c_[r * np.cos(az), r * np.sin(az), np.full(4000, -1.73)]
    pts = np.concatenate([car, road, [[-10.0, 0.0, -1.0]]])
    return np.c_[pts, rng.uniform(0, 1, len(pts))].astype(np.float32)


def _stub_car_network(pipeline):
    """Network stand-in: 'car' for every cell with range below 14 m and x > 8 m, else unknown."""
    def run(batch):
        logits = np.zeros((len(batch), 4, 64, 512), np.float32)
        car = (batch[:, 4] > 0) & (batch[:, 4] < 14) & (batch[:, 0] > 8)
        logits[:, 1][car] = 10.0
        logits[:, 0][~car] = 10.0
        return logits
    pipeline.run_network = run


def test_front_fov_labels_every_point_and_outside_points_get_zero(v1_weights):
    pl = SegmentationPipeline("squeezeseg", weights=v1_weights, fov="front", num_threads=1)
    pts = _scene(np.random.default_rng(0))
    res = pl.process(pts)
    assert res.labels.shape == (len(pts),) and res.instances.shape == (len(pts),)
    assert res.labels[-1] == 0 and res.instances[-1] == -1  # behind the sensor
    assert set(np.unique(res.labels)) <= {0, 1, 2, 3}
    assert set(res.timings_ms) == {"projection", "network", "crf", "clustering", "boxfit", "size_gate"}


def test_stub_network_gives_one_car_instance_with_a_fitted_box(v1_weights):
    pl = SegmentationPipeline("squeezeseg", weights=v1_weights, fov="front", crf=False, num_threads=1)
    _stub_car_network(pl)
    pts = _scene(np.random.default_rng(1))
    res = pl.process(pts)
    car_pts = np.arange(5000)
    assert (res.labels[car_pts] == 1).mean() > 0.95
    assert len(res.table) >= 1
    big = res.table[np.argmax(res.table["num_points"])]
    assert big["class_id"] == 1 and big["num_points"] > 4500
    assert 9 <= big["x"] <= 13 and abs(big["y"]) < 1
    assert big["length"] == pytest.approx(4.0, abs=0.3) and big["width"] == pytest.approx(2.0, abs=0.3)
    assert np.all(res.instances[res.labels == 0] == -1)
    # Full FOV: the point behind the sensor is now inside a tile.
    pl.fov = "full"
    res_full = pl.process(pts)
    assert (res_full.labels[car_pts] == 1).mean() > 0.95 and res_full.cell_labels.shape == (4, 64, 512)
    assert res_full.in_fov == len(pts)


def test_bad_inputs_give_clear_errors_or_empty_valid_outputs(v1_weights):
    pl = SegmentationPipeline("squeezeseg", weights=v1_weights, num_threads=1)
    empty = pl.process(np.zeros((0, 4), np.float32))
    assert len(empty.labels) == 0 and len(empty.table) == 0
    with pytest.raises(PointsError, match=r"\(N, >=4\)"):
        pl.process(np.zeros((10, 3), np.float32))
    behind = np.c_[np.full(50, -10.0), np.linspace(-1, 1, 50), np.full(50, -1.0), np.ones(50)]
    res = pl.process(behind.astype(np.float32))
    assert res.in_fov == 0 and (res.labels == 0).all() and (res.instances == -1).all()
    pts = _scene(np.random.default_rng(2))
    pts[:5, 0] = np.nan
    res = pl.process(pts)
    assert (res.labels[:5] == 0).all() and (res.instances[:5] == -1).all()


def test_missing_or_mismatched_weights_raise_model_load_error(v1_weights, tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        SegmentationPipeline("squeezeseg", weights=str(tmp_path / "nope.pt"))
    with pytest.raises(ModelLoadError, match="do not match"):
        SegmentationPipeline("squeezesegv2", weights=v1_weights)
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="corrupt"):
        SegmentationPipeline("squeezeseg", weights=str(bad))
    with pytest.raises(ValueError, match="fov"):
        SegmentationPipeline("squeezeseg", weights=v1_weights, fov="rear")


def test_real_lidar_2d_sample_runs_through_the_network(kitti_real, v1_weights):
    pl = SegmentationPipeline("squeezeseg", weights=v1_weights, num_threads=1)
    grid = np.load(kitti_real / "lidar_2d" / "2011_09_26_0001_0000000010.npy")
    valid = grid[..., 4] > 0
    pts = grid[valid][:, :4]
    res = pl.process(pts)
    assert res.in_fov > 0.99 * len(pts)  # the real front grid re-projects onto the front grid


def test_onnxruntime_backend_matches_torch_and_follows_retrained_weights(tmp_path):
    import os

    pts = _scene(np.random.default_rng(3))
    # Size gate off: untrained networks label whole blobs, which the gate would hand back to background
    # for both checkpoints alike; the comparison is of the networks' labels.
    weights = tmp_path / "squeezeseg.pt"

    def labelled(backend):
        return SegmentationPipeline("squeezeseg", backend=backend, weights=str(weights), num_threads=1,
                                    size_gate=False).process(pts)

    torch.manual_seed(1)
    save_weights(build_squeezeseg().eval(), "squeezeseg", {}, weights)
    ref, onnx = labelled("torch"), labelled("onnxruntime")
    assert (ref.labels == onnx.labels).mean() > 0.999
    torch.manual_seed(2)  # retrain: a newer checkpoint must not run the old exported graph
    save_weights(build_squeezeseg().eval(), "squeezeseg", {}, weights)
    os.utime(weights, (time_now := os.path.getmtime(weights) + 10, time_now))
    ref2, onnx2 = labelled("torch"), labelled("onnxruntime")
    assert (ref.labels != ref2.labels).mean() > 0.05  # the two checkpoints really differ
    assert (ref2.labels == onnx2.labels).mean() > 0.999


def test_ground_removal_unlabels_the_road_before_clustering(v1_weights):
    # Size gate off: a road that is all "car" is one cluster far longer than a car, which the gate
    # would hand back to background even without the ground stage; this test is about the ground stage.
    pl = SegmentationPipeline("squeezeseg", weights=v1_weights, crf=False, num_threads=1, size_gate=False)

    def everything_is_car(batch):
        logits = np.zeros((len(batch), 4, 64, 512), np.float32)
        logits[:, 1] = 10.0
        return logits
    pl.run_network = everything_is_car
    pts = _scene(np.random.default_rng(4))
    road = np.flatnonzero(np.isclose(pts[:, 2], -1.73))
    pl.ground_removal = False
    with_road = pl.process(pts)
    pl.ground_removal = True
    without = pl.process(pts)
    in_view = with_road.fov_mask[road]
    assert (with_road.labels[road][in_view] == 1).all()
    assert (without.labels[road] == 0).mean() > 0.99 and (without.instances[road] == -1).mean() > 0.99
    assert (without.labels[:5000] == 1).mean() > 0.9  # the car body stays


def test_front_view_projection_equals_projecting_every_point():
    """project_tiles computes beam rows only inside the front 90 degrees: same grid, same owners
    and same in-view rows as the projection of the whole scan."""
    from squeeze_perception.kitti.hdl64e import HDL64E_BEAM_HEIGHT_M, HDL64E_ELEVATION_DEG
    from squeeze_perception.kitti.projection import beam_rows, spherical_project
    from squeeze_perception.segmentation.pipeline import project_tiles

    # A 360-degree HDL-64E-like scan (no data files needed): every beam, random azimuths and ranges
    rng = np.random.default_rng(0)
    beam = rng.integers(0, 64, 60000)
    azimuth = rng.uniform(-np.pi, np.pi, len(beam))
    rng_m = rng.uniform(2.0, 60.0, len(beam))
    elevation = np.radians(HDL64E_ELEVATION_DEG[beam])
    points = np.stack([rng_m * np.cos(elevation) * np.cos(azimuth), rng_m * np.cos(elevation) * np.sin(azimuth),
                       rng_m * np.sin(elevation) + HDL64E_BEAM_HEIGHT_M[beam], rng.uniform(0, 1, len(beam))],
                      1).astype(np.float32)
    (proj,), owner = project_tiles(points, "front")
    full = spherical_project(points, fov="front", rows=beam_rows(points))
    np.testing.assert_array_equal(proj.grid, full.grid)
    np.testing.assert_array_equal(proj.point_index, full.point_index)
    np.testing.assert_array_equal(proj.rows, full.rows)
    np.testing.assert_array_equal(owner >= 0, full.in_fov)
    assert 0.1 < full.in_fov.mean() < 0.5  # the front view is a part of the scan, not all or nothing
