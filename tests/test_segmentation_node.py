"""squeezeseg_node in-process: outputs stamped with the cloud header, bad input never kills it,
missing weights reported per frame, runtime model switch refused with a reason."""
from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from sensor_msgs.msg import PointCloud2

from squeeze_perception import interfaces as itf
from squeeze_perception.msgs_conv import array_to_cloud, cloud_to_array, cloud_to_table


def _make_node(**params):
    from squeeze_perception.nodes.squeezeseg_node import SqueezeSegNode

    overrides = [Parameter(k, value=v) for k, v in {"num_threads": 1, **params}.items()]
    return SqueezeSegNode(parameter_overrides=overrides)


def _capture(node):
    out = {"points": [], "instances": [], "markers": []}
    node.points_pub.publish = out["points"].append
    node.instances_pub.publish = out["instances"].append
    node.markers_pub.publish = out["markers"].append
    return out


def _cloud(n=3000, seed=0, frame="velo_link"):
    rng = np.random.default_rng(seed)
    arr = np.zeros(n, itf.POINT_DTYPE)
    arr["x"] = rng.uniform(5, 30, n)
    arr["y"] = rng.uniform(-5, 5, n)
    arr["z"] = rng.uniform(-1.8, 0.5, n)
    arr["intensity"] = rng.uniform(0, 1, n)
    msg = array_to_cloud(arr, frame_id=frame)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 42, 7
    return msg


def test_outputs_cover_every_point_and_keep_the_header(ros, v1_weights):
    node = _make_node(model="squeezeseg", weights=v1_weights)
    try:
        out = _capture(node)
        msg = _cloud()
        node.on_points(msg)
        assert node.stats["points"].errors == 0, node.stats["points"].last_error
        pts = cloud_to_array(out["points"][-1], required=("label", "instance"))
        assert len(pts) == 3000 and set(np.unique(pts["label"])) <= {0, 1, 2, 3}
        np.testing.assert_array_equal(pts["x"], cloud_to_array(msg)["x"])
        table = cloud_to_table(out["instances"][-1], itf.INSTANCE_DTYPE)
        assert set(np.unique(pts["instance"][pts["instance"] >= 0])) == set(table["instance_id"])
        for m in (out["points"][-1], out["instances"][-1]):
            assert m.header.stamp.sec == 42 and m.header.frame_id == "velo_link"
        markers = out["markers"][-1].markers
        assert markers[0].action == markers[0].DELETEALL and len(markers) == 1 + 2 * len(table)
        for stage in ("projection", "network", "crf", "clustering", "boxfit", "size_gate"):
            assert node.stats[stage].frames_in == 1
    finally:
        node.destroy_node()


def test_bad_inputs_keep_the_node_running(ros, v1_weights):
    node = _make_node(model="squeezeseg", weights=v1_weights)
    try:
        out = _capture(node)
        stats = node.stats["points"]
        wrong = _cloud()
        wrong.fields = wrong.fields[:3]  # no intensity
        node.on_points(wrong)
        assert stats.frames_dropped == 1 and "lacks required field" in stats.last_error
        node.on_points(array_to_cloud(np.zeros(0, itf.POINT_DTYPE)))  # empty: empty valid output
        assert out["points"][-1].width == 0 and out["instances"][-1].width == 0
        assert "empty cloud" in stats.last_error
        nan = _cloud(500)
        arr = cloud_to_array(nan).copy()
        arr["x"][:3] = np.nan
        node.on_points(array_to_cloud(arr))
        labelled = cloud_to_array(out["points"][-1], required=("label",))
        assert len(labelled) == 500 and (labelled["label"][:3] == 0).all()
        # NaN points are dropped from clustering, counted under their own cause and named in the error
        assert "3 of 500 points dropped: non_finite" in stats.last_error
        assert stats.counters["points_dropped_non_finite"] == 3
        behind = cloud_to_array(_cloud(200)).copy()
        behind["x"] *= -1
        node.on_points(array_to_cloud(behind))
        assert "no returns inside" in stats.last_error
        assert (cloud_to_array(out["points"][-1], required=("label",))["label"] == 0).all()
        node.on_points(_cloud())  # still works afterwards
        assert stats.frames_out >= 4
    finally:
        node.destroy_node()


def test_missing_weights_node_runs_and_reports_each_frame(ros, tmp_path, v1_weights):
    node = _make_node(model="squeezeseg", weights=str(tmp_path / "missing.pt"))
    try:
        out = _capture(node)
        node.on_points(_cloud())
        node.on_points(_cloud())
        assert node.stats["points"].errors == 2 and "not found" in node.stats["points"].last_error
        assert not out["points"]  # never invents labels
        # Switching to valid weights at runtime recovers.
        assert node.set_parameters([Parameter("weights", value=v1_weights)])[0].successful
        node.on_points(_cloud())
        assert out["points"]
        # A model that cannot load is refused with the reason, the working one stays.
        res = node.set_parameters([Parameter("model", value="squeezesegv2")])[0]
        assert not res.successful and "do not match" in res.reason
        assert node.p["model"] == "squeezeseg" and node.pipeline is not None
        res = node.set_parameters([Parameter("fov", value="rear")])[0]
        assert not res.successful
        assert node.set_parameters([Parameter("fov", value="full")])[0].successful
        assert node.pipeline.fov == "full"
    finally:
        node.destroy_node()


def test_topic_round_trip(ros, v1_weights):
    node = _make_node(model="squeezeseg", weights=v1_weights)
    peer = rclpy.create_node("seg_test_peer")
    got = []
    peer.create_subscription(PointCloud2, itf.TOPIC_LABELLED_POINTS, got.append, 10)
    pub = peer.create_publisher(PointCloud2, itf.TOPIC_POINTS, 10)
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(peer)
    try:
        deadline = time.monotonic() + 10
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        pub.publish(_cloud(1000))
        while not got and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert got and got[0].width == 1000 and got[0].header.stamp.sec == 42
    finally:
        executor.shutdown()
        peer.destroy_node()
        node.destroy_node()


def test_num_threads_change_rebuilds_the_pipeline(ros, v1_weights):
    node = _make_node(model="squeezeseg", weights=v1_weights, fov="full")  # num_threads 1
    try:
        before = node.pipeline
        closed = []
        before.backend.close = lambda: closed.append(True)  # the synetgy backend has one
        assert node.set_parameters([Parameter("num_threads", value=2)])[0].successful
        assert node.pipeline is not before and closed == [True]
        assert node.pipeline.fov == "full" and node.pipeline.backend_name == "auto"  # the default
        # other weights, no int8 graph beside them: `auto` runs fp32 and says why
        assert node.pipeline.backend.resolved_backend == "onnxruntime"
        for stage in ("points", "network"):
            info = node.stats[stage].info
            assert info["backend"] == "onnxruntime"
            assert info["backend_reason"].startswith("no int8 graph for model 'squeezeseg': ")
        assert node.pipeline.backend.session.get_session_options().intra_op_num_threads == 2
        same = node.pipeline
        assert node.set_parameters([Parameter("cluster_eps", value=0.5)])[0].successful
        assert node.pipeline is same and same.cluster_eps == 0.5  # not a reload key: no rebuild
        out = _capture(node)
        node.on_points(_cloud())
        assert out["points"] and node.stats["points"].errors == 0
    finally:
        node.destroy_node()
