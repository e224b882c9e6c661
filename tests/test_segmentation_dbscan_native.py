"""The compiled DBSCAN kernel (segmentation/_dbscan_native.py) gives scikit-learn's label
array, exactly, on random, tied, duplicated, and real lidar clouds, and the numpy fallback
behind it gives the same; the kernel gives up (None) when its work cap is hit."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from squeeze_perception.segmentation import _dbscan_native as native
from squeeze_perception.segmentation.clustering import collapse_duplicates, dbscan_fast, dbscan_sklearn

needs_kernel = pytest.mark.skipif(native.load() is None, reason=f"no native DBSCAN kernel: {native.load_error()}")


def test_kernel_builds_where_a_compiler_exists():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler")
    assert native.load() is not None, native.load_error()


def _cloud(rng, kind):
    if kind == "blobs":
        centres = rng.uniform(-8, 8, (rng.integers(2, 7), 3))
        pts = np.concatenate([c + rng.normal(0, rng.uniform(0.05, 0.4), (rng.integers(20, 400), 3))
                              for c in centres] + [rng.uniform(-10, 10, (rng.integers(0, 300), 3))])
        return np.round(pts, int(rng.integers(1, 4)))  # ties at exactly eps, duplicates
    if kind == "surface":  # lidar-like: rings on a wall and the ground, dense near, sparse far
        r = rng.uniform(3, 30, 2500)
        a = rng.uniform(-0.6, 0.6, 2500)
        pts = np.c_[r * np.cos(a), r * np.sin(a), np.round(rng.uniform(-1.7, 0.5, 2500) * 8) / 8]
        return np.round(pts, 2)
    if kind == "lattice":
        return rng.integers(0, 10, (1500, 3)).astype(np.float64)
    raise ValueError(kind)


@needs_kernel
@pytest.mark.parametrize("kind", ["blobs", "surface", "lattice"])
@pytest.mark.parametrize("seed", range(8))
def test_kernel_equals_sklearn_and_the_numpy_version(kind, seed):
    rng = np.random.default_rng(100 + seed)
    pts = _cloud(rng, kind)
    for eps, ms in ((0.3, 20), (0.5, 5), (1.0, 8), (0.2, 1), (1.5, 40)):
        ref = dbscan_sklearn(pts, eps, ms)
        got = native.dbscan_native(pts, eps, ms)
        assert got is not None
        np.testing.assert_array_equal(got, ref, err_msg=f"{kind} seed {seed} eps {eps} min_samples {ms}")
        np.testing.assert_array_equal(dbscan_fast(pts, eps, ms, native=False), ref)
        np.testing.assert_array_equal(dbscan_fast(pts, eps, ms), ref)


@needs_kernel
def test_kernel_on_collapsed_points_with_weights_equals_sklearn_sample_weight():
    rng = np.random.default_rng(5)
    pts = np.round(rng.normal(0, 0.4, (3000, 3)), 1)  # many duplicates
    uniq, first, inverse, counts = collapse_duplicates(pts)
    lab = native.dbscan_native(uniq, 0.25, 12, first=first, weight=counts)
    np.testing.assert_array_equal(lab[inverse], dbscan_sklearn(pts, 0.25, 12))


@needs_kernel
def test_border_point_shared_by_two_clusters_takes_the_first_created():
    a = np.c_[np.linspace(0, 0.2, 5), np.zeros(5), np.zeros(5)]
    b = a + [0.6, 0, 0]
    border = np.array([[0.4, 0, 0]])
    for pts in (np.concatenate([b, a, border]), np.concatenate([a, b, border]), np.concatenate([border, a, b])):
        ref = dbscan_sklearn(pts, 0.21, 5)
        np.testing.assert_array_equal(native.dbscan_native(pts, 0.21, 5), ref)


@needs_kernel
def test_kernel_on_real_segmented_class_clouds(kitti_real):
    """Object-class-sized crops of real HDL-64E scans, in file order and shuffled."""
    from squeeze_perception.kitti.labels import read_velodyne_bin

    files = sorted(kitti_real.glob("object/training/velodyne/*.bin"))[:4]
    if not files:
        pytest.skip("no real scans")
    for f in files:
        xyz = read_velodyne_bin(f)[:, :3].astype(np.float64)
        sel = (xyz[:, 0] > 2) & (xyz[:, 0] < 40) & (np.abs(xyz[:, 1]) < 12) & (xyz[:, 2] > -1.5)
        pts = xyz[sel][:9000]
        for order in (np.arange(len(pts)), np.random.default_rng(1).permutation(len(pts))):
            ref = dbscan_sklearn(pts[order], 0.3, 20)
            np.testing.assert_array_equal(native.dbscan_native(pts[order], 0.3, 20), ref)
            assert ref.max() >= 1


@needs_kernel
def test_work_cap_makes_the_kernel_give_up_and_the_fallback_answers():
    pts = _cloud(np.random.default_rng(0), "blobs")
    assert native.dbscan_native(pts, 0.5, 5, max_work=10) is None
    np.testing.assert_array_equal(dbscan_fast(pts, 0.5, 5), dbscan_sklearn(pts, 0.5, 5))


@needs_kernel
def test_unindexable_and_degenerate_clouds():
    pts = np.random.default_rng(2).normal(0, 1, (200, 3)) + [1e7, 0, 0]
    assert native.dbscan_native(pts, 0.5, 5) is None  # beyond the exact grid range: numpy fallback
    np.testing.assert_array_equal(dbscan_fast(pts, 0.5, 5), dbscan_sklearn(pts, 0.5, 5))
    one = np.zeros((1, 3))
    np.testing.assert_array_equal(native.dbscan_native(one, 0.3, 1), [0])
    np.testing.assert_array_equal(native.dbscan_native(one, 0.3, 2), [-1])
    nan = np.array([[0.0, 0, 0], [np.nan, 0, 0]])
    assert native.dbscan_native(nan, 0.3, 1) is None


def test_switch_off_by_environment(monkeypatch):
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert native.dbscan_native(np.zeros((3, 3)), 0.3, 2) is None
