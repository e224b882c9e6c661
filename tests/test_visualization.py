"""One table of class colours (visualization.py): every view draws a class in the same colour,
and no module keeps a private colour table that could drift from it."""
import ast
from pathlib import Path

import numpy as np
import pytest

from squeeze_perception import interfaces as itf
from squeeze_perception import visualization as vis

PACKAGE = Path(vis.__file__).parent


def test_one_colour_per_class_and_unknown_ids_draw_as_unknown():
    assert len(vis.CLASS_COLOURS) == len(itf.CLASS_NAMES)
    assert len(set(vis.CLASS_COLOURS)) == len(vis.CLASS_COLOURS)  # classes are told apart
    assert vis.class_colour(7) == vis.class_colour(0) == vis.class_colour(-1)
    assert vis.class_colour_uint8(itf.CLASS_IDS["car"]) == tuple(round(255 * c) for c in vis.CLASS_COLOURS[1])


def test_no_module_defines_its_own_class_colour_table():
    owners = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == "CLASS_COLOURS" for t in targets):
                owners.append(str(path.relative_to(PACKAGE)))
    # figure.py derives its table from visualization (a dark background for label 0, see there)
    assert sorted(owners) == ["offline/synth/figure.py", "visualization.py"]


def test_the_camera_image_the_rviz_instances_and_the_tracks_draw_a_car_alike():
    pytest.importorskip("visualization_msgs")
    from std_msgs.msg import Header

    from squeeze_perception.nodes.squeezedet_node import draw_detections
    from squeeze_perception.nodes.squeezeseg_node import instance_markers
    from squeeze_perception.nodes.tracker_node import track_markers

    car = itf.CLASS_IDS["car"]
    dets = np.zeros(1, itf.DETECTION_DTYPE)
    dets[0]["class_id"], dets[0]["score"] = car, 0.9
    dets[0]["u_min"], dets[0]["v_min"], dets[0]["u_max"], dets[0]["v_max"] = 10, 10, 40, 30
    drawn = draw_detections(np.zeros((50, 60, 3), np.uint8), dets)
    assert tuple(drawn[20, 10]) == vis.class_colour_uint8(car)  # the box's left edge

    inst = np.zeros(1, itf.INSTANCE_DTYPE)
    inst[0]["class_id"], inst[0]["length"], inst[0]["width"], inst[0]["height"] = car, 4, 2, 1.5
    boxes = [m for m in instance_markers(inst, Header()).markers if m.ns == "instances"]
    assert (boxes[0].color.r, boxes[0].color.g, boxes[0].color.b) == pytest.approx(vis.class_colour(car))

    tracks = np.zeros(1, itf.TRACK_DTYPE)
    tracks[0]["class_id"], tracks[0]["length"], tracks[0]["width"], tracks[0]["height"] = car, 4, 2, 1.5
    track_boxes = [m for m in track_markers(tracks, Header()).markers if m.ns == "track_boxes"]
    assert (track_boxes[0].color.r, track_boxes[0].color.g, track_boxes[0].color.b) == \
        pytest.approx(vis.class_colour(car))
