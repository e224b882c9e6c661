"""Ground-aware instances: segmented LATTE ground on constructed scenes (flat, sloped, a road
that changes slope, a wall), a ground patch labelled car forms no instance, BEV IoU and the
instance matching by hand, and the node's ground parameters agree with config and docs."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from squeeze_perception.offline.segmentation.instance_eval import GtBox, InstanceCounts, bev_iou, match_frame
from squeeze_perception.segmentation.ground import fit_ground_plane, fit_segmented_ground

REPO = Path(__file__).resolve().parents[1]


def _road_height(x: np.ndarray, slope: float, bend_at: float | None, bend_slope: float) -> np.ndarray:
    z = -1.73 + slope * x
    if bend_at is not None:
        z = z + np.where(x > bend_at, bend_slope * (x - bend_at), 0.0)
    return z


def _scene(rng, slope=0.0, bend_at=None, bend_slope=0.0, n=30000):
    """Front 90 deg of road out to 70 m with 4 car-sized boxes (0.3-1.5 m above the road) and a
    wall 14 m to the left; returns (points, is_ground)."""
    r = rng.uniform(4, 70, n)
    az = rng.uniform(-np.pi / 4, np.pi / 4, n)
    x, y = r * np.cos(az), r * np.sin(az)
    road = np.c_[x, y, _road_height(x, slope, bend_at, bend_slope) + rng.normal(0, 0.03, n)]
    objs = []
    for cx, cy in ((10, 2), (20, -4), (35, 3), (50, -6)):
        m = 800
        bx = rng.uniform(cx - 2, cx + 2, m)
        objs.append(np.c_[bx, rng.uniform(cy - 0.9, cy + 0.9, m),
                          _road_height(bx, slope, bend_at, bend_slope) + rng.uniform(0.3, 1.5, m)])
    wx = rng.uniform(30, 60, 2000)
    objs.append(np.c_[wx, np.full(2000, 14.0), _road_height(wx, slope, bend_at, bend_slope) + rng.uniform(0.3, 4, 2000)])
    pts = np.concatenate([road, *objs])
    truth = np.zeros(len(pts), bool)
    truth[:n] = True
    return pts, truth


@pytest.mark.parametrize("slope,bend_at,bend_slope", [(0.0, None, 0.0), (0.05, None, 0.0), (-0.05, None, 0.0),
                                                      (0.0, 25.0, 0.08), (-0.05, 25.0, 0.08)])
def test_segmented_ground_finds_flat_sloped_and_bending_roads_and_keeps_objects(slope, bend_at, bend_slope):
    pts, truth = _scene(np.random.default_rng(0), slope, bend_at, bend_slope)
    ground = fit_segmented_ground(pts, threshold=0.2).is_ground(pts)
    assert ground[truth].mean() > 0.99
    assert ground[~truth].mean() < 0.01  # boxes and the wall stay objects
    if bend_at is not None:  # one plane cannot follow a road that changes slope
        single = fit_ground_plane(pts, threshold=0.2).distance(pts) < 0.2
        assert single[truth].mean() < 0.9


def test_segment_filled_by_a_wall_inherits_the_inner_ground():
    rng = np.random.default_rng(1)
    pts, truth = _scene(rng)
    # A dense wall across the whole road at 40-46 m: the segments behind it see almost no road.
    wall = np.c_[rng.uniform(40, 46, 6000), rng.uniform(-20, 20, 6000), rng.uniform(-1.4, 2.0, 6000)]
    keep = ~((pts[:, 0] > 40) & truth)
    allp = np.concatenate([pts[keep], wall])
    g = fit_segmented_ground(allp, threshold=0.2)
    assert not g.is_ground(wall).any()
    assert abs(g.height(np.array([[43.0, 0.0, -1.73]]))[0]) < 0.1  # the inherited plane is the road's


def test_fit_needs_three_points_and_ground_below_the_plane_counts():
    with pytest.raises(ValueError):
        fit_segmented_ground(np.zeros((2, 3)))
    pts, _ = _scene(np.random.default_rng(2))
    g = fit_segmented_ground(pts)
    assert g.is_ground(np.array([[12.0, 0.0, -3.0]]))[0]  # a multipath return under the road
    assert not g.is_ground(np.array([[12.0, 0.0, -1.2]]))[0]


# --------------------------------------------------------------------- pipeline: no ground instances
def test_ground_patch_labelled_car_forms_no_instance(v1_weights):
    from squeeze_perception.segmentation.pipeline import SegmentationPipeline

    rng = np.random.default_rng(3)
    # Dense road in front, a real car box at 10 m, a road patch at 20 m.
    n = 60000  # about 90 road points per m^2: dense enough for DBSCAN (eps 0.3 m or more, minPts 20)
    r = np.sqrt(rng.uniform(4 ** 2, 30 ** 2, n))
    az = rng.uniform(-np.pi / 4, np.pi / 4, n)
    road = np.c_[r * np.cos(az), r * np.sin(az), -1.73 + rng.normal(0, 0.02, n)]
    car = np.c_[rng.uniform(9, 13, 3000), rng.uniform(-1, 1, 3000), rng.uniform(-1.4, 0, 3000)]
    pts = np.concatenate([road, car])
    pts = np.c_[pts, rng.uniform(0, 1, len(pts))].astype(np.float32)
    patch = (np.abs(pts[:, 0] - 20) < 3) & (np.abs(pts[:, 1]) < 3)
    assert patch[:n].sum() > 1000

    # Size gate off: the 6 x 6 m patch as one "car" cluster is wider than any car, and the gate would
    # hand it back to background even without the ground stage; this test is about the ground stage.
    pl = SegmentationPipeline("squeezeseg", weights=v1_weights, crf=False, num_threads=1, size_gate=False)

    def car_on_box_and_patch(batch):  # 'car' for the box and for the road patch at 17-23 m
        logits = np.zeros((len(batch), 4, 64, 512), np.float32)
        x, y, rng_ = batch[:, 0], batch[:, 1], batch[:, 4]
        car_cells = (rng_ > 0) & (((x > 8.5) & (x < 13.5) & (np.abs(y) < 1.5)) | ((np.abs(x - 20) < 3) & (np.abs(y) < 3)))
        logits[:, 1][car_cells] = 10.0
        logits[:, 0][~car_cells] = 10.0
        return logits
    pl.run_network = car_on_box_and_patch

    pl.ground_removal = False
    off = pl.process(pts)
    patch_inst_off = np.unique(off.instances[patch & (off.labels == 1)])
    assert (patch_inst_off >= 0).any()  # without ground removal the patch becomes a car instance

    pl.ground_removal = True
    on = pl.process(pts)
    assert (on.instances[patch] == -1).all() and (on.labels[patch] == 0).all()
    assert on.ground_removed[patch & (off.labels == 1)].all() and not on.ground_removed[n:].any()
    assert len(on.table) == 1 and on.table["class_id"][0] == 1  # the real car remains, alone
    assert abs(on.table["x"][0] - 11) < 0.5
    assert on.ground_ms > 0.0


# --------------------------------------------------------------------- BEV IoU and matching
def _rect(cx, cy, length, width, yaw=0.0):
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * [length / 2, width / 2]
    return local @ np.array([[c, s], [-s, c]]) + [cx, cy]


def test_bev_iou_by_hand():
    a = _rect(0, 0, 4, 2)
    assert bev_iou(a, a) == pytest.approx(1.0)
    assert bev_iou(a, a[::-1]) == pytest.approx(1.0)  # orientation of the corner list
    assert bev_iou(a, _rect(2, 0, 4, 2)) == pytest.approx(4 / 12)  # half overlap: 4 / (8 + 8 - 4)
    assert bev_iou(a, _rect(10, 0, 4, 2)) == 0.0
    # Unit square vs the same square turned 45 deg: intersection = regular octagon, 2(sqrt2 - 1).
    sq, diamond = _rect(0, 0, 1, 1), _rect(0, 0, 1, 1, np.pi / 4)
    inter = 2 * (np.sqrt(2) - 1)
    assert bev_iou(sq, diamond) == pytest.approx(inter / (2 - inter))
    # A box turned by 90 deg about its centre is the same rectangle with length and width swapped.
    assert bev_iou(_rect(3, 1, 4, 2, 0.3), _rect(3, 1, 2, 4, 0.3 + np.pi / 2)) == pytest.approx(1.0)


def test_matching_counts_tp_fp_fn_and_ignores():
    gt = [GtBox(1, _rect(10, 0, 4, 2)), GtBox(1, _rect(20, 5, 4, 2)),
          GtBox(1, _rect(40, 0, 4, 2), ignored=True), GtBox(2, _rect(8, -4, 0.8, 0.6))]
    preds = [_rect(10.3, 0, 4, 2),   # TP for gt 0
             _rect(10.5, 0.2, 4, 2),  # duplicate of gt 0: FP (one-to-one)
             _rect(40, 0, 4, 2),     # matches an ignored box: not counted
             _rect(60, 0, 4, 2),     # nothing there, outside the labelled region: ignored
             _rect(8, -4, 0.8, 0.6)]  # class car on a pedestrian box: FP for car, pedestrian missed
    cls = np.array([1, 1, 1, 1, 1])
    counted = np.array([True, True, True, False, True])
    c = InstanceCounts()
    pairs = match_frame(preds, cls, counted, gt, c)
    assert c.tp[1] == 1 and c.fp[1] == 2 and c.fn[1] == 1
    assert c.fn[2] == 1 and c.tp[2] == 0 and c.fp[2] == 0
    assert c.ignored_gt[1] == 1 and c.ignored_pred[1] == 2
    assert c.precision()[1] == pytest.approx(1 / 3) and c.recall()[1] == pytest.approx(1 / 2)
    assert np.isnan(c.precision()[3]) and np.isnan(c.recall()[3])
    assert (0, 0) in {(p, g) for p, g, _ in pairs}


# --------------------------------------------------------------------- parameters: node = config = docs
def test_node_parameters_agree_with_config_and_docs():
    from squeeze_perception.nodes.squeezeseg_node import PARAMS

    specs = {p.name: p for p in PARAMS}
    config = yaml.safe_load((REPO / "config" / "squeezeseg.yaml").read_text())["squeezeseg_node"]["ros__parameters"]
    for name, value in config.items():
        assert name in specs, f"config/squeezeseg.yaml has '{name}', the node does not"
        assert specs[name].validate(value)[1] is None
        if name != "backend":  # the config picks onnxruntime, the node's built-in default is torch
            assert value == specs[name].default, name
    doc = (REPO / "docs" / "interfaces.md").read_text()
    section = doc[doc.index("## squeezeseg_node"):doc.index("## tracker_node")]
    documented = set(re.findall(r"^\| `([a-z_]+)`", section, flags=re.M)) | set(
        re.findall(r"^\| `[a-z_]+` / `([a-z_]+)`", section, flags=re.M))
    for name in ("ground_removal", "ground_threshold", "ground_max_slope"):
        assert name in config and name in documented
        row = re.search(rf"^\| `{name}` \| `([^`]+)`", section, flags=re.M).group(1)
        assert yaml.safe_load(row) == specs[name].default
    assert specs["ground_removal"].default is True
    for bad in (0.0, 5.0):
        assert specs["ground_threshold"].validate(bad)[1] is not None
    assert specs["ground_max_slope"].validate(60.0)[1] is not None
