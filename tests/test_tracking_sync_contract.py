"""StampSync contract (module docstring of tracking/sync.py): tolerance, waiting, order, bounds."""
from __future__ import annotations

import numpy as np

from squeeze_perception import interfaces as itf
from squeeze_perception.tracking.sync import StampSync

MS = 1_000_000


def _inst(tag=0):
    t = np.zeros(1, itf.INSTANCE_DTYPE)
    t["instance_id"] = tag
    return t


def _det(tag=0):
    d = np.zeros(1, itf.DETECTION_DTYPE)
    d["class_id"] = tag
    return d


def test_released_frame_carries_its_table_and_no_camera_fields_when_unpaired():
    sync = StampSync()
    table = _inst(7)
    (frame,) = sync.push_instances(100 * MS, table, now_s=0.0)
    assert frame.instances is table and frame.detections is None
    assert frame.detection_stamp_ns is None and frame.reset is False


def test_stats_count_every_release_and_pairing():
    sync = StampSync(tolerance_s=0.05)
    for k in range(3):
        sync.push_detections((100 + 100 * k) * MS, _det(), now_s=0.1 * k)
        sync.push_instances((100 + 100 * k) * MS, _inst(), now_s=0.1 * k + 0.01)
    assert sync.stats.released == 3 and sync.stats.paired == 3


def test_detection_exactly_tolerance_away_pairs():
    sync = StampSync(tolerance_s=0.05)
    sync.push_detections(50 * MS, _det(), now_s=0.0)
    (frame,) = sync.push_instances(100 * MS, _inst(), now_s=0.0)
    assert frame.detection_stamp_ns == 50 * MS


def test_tolerance_is_exact_in_nanoseconds():
    sync = StampSync(tolerance_s=1.0, max_wait_s=0.0)
    sync.push_detections(0, _det(), now_s=0.0)
    (frame,) = sync.push_instances(1_000_000_001, _inst(), now_s=0.0)  # 1 s + 1 ns away
    assert frame.detections is None


def test_one_detection_table_may_pair_with_two_close_frames():
    sync = StampSync(tolerance_s=0.05)
    sync.push_detections(40 * MS, _det(), now_s=0.0)
    (a,) = sync.push_instances(0, _inst(), now_s=0.0)
    (b,) = sync.push_instances(60 * MS, _inst(), now_s=0.0)
    assert a.detection_stamp_ns == 40 * MS and b.detection_stamp_ns == 40 * MS


def test_frame_waits_for_the_camera_then_is_released_at_exactly_max_wait():
    sync = StampSync(tolerance_s=0.05, max_wait_s=0.25, camera_timeout_s=1.0)
    sync.push_detections(0, _det(), now_s=0.0)
    assert sync.push_instances(100 * MS, _inst(), now_s=0.0) == []  # camera active: wait
    assert sync.poll(0.125) == []
    (frame,) = sync.poll(0.25)
    assert frame.stamp_ns == 100 * MS and frame.detections is None


def test_camera_heard_exactly_camera_timeout_ago_is_still_active():
    sync = StampSync(tolerance_s=0.05, max_wait_s=10.0, camera_timeout_s=1.0)
    sync.push_detections(0, _det(), now_s=2.0)
    assert sync.push_instances(200 * MS, _inst(), now_s=3.0) == []
    assert len(sync.poll(3.5)) == 1  # silent for longer than the timeout: LiDAR-only


def test_late_frame_while_another_waits_still_releases_on_time():
    sync = StampSync(tolerance_s=0.05, max_wait_s=0.1)
    sync.push_detections(0, _det(), now_s=0.0)
    sync.push_instances(0, _inst(), now_s=0.0)  # released, paired
    assert sync.push_instances(200 * MS, _inst(), now_s=0.0) == []
    out = sync.push_instances(-10 * MS, _inst(), now_s=0.5)  # late; the waiting one is due
    assert [f.stamp_ns for f in out] == [200 * MS]
    sync.push_instances(-20 * MS, _inst(), now_s=0.6)
    assert sync.stats.late_dropped == 2


def test_same_stamp_again_after_release_is_late():
    sync = StampSync()
    sync.push_instances(100 * MS, _inst(), now_s=0.0)
    assert sync.push_instances(100 * MS, _inst(), now_s=0.1) == []
    assert sync.stats.late_dropped == 1 and sync.stats.released == 1


