"""Issue 16: honest counters, implausible input, stamps far from the node clock, silent inputs.

ROS-free cores first (telemetry, plausibility, decoder error text), then the nodes in-process.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from squeeze_perception import interfaces as itf
from squeeze_perception.msgs_conv import (CameraInfoError, CloudFormatError, array_to_cloud,
                                          camera_info_to_arrays, cloud_to_array)
from squeeze_perception.plausibility import (PointLimits, TableLimits, check_detections, check_instances,
                                             check_points)
from squeeze_perception.telemetry import InputMonitor, StageStats


# ----------------------------------------------------------------------------- telemetry (ROS-free)
def test_sequence_gaps_count_skipped_frames_per_publisher():
    m = InputMonitor("t")
    assert m.observe(seq=1, source="a") == 0
    assert m.observe(seq=5, source="a") == 3  # 2, 3, 4 overwritten in the queue
    assert m.observe(seq=1, source="b") == 0  # another publisher: its own series
    assert m.observe(seq=2, source="b") == 0
    assert m.observe(seq=1, source="a") == 0  # publisher restarted: start over, no negative count
    assert m.observe(seq=3, source="a") == 1
    assert m.skipped == 4 and m.received == 6


def test_stamp_gaps_count_skipped_frames_at_a_known_period_and_survive_a_loop():
    m = InputMonitor("t", period_s=0.1)
    ns = 1_000_000_000
    stamps = [10 * ns, int(10.1 * ns), int(10.4 * ns),  # 10.2, 10.3 skipped
              int(0.5 * ns),  # bag loop: backwards, counted as a jump, not as loss
              int(0.6 * ns), int(30 * ns)]  # 29 s later: a pause, not 293 lost frames
    got = [m.observe(stamp_ns=s) for s in stamps]
    assert got == [0, 0, 2, 0, 0, 0]
    assert m.jumps_back == 1 and m.skipped == 2
    # Sequence numbers win over stamps when the publisher gives them.
    m2 = InputMonitor("t", period_s=0.1)
    m2.observe(seq=1, source="p", stamp_ns=0)
    assert m2.observe(seq=2, source="p", stamp_ns=5 * 10**8) == 0


def test_silence_is_measured_from_start_then_from_the_last_message():
    now = [100.0]
    m = InputMonitor("t", clock=lambda: now[0])
    now[0] = 103.0
    assert m.silent_for() == pytest.approx(3.0)
    m.observe()
    now[0] = 104.5
    assert m.silent_for() == pytest.approx(1.5)


def test_latency_keeps_out_stamp_zero_and_future_stamps():
    st = StageStats("points")
    for ms in (20.0, 30.0):
        assert st.add_latency_checked(ms, max_past_ms=10_000, max_ahead_ms=500) is None
    # stamp 0 against a wall clock: 1.8e12 ms; a frame from before a bag loop: 5 s ahead.
    assert "behind" in st.add_latency_checked(1.8e12, 10_000, 500)
    assert "ahead" in st.add_latency_checked(-5000.0, 10_000, 500)
    assert st.add_latency_checked(float("nan"), 10_000, 500)
    s = st.summary()
    assert s["stamps_rejected"] == 3
    assert s["latency_ms_max"] == 30.0 and s["latency_ms_mean"] == 25.0


def test_counters_add_up():
    st = StageStats("detect")
    st.frames_in, st.frames_skipped = 10, 5
    st.error("bad image")
    s = st.summary()
    assert s["frames_failed"] == 1 and s["frames_skipped"] == 5 and s["frames_dropped"] == 6


# ----------------------------------------------------------------------------- plausibility (ROS-free)
def test_points_dropped_with_one_count_per_cause():
    pts = np.array([[1, 2, 0, 0.5],          # ok
                    [1e30, 0, 0, 0.5],       # range
                    [3, 0, 0, -1.0],         # intensity
                    [3, 0, 0, 1e6],          # intensity
                    [np.nan, 0, 0, 0.5],     # non_finite
                    [1e30, 0, 0, 1e6]],      # range first (one cause per point)
                   np.float32)
    keep, counts = check_points(pts, PointLimits(max_range_m=200, intensity_max=255))
    assert keep.tolist() == [True, False, False, False, False, False]
    assert counts == {"non_finite": 1, "range": 2, "intensity": 2}
    assert PointLimits(min_range_m=5, max_range_m=1).problems()


def _instances(rows):
    t = np.zeros(len(rows), itf.INSTANCE_DTYPE)
    for i, r in enumerate(rows):
        t[i]["instance_id"] = i
        t[i]["class_id"], t[i]["x"], t[i]["length"], t[i]["width"], t[i]["height"], t[i]["score"] = r
    return t


def test_instance_rows_with_nonsense_are_dropped():
    table = _instances([(1, 10, 4, 2, 1.5, 0.9),       # ok
                        (99, 10, 4, 2, 1.5, 0.9),      # class_id
                        (-1, 10, 4, 2, 1.5, 0.9),      # class_id
                        (1, 10, -4, 2, 1.5, 0.9),      # size
                        (1, 10, np.nan, 2, 1.5, 0.9),  # non_finite
                        (1, 10, np.inf, 2, 1.5, 0.9),  # non_finite
                        (1, 1e30, 4, 2, 1.5, 0.9),     # range
                        (1, 10, 4, 2, 1.5, 7.0)])      # score
    kept, counts = check_instances(table, TableLimits())
    assert kept["instance_id"].tolist() == [0]
    assert counts == {"class_id": 2, "size": 1, "non_finite": 2, "range": 1, "score": 1}


def test_detection_rows_with_nonsense_are_dropped():
    t = np.zeros(5, itf.DETECTION_DTYPE)
    t["u_max"], t["v_max"], t["score"], t["class_id"] = 10, 10, 0.5, 1
    t[1]["class_id"] = 0
    t[2]["u_max"] = -5  # u_max < u_min
    t[3]["v_max"] = 1e9
    t[4]["score"] = np.nan
    kept, counts = check_detections(t, TableLimits())
    assert len(kept) == 1
    assert counts == {"class_id": 1, "box": 1, "size": 1, "non_finite": 1}


# ----------------------------------------------------------------------------- decoder error text
def _fields(*spec):
    return [SimpleNamespace(name=n, offset=o, datatype=7, count=c) for n, o, c in spec]


def _raw_cloud(fields, point_step=16, n=2):
    return SimpleNamespace(fields=fields, point_step=point_step, width=n, height=1, row_step=point_step * n,
                           is_bigendian=False, data=bytes(point_step * n))


def test_duplicate_field_has_its_own_error_text():
    msg = _raw_cloud(_fields(("x", 0, 1), ("y", 4, 1), ("z", 8, 1), ("intensity", 12, 1), ("x", 12, 1)))
    with pytest.raises(CloudFormatError, match=r"field 'x' appears 2 times \(offsets 0, 12\)"):
        cloud_to_array(msg)


def test_count_3_field_has_its_own_error_text():
    msg = _raw_cloud(_fields(("x", 0, 3), ("y", 4, 1), ("z", 8, 1), ("intensity", 12, 1)), point_step=20)
    with pytest.raises(CloudFormatError, match=r"field 'x' has count 3.*count 1"):
        cloud_to_array(msg)


def test_camera_info_decoder():
    good = SimpleNamespace(p=[700.0, 0, 600, 0, 0, 700.0, 180, 0, 0, 0, 1, 0], width=1242, height=375)
    p, size = camera_info_to_arrays(good)
    assert p.shape == (3, 4) and size == (1242, 375)
    for bad in (SimpleNamespace(p=[0.0] * 12, width=1242, height=375),
                SimpleNamespace(p=[1.0] * 11, width=1242, height=375),
                SimpleNamespace(p=good.p, width=0, height=375),
                SimpleNamespace(p=[np.nan] + good.p[1:], width=1242, height=375)):
        with pytest.raises(CameraInfoError):
            camera_info_to_arrays(bad)


# ----------------------------------------------------------------------------- nodes, in-process
def _cloud_msg(points, stamp_s=None):
    arr = np.zeros(len(points), itf.POINT_DTYPE)
    for i, k in enumerate(itf.POINT_FIELDS_REQUIRED):
        arr[k] = np.asarray(points, np.float32)[:, i]
    msg = array_to_cloud(arr, frame_id="velo_link")
    if stamp_s is not None:
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(stamp_s), int((stamp_s % 1) * 1e9)
    return msg


def test_passthrough_drops_implausible_points_and_rejects_stamp_zero(ros):
    from rclpy.parameter import Parameter

    from squeeze_perception.nodes.passthrough_node import PassthroughNode

    node = PassthroughNode()
    try:
        out = []
        node.points_pub.publish = out.append
        node._diag_pub.publish = lambda arr: None
        now = time.time()
        node.on_points(_cloud_msg([[1, 2, 0, 0.5], [1e30, 0, 0, 0.5], [3, 0, 0, -1], [3, 0, 0, 1e6]], stamp_s=0))
        assert out[-1].width == 1
        s = node.stats["points"].summary()
        assert s["points_dropped_range"] == 1 and s["points_dropped_intensity"] == 2
        assert s["stamps_rejected"] == 1 and "latency_ms_max" not in s  # stamp 0: no 1.8e12 ms latency
        node.on_points(_cloud_msg([[1, 2, 0, 0.5]], stamp_s=now))
        s = node.stats["points"].summary()
        assert s["stamps_rejected"] == 1 and 0 <= s["latency_ms_max"] < 10_000
        assert s["frames_in"] == 2 and s["frames_processed"] == 2 and s["frames_out"] == 2
        # limits are validated parameters, cross-checked
        result = node.set_parameters([Parameter("intensity_max", value=-5.0)])[0]
        assert not result.successful and "intensity_min" in result.reason
        assert node.set_parameters([Parameter("intensity_max", value=1e7)])[0].successful
        node.on_points(_cloud_msg([[3, 0, 0, 1e6]], stamp_s=now))
        assert out[-1].width == 1
    finally:
        node.destroy_node()


def test_tracker_reports_silence_as_warn_and_drops_bad_rows(ros):
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.parameter import Parameter

    from squeeze_perception.nodes.tracker_node import TrackerNode

    node = TrackerNode(parameter_overrides=[Parameter("input_timeout_s", value=0.2)])
    try:
        node._diag_pub.publish = lambda arr: None
        node._telemetry_pub.publish = lambda arr: None
        time.sleep(0.3)
        st = node.diagnostic_status("instances")
        assert st.level == DiagnosticStatus.WARN and "perception/lidar/instances" in st.message
        tr = node.diagnostic_status("tracking")
        assert tr.level == DiagnosticStatus.WARN and tr.message.startswith("tracking no input")
        assert {kv.key: kv.value for kv in tr.values}["mode"] == "no input"
        # camera off: its silence is expected, LiDAR silence still is not
        node.set_parameters([Parameter("use_camera", value=False)])
        assert node.diagnostic_status("detections").level == DiagnosticStatus.OK
        table = _instances([(1, 10, 4, 2, 1.5, 0.9), (99, 10, 4, 2, 1.5, 0.9), (1, 10, np.nan, 2, 1.5, 0.9)])
        msg = array_to_cloud(table, frame_id="velo_link")
        msg.header.stamp.sec = 5
        node.on_instances(msg)
        s = node.stats["instances"].summary()
        assert s["rows_dropped_class_id"] == 1 and s["rows_dropped_non_finite"] == 1
        assert s["frames_processed"] == 1
    finally:
        node.destroy_node()


def test_skipped_frames_counted_from_publisher_sequence_numbers(ros):
    """A burst the keep-last-5 queue cannot hold: the overwritten frames are counted."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    from squeeze_perception.msgs_conv import array_to_image
    from squeeze_perception.node_base import RESULT_QOS
    from squeeze_perception.nodes.passthrough_node import PassthroughNode

    node = PassthroughNode()
    probe = rclpy.create_node("skip_probe")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    ex.add_node(probe)
    try:
        pub = probe.create_publisher(Image, itf.TOPIC_IMAGE, RESULT_QOS)
        img = array_to_image(np.zeros((4, 4, 3), np.uint8))
        deadline = time.monotonic() + 10
        while node.stats["image"].frames_in == 0 and time.monotonic() < deadline:
            pub.publish(img)  # until matched and the first one is through
            ex.spin_once(timeout_sec=0.1)
        stats = node.stats["image"]
        seen_before = stats.frames_in
        for _ in range(20):  # the node does not spin meanwhile: its queue keeps the last 5
            pub.publish(img)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and stats.frames_in < seen_before + 5:
            ex.spin_once(timeout_sec=0.1)
        assert stats.frames_in - seen_before == 5
        assert stats.frames_skipped == 15
        assert stats.summary()["frames_dropped"] == 15
    finally:
        ex.shutdown()
        probe.destroy_node()
        node.destroy_node()
