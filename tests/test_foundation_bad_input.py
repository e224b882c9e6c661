"""Bad input to a node in its own process: clear rate-limited error, ERROR diagnostic, node stays up."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np

NS = "/bad_input_check"


def _cloud(fields=("x", "y", "z", "intensity"), points=None, point_step=None):
    from sensor_msgs.msg import PointCloud2, PointField

    points = np.ones((3, len(fields)), "<f4") if points is None else np.asarray(points, "<f4")
    msg = PointCloud2()
    msg.header.frame_id = "velo_link"
    msg.header.stamp.sec = 7
    msg.height, msg.width = 1, len(points)
    msg.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate(fields)]
    msg.point_step = point_step if point_step is not None else 4 * len(fields)
    msg.row_step = msg.point_step * msg.width
    msg.data = points.tobytes()
    return msg


def _image(encoding):
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.stamp.sec = 7
    msg.height, msg.width, msg.encoding, msg.step = 2, 2, encoding, 6
    msg.data = bytes(12)
    return msg


def test_passthrough_survives_bad_clouds_and_images(rclpy_context):
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from rclpy.node import Node
    from sensor_msgs.msg import Image, PointCloud2

    from squeeze_perception.node_base import RESULT_QOS

    proc = subprocess.Popen([sys.executable, "-m", "squeeze_perception.nodes.passthrough_node", "--ros-args",
                             "-r", f"__ns:={NS}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node = Node("bad_input_probe", context=rclpy_context)
    errors: list[str] = []
    outputs: list[int] = []

    def on_diag(arr):
        errors.extend(s.message for s in arr.status
                      if s.level == DiagnosticStatus.ERROR and s.name.startswith(f"{NS}/passthrough_node"))

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, RESULT_QOS)
    node.create_subscription(PointCloud2, f"{NS}/perception/passthrough/points", lambda m: outputs.append(m.width),
                             RESULT_QOS)
    cloud_pub = node.create_publisher(PointCloud2, f"{NS}/kitti/velo/pointcloud", RESULT_QOS)
    image_pub = node.create_publisher(Image, f"{NS}/kitti/camera_color_left/image_raw", RESULT_QOS)
    executor = rclpy.executors.SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)

    def spin_until(cond, timeout=10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return True
            executor.spin_once(timeout_sec=0.05)
        return cond()

    try:
        assert spin_until(lambda: cloud_pub.get_subscription_count() > 0 and image_pub.get_subscription_count() > 0
                          and node.count_publishers("/diagnostics") > 0, 20), "passthrough_node did not come up"
        cases = [
            (cloud_pub, _cloud(fields=("x", "y", "z")), "lacks required field"),
            (cloud_pub, _cloud(point_step=8), "point_step"),
            (cloud_pub, _cloud(points=[[1, 2, np.nan, 0.5], [1, 1, 1, 1]]), "NaN"),
            (cloud_pub, _cloud(points=np.zeros((0, 4))), "0 points"),
            (image_pub, _image("yuv422_yuy2"), "unsupported image encoding 'yuv422_yuy2'"),
        ]
        sent = {}
        for pub, msg, expected in cases:
            # Resend until diagnosed: right after matching, a best-effort reader can miss the first one.
            sent[expected] = 0
            end = time.monotonic() + 15
            while not any(expected in m for m in errors) and time.monotonic() < end:
                for _ in range(3):  # repeated bad input: diagnosed each time, logged rate-limited
                    pub.publish(msg)
                sent[expected] += 3
                spin_until(lambda e=expected: any(e in m for m in errors), 0.5)
            assert any(expected in m for m in errors), (expected, errors)
            assert proc.poll() is None, "node died on bad input"
        # Still working: a good cloud comes out (and the NaN cloud came out cleaned: 1 point).
        for _ in range(20):
            cloud_pub.publish(_cloud(points=np.ones((5, 4))))
            if spin_until(lambda: 5 in outputs, 0.5):
                break
        assert 5 in outputs
        assert 1 in outputs and 0 in outputs
    finally:
        node.destroy_node()
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, out
    logged = out.count("lacks required field")
    assert 1 <= logged < sent["lacks required field"]  # identical errors are rate-limited in the log
    assert "SUMMARY" in out
