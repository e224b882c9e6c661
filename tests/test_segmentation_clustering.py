"""DBSCAN: the fast exact version must give scikit-learn's labels; per-class instances;
LATTE rectangle fitting and ground-plane fit on hand-built geometry."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.segmentation.boxfit import rectangle_fit
from squeeze_perception.segmentation.clustering import (cluster_by_class, dbscan_fast, dbscan_sklearn,
                                                        same_partition)
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
