"""DBSCAN: the fast exact version must give scikit-learn's labels (real scans, ties, duplicates,
integer clouds) with time and memory bounded on hostile clouds; per-class instances;
LATTE rectangle fitting and ground-plane fit on hand-built geometry."""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from squeeze_perception.segmentation.boxfit import rectangle_fit
from squeeze_perception.segmentation.clustering import (cluster_by_class, collapse_duplicates, dbscan_fast,
                                                        dbscan_sklearn, same_partition)
from squeeze_perception.segmentation.ground import fit_ground_plane


def _blobs(rng, n_blobs=4, n=300):
    centres = rng.uniform(-10, 10, (n_blobs, 3))
    pts = np.concatenate([c + rng.normal(0, rng.uniform(0.1, 0.5), (n, 3)) for c in centres])
    noise = rng.uniform(-12, 12, (n // 2, 3))
    return np.round(np.concatenate([pts, noise]), 2)  # rounding creates exact-eps ties and duplicates


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("eps, min_samples", [(0.3, 20), (0.5, 5), (0.25, 3), (1.0, 1)])
def test_fast_dbscan_equals_sklearn_labels_exactly(seed, eps, min_samples):
    pts = _blobs(np.random.default_rng(seed))
    fast, ref = dbscan_fast(pts, eps, min_samples), dbscan_sklearn(pts, eps, min_samples)
    np.testing.assert_array_equal(fast, ref)


def test_border_point_goes_to_the_first_cluster_like_sklearn():
    # Two dense lines 0.5 apart, a border point exactly between them reaching both cores.
    a = np.c_[np.linspace(0, 0.2, 5), np.zeros(5), np.zeros(5)]
    b = a + [0.6, 0, 0]
    border = np.array([[0.4, 0, 0]])
    pts = np.concatenate([b, a, border])  # cluster of b is created first (lower indices)
    ref = dbscan_sklearn(pts, 0.21, 5)
    np.testing.assert_array_equal(dbscan_fast(pts, 0.21, 5), ref)
    assert ref[-1] == ref[0]


def _real_crops(kitti_real, n_scans=3):
    """Object-sized and street-sized crops of real HDL-64E scans (dense near, sparse far)."""
    from squeeze_perception.kitti.labels import read_velodyne_bin

    files = sorted(kitti_real.glob("object/training/velodyne/*.bin"))[:n_scans] + \
        sorted(kitti_real.glob("raw/**/velodyne_points/data/*.bin"))[:1]
    if not files:
        pytest.skip("no real Velodyne scans")
    crops = []
    for f in files:
        xyz = read_velodyne_bin(f)[:, :3].astype(np.float64)
        for x0, y0, size in ((4.0, -4.0, 8.0), (10.0, 0.0, 12.0), (20.0, -15.0, 30.0)):
            sel = (xyz[:, 0] > x0) & (xyz[:, 0] < x0 + size) & (np.abs(xyz[:, 1] - y0) < size / 2) & (xyz[:, 2] > -1.4)
            crops.append(xyz[sel][:6000])
    return crops


@pytest.mark.parametrize("eps, min_samples", [(0.3, 20), (0.5, 8)])
def test_fast_dbscan_equals_sklearn_on_real_scans(kitti_real, eps, min_samples):
    clusters = 0
    for pts in _real_crops(kitti_real):
        ref = dbscan_sklearn(pts, eps, min_samples)
        fast = dbscan_fast(pts, eps, min_samples)
        np.testing.assert_array_equal(fast, ref)
        clusters += int(ref.max()) + 1
        # Another point order changes the numbering and may move border points shared by two
        # clusters (sklearn's rule is order dependent): both must follow it the same way.
        perm = np.random.default_rng(0).permutation(len(pts))
        np.testing.assert_array_equal(dbscan_fast(pts[perm], eps, min_samples),
                                      dbscan_sklearn(pts[perm], eps, min_samples))
    assert clusters >= 20  # the crops do contain clusters (some sparse ones none)


def test_fast_dbscan_equals_sklearn_on_integer_clouds_with_ties_and_duplicates():
    """uint16 x/y/z: exact-eps ties everywhere (eps 1.0 on a unit lattice) and many duplicates."""
    rng = np.random.default_rng(3)
    pts = rng.integers(0, 12, (2500, 3)).astype(np.uint16)
    for eps, ms in ((1.0, 10), (1.0, 30), (1.5, 40), (0.5, 4)):
        np.testing.assert_array_equal(dbscan_fast(pts, eps, ms), dbscan_sklearn(pts, eps, ms))


def test_fallback_path_for_coordinates_the_grid_cannot_index_equals_sklearn():
    pts = _blobs(np.random.default_rng(7)) + [3e6, -2e6, 1e6]  # |coord| / cell side > 1e7
    np.testing.assert_array_equal(dbscan_fast(pts, 0.5, 5), dbscan_sklearn(pts, 0.5, 5))


def test_collapse_duplicates_keeps_lowest_index_and_inverse():
    pts = np.array([[1.0, 2, 3], [0, 0, 0], [1, 2, 3], [0, 0, 0], [5, 5, 5]])
    uniq, first, inverse, counts = collapse_duplicates(pts)
    np.testing.assert_array_equal(uniq[inverse], pts)
    assert sorted(zip(first.tolist(), counts.tolist())) == [(0, 2), (1, 2), (4, 1)]


def _cluster_cost(pts, eps=0.3, min_samples=20):
    """(labels, CPU seconds, peak traced MB): CPU time because the machine is shared."""
    tracemalloc.start()
    t0 = time.process_time()
    lab = dbscan_fast(pts, eps, min_samples)
    cpu = time.process_time() - t0
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return lab, cpu, peak


def test_real_scan_plus_20000_identical_points_is_bounded_and_exact(kitti_real):
    """Issue 16: a scan plus thousands of copies of one point blocked the node for a minute at
    4 GB. Duplicates collapse into one weighted point; the labels stay sklearn's."""
    base = _real_crops(kitti_real, n_scans=1)[1]
    pts = np.concatenate([base, np.repeat(base[100:101], 20000, 0)])
    lab, cpu, peak = _cluster_cost(pts)
    assert cpu < 1.0 and peak < 200, (cpu, peak)
    # Reference without the quadratic blow-up: sklearn on the unique points with their counts as
    # sample weights (sklearn's core rule sums weights), unique points in first-index order.
    from sklearn.cluster import DBSCAN

    uniq, first, inverse, counts = collapse_duplicates(pts)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    ref_u = DBSCAN(eps=0.3, min_samples=20).fit(uniq[order], sample_weight=counts[order]).labels_
    np.testing.assert_array_equal(lab, ref_u[rank[inverse]])
    assert lab[-1] == lab[100] >= 0


@pytest.mark.parametrize("jitter", [1e-3, 1e-7])
def test_near_duplicate_blob_is_bounded(kitti_real, jitter):
    """20,000 distinct points within millimetres (no exact duplicates to collapse): still no
    pair enumeration, so bounded; one cluster holds the blob."""
    base = _real_crops(kitti_real, n_scans=1)[1]
    blob = base[100] + np.random.default_rng(1).normal(0, jitter, (20000, 3))
    lab, cpu, peak = _cluster_cost(np.concatenate([base, blob]))
    assert cpu < 1.0 and peak < 200, (cpu, peak)
    assert len(np.unique(lab[len(base):])) == 1 and lab[-1] >= 0


def test_uint16_cloud_with_many_repeats_does_not_stall():
    rng = np.random.default_rng(2)
    pts = rng.integers(0, 65535, (60000, 3)).astype(np.uint16)
    pts[:30000] = pts[0]
    pts[30000:40000] = rng.integers(0, 3, (10000, 3))
    lab, cpu, peak = _cluster_cost(pts)
    assert cpu < 1.0 and peak < 200, (cpu, peak)
    assert lab[0] == lab[29999] >= 0


def test_hand_computed_clusters_and_noise():
    square = np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0.1, 0.1, 0]])
    pts = np.concatenate([square, square + 5, [[20, 20, 20]]])
    np.testing.assert_array_equal(dbscan_fast(pts, 0.15, 4), [0, 0, 0, 0, 1, 1, 1, 1, -1])
    assert (dbscan_fast(pts, 0.15, 5) == -1).all()
    assert len(dbscan_fast(np.zeros((0, 3)), 0.3, 20)) == 0


