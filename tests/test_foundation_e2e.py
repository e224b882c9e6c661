"""End to end: the launch runner starts the player and two pass-through nodes in separate
processes, plays the committed real 4-frame KITTI bag, and a subscriber here checks what comes
out (stamps of the input, contract fields, sizes), then the launch exits 0 at the end of the bag."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from squeeze_perception import interfaces as itf
from squeeze_perception.bag.source import BagSource

REPO = Path(__file__).resolve().parents[1]
BAG = REPO / "bags" / "kitti_real_4frames"
S = 1_000_000_000


def bag_stamps_and_sizes() -> tuple[list[int], list[int]]:
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    stamps, sizes = [], []
    with BagSource(BAG, ["/kitti/velo/pointcloud"]) as bag:
        for m in bag.messages():
            cloud = deserialize_message(m.data, PointCloud2)
            stamps.append(cloud.header.stamp.sec * S + cloud.header.stamp.nanosec)
            sizes.append(cloud.width)
    return stamps, sizes


def test_launch_plays_the_real_bag_through_three_processes(rclpy_context):
    import rclpy
    from rclpy.node import Node
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from squeeze_perception.msgs_conv import cloud_to_array, image_to_array
    from squeeze_perception.node_base import LATCHED_QOS, RESULT_QOS

    stamps, sizes = bag_stamps_and_sizes()
    node = Node("e2e_probe", context=rclpy_context)
    got: dict[str, list] = {"front_points": [], "rear_points": [], "front_image": [], "rear_image": []}

    def on_points(key):
        def cb(msg):
            cloud = cloud_to_array(msg)
            got[key].append((msg.header.stamp.sec * S + msg.header.stamp.nanosec, msg.header.frame_id,
                             cloud.dtype.names, len(cloud), bool(np.isfinite(cloud["x"]).all())))
        return cb

    def on_image(key):
        def cb(msg):
            got[key].append((msg.header.stamp.sec * S + msg.header.stamp.nanosec, msg.header.frame_id,
                             image_to_array(msg).shape, msg.encoding))
        return cb

    for ns in ("front", "rear"):
        node.create_subscription(PointCloud2, f"/{ns}/perception/passthrough/points", on_points(f"{ns}_points"),
                                 RESULT_QOS)
        node.create_subscription(Image, f"/{ns}/perception/passthrough/image", on_image(f"{ns}_image"), RESULT_QOS)
    infos = []
    executor = rclpy.executors.SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)

    output_subs = [s for s in node.subscriptions if "passthrough" in s.topic_name]
    # The player starts once 3 nodes subscribe to its topics: the two pass-throughs and this
    # probe, which subscribes to any player topic only after it matched both pass-throughs'
    # outputs (so nothing is lost).
    proc = subprocess.Popen([sys.executable, "-m", "squeeze_perception.cli", "launch", "replay_check.launch.py",
                             "--compat", f"bag:={BAG}", "subscriber_nodes:=3"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        matched_at = None
        ready = False
        while proc.poll() is None and time.monotonic() < deadline:
            if matched_at is None and all(s.get_publisher_count() > 0 for s in output_subs):
                matched_at = time.monotonic()
            # Discovery is not symmetric: this probe sees the pass-throughs' writers before their
            # writers have matched this reader, and a volatile writer drops what it publishes to a
            # reader it has not matched yet. Give the other side the same time to match.
            if not ready and matched_at is not None and time.monotonic() - matched_at > 2.0:
                # Subscribing to the player's topics makes this probe count as a subscriber node,
                # which releases playback: only now (camera_info is latched, so it still arrives).
                node.create_subscription(PointCloud2, "/kitti/velo/pointcloud", lambda m: None, RESULT_QOS)
                node.create_subscription(CameraInfo, "/kitti/camera_color_left/camera_info", infos.append,
                                         LATCHED_QOS)
                ready = True
            executor.spin_once(timeout_sec=0.05)
        for _ in range(20):
            executor.spin_once(timeout_sec=0.02)
        out = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        node.destroy_node()

    assert proc.returncode == 0, out
    assert out.count("[launch] started") == 3
    assert "shutting down: bag finished (bag_player_node exit code 0)" in out
    for ns in ("front", "rear"):
        points = got[f"{ns}_points"]
        assert [p[0] for p in points] == stamps, f"{ns}: got {[p[0] for p in points]}\n{out}"
        for (_, frame, names, n, finite), size in zip(points, sizes):
            assert frame == itf.FRAME_VELODYNE and names == itf.POINT_DTYPE.names and finite
            assert 0 < n <= size  # NaN-free real scans keep (almost) every point
        images = got[f"{ns}_image"]
        assert [i[0] for i in images] == stamps  # same 10 Hz stamps as the clouds in this bag
        assert all(i[1:] == (itf.FRAME_CAMERA, (375, 1242, 3), "rgb8") for i in images)
    # camera_info is latched (our contract) and carries the KITTI 2011_09_26 P_rect_02.
    assert infos and infos[-1].header.frame_id == itf.FRAME_CAMERA and (infos[-1].width, infos[-1].height) == (1242, 375)
    assert abs(infos[-1].p[0] - 721.5377) < 1e-3 and abs(infos[-1].k[2] - 609.5593) < 1e-3
    # The end-of-run table has both pass-through nodes and the player's per-topic counts.
    assert "front/passthrough_node" in out and "rear/passthrough_node" in out
    table = out[out.index("node  "):]
    row = next(ln for ln in table.splitlines() if ln.startswith("front/passthrough_node") and " points " in ln)
    assert row.split()[2:4] == ["4", "4"]
    assert "/kitti/velo/pointcloud" in table
