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


# --------------------------------------------------------------------------- issue 17: mutation gaps
# Each test below closes a mutmut survivor of kitti/projection.py (docs/testing.md, "projection").
# The expectations come from the module docstring, the SphericalProjection field comments and
# the SqueezeSeg lidar_2d layout, not from today's output.
from squeeze_perception.kitti.hdl64e import LOWER_BLOCK_ROWS, UPPER_BLOCK_ROWS  # noqa: E402
from squeeze_perception.kitti.projection import azimuth_cols  # noqa: E402


def test_azimuth_cols_defaults_to_the_front_view_512_wide():
    pts = np.array([beam_point(5, 44.99, 10.0), beam_point(5, -44.95, 10.0), beam_point(5, 0.05, 10.0)])
    assert azimuth_cols(pts).tolist() == [0, 511, 255]
    assert azimuth_cols(pts, "front", None).tolist() == [0, 511, 255]
    # An explicit width is used, not the default: 1024 columns of 90/1024 degrees.
    assert azimuth_cols(pts, "front", 1024).tolist() == [0, 1023, 511]
    assert azimuth_cols(pts, "full", 1).tolist() == [0, 0, 0]  # one column is a valid (positive) width


def test_azimuth_cols_refuses_bad_fov_and_width_with_their_messages():
    pts = np.array([beam_point(5, 0.0, 10.0)])
    with pytest.raises(ValueError, match=r"fov must be one of \['front', 'full'\], got 'rear'"):
        azimuth_cols(pts, "rear")
    with pytest.raises(ValueError, match="width must be positive, got -4"):
        azimuth_cols(pts, "front", -4)


def test_azimuth_cols_is_minus_one_outside_the_view_and_for_non_finite_points():
    # "-1 outside it": behind the front view, beyond +/-45 degrees, and where the azimuth is
    # undefined (NaN coordinates; the full view has no "outside" otherwise).
    pts = np.array([beam_point(5, 46.0, 10.0), beam_point(5, -46.0, 10.0), beam_point(5, 180.0, 10.0),
                    [np.nan, 1.0, 0.0, 0.0], [1.0, np.nan, 0.0, 0.0]])
    assert azimuth_cols(pts, "front").tolist() == [-1, -1, -1, -1, -1]
    assert azimuth_cols(pts, "full").tolist()[3:] == [-1, -1]


FOV_WIDTH = {"front": 512, "full": 2048}


@pytest.mark.parametrize("fov, half", [("front", 45.0), ("full", 180.0)])
def test_float32_points_fall_into_the_columns_of_their_exact_values(fov, half):
    # KITTI .bin scans are float32. A point's column is that of its (exactly representable)
    # coordinates: the same as for the float64 copy of the same values, even right at a column
    # edge, where float32 arithmetic would round the azimuth across the edge.
    width = FOV_WIDTH[fov]
    az = np.radians(half - np.arange(1, width) * (2 * half / width))  # every inner column edge
    pts = np.stack([20 * np.cos(az), 20 * np.sin(az), np.zeros_like(az), np.zeros_like(az)], 1).astype(np.float32)
    assert np.array_equal(azimuth_cols(pts, fov), azimuth_cols(pts.astype(np.float64), fov))



def test_beam_rows_sentinel_is_minus_one_for_points_off_every_beam():
    # 45 degrees up, the origin (no direction) and non-finite points are no beam returns.
    pts = np.array([[10.0, 0.0, 10.0, 0.1], [0.0, 0.0, 0.0, 0.5], [np.inf, 0.0, 0.0, 0.0],
                    [10.0, np.inf, 0.0, 0.0], [np.nan, 0.0, 0.0, 0.0], beam_point(12, 3.0, 15.0)])
    assert beam_rows(pts).tolist() == [-1, -1, -1, -1, -1, 12]
    # The origin and non-finite points stay -1 however wide the tolerance (their direction is
    # undefined); the intensity column is not part of the position.
    assert beam_rows(pts, tolerance_deg=180.0).tolist()[1:] == [-1, -1, -1, -1, 12]


def test_beam_rows_close_range_points_keep_their_beam():
    # Rows are assigned by geometry only: a return 0.6 m / 0.9 m away on a beam line is on that beam.
    pts = np.array([beam_point(40, 0.0, 0.6), beam_point(10, 20.0, 0.9)])
    assert beam_rows(pts).tolist() == [40, 10]


def test_beam_rows_tolerance_is_inclusive():
    # "-1 where no beam line passes within tolerance": at exactly the tolerance the point is kept.
    # A point level with the upper block's origin has elevation 0 exactly; the nearest beam is
    # row 6 (-0.089 degrees), so its distance to the beam is 0.089 degrees.
    upper_h = float(np.mean(HDL64E_BEAM_HEIGHT_M[UPPER_BLOCK_ROWS]))
    pt = np.array([[10.0, 0.0, upper_h, 0.0]])
    assert abs(HDL64E_ELEVATION_DEG[6]) == 0.089
    assert beam_rows(pt, tolerance_deg=0.089).tolist() == [6]
    assert beam_rows(pt, tolerance_deg=np.nextafter(0.089, 0.0)).tolist() == [-1]


