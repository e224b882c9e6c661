"""squeezedet_node in-process: missing/corrupt weights, bad images, runtime model switching,
and the detection table / annotated image reaching a subscriber over DDS."""
from __future__ import annotations

import time

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, PointCloud2

from squeeze_perception import interfaces as itf
from squeeze_perception import registry
from squeeze_perception.msgs_conv import array_to_image, cloud_to_table, image_to_array


def _weights(tmp_path, name="squeezedet"):
    torch.manual_seed(0)
    model = registry.get_model(name).build()
    path = tmp_path / f"{name}.pt"
    torch.save({"state_dict": model.state_dict(), "model": name, "meta": {}}, path)
    return path


def _node(**params):
    from squeeze_perception.nodes.squeezedet_node import SqueezeDetNode

    return SqueezeDetNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def _image(w=1242, h=375, encoding="rgb8", stamp=(12, 345)):
    rgb = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    msg = array_to_image(rgb, encoding)
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = itf.FRAME_CAMERA
    return msg


def _capture(node):
    out = {"det": [], "img": [], "diag": []}
    node.det_pub.publish = out["det"].append
    node.image_pub.publish = out["img"].append
    node._diag_pub.publish = out["diag"].append
    return out


def test_missing_weights_error_per_frame_diagnostic_and_node_stays_up(ros, tmp_path):
    node = _node(weights=str(tmp_path / "nope.pt"))
    try:
        out = _capture(node)
        assert node.detector is None and "not found" in node.load_error
        node.on_image(_image())
        node.on_image(_image())
        stats = node.stats["detect"]
        assert stats.errors == 2 and stats.frames_dropped == 2 and "not found" in stats.last_error
        assert out["det"] == [] and out["img"] == []  # never invents output
        assert out["diag"] and out["diag"][-1].status[0].level == DiagnosticStatus.ERROR
    finally:
        node.destroy_node()


def test_corrupt_weights_are_a_clear_error(ros, tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00garbage" * 100)
    node = _node(weights=str(bad))
    try:
        assert node.detector is None and "corrupt" in node.load_error
        wrong = tmp_path / "other.pt"
        torch.save({"state_dict": {"convdet.weight": torch.zeros(1)}, "model": "x", "meta": {}}, wrong)
        result = node.set_parameters([Parameter("weights", value=str(wrong))])[0]
        assert not result.successful and "do not match model" in result.reason
    finally:
        node.destroy_node()


def test_detects_publishes_table_and_annotated_image_with_image_header(ros, tmp_path):
    node = _node(weights=str(_weights(tmp_path)), score_threshold=0.0, top_k=16)
    try:
        out = _capture(node)
        msg = _image(w=1224, h=370)  # KITTI's other image size: letterboxed, boxes back in its pixels
        node.on_image(msg)
        assert node.stats["detect"].errors == 0
        assert len(out["det"]) == 1 and len(out["img"]) == 1
        table = cloud_to_table(out["det"][0], itf.DETECTION_DTYPE)
        assert out["det"][0].header.stamp.sec == 12 and out["det"][0].header.stamp.nanosec == 345
        assert out["det"][0].header.frame_id == itf.FRAME_CAMERA
        assert 1 <= len(table) <= 16
        assert set(table["class_id"]) <= {1, 2, 3}
        assert (table["u_min"] >= 0).all() and (table["u_max"] <= 1224).all() and (table["v_max"] <= 370).all()
        assert np.all(np.diff(table["score"]) <= 0)
        ann = image_to_array(out["img"][0])
        assert ann.shape == (370, 1224, 3) and out["img"][0].encoding == "rgb8"
        node.set_parameters([Parameter("annotate", value=False)])
        node.on_image(msg)
        assert len(out["det"]) == 2 and len(out["img"]) == 1
    finally:
        node.destroy_node()


def test_bad_images_reported_node_keeps_working(ros, tmp_path):
    node = _node(weights=str(_weights(tmp_path)))
    try:
        out = _capture(node)
        bad = _image()
        bad.encoding = "bayer_rggb8"
        node.on_image(bad)
        assert "unsupported image encoding 'bayer_rggb8'" in node.stats["detect"].last_error
        node.on_image(_image(w=64, h=20))  # would need x19 upscaling
        assert "too small for model input 1242x375" in node.stats["detect"].last_error
        assert node.stats["detect"].errors == 2 and out["det"] == []
        node.on_image(_image())
        assert len(out["det"]) == 1
    finally:
        node.destroy_node()


def test_runtime_model_switch_accepted_or_refused_with_reason(ros, tmp_path):
    node = _node(weights=str(_weights(tmp_path)))
    try:
        assert node.detector.name == "squeezedet"
        bad = tmp_path / "bad.pt"
        bad.write_text("not a checkpoint")
        result = node.set_parameters([Parameter("weights", value=str(bad))])[0]
        assert not result.successful and "corrupt" in result.reason
        assert node.detector.name == "squeezedet" and node.p["weights"] != str(bad)
        result = node.set_parameters([Parameter("model", value="no_such_model")])[0]
        assert not result.successful and "no_such_model" in result.reason
        small = _weights(tmp_path, "squeezedet_0.75x")
        result = node.set_parameters([Parameter("model", value="squeezedet_0.75x"),
                                      Parameter("weights", value=str(small))])[0]
        assert result.successful and node.detector.name == "squeezedet_0.75x"
        assert node.detector.input_width == 932
        result = node.set_parameters([Parameter("backend", value="onnxruntime")])[0]
        assert result.successful and node.detector.backend_name == "onnxruntime"
        out = _capture(node)
        node.on_image(_image())
        assert len(out["det"]) == 1 and node.stats["detect"].errors == 0
    finally:
        node.destroy_node()


def test_detections_reach_a_subscriber_over_dds(ros, tmp_path):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data

    node = _node(weights=str(_weights(tmp_path)), score_threshold=0.0)
    peer = rclpy.create_node("det_test_peer")
    got = []
    peer.create_subscription(PointCloud2, itf.TOPIC_DETECTIONS, got.append, 10)
    pub = peer.create_publisher(Image, itf.TOPIC_IMAGE, qos_profile_sensor_data)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    ex.add_node(peer)
    try:
        deadline = time.monotonic() + 10
        while (pub.get_subscription_count() == 0 or node.det_pub.get_subscription_count() == 0) \
                and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.1)
        assert pub.get_subscription_count() == 1
        msg = _image()
        deadline = time.monotonic() + 20
        while not got and time.monotonic() < deadline:
            pub.publish(msg)
            ex.spin_once(timeout_sec=0.2)
            ex.spin_once(timeout_sec=0.2)
        assert got, "no detection table received"
        table = cloud_to_table(got[0], itf.DETECTION_DTYPE)
        assert got[0].header.stamp.sec == 12 and len(table) > 0
    finally:
        ex.shutdown()
        peer.destroy_node()
        node.destroy_node()
