"""Stamp pairing of instance and detection tables: tolerance, waiting, order, loops, bounds."""
from __future__ import annotations

import numpy as np

from squeeze_perception import interfaces as itf
from squeeze_perception.tracking.sync import StampSync

MS = 1_000_000
INST = itf.empty(itf.INSTANCE_DTYPE)


def _det(n=1):
    return np.zeros(n, itf.DETECTION_DTYPE)


def test_lidar_only_when_no_camera_ever_seen():
    sync = StampSync()
    out = sync.push_instances(100 * MS, INST, now_s=0.0)
    assert len(out) == 1 and out[0].detections is None and out[0].stamp_ns == 100 * MS


def test_pairs_within_tolerance_in_either_arrival_order():
    sync = StampSync(tolerance_s=0.05)
    assert sync.push_detections(90 * MS, _det(2), now_s=0.0) == []
    out = sync.push_instances(100 * MS, INST, now_s=0.01)
    assert out[0].detection_stamp_ns == 90 * MS and len(out[0].detections) == 2
    # instance first, camera 30 ms later (in wall time) with a close stamp
    assert sync.push_instances(200 * MS, INST, now_s=0.1) == []
    out = sync.push_detections(210 * MS, _det(3), now_s=0.13)
    assert len(out) == 1 and len(out[0].detections) == 3


def test_nearest_detection_wins():
    sync = StampSync(tolerance_s=0.05)
    sync.push_detections(60 * MS, _det(1), 0.0)
    sync.push_detections(95 * MS, _det(2), 0.0)
    out = sync.push_instances(100 * MS, INST, 0.0)
    assert out[0].detection_stamp_ns == 95 * MS


def test_waits_then_gives_up_after_max_wait():
    sync = StampSync(tolerance_s=0.02, max_wait_s=0.15)
    sync.push_detections(0, _det(), 0.0)  # camera is alive
    assert sync.push_instances(100 * MS, INST, now_s=0.0) == []
    assert sync.poll(now_s=0.1) == []
    out = sync.poll(now_s=0.2)
    assert len(out) == 1 and out[0].detections is None


def test_newer_camera_table_releases_without_waiting():
    sync = StampSync(tolerance_s=0.02, max_wait_s=10.0)
    sync.push_detections(0, _det(), 0.0)
    sync.push_instances(100 * MS, INST, 0.0)
    out = sync.push_detections(300 * MS, _det(), 0.01)
    assert len(out) == 1 and out[0].detections is None


def test_out_of_order_instances_are_released_in_stamp_order():
    sync = StampSync(tolerance_s=0.02, max_wait_s=1.0)
    sync.push_detections(0, _det(), 0.0)
    sync.push_instances(200 * MS, INST, 0.0)
    sync.push_instances(100 * MS, INST, 0.01)  # arrives late but before release
    out = sync.push_detections(500 * MS, _det(), 0.02)
    assert [f.stamp_ns for f in out] == [100 * MS, 200 * MS]


def test_late_frame_after_release_is_dropped_and_counted():
    sync = StampSync()
    sync.push_instances(200 * MS, INST, 0.0)
    assert sync.push_instances(150 * MS, INST, 0.1) == []
    assert sync.stats.late_dropped == 1 and sync.stats.resets == 0


def test_large_jump_back_is_a_reset():
    sync = StampSync(jump_back_s=0.5)
    sync.push_instances(5000 * MS, INST, 0.0)
    out = sync.push_instances(100 * MS, INST, 0.1)
    assert len(out) == 1 and out[0].reset and sync.stats.resets == 1
    out = sync.push_instances(200 * MS, INST, 0.2)
    assert not out[0].reset


def test_buffers_are_bounded():
    sync = StampSync(max_pending=3, max_detections=4, max_wait_s=100.0)
    sync.push_detections(0, _det(), 0.0)
    for k in range(10):
        sync.push_detections((1000 + k) * MS * 1000, _det(), 0.0)  # far-away stamps, never matched
    assert len(sync._det_stamps) <= 4
    sync2 = StampSync(max_pending=3, max_wait_s=100.0, tolerance_s=0.001)
    sync2.push_detections(0, _det(), 0.0)
    for k in range(1, 8):
        sync2.push_instances(k * 100 * MS, INST, 0.0)
    assert len(sync2._pending) == 3 and sync2.stats.overflow_dropped == 4


def test_camera_goes_silent_then_lidar_only():
    sync = StampSync(camera_timeout_s=1.0, max_wait_s=100.0)
    sync.push_detections(0, _det(), 0.0)
    assert sync.push_instances(1000 * MS, INST, 0.5) == []
    out = sync.poll(now_s=2.0)  # camera silent for 2 s
    assert len(out) == 1 and out[0].detections is None
    assert len(sync.push_instances(1100 * MS, INST, 2.1)) == 1
