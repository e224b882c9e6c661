"""`squeeze-perception render --live`: the frames of a running stack, drawn with the bag mode's code.

The pairing of the stack's outputs by stamp is checked on its own (no ROS). Then the real command
runs as a child process (sys.executable) while this test publishes what the nodes publish (a
labelled scan, its instance and track tables, a camera image with one detection, /diagnostics):
the PNGs must show the car box where the detection is, the car points in the bird's-eye view,
the nodes' telemetry in render.json, and an MP4 with one frame per PNG.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from squeeze_perception import interfaces as itf
from squeeze_perception.offline import render as rd
from squeeze_perception.offline.render_live import LiveFrames, telemetry_from_statuses

CAR_RGB = np.array([round(c * 255) for c in rd.CLASS_COLOURS[1]])
S = 1_000_000_000


def _tables(stamp_ns: int) -> dict:
    inst = np.zeros(1, itf.INSTANCE_DTYPE)
    inst[0] = (1, 1, 20.0, 5.0, -1.0, 4.0, 1.8, 1.5, 0.0, 200, 0.9)
    trk = np.zeros(1, itf.TRACK_DTYPE)
    trk[0] = (7, 1, 20.0, 5.0, -1.0, 4.0, 1.8, 1.5, 0.0, 3.0, 0.0, 0.9, 5)
    det = np.zeros(1, itf.DETECTION_DTYPE)
    det[0] = (20.0, 60.0, 120.0, 140.0, 0.87, 1)  # left third of a 400 x 200 image
    return {"instances": inst, "tracks": trk, "detections": det}


def _scan(n_car: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ground = np.c_[rng.uniform(3, 40, 2000), rng.uniform(-15, 15, 2000), np.full(2000, -1.7), np.zeros(2000)]
    car = np.c_[rng.uniform(18, 22, n_car), rng.uniform(4.1, 5.9, n_car), rng.uniform(-1.7, -0.3, n_car),
                np.full(n_car, 0.5)]
    points = np.r_[ground, car].astype(np.float32)
    labels = np.r_[np.zeros(2000, np.int64), np.ones(n_car, np.int64)]
    return points, labels


# ------------------------------------------------------------------ pairing, no ROS
def test_a_scan_is_drawn_once_its_tables_image_and_detections_are_in():
    frames = LiveFrames(grace_s=2.0)
    points, labels = _scan()
    t = 100 * S
    tables = _tables(t)
    frames.add_scan(t, points, labels, now=0.0)
    frames.add_table("instances", t, tables["instances"])
    frames.add_table("tracks", t, tables["tracks"])
    assert frames.take_ready(now=0.1) == []  # camera part still missing, grace not over
    frames.add_image(t + 3_000_000, np.zeros((200, 400, 3), np.uint8))  # 3 ms off: the same capture
    frames.add_table("detections", t + 3_000_000, tables["detections"])
    [result] = frames.take_ready(now=0.2)
    assert result.index == 0 and result.stamp_ns == t
    assert len(result.instances) == 1 and list(result.tracks["track_id"]) == [7]
    assert len(result.detections) == 1 and result.image.shape == (200, 400, 3)
    assert frames.pending == 0


def test_an_incomplete_scan_waits_for_the_grace_time_then_is_drawn_with_what_came():
    frames = LiveFrames(grace_s=1.0)
    points, labels = _scan()
    frames.add_scan(1 * S, points, labels, now=10.0)
    frames.add_scan(2 * S, points, labels, now=10.1)
    frames.add_table("instances", 2 * S, _tables(0)["instances"])
    assert frames.take_ready(now=10.5) == []  # in arrival order: the first one blocks
    first, second = frames.take_ready(now=11.15)
    assert (first.stamp_ns, second.stamp_ns) == (1 * S, 2 * S)
    assert first.image is None and len(first.detections) == 0 and len(first.tracks) == 0
    assert len(second.instances) == 1


def test_drawing_that_falls_behind_skips_the_oldest_scans():
    frames = LiveFrames(grace_s=0.0, max_pending=3)
    points, labels = _scan(10)
    for i in range(5):
        frames.add_scan(i * S, points, labels, now=0.0)
    assert frames.skipped == 2
    assert [r.stamp_ns for r in frames.take_all(limit=2)] == [2 * S, 3 * S]
    assert frames.pending == 1


def test_telemetry_rows_from_diagnostic_statuses():
    kv = lambda k, v: SimpleNamespace(key=k, value=v)  # noqa: E731
    statuses = [
        SimpleNamespace(name="/car1/squeezedet_node: detect",
                        values=[kv("frames_in", "4"), kv("processing_ms_mean", "80.500"), kv("latency_ms_mean", "95.250")]),
        SimpleNamespace(name="/squeezeseg_node: crf", values=[kv("processing_ms_mean", "30.000")]),
        SimpleNamespace(name="/tracker_node: camera_info", values=[kv("frames_in", "1")]),  # no times: left out
        SimpleNamespace(name="no stage here", values=[]),
    ]
    assert telemetry_from_statuses(statuses) == {
        "squeezedet_node: detect": {"latency": 95.25, "processing": 80.5},
        "squeezeseg_node: crf": {"latency": None, "processing": 30.0},
    }


def test_telemetry_panel_lists_nodes_and_stages():
    lines = rd.telemetry_lines({"squeezedet_node: detect": {"latency": 95.25, "processing": 80.5},
                                "squeezeseg_node: crf": {"latency": None, "processing": 30.0}})
    text = "\n".join(lines)
    assert "squeezedet_node" in text and "95.2" in text and "80.5" in text
    assert any(line.strip().startswith("crf") and line.split()[1] == "-" for line in lines)


# ------------------------------------------------------------------ the command against publishers
def _has_colour(region: np.ndarray, rgb, tol: int = 12) -> np.ndarray:
    return np.all(np.abs(region[..., :3].astype(int) - rgb) <= tol, axis=-1)


@pytest.fixture()
def live_env(monkeypatch):
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(160 + os.getpid() % 10))
    return os.environ.copy()


def test_render_live_draws_what_the_stack_publishes(tmp_path, live_env, rclpy_context):
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from PIL import Image
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image as ImageMsg
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Header

    from squeeze_perception.msgs_conv import array_to_cloud, array_to_image, table_to_cloud
    from squeeze_perception.node_base import RESULT_QOS

    out = tmp_path / "live"
    cmd = [sys.executable, "-m", "squeeze_perception.cli", "render", "--live", "--out", str(out), "--frames", "2",
           "--grace", "1.5", "--idle-timeout", "90"]
    child = subprocess.Popen(cmd, env=live_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node = Node("fake_stack", context=rclpy_context)
    try:
        pubs = {t: node.create_publisher(kind, t, RESULT_QOS) for t, kind in (
            (itf.TOPIC_LABELLED_POINTS, PointCloud2), (itf.TOPIC_INSTANCES, PointCloud2),
            (itf.TOPIC_TRACKS, PointCloud2), (itf.TOPIC_DETECTIONS, PointCloud2), (itf.TOPIC_IMAGE, ImageMsg),
            (itf.TOPIC_DIAGNOSTICS, DiagnosticArray))}
        executor = SingleThreadedExecutor(context=rclpy_context)
        executor.add_node(node)
        deadline = time.monotonic() + 90
        # publish only once the renderer is subscribed to every topic: then no frame lacks a part
        while any(p.get_subscription_count() == 0 for p in pubs.values()):
            assert child.poll() is None, child.communicate()[0]
            assert time.monotonic() < deadline, "render --live never subscribed"
            executor.spin_once(timeout_sec=0.1)
        time.sleep(0.5)

        points, labels = _scan()
        cloud = np.zeros(len(points), itf.LABELLED_POINT_DTYPE)
        for i, f in enumerate(itf.POINT_FIELDS_REQUIRED):
            cloud[f] = points[:, i]
        cloud["label"], cloud["instance"] = labels, np.where(labels > 0, 1, -1)
        image = np.full((200, 400, 3), 128, np.uint8)  # plain grey: car-red pixels come only from the box
        diag = DiagnosticArray(status=[DiagnosticStatus(name="/squeezedet_node: detect", values=[
            KeyValue(key="latency_ms_mean", value="95.250"), KeyValue(key="processing_ms_mean", value="80.500")])])
        i = 0
        while child.poll() is None:
            assert time.monotonic() < deadline, "render --live did not finish"
            stamp_ns = 1_767_268_800 * S + i * 100_000_000
            header = Header(frame_id=itf.FRAME_VELODYNE)
            header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, S)
            cam_header = Header(stamp=header.stamp, frame_id=itf.FRAME_CAMERA)
            tables = _tables(stamp_ns)
            pubs[itf.TOPIC_DIAGNOSTICS].publish(diag)
            pubs[itf.TOPIC_IMAGE].publish(array_to_image(image, "rgb8", cam_header))
            pubs[itf.TOPIC_DETECTIONS].publish(table_to_cloud(tables["detections"], cam_header))
            pubs[itf.TOPIC_LABELLED_POINTS].publish(array_to_cloud(cloud, header))
            pubs[itf.TOPIC_INSTANCES].publish(table_to_cloud(tables["instances"], header))
            pubs[itf.TOPIC_TRACKS].publish(table_to_cloud(tables["tracks"], header))
            i += 1
            end = time.monotonic() + 0.4
            while time.monotonic() < end and child.poll() is None:
                executor.spin_once(timeout_sec=0.05)
    finally:
        if child.poll() is None:
            child.kill()
        log = child.communicate(timeout=30)[0]
        node.destroy_node()
    assert child.returncode == 0, log
    assert "Traceback" not in log, log

    pngs = sorted(out.glob("frame_*.png"))
    assert [p.name for p in pngs] == ["frame_0000.png", "frame_0001.png"], log
    summary = json.loads((out / "render.json").read_text())
    assert summary["live"] is True and summary["ended"] == "2 frames"
    for frame in summary["frames"]:
        assert frame["detections"] == 1 and frame["instances"] == 1 and frame["tracks"] == [7]
        assert frame["object_points"] == 300 and frame["points"] == 2300
        assert frame["telemetry_ms"]["squeezedet_node: detect"] == {"latency": 95.25, "processing": 80.5}

    img = np.asarray(Image.open(pngs[1]).convert("RGB"))
    h, w = img.shape[:2]
    camera = img[int(h * 0.05): int(h * 0.37)]
    red = _has_colour(camera, CAR_RGB)
    cols = np.nonzero(red.any(axis=0))[0]
    assert red.sum() > 100, "no car box on the camera panel"
    # the box spans u 20..120 of 400: the left third of the image, which is centred on the figure
    grey_cols = np.nonzero(_has_colour(camera, (128, 128, 128), tol=2).any(axis=0))[0]
    left, right = grey_cols.min(), grey_cols.max()
    assert left <= cols.min() and cols.max() < left + (right - left) * 0.4, (cols.min(), cols.max(), left, right)
    bev = img[int(h * 0.40):, : int(w * 0.56)]
    assert _has_colour(bev, CAR_RGB).sum() > 50, "no car points in the bird's-eye view"
    dark = _has_colour(bev, (20, 20, 26), tol=4)  # the bird's-eye axes' background
    rows, cols = np.nonzero(dark.any(axis=1))[0], np.nonzero(dark.any(axis=0))[0]
    inside = bev[rows.min() + 3: rows.max() - 3, cols.min() + 3: cols.max() - 3]
    assert _has_colour(inside, (255, 255, 255), tol=10).sum() > 20  # the white track box and its id

    video = out / summary["video"]
    if rd.ffmpeg_binary() is None:
        pytest.skip("no ffmpeg (pip install imageio-ffmpeg): the video is a GIF")
    import imageio_ffmpeg

    assert video.name == "render.mp4"
    assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] == 2


def test_the_player_does_not_wait_for_the_hidden_render_node():
    """render --live subscribes to the camera image, a played topic; its node is hidden
    (`_render_live`), so the player's `subscriber_nodes` count still waits for the model nodes."""
    from squeeze_perception.nodes.bag_player_node import BagPlayerNode

    subs = {"/kitti/camera_color_left/image_raw": [("/", "squeezedet_node"), ("/", "_render_live")],
            "/kitti/velo/pointcloud": [("/", "squeezeseg_node"), ("/", "bag_player_node")]}
    fake = SimpleNamespace(
        get_namespace=lambda: "/", get_name=lambda: "bag_player_node",
        publishers_by_topic={t: SimpleNamespace(topic_name=t) for t in subs},
        get_subscriptions_info_by_topic=lambda t: [SimpleNamespace(node_namespace=ns, node_name=n)
                                                   for ns, n in subs[t]])
    assert BagPlayerNode._subscriber_nodes(fake) == {("/", "squeezedet_node"), ("/", "squeezeseg_node")}