def test_float32_points_get_the_beam_of_their_exact_values():
    # Points half-way between neighbouring beams, stored as float32 (as in a KITTI .bin): the
    # row is that of the exact coordinates, i.e. the same as for the float64 copy.
    pts = []
    for r in range(63):
        if r == UPPER_BLOCK_ROWS.stop - 1:
            continue
        block = UPPER_BLOCK_ROWS if r < UPPER_BLOCK_ROWS.stop else LOWER_BLOCK_ROWS
        h = float(np.mean(HDL64E_BEAM_HEIGHT_M[block]))
        mid = np.radians((HDL64E_ELEVATION_DEG[r] + HDL64E_ELEVATION_DEG[r + 1]) / 2)
        for d in np.linspace(2.0, 80.0, 50):
            pts.append([d * np.cos(0.3), d * np.sin(0.3), h + d * np.tan(mid), 0.0])
    pts = np.array(pts, np.float32)
    assert np.array_equal(beam_rows(pts), beam_rows(pts.astype(np.float64)))


def test_spherical_project_error_messages():
    with pytest.raises(ValueError, match=r"points must be \(N, >=4\) \[x, y, z, intensity\], got shape \(3, 3\)"):
        spherical_project(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"points must be \(N, >=4\)"):
        spherical_project(np.zeros(4))
    with pytest.raises(ValueError, match="only the HDL-64E's 64 rows are supported, got height=32"):
        spherical_project(np.zeros((3, 4)), height=32)
    with pytest.raises(ValueError, match="rows has 2 entries for 3 points"):
        spherical_project(np.zeros((3, 4)), rows=[1, 2])
    with pytest.raises(ValueError, match="does not match the projection"):
        unproject_labels(spherical_project(np.zeros((1, 4))), np.zeros((64, 2048)))
    # Per-class scores instead of one label per cell are refused the same way (they used to
    # pass the check and fail inside with a TypeError).
    with pytest.raises(ValueError, match=r"cell_labels shape \(64, 512, 4\) does not match the projection \(64, 512\)"):
        unproject_labels(spherical_project(np.array([beam_point(10, 0.0, 10.0)])), np.zeros((64, 512, 4)))


def test_spherical_project_extra_columns_width_and_fov_are_kept():
    # "(N, >=4) [x, y, z, intensity, ...]": a fifth column (e.g. a ring) is accepted and ignored.
    base = np.array([beam_point(20, -44.95, 10.0, 0.25), beam_point(21, 10.0, 10.0, 0.75)])
    pts = np.concatenate([base, [[7.0], [9.0]]], axis=1)
    proj = spherical_project(pts, width=1024)
    assert proj.grid.shape == (64, 1024, 5)
    assert proj.cols[0] == 1023  # columns of the requested width, not the default 512
    np.testing.assert_allclose(proj.grid[20, 1023, :4], base[0], rtol=1e-6)
    assert spherical_project(pts, fov="full").fov == "full"
    assert spherical_project(pts).fov == "front"


def test_spherical_project_uses_given_rows_and_normalises_them():
    # A simulator or a PointCloud2 ring field gives the beam (Velodyne drivers: uint16 ring);
    # it is used as is, rows outside 0..63 are out of view, and proj.rows is int64 with -1 there.
    pts = np.array([beam_point(10, 0.0, 10.0), beam_point(10, 1.0, 10.0), beam_point(10, 2.0, 10.0),
                    beam_point(10, 3.0, 10.0)])
    ring = np.array([3, 63, 64, 70], dtype=np.uint16)
    proj = spherical_project(pts, rows=ring)
    assert proj.rows.dtype == np.int64 and proj.rows.tolist() == [3, 63, -1, -1]
    assert proj.cols[2:].tolist() == [-1, -1]
    assert proj.mask.sum() == 2 and proj.mask[3, proj.cols[0]] and proj.mask[63, proj.cols[1]]
    proj = spherical_project(pts, rows=np.array([5.0, 6.0, -1.0, -7.0], np.float32))
    assert proj.rows.dtype == np.int64 and proj.rows.tolist() == [5, 6, -1, -1]


def test_empty_cells_hold_minus_one_and_zeros():
    proj = spherical_project(np.array([beam_point(30, 5.0, 12.0), beam_point(31, -5.0, 12.0)]))
    assert proj.point_index.dtype == np.int64
    assert (proj.point_index[~proj.mask] == -1).all()  # "-1 where empty"
    assert (proj.grid[~proj.mask] == 0).all()  # "0 where empty"


def test_to_lidar_2d_layout_dtype_and_empty_cells():
    # SqueezeSeg lidar_2d: (H, W, 6) float32 x, y, z, intensity, range, label; empty cells all 0.
    pts = np.array([beam_point(30, 5.0, 12.0, 0.3), beam_point(31, -5.0, 12.0, 0.6)])
    proj = spherical_project(pts)
    cells = np.full((64, 512), 2)
    out = to_lidar_2d(proj, cells)
    assert out.dtype == np.float32 and out.shape == (64, 512, 6)
    assert np.array_equal(out[..., :5], proj.grid)
    assert (out[~proj.mask] == 0).all()
    assert (out[proj.mask, 5] == 2).all()
    plain = to_lidar_2d(proj)
    assert plain.dtype == np.float32 and np.array_equal(plain[..., :5], proj.grid) and (plain[..., 5] == 0).all()


def test_unproject_labels_returns_integer_labels():
    # Labels come back as integers: in the cell map's own integer type, or int64 for a float map.
    pts = np.array([beam_point(30, 5.0, 12.0), beam_point(30, 120.0, 12.0)])
    proj = spherical_project(pts)
    ints = unproject_labels(proj, np.full((64, 512), 3, dtype=np.int32))
    assert ints.dtype == np.int32 and ints.tolist() == [3, -1]
    floats = unproject_labels(proj, np.full((64, 512), 3.0, dtype=np.float32), outside=0)
    assert floats.dtype == np.int64 and floats.tolist() == [3, 0]
