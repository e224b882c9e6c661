"""vision_msgs path: a stand-in `vision_msgs` module (only in this test; the package has no wheel)
shaped like the real ROS 2 messages. With it the conversions fill the fields docs/interfaces.md
states and tracker_node publishes a Detection3DArray beside its track table; without it
`load_vision_msgs()` is None and the node advertises no vision topic."""
from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest

from squeeze_perception import interfaces as itf
from squeeze_perception import vision_msgs_conv as vconv


class _Msg:
    """Stand-in message: attributes with the nested defaults a generated ROS message has."""
    _defaults: dict = {}

    def __init__(self):
        for name, factory in self._defaults.items():
            setattr(self, name, factory())


def _msg(name: str, **defaults) -> type:
    return type(name, (_Msg,), {"_defaults": defaults})


def _stand_in_vision_msgs() -> types.ModuleType:
    point = _msg("Point", x=float, y=float, z=float)
    quaternion = _msg("Quaternion", x=float, y=float, z=float, w=lambda: 1.0)
    pose = _msg("Pose", position=point, orientation=quaternion)
    vector3 = _msg("Vector3", x=float, y=float, z=float)
    point2d = _msg("Point2D", x=float, y=float)
    pose2d = _msg("Pose2D", position=point2d, theta=float)
    hypothesis = _msg("ObjectHypothesis", class_id=str, score=float)
    msg = types.ModuleType("vision_msgs.msg")
    msg.ObjectHypothesisWithPose = _msg("ObjectHypothesisWithPose", hypothesis=hypothesis, pose=object)
    msg.BoundingBox2D = _msg("BoundingBox2D", center=pose2d, size_x=float, size_y=float)
    msg.BoundingBox3D = _msg("BoundingBox3D", center=pose, size=vector3)
    msg.Detection2D = _msg("Detection2D", header=object, results=list, bbox=msg.BoundingBox2D, id=str)
    msg.Detection3D = _msg("Detection3D", header=object, results=list, bbox=msg.BoundingBox3D, id=str)
    msg.Detection2DArray = _msg("Detection2DArray", header=object, detections=list)
    msg.Detection3DArray = _msg("Detection3DArray", header=object, detections=list)
    pkg = types.ModuleType("vision_msgs")
    pkg.msg = msg
    return pkg


@pytest.fixture()
def vision_msgs(monkeypatch):
    pkg = _stand_in_vision_msgs()
    monkeypatch.setitem(sys.modules, "vision_msgs", pkg)
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", pkg.msg)
    return pkg.msg


def _tracks() -> np.ndarray:
    t = np.zeros(2, itf.TRACK_DTYPE)
    t["track_id"] = [7, 12]
    t["class_id"] = [1, 2]
    t["x"], t["y"], t["z"] = [10.0, 4.0], [-2.0, 3.5], [-0.8, -0.9]
    t["length"], t["width"], t["height"] = [4.2, 0.6], [1.8, 0.7], [1.5, 1.8]
    t["yaw"] = [math.pi / 2, 0.0]
    t["vx"], t["vy"] = [3.0, 0.0], [0.0, 1.2]
    t["score"] = [0.9, 0.6]
    return t


def test_without_vision_msgs_the_loader_says_none(monkeypatch):
    # None in sys.modules makes the import fail like an uninstalled package, also where apt ROS 2 has it
    monkeypatch.setitem(sys.modules, "vision_msgs", None)
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", None)
    assert vconv.load_vision_msgs() is None


def test_loader_returns_the_installed_module(vision_msgs):
    assert vconv.load_vision_msgs() is vision_msgs


def test_detection2d_array_centre_size_class_name_and_score(vision_msgs):
    dets = np.zeros(2, itf.DETECTION_DTYPE)
    dets["u_min"], dets["v_min"], dets["u_max"], dets["v_max"] = [100, 500], [50, 150], [300, 540], [150, 250]
    dets["score"], dets["class_id"] = [0.8, 0.4], [1, 3]
    header = object()
    arr = vconv.detection2d_array(dets, header, vision_msgs)
    assert isinstance(arr, vision_msgs.Detection2DArray) and arr.header is header
    assert len(arr.detections) == 2
    first, second = arr.detections
    assert first.header is header
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (200.0, 100.0)
    assert (first.bbox.size_x, first.bbox.size_y) == (200.0, 100.0)
    assert first.results[0].hypothesis.class_id == "car"
    assert first.results[0].hypothesis.score == pytest.approx(0.8)
    assert second.results[0].hypothesis.class_id == "cyclist"
    assert (second.bbox.size_x, second.bbox.size_y) == (40.0, 100.0)


def test_tracks_detection3d_array_pose_size_and_track_ids(vision_msgs):
    arr = vconv.tracks_detection3d_array(_tracks(), "hdr", vision_msgs)
    assert [d.id for d in arr.detections] == ["7", "12"]
    car = arr.detections[0]
    pos, q = car.bbox.center.position, car.bbox.center.orientation
    assert (pos.x, pos.y, pos.z) == pytest.approx((10.0, -2.0, -0.8))
    # yaw 90 deg about z
    assert (q.x, q.y, q.z, q.w) == pytest.approx((0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5)))
    assert (car.bbox.size.x, car.bbox.size.y, car.bbox.size.z) == pytest.approx((4.2, 1.8, 1.5))
    assert car.results[0].hypothesis.class_id == "car"
    assert arr.detections[1].results[0].hypothesis.class_id == "pedestrian"


