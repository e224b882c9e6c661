"""KITTI 2D AP (11/40-point) and recall-vs-N_box on hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from squeeze_perception.interfaces import DETECTION_DTYPE
from squeeze_perception.detection.evaluation import (evaluate, first_match_rank, match_image, pr_curve,
                                                     recall_vs_nbox, RECALL_POINTS_11, RECALL_POINTS_40)
from squeeze_perception.kitti.labels import ObjectLabel


def lab(kind, box, occluded=0, truncated=0.0):
    return ObjectLabel(kind, truncated, occluded, 0.0, np.array(box, float), np.ones(3), np.zeros(3), 0.0)


def dets(rows):
    out = np.zeros(len(rows), DETECTION_DTYPE)
    for i, (x1, y1, x2, y2, score, cls) in enumerate(rows):
        out[i] = (x1, y1, x2, y2, score, cls)
    return out


CAR_A = [100, 100, 200, 150]  # 50 px high: easy
CAR_B = [400, 100, 500, 150]


def test_ap_hand_computed_two_cars_three_detections():
    labels = [[lab("Car", CAR_A), lab("Car", CAR_B)]]
    d = [dets([(105, 100, 205, 150, 0.9, 1),  # IoU 95/105 = 0.905 -> TP
               (700, 100, 800, 150, 0.8, 1),  # nothing there -> FP
               (400, 101, 500, 151, 0.7, 1)])]  # IoU 0.96 -> TP
    curve = pr_curve(d, labels, "car", 0)
    precision, recall = curve.precision_recall()
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0])
    # interpolated precision: 1.0 up to recall 0.5, 2/3 above it
    assert curve.average_precision(RECALL_POINTS_11) == pytest.approx((6 * 1.0 + 5 * 2 / 3) / 11)
    assert curve.average_precision(RECALL_POINTS_40) == pytest.approx((20 * 1.0 + 20 * 2 / 3) / 40)
    res = evaluate(d, labels)
    assert res["per_class"]["car"]["easy"]["ap11"] == pytest.approx(100 * (6 + 10 / 3) / 11)
    assert res["per_class"]["car"]["easy"]["n_gt"] == 2
    assert np.isnan(res["per_class"]["pedestrian"]["easy"]["ap11"])  # no ground truth at all


def test_car_needs_iou_0_7_pedestrian_0_5():
    # same-size boxes shifted by 25 px of 100: IoU 75/125 = 0.6
    labels = [[lab("Car", CAR_A), lab("Pedestrian", [300, 50, 400, 150])]]
    d = [dets([(125, 100, 225, 150, 0.9, 1), (325, 50, 425, 150, 0.9, 2)])]
    res = evaluate(d, labels)
    assert res["per_class"]["car"]["easy"]["ap40"] == 0.0
    assert res["per_class"]["pedestrian"]["easy"]["ap40"] == pytest.approx(100.0)


def test_difficulty_filtering_and_ignored_regions():
    labels = [[lab("Car", CAR_A),                      # easy
               lab("Car", [300, 100, 380, 130]),       # 30 px high: moderate only
               lab("Car", [600, 100, 700, 150], occluded=2),  # hard only
               lab("Van", [800, 100, 900, 150]),       # neighbour class: ignored for car
               lab("DontCare", [1000, 100, 1100, 200])]]
    d = [dets([(100, 100, 200, 150, 0.9, 1),  # TP easy car
               (300, 100, 380, 130, 0.8, 1),  # on the moderate car
               (600, 100, 700, 150, 0.7, 1),  # on the hard car
               (800, 100, 900, 150, 0.6, 1),  # on the van: ignored
               (1010, 110, 1090, 190, 0.5, 1),  # inside DontCare: ignored
               (50, 300, 80, 320, 0.4, 1)])]   # 20 px high unmatched: below every min height, ignored
    for level, n_gt, n_tp in ((0, 1, 1), (1, 2, 2), (2, 3, 3)):
        scores, state, n = match_image(d[0], labels[0], "car", level)
        assert n == n_gt and (state == 1).sum() == n_tp and (state == 0).sum() == 0
    # at easy level the moderate/hard detections are neither TP nor FP
    _, state, _ = match_image(d[0], labels[0], "car", 0)
    assert state.tolist() == [1, -1, -1, -1, -1, -1]
    res = evaluate(d, labels)
    for diff in ("easy", "moderate", "hard"):
        assert res["per_class"]["car"][diff]["ap11"] == pytest.approx(100.0)


def test_unmatched_detection_tall_enough_is_a_false_positive_and_duplicates_count():
    labels = [[lab("Car", CAR_A)]]
    d = [dets([(100, 100, 200, 150, 0.9, 1), (101, 100, 201, 150, 0.8, 1)])]  # duplicate -> FP
    _, state, _ = match_image(d[0], labels[0], "car", 0)
    assert state.tolist() == [1, 0]
    d = [dets([(101, 100, 201, 150, 0.95, 1), (100, 100, 200, 150, 0.9, 1)])]
    _, state, _ = match_image(d[0], labels[0], "car", 0)
    assert state.tolist() == [1, 0]  # the higher score claims the box (greedy by score)


def test_missed_objects_cap_recall():
    labels = [[lab("Car", CAR_A)], [lab("Car", CAR_B)]]
    d = [dets([(100, 100, 200, 150, 0.9, 1)]), dets([])]
    res = evaluate(d, labels)
    # precision 1 up to recall 0.5, nothing beyond: 6 of 11 points, 20 of 40 points
    assert res["per_class"]["car"]["easy"]["ap11"] == pytest.approx(100 * 6 / 11)
    assert res["per_class"]["car"]["easy"]["ap40"] == pytest.approx(50.0)


def test_recall_vs_nbox_counts_best_rank_of_a_matching_box():
    labels = [lab("Car", CAR_A), lab("Pedestrian", [300, 50, 340, 150])]
    pred = np.zeros((4, 8), np.float32)
    pred[0, :5] = (700, 0, 800, 50, 0.9); pred[0, 5] = 1        # rank 0: wrong place
    pred[1, :5] = (100, 100, 200, 150, 0.8); pred[1, 6] = 1     # rank 1: right place, wrong class
    pred[2, :5] = (101, 100, 201, 150, 0.7); pred[2, 5] = 1     # rank 2: the car
    pred[3, :5] = (300, 50, 340, 150, 0.6); pred[3, 6] = 1      # rank 3: the pedestrian
    ranks, n = first_match_rank(pred, labels)
    assert n == 2 and ranks.tolist() == [2, 3]
    np.testing.assert_allclose(recall_vs_nbox([ranks], [1, 2, 3, 4, 100]), [0, 0, 0.5, 1, 1])