def test_exactly_jump_back_older_is_late_not_a_loop():
    sync = StampSync(jump_back_s=0.5)
    sync.push_instances(1000 * MS, _inst(), now_s=0.0)
    assert sync.push_instances(500 * MS, _inst(), now_s=0.1) == []
    assert sync.stats.resets == 0 and sync.stats.late_dropped == 1


def test_jump_back_threshold_is_exact_in_nanoseconds():
    sync = StampSync(jump_back_s=1.0)
    sync.push_instances(3_000_000_000, _inst(), now_s=0.0)
    out = sync.push_instances(1_999_999_999, _inst(), now_s=0.1)  # 1 s + 1 ns older: a loop
    assert len(out) == 1 and out[0].reset is True and sync.stats.resets == 1
    (nxt,) = sync.push_instances(2_100_000_000, _inst(), now_s=0.2)
    assert nxt.reset is False


def test_duplicate_instance_stamp_keeps_the_newest_table():
    sync = StampSync(tolerance_s=0.05, max_wait_s=1.0)
    sync.push_detections(0, _det(), now_s=0.0)
    sync.push_instances(300 * MS, _inst(1), now_s=0.0)
    sync.push_instances(200 * MS, _inst(2), now_s=0.0)
    sync.push_instances(300 * MS, _inst(3), now_s=0.01)
    out = sync.poll(5.0)
    assert [f.stamp_ns for f in out] == [200 * MS, 300 * MS]
    assert [int(f.instances["instance_id"][0]) for f in out] == [2, 3]


def test_duplicate_detection_stamp_keeps_the_newest_table():
    sync = StampSync(tolerance_s=0.05)
    sync.push_detections(100 * MS, _det(1), now_s=0.0)
    sync.push_detections(100 * MS, _det(2), now_s=0.0)
    (frame,) = sync.push_instances(100 * MS, _inst(), now_s=0.0)
    assert int(frame.detections["class_id"][0]) == 2


def test_pending_overflow_drops_the_oldest():
    sync = StampSync(tolerance_s=0.05, max_wait_s=1.0, max_pending=2)
    sync.push_detections(0, _det(), now_s=0.0)
    sync.push_instances(0, _inst(), now_s=0.0)  # released
    for k in (1, 2, 3):
        sync.push_instances(100 * k * MS, _inst(), now_s=0.0)  # all wait for the camera
    out = sync.poll(5.0)
    assert [f.stamp_ns for f in out] == [200 * MS, 300 * MS]
    assert sync.stats.overflow_dropped == 1


def test_detection_buffer_keeps_the_newest_max_detections():
    sync = StampSync(tolerance_s=0.05, max_detections=2)
    for k in (1, 2, 3):
        sync.push_detections(100 * k * MS, _det(k), now_s=0.0)
    (frame,) = sync.push_instances(200 * MS, _inst(), now_s=0.0)
    assert frame.detection_stamp_ns == 200 * MS


def test_reset_clears_and_counts_and_accepts_any_stamp_after():
    sync = StampSync()
    sync.push_instances(1000 * MS, _inst(), now_s=0.0)
    sync.reset()
    sync.reset()
    assert sync.stats.resets == 2
    assert len(sync.push_instances(10 * MS, _inst(), now_s=0.1)) == 1


# ---------------------------------------------------------------- added after the 93 % mutation rerun
def test_out_of_order_detection_is_inserted_not_written_over_a_newer_one():
    sync = StampSync(tolerance_s=0.05)
    sync.push_detections(200 * MS, _det(2), now_s=0.0)
    sync.push_detections(100 * MS, _det(1), now_s=0.0)
    (frame,) = sync.push_instances(100 * MS, _inst(), now_s=0.0)
    assert frame.detection_stamp_ns == 100 * MS and int(frame.detections["class_id"][0]) == 1
    (frame,) = sync.push_instances(200 * MS, _inst(), now_s=0.0)
    assert frame.detection_stamp_ns == 200 * MS and int(frame.detections["class_id"][0]) == 2


def test_detection_overflow_drops_the_oldest_table_with_its_stamp():
    sync = StampSync(tolerance_s=0.05, max_detections=2)
    for k in (1, 2, 3):
        sync.push_detections(100 * k * MS, _det(k), now_s=0.0)
    (frame,) = sync.push_instances(200 * MS, _inst(), now_s=0.0)
    assert int(frame.detections["class_id"][0]) == 2
