"""config/vehicle.rviz against the message contract (no rviz2 here, so the file is checked
instead of loaded): every display's topic exists in interfaces.TOPIC_TYPES with the message type
the display class draws, docs/interfaces.md names the same topic and type, the displays the README
promises are there, and the marker namespaces RViz toggles are the ones the nodes publish."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from squeeze_perception import interfaces as itf

REPO = Path(__file__).resolve().parents[1]
# rviz_default_plugins display class -> the message type it subscribes to
DISPLAY_TYPES = {
    "rviz_default_plugins/PointCloud2": "sensor_msgs/msg/PointCloud2",
    "rviz_default_plugins/MarkerArray": "visualization_msgs/msg/MarkerArray",
    "rviz_default_plugins/Marker": "visualization_msgs/msg/Marker",
    "rviz_default_plugins/Image": "sensor_msgs/msg/Image",
    "rviz_default_plugins/Camera": "sensor_msgs/msg/Image",
}


def _displays() -> list[dict]:
    rviz = yaml.safe_load((REPO / "config" / "vehicle.rviz").read_text())
    return [d for d in rviz["Visualization Manager"]["Displays"] if "Topic" in d]


def _by_topic() -> dict[str, dict]:
    return {d["Topic"]["Value"]: d for d in _displays()}


def test_every_display_topic_and_type_is_in_the_contract():
    displays = _displays()
    assert displays
    for d in displays:
        topic = d["Topic"]["Value"]
        assert topic in itf.TOPIC_TYPES, f"display '{d['Name']}' shows '{topic}', not in interfaces.TOPIC_TYPES"
        assert d["Class"] in DISPLAY_TYPES, f"display '{d['Name']}': unknown display class {d['Class']}"
        assert DISPLAY_TYPES[d["Class"]] == itf.TOPIC_TYPES[topic], \
            f"display '{d['Name']}' draws {DISPLAY_TYPES[d['Class']]}, '{topic}' carries {itf.TOPIC_TYPES[topic]}"


def test_docs_interfaces_states_every_contract_topic_with_its_type():
    doc = (REPO / "docs" / "interfaces.md").read_text()
    rows = [line for line in doc.splitlines() if line.startswith("|")]
    for topic, msg_type in itf.TOPIC_TYPES.items():
        short = msg_type.replace("/msg/", "/")  # the docs write sensor_msgs/Image
        assert any(f"`{topic}`" in r and f"`{short}`" in r for r in rows), \
            f"docs/interfaces.md has no table row with `{topic}` and `{short}`"


def test_vision_topics_are_optional_and_named_in_the_docs():
    doc = (REPO / "docs" / "interfaces.md").read_text()
    assert set(itf.VISION_TOPICS) <= set(itf.TOPIC_TYPES)
    assert {itf.TOPIC_TYPES[t] for t in itf.VISION_TOPICS} == {"vision_msgs/msg/Detection2DArray",
                                                              "vision_msgs/msg/Detection3DArray"}
    assert re.search(r"vision_msgs.{0,80}not\s+(installed|importable)", doc, re.S)


def test_required_views_are_enabled():
    topics = _by_topic()
    camera = topics[itf.TOPIC_DETECTIONS_IMAGE]  # the camera image with SqueezeDet boxes drawn
    points = topics[itf.TOPIC_LABELLED_POINTS]
    assert camera["Enabled"] and points["Enabled"]
    assert points["Color Transformer"] == "Intensity" and points["Channel Name"] == "label"
    assert (points["Min Intensity"], points["Max Intensity"]) == (0, len(itf.CLASS_NAMES) - 1)
    assert topics[itf.TOPIC_INSTANCE_MARKERS]["Enabled"] and topics[itf.TOPIC_TRACK_MARKERS]["Enabled"]


def _namespaces(markers) -> set[str]:
    from visualization_msgs.msg import Marker

    return {m.ns for m in markers.markers if m.action != Marker.DELETEALL}


def test_marker_namespaces_match_what_the_nodes_publish():
    from std_msgs.msg import Header

    from squeeze_perception.nodes.squeezeseg_node import instance_markers
    from squeeze_perception.nodes.tracker_node import track_markers

    topics = _by_topic()
    tracks = np.zeros(1, itf.TRACK_DTYPE)
    tracks["track_id"], tracks["class_id"], tracks["vx"] = 4, 1, 2.0
    tracks["length"] = tracks["width"] = tracks["height"] = 1.0
    published = _namespaces(track_markers(tracks, Header(), {4: [(0.0, 0.0), (1.0, 0.0)]}))
    shown = {ns for ns, on in topics[itf.TOPIC_TRACK_MARKERS]["Namespaces"].items() if on}
    # ids as text and velocity arrows are what the README promises
    assert {"track_ids", "track_velocity", "track_boxes"} <= shown
    assert shown == published

    inst = np.zeros(1, itf.INSTANCE_DTYPE)
    inst["instance_id"], inst["class_id"] = 1, 1
    inst["length"] = inst["width"] = inst["height"] = 1.0
    shown = {ns for ns, on in topics[itf.TOPIC_INSTANCE_MARKERS]["Namespaces"].items() if on}
    assert shown == _namespaces(instance_markers(inst, Header()))


@pytest.mark.parametrize("topic", [itf.TOPIC_DETECTIONS_IMAGE, itf.TOPIC_LABELLED_POINTS,
                                   itf.TOPIC_INSTANCE_MARKERS, itf.TOPIC_TRACK_MARKERS])
def test_result_displays_subscribe_reliable_like_the_publishers(topic):
    # results are published reliable (docs/interfaces.md QoS); a best-effort view would also work,
    # but reliable is what RViz needs to get every MarkerArray's DELETEALL
    assert _by_topic()[topic]["Topic"]["Reliability Policy"] == "Reliable"