def test_instances_detection3d_array_uses_instance_ids(vision_msgs):
    inst = np.zeros(1, itf.INSTANCE_DTYPE)
    inst["instance_id"], inst["class_id"], inst["score"] = 3, 1, 0.7
    inst["length"], inst["width"], inst["height"] = 4.0, 1.7, 1.4
    arr = vconv.instances_detection3d_array(inst, "hdr", vision_msgs)
    assert [d.id for d in arr.detections] == ["3"]
    assert arr.detections[0].results[0].hypothesis.score == pytest.approx(0.7)
    assert vconv.instances_detection3d_array(inst[:0], "hdr", vision_msgs).detections == []


def _recording_advertise(monkeypatch, node_class, vision_module):
    """Publishers of stand-in types record what they get; real types go to rclpy as usual."""
    published: dict[str, list] = {}
    real_advertise = node_class.advertise

    def advertise(self, msg_type, topic, *args, **kwargs):
        if msg_type in vars(vision_module).values():
            published[topic] = []
            return types.SimpleNamespace(publish=published[topic].append)
        return real_advertise(self, msg_type, topic, *args, **kwargs)

    monkeypatch.setattr(node_class, "advertise", advertise)
    return published


def test_tracker_node_publishes_detection3d_array_beside_the_table(vision_msgs, monkeypatch, ros):
    from std_msgs.msg import Header

    from squeeze_perception.nodes.tracker_node import TrackerNode

    published = _recording_advertise(monkeypatch, TrackerNode, vision_msgs)
    node = TrackerNode()
    try:
        tables = []
        node.tracks_pub.publish = tables.append
        node._publish(Header(frame_id=itf.FRAME_VELODYNE), _tracks())
        assert list(published) == [itf.TOPIC_TRACKS_3D]
        [arr] = published[itf.TOPIC_TRACKS_3D]
        assert isinstance(arr, vision_msgs.Detection3DArray)
        assert arr.header.frame_id == itf.FRAME_VELODYNE
        assert [d.id for d in arr.detections] == ["7", "12"]
        assert len(tables) == 1  # the table still goes out
    finally:
        node.destroy_node()


def test_tracker_node_without_vision_msgs_advertises_no_vision_topic(monkeypatch, ros):
    from squeeze_perception.nodes.tracker_node import TrackerNode

    monkeypatch.setitem(sys.modules, "vision_msgs", None)
    monkeypatch.setitem(sys.modules, "vision_msgs.msg", None)
    node = TrackerNode()
    try:
        assert node.tracks3d_pub is None
        names = {name for name, _ in node.get_publisher_names_and_types_by_node(node.get_name(),
                                                                                  node.get_namespace())}
        assert "/" + itf.TOPIC_TRACKS in names
        assert not {"/" + t for t in itf.VISION_TOPICS} & names
    finally:
        node.destroy_node()


def test_squeezedet_node_publishes_detection2d_array_beside_the_table(vision_msgs, monkeypatch, ros, tmp_path):
    from rclpy.parameter import Parameter

    from squeeze_perception.msgs_conv import array_to_image
    from squeeze_perception.nodes.squeezedet_node import SqueezeDetNode

    published = _recording_advertise(monkeypatch, SqueezeDetNode, vision_msgs)
    # missing weights: the node starts at once without a model; a stand-in detector answers instead
    node = SqueezeDetNode(parameter_overrides=[Parameter("weights", value=str(tmp_path / "none.pt")),
                                               Parameter("annotate", value=False)])
    try:
        dets = np.zeros(1, itf.DETECTION_DTYPE)
        dets["u_min"], dets["v_min"], dets["u_max"], dets["v_max"] = 10, 20, 50, 60
        dets["score"], dets["class_id"] = 0.9, 2
        node.detector = types.SimpleNamespace(
            input_width=64, input_height=32,
            predict=lambda rgb: types.SimpleNamespace(detections=dets, latency_ms=None, energy_mj=None))
        tables = []
        node.det_pub.publish = tables.append
        image = array_to_image(np.zeros((32, 64, 3), np.uint8))
        image.header.frame_id = itf.FRAME_CAMERA
        node.on_image(image)
        assert list(published) == [itf.TOPIC_DETECTIONS_2D]
        [arr] = published[itf.TOPIC_DETECTIONS_2D]
        assert arr.header.frame_id == itf.FRAME_CAMERA
        [det] = arr.detections
        assert det.results[0].hypothesis.class_id == "pedestrian"
        assert (det.bbox.center.position.x, det.bbox.size_y) == (30.0, 40.0)
        assert len(tables) == 1
    finally:
        node.destroy_node()


def test_squeezeseg_node_publishes_detection3d_array_beside_the_table(vision_msgs, monkeypatch, ros, tmp_path):
    from rclpy.parameter import Parameter
    from std_msgs.msg import Header

    from squeeze_perception.nodes.squeezeseg_node import SqueezeSegNode

    published = _recording_advertise(monkeypatch, SqueezeSegNode, vision_msgs)
    node = SqueezeSegNode(parameter_overrides=[Parameter("weights", value=str(tmp_path / "none.pt"))])
    try:
        for pub in (node.points_pub, node.instances_pub, node.markers_pub):
            pub.publish = lambda msg: None
        inst = np.zeros(2, itf.INSTANCE_DTYPE)
        inst["instance_id"], inst["class_id"] = [1, 2], [1, 3]
        inst["length"] = inst["width"] = inst["height"] = 1.0
        result = types.SimpleNamespace(labels=np.zeros(0, np.int32), instances=np.zeros(0, np.int32), table=inst)
        node.publish(Header(frame_id=itf.FRAME_VELODYNE), None, np.zeros((0, 4), np.float32), result)
        assert list(published) == [itf.TOPIC_INSTANCES_3D]
        [arr] = published[itf.TOPIC_INSTANCES_3D]
        assert [d.id for d in arr.detections] == ["1", "2"]
        assert [d.results[0].hypothesis.class_id for d in arr.detections] == ["car", "cyclist"]
    finally:
        node.destroy_node()
