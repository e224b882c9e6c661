"""tracker_node in-process: tracks over real pub/sub, bag loop reset, LiDAR-only and camera-only
operation, fusion correcting a class, malformed tables reported while the node stays up."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, PointCloud2
from std_msgs.msg import Header

from squeeze_perception import interfaces as itf
from squeeze_perception.msgs_conv import array_to_cloud, cloud_to_table, table_to_cloud
from squeeze_perception.node_base import RESULT_QOS
from squeeze_perception.offline.tracking import scenarios as sc
from squeeze_perception.tracking.fusion import (KITTI_IMAGE_SIZE, KITTI_P_RECT_02, KITTI_VELO_TO_RECT,
                                                project_boxes, velo_to_image_matrix)

REPO = Path(__file__).resolve().parents[1]


def _make_node(**params):
    from squeeze_perception.nodes.tracker_node import TrackerNode

    return TrackerNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def _capture(node):
    out = {"tracks": [], "markers": []}
    node.tracks_pub.publish = out["tracks"].append
    node.markers_pub.publish = out["markers"].append
    return out


def _header(t: float, frame=itf.FRAME_VELODYNE) -> Header:
    h = Header(frame_id=frame)
    h.stamp.sec, h.stamp.nanosec = int(t), int(round((t - int(t)) * 1e9))
    return h


def _instances_msg(gt, t, **kw):
    return table_to_cloud(sc.gt_to_instances(gt, **kw), _header(t))


def _detections_msg(gt, t, class_override=None):
    m = velo_to_image_matrix(KITTI_P_RECT_02, KITTI_VELO_TO_RECT)
    boxes, valid, _ = project_boxes(gt, m, KITTI_IMAGE_SIZE)
    det = np.zeros(int(valid.sum()), itf.DETECTION_DTYPE)
    b = boxes[valid]
    det["u_min"], det["v_min"], det["u_max"], det["v_max"] = b.T
    det["class_id"] = gt["class_id"][valid] if class_override is None else class_override
    det["score"] = 0.9
    return table_to_cloud(det, _header(t, itf.FRAME_CAMERA))


def _tracks(out, k=-1):
    return cloud_to_table(out["tracks"][k], itf.TRACK_DTYPE)


T0 = 1000.0  # bag-like stamps


def test_tracks_over_real_pub_sub(ros):
    node = _make_node(use_camera=False)
    peer = rclpy.create_node("tracker_test_peer")
    received: list[PointCloud2] = []
    pub = peer.create_publisher(PointCloud2, itf.TOPIC_INSTANCES, RESULT_QOS)
    peer.create_subscription(PointCloud2, itf.TOPIC_TRACKS, received.append, RESULT_QOS)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    ex.add_node(peer)
    try:
        deadline = time.monotonic() + 15
        while (pub.get_subscription_count() == 0 or node.tracks_pub.get_subscription_count() == 0) \
                and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.1)
        assert pub.get_subscription_count() > 0, "tracker did not discover the publisher"
        seq = sc.crossing_pair(cls=1, lateral_gap_m=2.0, n_frames=8)
        for k, gt in enumerate(seq.frames):
            pub.publish(_instances_msg(gt, T0 + 0.1 * k))
            end = time.monotonic() + 2
            while len(received) < k + 1 and time.monotonic() < end:
                ex.spin_once(timeout_sec=0.05)
        assert len(received) == len(seq.frames)
        last = cloud_to_table(received[-1], itf.TRACK_DTYPE)
        assert sorted(last["track_id"]) == [1, 2] and set(last["class_id"]) == {1}
        assert received[-1].header.frame_id == itf.FRAME_VELODYNE
        assert received[-1].header.stamp.sec == int(T0) and received[-1].header.stamp.nanosec == 700_000_000
    finally:
        ex.shutdown()
        peer.destroy_node()
        node.destroy_node()


def test_bag_loop_clears_tracks_and_restarts_ids(ros):
    node = _make_node(use_camera=False)
    try:
        out = _capture(node)
        seq = sc.crossing_pair(cls=1, lateral_gap_m=2.0, n_frames=10)
        for k, gt in enumerate(seq.frames):
            node.on_instances(_instances_msg(gt, T0 + 0.1 * k))
        assert sorted(_tracks(out)["track_id"]) == [1, 2]
        node.pipeline.tracker.next_id = 50  # as if many objects had come and gone
        node.on_instances(_instances_msg(seq.frames[0], T0))  # the bag starts again
        assert len(_tracks(out)) == 0 and out["markers"][-1].markers[0].action == 3  # DELETEALL
        assert node.sync.stats.resets == 1
        for k in (1, 2):
            node.on_instances(_instances_msg(seq.frames[k], T0 + 0.1 * k))
        assert sorted(_tracks(out)["track_id"]) == [1, 2]
        assert node.stats["tracking"].errors == 0
    finally:
        node.destroy_node()


def test_lidar_only_when_no_camera_data(ros):
    node = _make_node()  # camera enabled but nothing arrives
    try:
        out = _capture(node)
        seq = sc.occlusion_gap(gap_frames=0, n_frames=5)
        for k, gt in enumerate(seq.frames):
            node.on_instances(_instances_msg(gt, T0 + 0.1 * k))
        assert len(out["tracks"]) == 5 and _tracks(out)["track_id"].tolist() == [1]
        markers = out["markers"][-1].markers
        kinds = sorted({m.ns for m in markers[1:]})
        assert kinds == ["track_boxes", "track_ids", "track_trails", "track_velocity"]
        arrow = next(m for m in markers if m.ns == "track_velocity")
        assert arrow.points[1].y - arrow.points[0].y == pytest.approx(float(_tracks(out)["vy"][0]), abs=1e-4)
    finally:
        node.destroy_node()


def test_camera_corrects_lidar_class(ros):
    node = _make_node(max_wait_s=5.0)
    try:
        out = _capture(node)
        seq = sc.occlusion_gap(gap_frames=0, n_frames=6)
        for k, gt in enumerate(seq.frames):
            t = T0 + 0.1 * k
            node.on_detections(_detections_msg(gt, t)) if k else None
            inst = sc.gt_to_instances(gt, score=0.5)
            inst["class_id"] = 3  # LiDAR calls the car a cyclist
            node.on_instances(table_to_cloud(inst, _header(t)))
            if k == 0:
                node.on_detections(_detections_msg(gt, t))  # camera after LiDAR: paired on arrival
        assert len(out["tracks"]) == 6
        assert _tracks(out)["class_id"].tolist() == [1]
    finally:
        node.destroy_node()


def test_camera_only_keeps_tracking_through_lidar_dropout(ros):
    node = _make_node(lidar_timeout_s=0.05, camera_timeout_s=0.05, max_wait_s=0.0)
    try:
        out = _capture(node)
        seq = sc.occlusion_gap(gap_frames=0, n_frames=20, cls=2)
        for k in range(8):
            node.on_instances(_instances_msg(seq.frames[k], T0 + 0.1 * k))
        assert _tracks(out)["track_id"].tolist() == [1]
        time.sleep(0.1)  # LiDAR silent longer than lidar_timeout_s
        for k in range(8, 20):
            node.on_detections(_detections_msg(seq.frames[k], T0 + 0.1 * k))
        last = _tracks(out)
        gt = seq.frames[19][0]
        assert last["track_id"].tolist() == [1]
        assert np.hypot(last["x"][0] - gt["x"], last["y"][0] - gt["y"]) < 1.0
    finally:
        node.destroy_node()


def test_malformed_tables_are_reported_and_node_keeps_working(ros):
    node = _make_node(use_camera=False)
    try:
        out = _capture(node)
        diagnostics = []
        node._diag_pub.publish = diagnostics.append
        bad = array_to_cloud(np.zeros(3, itf.POINT_DTYPE), _header(T0))  # a cloud, not an instance table
        node.on_instances(bad)
        assert node.stats["instances"].errors == 1
        assert "lacks required field" in node.stats["instances"].last_error
        status = next(s for s in diagnostics[-1].status if s.name.endswith("instances"))
        assert status.level == status.ERROR and "lacks required field" in status.message
        node.on_detections(bad)
        assert node.stats["detections"].errors == 1
        info = CameraInfo(width=0, height=0)
        node.on_camera_info(info)
        assert "no usable P" in node.stats["camera_info"].last_error
        seq = sc.occlusion_gap(gap_frames=0, n_frames=4)
        for k, gt in enumerate(seq.frames):
            node.on_instances(_instances_msg(gt, T0 + 0.1 * k))
        assert len(_tracks(out)) == 1
    finally:
        node.destroy_node()


def test_camera_info_replaces_the_fallback_projection(ros):
    node = _make_node()
    try:
        p = np.array([500.0, 0, 320, 0, 0, 500, 240, 0, 0, 0, 1, 0])
        node.on_camera_info(CameraInfo(width=640, height=480, p=p.tolist()))
        assert node.pipeline.image_size == (640, 480)
        np.testing.assert_allclose(node.pipeline.velo_to_image, p.reshape(3, 4) @ KITTI_VELO_TO_RECT)
    finally:
        node.destroy_node()


def test_bad_parameter_changes_are_refused_with_reason(ros):
    node = _make_node()
    try:
        res = node.set_parameters([Parameter("car.process_noise", value=[1.0, 2.0])])[0]
        assert not res.successful and "at least 6" in res.reason
        res = node.set_parameters([Parameter("velo_to_cam", value=[0.0] * 16)])[0]
        assert not res.successful and "singular" in res.reason
        res = node.set_parameters([Parameter("pedestrian.gate_m", value=2.5)])[0]
        assert res.successful and node.pipeline.tracker.config.for_class(2).gate_m == 2.5
    finally:
        node.destroy_node()


def test_params_file_loads_and_matches_the_code_defaults(ros):
    from squeeze_perception.nodes.tracker_node import TrackerNode
    from squeeze_perception.tracking.tracker import TrackerConfig

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, args=["--ros-args", "--params-file", str(REPO / "config" / "tracker.yaml")])
    node = TrackerNode(context=ctx)
    try:
        assert node.p["car.gate_m"] == 4.0 and node.p["pedestrian.motion_model"] == "cv"
        assert node.pipeline.tracker.config == TrackerConfig()
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_camera_disabled_never_waits_for_detections(ros):
    node = _make_node(use_camera=False, max_wait_s=10.0)
    try:
        out = _capture(node)
        seq = sc.occlusion_gap(gap_frames=0, n_frames=3)
        for k, gt in enumerate(seq.frames):
            node.on_detections(_detections_msg(gt, T0 + 0.1 * k - 0.2))  # too old to pair: would wait
            node.on_instances(_instances_msg(gt, T0 + 0.1 * k))
        assert len(out["tracks"]) == 3 and node.sync.stats.paired == 0
    finally:
        node.destroy_node()


def test_frames_the_sync_drops_are_counted_and_said(ros):
    """A frame older than the last tracked one (a short loop, an out-of-order publisher) and the
    overflow of frames waiting for their camera table: counted as dropped, one log line per cause."""
    node = _make_node(max_wait_s=10.0, camera_timeout_s=10.0)
    try:
        _capture(node)
        seq = sc.crossing_pair(cls=1, lateral_gap_m=2.0, n_frames=20)
        node.on_instances(_instances_msg(seq.frames[0], T0))
        node.on_detections(_detections_msg(seq.frames[0], T0))  # pairs and releases frame 0
        node.on_instances(_instances_msg(seq.frames[1], T0 + 0.1))  # waits for its camera table
        node.on_detections(_detections_msg(seq.frames[1], T0 + 0.1))
        dropped = node.stats["instances"].frames_dropped
        node.on_instances(_instances_msg(seq.frames[0], T0 + 0.05))  # older than frame 1, not a loop
        assert node.stats["instances"].frames_dropped == dropped + 1
        assert "older than the last tracked frame" in node.stats["instances"].last_error
        for k in range(2, 2 + node.sync.max_pending + 2):  # nothing from the camera: frames pile up
            node.on_instances(_instances_msg(seq.frames[k], T0 + 0.1 * k))
        assert node.sync.stats.overflow_dropped == 2
        assert node.stats["instances"].frames_dropped == dropped + 3
        assert "the oldest dropped" in node.stats["instances"].last_error
    finally:
        node.destroy_node()
