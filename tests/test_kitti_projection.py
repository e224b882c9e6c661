"""Spherical projection: hand-placed points, invariants, and the real SqueezeSeg lidar_2d frames."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.kitti.hdl64e import HDL64E_BEAM_HEIGHT_M, HDL64E_ELEVATION_DEG
from squeeze_perception.kitti.labels import read_velodyne_bin
from squeeze_perception.kitti.projection import (
    beam_rows, point_labels_to_cells, spherical_project, to_lidar_2d, unproject_labels)


def beam_point(row: int, azimuth_deg: float, horizontal: float, intensity: float = 0.5) -> list[float]:
    """A point exactly on beam `row` at the given azimuth and horizontal distance."""
    z = HDL64E_BEAM_HEIGHT_M[row] + horizontal * np.tan(np.radians(HDL64E_ELEVATION_DEG[row]))
    a = np.radians(azimuth_deg)
    return [horizontal * np.cos(a), horizontal * np.sin(a), z, intensity]


def test_front_projection_places_hand_made_points():
    # Column width 90/512 deg: +45 -> col 0, just right of 0 deg -> col 256, -44.95 -> col 511.
    pts = np.array([beam_point(0, 44.99, 10.0), beam_point(31, -0.05, 20.0), beam_point(32, -44.95, 8.0),
                    beam_point(63, 0.05, 5.0), beam_point(10, 60.0, 10.0), beam_point(10, 180.0, 10.0)])
    proj = spherical_project(pts)
    assert proj.grid.shape == (64, 512, 5) and proj.grid.dtype == np.float32
    assert proj.rows.tolist() == [0, 31, 32, 63, -1, -1]
    assert proj.cols.tolist() == [0, 256, 511, 255, -1, -1]
    assert proj.mask.sum() == 4
    assert proj.point_index[31, 256] == 1
    np.testing.assert_allclose(proj.grid[31, 256, 4], np.linalg.norm(pts[1, :3]), rtol=1e-6)
    np.testing.assert_allclose(proj.grid[0, 0, :4], pts[0], rtol=1e-6)


def test_full_projection_column_convention_and_width():
    pts = np.array([beam_point(5, 0.01, 10.0), beam_point(5, 90.01, 10.0), beam_point(5, -89.99, 10.0),
                    beam_point(5, 179.99, 10.0)])
    proj = spherical_project(pts, fov="full")
    assert proj.grid.shape == (64, 2048, 5)
    # Column width 360/2048: ahead -> W/2 - 1 (just left of centre), left -> W/4 - 1, right -> 3W/4 - 1, back -> 0.
    assert proj.cols.tolist() == [1023, 511, 1535, 0]
    assert (proj.rows == 5).all()


def test_nearest_point_wins_and_labels_return_to_every_point():
    near, far = beam_point(20, 1.0, 5.0, 0.1), beam_point(20, 1.0, 30.0, 0.9)
    pts = np.array([far, near, beam_point(40, -10.0, 12.0)])
    proj = spherical_project(pts)
    r, c = proj.rows[0], proj.cols[0]
    assert (proj.rows[1], proj.cols[1]) == (r, c)
    assert proj.point_index[r, c] == 1
    assert proj.grid[r, c, 3] == pytest.approx(0.1)
    cells = point_labels_to_cells(proj, np.array([2, 1, 3]))
    assert cells[r, c] == 1 and cells[proj.rows[2], proj.cols[2]] == 3 and cells.sum() == 4
    # The far point lost its cell but still receives the cell's label.
    assert unproject_labels(proj, cells).tolist() == [1, 1, 3]
    lidar_2d = to_lidar_2d(proj, cells)
    assert lidar_2d.shape == (64, 512, 6) and lidar_2d[r, c, 5] == 1


def test_points_outside_view_get_the_outside_label():
    pts = np.array([beam_point(3, 0.0, 10.0), beam_point(3, 120.0, 10.0), [0.0, 0.0, 0.0, 0.0],
                    [10.0, 0.0, 10.0, 0.1]])  # origin and a point 45 degrees up are no beam returns
    proj = spherical_project(pts)
    labels = unproject_labels(proj, np.full((64, 512), 7), outside=0)
    assert labels.tolist() == [7, 0, 0, 0]


def test_invalid_arguments_are_refused():
    with pytest.raises(ValueError):
        spherical_project(np.zeros((3, 3)))
    with pytest.raises(ValueError):
        spherical_project(np.zeros((3, 4)), fov="rear")
    with pytest.raises(ValueError):
        unproject_labels(spherical_project(np.zeros((1, 4))), np.zeros((64, 2048)))


def test_reprojecting_real_lidar_2d_reproduces_its_cells(kitti_real):
    files = sorted((kitti_real / "lidar_2d").glob("*.npy"))
    assert files
    for f in files:
        real = np.load(f)
        occupied = real[..., 4] > 0
        proj = spherical_project(real[occupied][:, :4])
        rr, cc = np.nonzero(occupied)
        same_cell = np.mean((proj.rows == rr) & (proj.cols == cc))
        assert same_cell > 0.99, f"{f.name}: only {same_cell:.4f} of the points return to their cell"
        np.testing.assert_allclose(proj.grid[..., 4][occupied & proj.mask], real[..., 4][occupied & proj.mask],
                                   rtol=1e-5)


def test_real_full_scan_rows_are_all_beams(kitti_real):
    scan = read_velodyne_bin(kitti_real / "object/training/velodyne/000001.bin")
    rows = beam_rows(scan)
    assert (rows >= 0).mean() > 0.999
    counts = np.bincount(rows[rows >= 0], minlength=64)
    # Every laser fires all around: each row holds a share of the scan (no empty beams).
    assert counts.min() > 0.2 * len(scan) / 64


def test_noise_map_estimates_and_reproduces_empty_rates():
    from squeeze_perception.kitti.noise_map import apply_noise_map, estimate_noise_map

    a = np.ones((64, 512, 6), np.float32)
    b = a.copy()
    b[:10] = 0  # top rows empty
    noise = estimate_noise_map([a, b])
    assert noise[:10].tolist() == np.full((10, 512), 0.5).tolist() and noise[10:].max() == 0
    rng = np.random.default_rng(0)
    full = np.ones((64, 512, 6), np.float32)
    target = np.full((64, 512), 0.3, np.float32)
    blanked = apply_noise_map(full, target, rng)
    assert abs(np.mean(np.all(blanked == 0, axis=-1)) - 0.3) < 0.01
    # A tensor already 30 % empty in every row gets no further gaps.
    part = full.copy()
    part[:, :154] = 0
    again = apply_noise_map(part, target, rng)
    assert np.array_equal(again, part)


def test_real_noise_map_is_highest_in_the_top_and_bottom_rows(kitti_real):
    from squeeze_perception.kitti.noise_map import estimate_noise_map

    noise = estimate_noise_map([np.load(p) for p in sorted((kitti_real / "lidar_2d").glob("*.npy"))])
    rows = noise.mean(axis=1)
    assert rows[:8].mean() > rows[20:50].mean() and rows[60:].mean() > rows[20:50].mean()
