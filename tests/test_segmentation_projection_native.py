"""The compiled projection kernel (segmentation/_stages_native.py) gives `project_tiles`' numpy
output bit for bit: every grid value, point index, row, column and owner, front and full view,
on generated HDL-64E scans, on clouds built to sit on the decision boundaries (the +-45 degree
edges of the front view, the middles between beams, the row tolerance, ties for a cell), on
degenerate input (empty, one point, the origin, -0.0, NaN and inf), on strided float32 views and,
where the real KITTI scans are present, on those. The numpy version stays the fallback: with
SQUEEZE_PERCEPTION_NATIVE_STAGES=0, or for points that are not float32."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from squeeze_perception.kitti.hdl64e import HDL64E_BEAM_HEIGHT_M, HDL64E_ELEVATION_DEG
from squeeze_perception.segmentation import _stages_native as native
from squeeze_perception.segmentation.pipeline import project_tiles

needs_kernel = pytest.mark.skipif(native.load() is None, reason=f"no native stages kernel: {native.load_error()}")


def test_kernel_builds_where_a_compiler_exists():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    assert native.load() is not None, native.load_error()


def _assert_same(points, fov):
    ref_projs, ref_owner = project_tiles(points, fov, native=False)
    out = native.project_tiles_native(points, fov)
    assert out is not None
    projs, owner = out
    np.testing.assert_array_equal(owner, ref_owner)
    assert owner.dtype == ref_owner.dtype
    assert len(projs) == len(ref_projs)
    for got, ref in zip(projs, ref_projs):
        assert got.grid.dtype == ref.grid.dtype and got.grid.shape == ref.grid.shape
        assert got.grid.tobytes() == ref.grid.tobytes()  # bitwise, -0.0 and NaN payloads included
        for name in ("mask", "point_index", "rows", "cols"):
            a, b = getattr(got, name), getattr(ref, name)
            assert a.dtype == b.dtype and a.shape == b.shape, name
            np.testing.assert_array_equal(a, b, err_msg=name)
        assert got.fov == ref.fov
    # and through the public entry point (native by default)
    projs2, owner2 = project_tiles(points, fov)
    np.testing.assert_array_equal(owner2, ref_owner)
    return ref_projs, ref_owner


def _hdl64e_scan(rng, n=60000, max_range=60.0):
    """A 360-degree HDL-64E-like scan: every beam, random azimuths and ranges (as the pipeline test)."""
    beam = rng.integers(0, 64, n)
    azimuth = rng.uniform(-np.pi, np.pi, n)
    r = rng.uniform(2.0, max_range, n)
    elevation = np.radians(HDL64E_ELEVATION_DEG[beam] + rng.normal(0, 0.05, n))
    return np.stack([r * np.cos(elevation) * np.cos(azimuth), r * np.cos(elevation) * np.sin(azimuth),
                     r * np.sin(elevation) + HDL64E_BEAM_HEIGHT_M[beam], rng.uniform(0, 1, n)], 1).astype(np.float32)


@needs_kernel
@pytest.mark.parametrize("fov", ["front", "full"])
@pytest.mark.parametrize("seed", range(3))
def test_generated_scans(fov, seed):
    projs, owner = _assert_same(_hdl64e_scan(np.random.default_rng(seed)), fov)
    assert 0.1 < (owner >= 0).mean() <= 1.0


def _boundary_cloud(rng):
    """Points on or next to every boundary the projection decides on."""
    parts = []
    x = rng.uniform(0.5, 40, 3000)
    for rel in (0.0, 1e-7, -1e-7, 1e-6, -1e-6, 2e-6, 1e-9, 5e-7):  # the +-45 degree edges and the prefilter's
        for sign in (1, -1):
            parts.append(np.c_[x, sign * x * (1 + rel), rng.uniform(-2, 1, len(x))])
    # column boundaries inside the view: azimuths at exact multiples of the column width
    az = np.radians(45.0 - 90.0 / 512 * rng.integers(0, 513, 3000))
    r = rng.uniform(2, 50, 3000)
    parts.append(np.c_[r * np.cos(az), r * np.sin(az), rng.uniform(-2, 1, 3000)])
    # elevations at the beams, at the middles between beams, at the row tolerance (1 degree) and past it
    elev = np.sort(HDL64E_ELEVATION_DEG)
    mids = (elev[1:] + elev[:-1]) / 2
    for angles in (elev, mids, [elev[0] - 1.0, elev[0] - 1.0001, elev[-1] + 1.0, elev[-1] + 0.9999, 30.0, -40.0]):
        angles = np.repeat(np.asarray(angles, dtype=float), 40)
        r = rng.uniform(2, 80, len(angles))
        a = rng.uniform(-0.8, 0.8, len(angles))
        for h in (HDL64E_BEAM_HEIGHT_M[0], HDL64E_BEAM_HEIGHT_M[40], np.mean(HDL64E_BEAM_HEIGHT_M[:32])):
            parts.append(np.c_[r * np.cos(a), r * np.sin(a), r * np.tan(np.radians(angles)) + h])
    pts = np.concatenate(parts)
    pts = np.c_[pts, rng.uniform(0, 1, len(pts))].astype(np.float32)
    # ties for a cell: exact copies and copies at the same range (the lowest index must win)
    dup = pts[rng.integers(0, len(pts), 500)]
    swapped = dup.copy()
    swapped[:, 3] = rng.uniform(0, 1, len(dup))
    return np.concatenate([pts, dup, swapped, dup])[rng.permutation(len(pts) + 3 * len(dup))]


@needs_kernel
@pytest.mark.parametrize("fov", ["front", "full"])
@pytest.mark.parametrize("seed", range(3))
def test_boundaries_and_ties(fov, seed):
    _assert_same(_boundary_cloud(np.random.default_rng(10 + seed)), fov)


@needs_kernel
@pytest.mark.parametrize("fov", ["front", "full"])
@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the reference turning inf
def test_degenerate_points(fov):
    special = np.array([
        [0.0, 0.0, 0.0, 0.5],  # the origin: azimuth 0 (in view), no beam
        [-0.0, 0.0, 1.0, 0.5],  # azimuth 180 degrees
        [-0.0, -0.0, -1.0, 0.5],
        [0.0, -0.0, -1.7, 0.5],
        [np.nan, 1.0, 0.0, 0.5], [1.0, np.nan, 0.0, 0.5], [10.0, 0.0, np.nan, 0.5], [10.0, 0.0, -1.0, np.nan],
        [np.inf, 0.0, 0.0, 0.5], [np.inf, np.inf, 0.0, 0.5], [np.inf, -np.inf, -1.0, 0.5], [-np.inf, 0.0, 0.0, 0.5],
        [10.0, 0.0, np.inf, 0.5], [10.0, 0.0, -np.inf, 0.5], [1e30, 1e30, 0.0, 0.5], [1e-30, -1e-30, 0.0, 0.5],
        [1e-45, 0.0, -1e-45, 0.5], [3.4e38, 0.0, -3.4e38, 0.5], [10.0, 10.0, -1.5, 0.5], [10.0, -10.0, -1.5, 0.5],
    ], dtype=np.float32)
    _assert_same(special, fov)
    rng = np.random.default_rng(1)
    _assert_same(np.concatenate([_hdl64e_scan(rng, 2000), special])[rng.permutation(2000 + len(special))], fov)
    for n in (0, 1):
        projs, owner = _assert_same(np.tile(np.float32([12.0, 0.5, -1.2, 0.3]), (n, 1)), fov)
        assert len(owner) == n


@needs_kernel
def test_strided_float32_views_and_more_columns():
    rng = np.random.default_rng(4)
    wide = np.c_[_hdl64e_scan(rng, 5000), rng.normal(size=(5000, 2)).astype(np.float32)]  # (N, 6)
    _assert_same(wide, "front")  # 6 columns: the first four are used
    _assert_same(wide[:, :4], "front")  # a view, row stride 6 floats
    _assert_same(wide[::3], "full")  # every third row


def test_fallback_other_dtypes_and_switch(monkeypatch):
    rng = np.random.default_rng(5)
    pts = _hdl64e_scan(rng, 3000)
    ref, ref_owner = project_tiles(pts, "front", native=False)
    # float64 points: the kernel declines, project_tiles runs the numpy version (same answer here)
    assert native.project_tiles_native(pts.astype(np.float64), "front") is None
    # the switch: no kernel, the numpy version
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert native.load() is None
    assert native.project_tiles_native(pts, "front") is None
    projs, owner = project_tiles(pts, "front")
    np.testing.assert_array_equal(owner, ref_owner)
    assert projs[0].grid.tobytes() == ref[0].grid.tobytes()
    with pytest.raises(ValueError):
        project_tiles(pts, "side")


@needs_kernel
@pytest.mark.parametrize("fov", ["front", "full"])
def test_real_kitti_scans(fov, real_bench_scans):
    scans = real_bench_scans
    for scan in scans[:4] + scans[-1:]:
        _assert_same(np.array(scan[:, :4], dtype=np.float32), fov)
