"""Bag player: timing core with a fake clock, ROS 1 conversion, and the node in its own process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from squeeze_perception.bag.player import Playback, PlaybackOptions
from squeeze_perception.bag.source import BagError, BagMessage, BagSource, TopicInfo

S = 1_000_000_000


@dataclass
class FakeSource:
    """Messages at given bag times; '/tf_static' is latched."""

    stamps: dict[str, list[int]]

    def __post_init__(self):
        self.topics = {t: TopicInfo(t, "std_msgs/msg/Empty", len(v), t == "/tf_static") for t, v in self.stamps.items()}
        all_ts = [s for v in self.stamps.values() for s in v]
        self.start_ns, self.end_ns = min(all_ts), max(all_ts)

    def messages(self, start_ns=None, stop_ns=None, topics=None):
        rows = sorted((s, t) for t, v in self.stamps.items() for s in v
                      if (topics is None or t in topics) and (start_ns is None or s >= start_ns)
                      and (stop_ns is None or s < stop_ns))
        for s, t in rows:
            yield BagMessage(t, "std_msgs/msg/Empty", s, b"")


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def now(self) -> float:
        return self.t

    def sleep(self, dt: float) -> None:
        self.t += dt


def play(source, **options):
    clock = FakeClock()
    published, clocks = [], []
    pb = Playback(source, lambda m: published.append((m.topic, m.timestamp_ns, clock.t - 100.0)),
                  clocks.append, PlaybackOptions(**options), now=clock.now, sleep=clock.sleep)
    return pb, published, clocks


def test_recorded_timing_scaled_by_rate():
    src = FakeSource({"/a": [10 * S, 10 * S + S // 2, 12 * S], "/b": [11 * S]})
    for rate in (1.0, 2.0, 0.5):
        pb, published, _ = play(src, rate=rate)
        result = pb.run()
        assert [(t, s) for t, s, _ in published] == [("/a", 10 * S), ("/a", 10 * S + S // 2), ("/b", 11 * S),
                                                     ("/a", 12 * S)]
        np.testing.assert_allclose([w for *_, w in published], np.array([0.0, 0.5, 1.0, 2.0]) / rate, atol=1e-9)
        assert result.passes == 1 and result.total == 4 and not result.stopped


def test_clock_follows_bag_time_and_hits_every_message_stamp():
    src = FakeSource({"/a": [5 * S, 6 * S]})
    pb, published, clocks = play(src, rate=2.0, clock_hz=20.0)
    pb.run()
    assert clocks == sorted(clocks)  # never runs backwards within a pass
    assert 5 * S in clocks and 6 * S in clocks
    # 1 s of bag time at rate 2 = 0.5 s wall at 20 Hz: about 10 ticks between the messages.
    assert 8 <= sum(5 * S < c < 6 * S for c in clocks) <= 12
    pb2, _, clocks2 = play(src, publish_clock=False)
    pb2.run()
    assert clocks2 == []


def test_start_offset_skips_data_but_keeps_latched_topics():
    src = FakeSource({"/tf_static": [0], "/a": [0, S, 2 * S, 3 * S]})
    pb, published, _ = play(src, start_offset_s=1.5)
    pb.run()
    assert [(t, s) for t, s, _ in published] == [("/tf_static", 0), ("/a", 2 * S), ("/a", 3 * S)]
    # Wall time counts from the offset: the first data message goes out after 0.5 s.
    np.testing.assert_allclose([w for *_, w in published], [0.0, 0.5, 1.5], atol=1e-9)


def test_loop_replays_until_stopped():
    src = FakeSource({"/a": [0, S]})
    clock = FakeClock()
    seen = []

    def publish(m):
        seen.append(m.timestamp_ns)
        if len(seen) == 5:
            pb.stop()

    pb = Playback(src, publish, None, PlaybackOptions(loop=True), now=clock.now, sleep=clock.sleep)
    result = pb.run()
    assert seen == [0, S, 0, S, 0]
    assert result.passes == 2 and result.stopped


def test_loop_with_offset_past_the_end_terminates():
    pb, published, _ = play(FakeSource({"/a": [0, S]}), loop=True, start_offset_s=5.0)
    assert pb.run().total == 0 and published == []


@pytest.mark.parametrize("bad", [{"rate": 0.0}, {"start_offset_s": -1.0}, {"clock_hz": 0.0}])
def test_invalid_options_are_refused(bad):
    with pytest.raises(ValueError):
        PlaybackOptions(**bad)


# ----------------------------------------------------------------------------- ROS 1 bags
def write_ros1_kitti_bag(path: Path) -> tuple[list[int], np.ndarray]:
    """What the old ROS 1 kitti2bag writes: velo cloud, colour image and /tf (ROS 1 Header with seq)."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC)
    ts.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage"))
    T = ts.types
    stamps = [1317038400 * S + i * 100_000_000 for i in range(3)]
    points = np.arange(24, dtype="<f4").reshape(6, 4)
    with Writer(path) as writer:
        velo = writer.add_connection("/kitti/velo/pointcloud", "sensor_msgs/msg/PointCloud2", typestore=ts)
        cam = writer.add_connection("/kitti/camera_color_left/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        tf = writer.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=ts)
        info = writer.add_connection("/kitti/camera_color_left/camera_info", "sensor_msgs/msg/CameraInfo",
                                     typestore=ts)
        for i, st in enumerate(stamps):
            header = T["std_msgs/msg/Header"](seq=i, stamp=T["builtin_interfaces/msg/Time"](sec=st // S, nanosec=st % S),
                                              frame_id="velo_link")
            pf = T["sensor_msgs/msg/PointField"]
            cloud = T["sensor_msgs/msg/PointCloud2"](
                header=header, height=1, width=6,
                fields=[pf(name=n, offset=4 * k, datatype=7, count=1) for k, n in enumerate("x y z intensity".split())],
                is_bigendian=False, point_step=16, row_step=96, data=(points + i).view(np.uint8).reshape(-1),
                is_dense=True)
            writer.write(velo, st, ts.serialize_ros1(cloud, "sensor_msgs/msg/PointCloud2"))
            img_header = T["std_msgs/msg/Header"](seq=i, stamp=header.stamp, frame_id="camera_color_left")
            image = T["sensor_msgs/msg/Image"](header=img_header, height=2, width=2, encoding="bgr8", is_bigendian=0,
                                               step=6, data=np.full(12, i, np.uint8))
            writer.write(cam, st, ts.serialize_ros1(image, "sensor_msgs/msg/Image"))
            writer.write(tf, st, ts.serialize_ros1(T["tf2_msgs/msg/TFMessage"](transforms=[]), "tf2_msgs/msg/TFMessage"))
            roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
            # ROS 1 CameraInfo spells the matrices D K R P; ROS 2 spells them d k r p.
            cam_info = T["sensor_msgs/msg/CameraInfo"](
                header=img_header, height=2, width=2, distortion_model="plumb_bob", D=np.zeros(5),
                K=np.arange(9.0) + i, R=np.eye(3).reshape(-1), P=np.arange(12.0) + i, binning_x=0, binning_y=0, roi=roi)
            writer.write(info, st, ts.serialize_ros1(cam_info, "sensor_msgs/msg/CameraInfo"))
    return stamps, points


def test_ros1_bag_is_converted_to_ros2_cdr(tmp_path):
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    bag = tmp_path / "kitti_ros1.bag"
    stamps, points = write_ros1_kitti_bag(bag)
    with BagSource(bag) as src:
        assert src.is_ros1
        assert src.topics["/kitti/velo/pointcloud"].msgtype == "sensor_msgs/msg/PointCloud2"
        msgs = list(src.messages())
    clouds = [deserialize_message(m.data, PointCloud2) for m in msgs if m.topic == "/kitti/velo/pointcloud"]
    images = [deserialize_message(m.data, Image) for m in msgs if m.topic.endswith("image_raw")]
    assert [c.header.stamp.sec * S + c.header.stamp.nanosec for c in clouds] == stamps
    for i, c in enumerate(clouds):
        assert c.header.frame_id == "velo_link" and c.point_step == 16
        np.testing.assert_array_equal(np.frombuffer(bytes(c.data), "<f4").reshape(6, 4), points + i)
    assert [(im.encoding, bytes(im.data)) for im in images] == [("bgr8", bytes([i] * 12)) for i in range(3)]
    infos = [deserialize_message(m.data, CameraInfo) for m in msgs if m.topic.endswith("camera_info")]
    assert [(list(ci.k), list(ci.p), ci.header.frame_id) for ci in infos] == [
        (list(np.arange(9.0) + i), list(np.arange(12.0) + i), "camera_color_left") for i in range(3)]


def test_unreadable_bag_raises_a_named_error(tmp_path):
    with pytest.raises(BagError, match="nothere"):
        BagSource(tmp_path / "nothere")
    junk = tmp_path / "junk.bag"
    junk.write_bytes(b"garbage" * 10)
    with pytest.raises(BagError, match="junk.bag"):
        BagSource(junk)


# ----------------------------------------------------------------------------- node
def _player(bag: Path, *params: str, namespace: str = "") -> subprocess.Popen:
    args = [sys.executable, "-m", "squeeze_perception.nodes.bag_player_node", "--ros-args",
            "-p", f"bag:={bag}", "-p", "wait_for_subscribers:=4.0", "-p", "linger:=0.5",  # default 5 s: for launch
            *sum((["-p", p] for p in params), [])]
    if namespace:  # as a launch file's namespace would
        args += ["-r", f"__ns:={namespace}"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())


def test_player_node_replays_a_ros1_bag_with_clock_and_exits_0(tmp_path, rclpy_context):
    import rclpy
    from rclpy.node import Node
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from squeeze_perception.node_base import LATCHED_QOS, SENSOR_QOS

    bag = tmp_path / "kitti_ros1.bag"
    stamps, _ = write_ros1_kitti_bag(bag)
    node = Node("player_probe", context=rclpy_context)
    got: dict[str, list] = {"cloud": [], "image": [], "clock": [], "info": []}
    node.create_subscription(PointCloud2, "/player_ns/kitti/velo/pointcloud",
                             lambda m: got["cloud"].append(m.header.stamp.sec * S + m.header.stamp.nanosec), SENSOR_QOS)
    node.create_subscription(Image, "/player_ns/kitti/camera_color_left/image_raw",
                             lambda m: got["image"].append(m.encoding), SENSOR_QOS)
    node.create_subscription(Clock, "/clock", lambda m: got["clock"].append(m.clock.sec * S + m.clock.nanosec), 10)
    node.create_subscription(CameraInfo, "/player_ns/kitti/camera_color_left/camera_info",
                             lambda m: got["info"].append(m.k[0]), LATCHED_QOS)
    executor = rclpy.executors.SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    proc = _player(bag, "rate:=0.5", namespace="/player_ns")
    try:
        deadline = time.monotonic() + 25
        while proc.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        for _ in range(10):
            executor.spin_once(timeout_sec=0.02)
        out = proc.communicate(timeout=10)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        node.destroy_node()
    assert proc.returncode == 0, out
    assert got["cloud"] == stamps
    assert got["image"] == ["bgr8"] * 3
    # K[0] of the recorded CameraInfos (0, 1, 2), converted from ROS 1; latched depth 1, so a busy
    # reader may only see the newer ones, but always in order and always the last.
    assert got["info"] and got["info"] == sorted(set(got["info"])) and got["info"][-1] == 2.0
    assert set(got["info"]) <= {0.0, 1.0, 2.0}
    assert got["clock"] and min(got["clock"]) >= stamps[0] and stamps[-1] in got["clock"]
    assert "ROS 1" in out and "/tf (tf2_msgs/msg/TFMessage)" in out  # skipped here with one warning
    summary = json.loads(next(ln for ln in out.splitlines() if ln.startswith("SUMMARY "))[8:])
    assert summary["topics"] == {"/kitti/camera_color_left/image_raw": 3, "/kitti/velo/pointcloud": 3,
                                 "/kitti/camera_color_left/camera_info": 3}
    assert summary["stages"]["playback"]["frames_out"] == 9


def test_player_node_with_a_missing_bag_reports_and_exits_non_zero(tmp_path):
    proc = _player(tmp_path / "absent_bag")
    out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 1
    assert "absent_bag" in out and "not found" in out


def test_play_command_line_becomes_ros_arguments():
    from squeeze_perception.nodes.bag_player_node import _cli_to_ros_args, output_topic

    args = _cli_to_ros_args(["bags/x", "--rate", "2", "--loop", "--start-offset", "1.5", "--topics", "/a,/b",
                             "--ros-args", "-r", "__ns:=/car"])
    params = [args[i + 1] for i, a in enumerate(args) if a == "-p"]
    assert params == ["bag:=bags/x", "rate:=2.0", "loop:=true", "start_offset:=1.5", "publish_clock:=true",
                      "topics:=/a,/b"]
    assert args[-2:] == ["-r", "__ns:=/car"] and args.count("--ros-args") == 1
    assert [output_topic(t) for t in ("/kitti/velo/pointcloud", "/tf", "/tf_static", "/clock")] == [
        "kitti/velo/pointcloud", "/tf", "/tf_static", "/clock"]


def test_topic_allow_list_accepts_names_with_or_without_slash(tmp_path):
    bag = tmp_path / "kitti_ros1.bag"
    write_ros1_kitti_bag(bag)
    for wanted in (["kitti/velo/pointcloud"], ["/kitti/velo/pointcloud"]):
        with BagSource(bag, wanted) as src:
            assert list(src.topics) == ["/kitti/velo/pointcloud"]
            assert {m.topic for m in src.messages()} == {"/kitti/velo/pointcloud"}
