"""Intensity as the HDL-64E reports it: the measurement on real scans and the simulator's use of it."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.kitti.hdl64e import HDL64E_ROWS, KITTI_VELODYNE_HEIGHT_M
from squeeze_perception.kitti.hdl64e_intensity import (HDL64E_RING_INTENSITY_GAIN, HDL64E_RING_ZERO_SHARE,
                                                       INTENSITY_RANGE_GAIN, INTENSITY_RANGE_ZERO_SHARE,
                                                       INTENSITY_REFERENCE_ZERO_SHARE)
from squeeze_perception.kitti.intensity_map import (MIN_RING_RETURNS, intensity_of_files, measure_intensity,
                                                    real_full_scan_paths)
from squeeze_perception.offline.synth.lidar import Hdl64e, reported_intensity
from squeeze_perception.offline.synth.materials import Material
from squeeze_perception.offline.synth.meshes import box
from squeeze_perception.offline.synth.raycast import RayScene


def _ring_points(distance: float, intensity: np.ndarray) -> np.ndarray:
    az = np.linspace(-1.0, 1.0, len(intensity))
    return np.column_stack([distance * np.cos(az), distance * np.sin(az), np.zeros(len(az)), intensity])


def test_measure_intensity_counts_zero_readings_and_gains_per_ring_and_range():
    # Ring 10 at 10 m: 300 returns, 60 of them 0, the rest 0.4; ring 20 at 10 m: 300 returns of 0.2.
    # Far (55 m) on ring 20: 100 returns, 80 of them 0.
    ten = _ring_points(10.0, np.r_[np.zeros(60), np.full(240, 0.4)])
    twenty = _ring_points(10.0, np.full(300, 0.2))
    far = _ring_points(55.0, np.r_[np.zeros(80), np.full(20, 0.1)])
    rows = np.r_[np.full(300, 10), np.full(300, 20), np.full(100, 20)]
    c = measure_intensity(np.vstack([ten, twenty, far]), rows=rows)
    assert c.ring_returns[10] == 300 and c.ring_returns[20] == 300  # the far returns are outside 5-30 m
    assert c.ring_zero_share()[10] == pytest.approx(0.2) and c.ring_zero_share()[20] == 0.0
    # Mean non-zero of all rings at 5-30 m: (240 * 0.4 + 300 * 0.2) / 540
    mean_all = (240 * 0.4 + 300 * 0.2) / 540
    assert c.ring_gain()[10] == pytest.approx(0.4 / mean_all) and c.ring_gain()[20] == pytest.approx(0.2 / mean_all)
    assert c.ring_gain()[0] == 1.0 and c.ring_zero_share()[0] == pytest.approx(60 / 600)  # no returns: all-ring values
    far_bin = 6  # 50-60 m
    assert c.range_zero_share()[far_bin] == pytest.approx(0.8)
    assert c.range_gain()[far_bin] == pytest.approx(0.1 / mean_all)
    assert (c + c).ring_zero_share()[10] == pytest.approx(0.2)


def test_rings_with_few_returns_take_the_all_ring_values():
    pts = _ring_points(10.0, np.r_[np.zeros(MIN_RING_RETURNS // 2), np.full(MIN_RING_RETURNS // 2, 0.3)])
    c = measure_intensity(pts, rows=np.full(len(pts), 5))
    assert c.ring_zero_share()[5] == pytest.approx(0.5)  # its own share is also the all-ring share here
    c2 = measure_intensity(pts[: MIN_RING_RETURNS // 2 + 10], rows=np.full(MIN_RING_RETURNS // 2 + 10, 5))
    assert c2.ring_gain()[5] == 1.0


def test_real_intensity_table_has_more_zero_readings_far_away():
    assert HDL64E_RING_ZERO_SHARE.shape == (HDL64E_ROWS,) == HDL64E_RING_INTENSITY_GAIN.shape
    assert np.all((HDL64E_RING_ZERO_SHARE >= 0) & (HDL64E_RING_ZERO_SHARE < 0.8))
    assert 0.05 < INTENSITY_REFERENCE_ZERO_SHARE < 0.3
    assert INTENSITY_RANGE_ZERO_SHARE[-1] > 2 * INTENSITY_REFERENCE_ZERO_SHARE


def test_real_intensity_measurement_reproduces_the_shipped_table(kitti_real):
    c = intensity_of_files(real_full_scan_paths(kitti_real))
    np.testing.assert_allclose(c.ring_zero_share(), HDL64E_RING_ZERO_SHARE, atol=6e-5)
    assert c.reference_zero_share() == pytest.approx(INTENSITY_REFERENCE_ZERO_SHARE, abs=6e-5)


def test_reported_intensity_follows_the_ring_and_range_tables():
    rng = np.random.default_rng(0)
    n = 20_000
    valid = np.arange(HDL64E_ROWS - 4)  # the lowest rings carry the all-ring value
    many, few = valid[np.argmax(HDL64E_RING_ZERO_SHARE[valid])], valid[np.argmin(HDL64E_RING_ZERO_SHARE[valid])]
    for ring in (many, few):
        out = reported_intensity(np.full(n, 0.3), np.full(n, ring), np.full(n, 15.0), rng)
        share = np.mean(out == 0)
        assert share == pytest.approx(HDL64E_RING_ZERO_SHARE[ring], abs=0.02)
        # 15 m is the centre of the 10-20 m bin: its range gain exactly.
        expected = 0.3 * HDL64E_RING_INTENSITY_GAIN[ring] * INTENSITY_RANGE_GAIN[2]
        assert np.median(out[out > 0]) == pytest.approx(expected, abs=0.011)
    # Far away the range's zero share dominates whatever the ring.
    far = reported_intensity(np.full(n, 0.3), np.full(n, few), np.full(n, 70.0), rng)
    assert np.mean(far == 0) == pytest.approx(INTENSITY_RANGE_ZERO_SHARE[-1], abs=0.04)


def _people_scan(sensor_intensity: bool):
    ground = box((300, 300, 0.02), (0, 0, -0.01), Material.ASPHALT, (80, 80, 80))
    people = [(box((0.4, 0.6, 1.7), (8.0, -6.0 + 2.0 * i, 0.85), Material.CLOTH, (90, 90, 90)), 2, i) for i in range(7)]
    lidar = Hdl64e(sensor_intensity=sensor_intensity)
    return lidar.scan(RayScene(ground, people), np.eye(3), np.array([0.0, 0.0, KITTI_VELODYNE_HEIGHT_M]),
                      np.random.default_rng(3))


def test_each_person_draws_a_clothing_reflectivity():
    spreads = {}
    for sensor in (False, True):
        scan = _people_scan(sensor)
        medians = [np.median(scan.points[(scan.instance_id == i) & (scan.points[:, 3] > 0), 3]) for i in range(7)]
        spreads[sensor] = np.ptp(medians)
    # Without it, seven identical boxes of cloth read alike; with it, darkest and lightest differ a lot.
    assert spreads[False] < 0.05 and spreads[True] > 0.15, spreads
