"""PerceptionNode behaviour in-process: runtime parameter refusal and bad input that never kills the node."""
from __future__ import annotations

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.parameter import Parameter

from squeeze_perception import interfaces as itf
from squeeze_perception.msgs_conv import array_to_cloud, array_to_image


@pytest.fixture()
def node(ros):
    from squeeze_perception.nodes.passthrough_node import PassthroughNode

    n = PassthroughNode()
    yield n
    n.destroy_node()


def test_bad_runtime_parameter_is_refused_with_reason(node):
    result = node.set_parameters([Parameter("max_points", value=0)])[0]
    assert not result.successful and "out of range" in result.reason  # rclpy's descriptor check
    assert node.p["max_points"] == 300000
    result = node.set_parameters([Parameter("drop_nan_points", value="yes")])[0]
    assert not result.successful and "must be a bool" in result.reason
    assert node.set_parameters([Parameter("max_points", value=1000)])[0].successful
    assert node.p["max_points"] == 1000


def _cloud(n=10):
    arr = np.zeros(n, itf.POINT_DTYPE)
    arr["x"] = np.arange(n)
    return array_to_cloud(arr, frame_id="velo_link")


def test_bad_clouds_are_counted_and_reported_node_survives(node):
    sent = []
    node._diag_pub.publish = sent.append  # capture diagnostics without a subscriber
    bad = _cloud()
    bad.fields = bad.fields[:3]
    node.on_points(bad)
    stats = node.stats["points"]
    assert stats.errors == 1 and stats.frames_dropped == 1 and "intensity" in stats.last_error
    assert sent and sent[-1].status[0].level == DiagnosticStatus.ERROR
    assert "lacks required field" in sent[-1].status[0].message
    node.on_points(_cloud())  # a good cloud afterwards still works
    assert stats.frames_out == 1


def test_nan_points_removed_and_reported_not_dropped(node):
    out = []
    node.points_pub.publish = out.append
    arr = np.zeros(5, itf.POINT_DTYPE)
    arr["x"] = [0, np.nan, 2, 3, np.inf]
    msg = array_to_cloud(arr)
    node.on_points(msg)
    assert out and out[-1].width == 3
    assert node.stats["points"].frames_dropped == 0 and node.stats["points"].errors == 1


def test_unknown_image_encoding_reported(node):
    msg = array_to_image(np.zeros((4, 4, 3), np.uint8))
    msg.encoding = "bayer_rggb8"
    node.on_image(msg)
    assert "unsupported image encoding 'bayer_rggb8'" in node.stats["image"].last_error
