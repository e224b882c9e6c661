"""Class- and instance-level metrics on hand-computed cases; point-wise labels from boxes."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.segmentation.evaluation import (SegCounts, instance_true_positives, points_in_boxes,
                                                        table_class_instance, table_iou)


def test_class_level_precision_recall_iou_by_hand():
    gt = np.array([1, 1, 1, 1, 0, 0, 2, 2])
    pred = np.array([1, 1, 1, 0, 1, 0, 2, 0])
    c = SegCounts()
    c.add_class_level(pred, gt)
    m = c.class_level()
    assert m["P"][1] == pytest.approx(3 / 4) and m["R"][1] == pytest.approx(3 / 4)
    assert m["IoU"][1] == pytest.approx(3 / 5)
    assert m["P"][2] == 1.0 and m["R"][2] == 0.5 and m["IoU"][2] == 0.5
    assert np.isnan(m["IoU"][3])  # no cyclist anywhere: undefined, not 0


def test_instance_matching_largest_ground_truth_first():
    # GT: car A (4 points), car B (2 points). Prediction: one merged instance over A and B's
    # first point, and a second instance on B's second point.
    gt = np.array([1, 1, 1, 1, 1, 1])
    gt_inst = np.array([0, 0, 0, 0, 1, 1])
    pred = np.array([1, 1, 1, 1, 1, 1])
    pred_inst = np.array([7, 7, 7, 7, 7, 8])
    tp = instance_true_positives(pred, pred_inst, gt, gt_inst)
    # A (largest) takes instance 7 (4 shared points); B can only take 8 (1 shared point).
    assert tp[1] == 5
    c = SegCounts()
    c.add_class_level(pred, gt)
    c.add_instance_level(pred, pred_inst, gt, gt_inst)
    il = c.instance_level()
    assert il["P"][1] == pytest.approx(5 / 6) and il["IoU"][1] == pytest.approx(5 / 6)
    # A predicted instance is used once: with one prediction covering all, B gets nothing.
    assert instance_true_positives(pred, np.zeros(6, int), gt, gt_inst)[1] == 4


def test_tables_have_the_thesis_layout():
    c = SegCounts()
    c.add_class_level(np.array([1, 2, 3]), np.array([1, 2, 0]))
    text = table_class_instance([("w/ CRF", c)])
    assert "| car | w/ CRF | 100.0 | 100.0 | 100.0 | n/a | n/a | n/a |" in text
    iou = table_iou([("SqueezeSeg", c)], reference={"SqueezeSeg": "64.6 / 21.8 / 25.1"})
    assert "| SqueezeSeg | 100.0 | 100.0 | 0.0 | 66.7 | 64.6 / 21.8 / 25.1 |" in iou


def test_points_in_boxes_on_real_object_reduced(kitti_real):
    from squeeze_perception.kitti.calib import load_object_calib
    from squeeze_perception.kitti.labels import read_labels, read_velodyne_bin

    root = kitti_real / "object_reduced" / "training"
    pts = read_velodyne_bin(root / "velodyne_reduced" / "000134.bin")
    labels = read_labels(root / "label_2" / "000134.txt")
    cls, inst = points_in_boxes(pts, labels, load_object_calib(root / "calib" / "000134.txt"))
    n_cars = sum(lab.type == "Car" for lab in labels)
    assert len(np.unique(inst[cls == 1])) <= n_cars and (cls == 1).sum() > 50
    assert (cls == 2).sum() > 0 and (cls == 3).sum() > 0
    assert np.all((inst >= 0) == (cls > 0))
    # Object points sit above the lowest points of the scan (boxes rest on the road).
    assert np.median(pts[cls > 0, 2]) > np.percentile(pts[:, 2], 5)


def test_counts_json_round_trip_and_rendered_tables():
    from squeeze_perception.segmentation.cli import render_tables
    from squeeze_perception.segmentation.evaluation import counts_from_json, counts_to_json

    c = SegCounts()
    c.add_class_level(np.array([1, 1, 0, 2]), np.array([1, 0, 0, 2]))
    c.add_instance_level(np.array([1, 1, 0, 2]), np.array([0, 0, -1, 1]), np.array([1, 0, 0, 2]),
                         np.array([5, -1, -1, 6]))
    back = counts_from_json(counts_to_json(c))
    for k in ("tp", "pred", "gt", "inst_tp"):
        np.testing.assert_array_equal(getattr(back, k), getattr(c, k))
    text = render_tables({"squeezeseg": {"real_lidar_2d": counts_to_json(c)}})
    assert "| car | squeezeseg | 50.0 | 100.0 | 50.0 | 50.0 | 100.0 | 50.0 |" in text
    assert "30.0 / 2.1" in text  # the thesis figure printed beside ours