def test_same_partition_ignores_renaming_only():
    assert same_partition(np.array([0, 0, 1, -1]), np.array([5, 5, 2, -1]))
    assert not same_partition(np.array([0, 0, 1, -1]), np.array([5, 2, 2, -1]))
    assert not same_partition(np.array([0, -1]), np.array([0, 0]))


def test_cluster_by_class_separates_classes_and_numbers_uniquely():
    blob = np.random.default_rng(0).normal(0, 0.05, (30, 3))
    pts = np.concatenate([blob, blob + 0.01, blob + 10])
    labels = np.array([1] * 30 + [2] * 30 + [0] * 30)
    inst = cluster_by_class(pts, labels, 0.3, 5, "fast")
    assert len(set(inst[:30])) == 1 and len(set(inst[30:60])) == 1 and inst[0] != inst[30]
    assert (inst[60:] == -1).all()  # unknown is never clustered
    np.testing.assert_array_equal(inst, cluster_by_class(pts, labels, 0.3, 5, "sklearn"))
    with pytest.raises(ValueError, match="clustering must be one of"):
        cluster_by_class(pts, labels, method="kmeans")


@pytest.mark.parametrize("yaw_deg", [0.0, 25.0, 60.0, -40.0])
def test_rectangle_fit_recovers_an_l_shaped_car(yaw_deg):
    length, width = 4.2, 1.8
    side = np.c_[np.linspace(-length / 2, length / 2, 120), np.full(120, -width / 2)]
    back = np.c_[np.full(50, -length / 2), np.linspace(-width / 2, width / 2, 50)]
    yaw = np.deg2rad(yaw_deg)
    rot = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
    xy = np.concatenate([side, back]) @ rot.T + [12.0, -3.0]
    pts = np.c_[xy, np.linspace(-1.7, -0.2, len(xy))]
    box = rectangle_fit(pts)
    assert box.length == pytest.approx(length, abs=0.05) and box.width == pytest.approx(width, abs=0.05)
    assert box.x == pytest.approx(12.0, abs=0.05) and box.y == pytest.approx(-3.0, abs=0.05)
    assert np.cos(2 * (box.yaw - yaw)) == pytest.approx(1.0, abs=2e-3)  # heading mod 180 deg
    assert box.z == pytest.approx(-0.95) and box.height == pytest.approx(1.5)
    with pytest.raises(ValueError):
        rectangle_fit(np.zeros((0, 3)))


def test_ground_plane_fit_finds_a_tilted_road_under_objects():
    rng = np.random.default_rng(0)
    road = np.c_[rng.uniform(-20, 20, (3000, 2)), np.zeros(3000)]
    road[:, 2] = 0.05 * road[:, 0] - 1.73 + rng.normal(0, 0.02, 3000)
    objects = np.c_[rng.uniform(-5, 5, (600, 2)), rng.uniform(0.0, 2.0, 600)]
    plane = fit_ground_plane(np.concatenate([road, objects]), threshold=0.2)
    expected = np.array([-0.05, 0.0, 1.0]) / np.linalg.norm([-0.05, 0.0, 1.0])
    assert plane.normal @ expected == pytest.approx(1.0, abs=1e-3)
    assert plane.inliers[:3000].mean() > 0.99 and plane.inliers[3000:].mean() < 0.01
    assert np.abs(plane.distance(road)).mean() < 0.05
