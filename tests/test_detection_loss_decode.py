"""Eq. 3.2 on hand-built cases, anchor assignment, and top-N + per-class NMS decoding."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from squeeze_perception.detection.decode import DecodeConfig, decode, nms, top_boxes
from squeeze_perception.detection.loss import assign_anchors, build_targets, squeezedet_loss

# Four anchors (cx, cy, w, h): two shapes at two centres.
ANCHORS = np.array([[20.0, 20.0, 20.0, 10.0], [20.0, 20.0, 10.0, 20.0],
                    [60.0, 20.0, 20.0, 10.0], [60.0, 20.0, 10.0, 20.0]], dtype=np.float32)


def _raw(conf_logit=0.0, cls_logits=(0.0, 0.0, 0.0), deltas=None):
    a = len(ANCHORS)
    d = torch.zeros(1, a, 4) if deltas is None else torch.as_tensor(deltas, dtype=torch.float32)[None]
    c = torch.full((1, a), float(conf_logit))
    k = torch.tensor(cls_logits, dtype=torch.float32).expand(1, a, 3).clone()
    return d, c, k


def test_assignment_picks_largest_iou_and_resolves_collisions():
    gt = np.array([[55.0, 10.0, 65.0, 30.0],  # exactly anchor 3
                   [56.0, 11.0, 64.0, 29.0]])  # also prefers anchor 3 -> gets the next best
    idx = assign_anchors(ANCHORS, gt)
    assert idx[0] == 3 and idx[1] != 3 and len(set(idx)) == 2


def test_loss_is_zero_when_prediction_equals_target():
    gt = np.array([[10.0, 15.0, 30.0, 25.0]])  # exactly anchor 0: target deltas 0, IoU 1
    tgt = build_targets(ANCHORS, gt, np.array([1]))
    assert tgt.anchor_index.tolist() == [0]
    np.testing.assert_allclose(tgt.deltas, 0.0, atol=1e-7)
    d, c, k = _raw(conf_logit=-30.0, cls_logits=(0.0, 0.0, 0.0))
    c[0, 0] = 30.0  # responsible anchor confident, the others not
    k[0, 0] = torch.tensor([-30.0, 30.0, -30.0])  # class 1 (pedestrian)
    total, parts = squeezedet_loss(d, c, k, torch.from_numpy(ANCHORS), [tgt])
    assert parts["bbox"] == pytest.approx(0.0, abs=1e-9)
    assert float(total) == pytest.approx(0.0, abs=1e-6)


def test_loss_hand_computed_values():
    gt = np.array([[10.0, 15.0, 30.0, 25.0]])
    tgt = build_targets(ANCHORS, gt, np.array([2]))
    deltas = np.zeros((4, 4))
    deltas[0, 0] = 0.1  # box part: 5 * 0.1^2 / 1 object
    d, c, k = _raw(conf_logit=0.0, deltas=deltas)  # confidence 0.5 everywhere, uniform classes
    _, parts = squeezedet_loss(d, c, k, torch.from_numpy(ANCHORS), [tgt])
    assert parts["bbox"] == pytest.approx(5 * 0.01)
    # predicted box shifted by 0.1 * 20 = 2 px: IoU = 18*10 / (2*200 - 180) = 180/220
    iou = 180 / 220
    pos = 75 * (0.5 - iou) ** 2
    neg = 100 / (4 - 1) * 3 * 0.25
    assert parts["conf"] == pytest.approx(pos + neg, rel=1e-5)
    assert parts["class"] == pytest.approx(math.log(3), rel=1e-5)


def test_image_without_objects_only_penalises_confidence_and_batch_is_averaged():
    empty = build_targets(ANCHORS, np.zeros((0, 4)), np.zeros(0))
    d, c, k = _raw(conf_logit=0.0)
    d2, c2, k2 = torch.cat([d, d]), torch.cat([c, c]), torch.cat([k, k])
    total, parts = squeezedet_loss(d2, c2, k2, torch.from_numpy(ANCHORS), [empty, empty])
    assert parts["bbox"] == 0 and parts["class"] == 0
    assert float(total) == pytest.approx(100 / 4 * 4 * 0.25)


def test_loss_gradients_flow_to_all_heads():
    gt = np.array([[12.0, 14.0, 31.0, 26.0]])
    tgt = build_targets(ANCHORS, gt, np.array([0]))
    d, c, k = _raw()
    for t in (d, c, k):
        t.requires_grad_(True)
    total, _ = squeezedet_loss(d, c, k, torch.from_numpy(ANCHORS), [tgt])
    total.backward()
    assert d.grad.abs().sum() > 0 and c.grad.abs().sum() > 0 and k.grad.abs().sum() > 0


def _pred(rows):
    """rows of (x1, y1, x2, y2, conf, class index) -> (A, 8) with one-hot class probs."""
    out = np.zeros((len(rows), 8), np.float32)
    for i, (x1, y1, x2, y2, conf, cls) in enumerate(rows):
        out[i, :5] = (x1, y1, x2, y2, conf)
        out[i, 5 + cls] = 1.0
    return out


def test_nms_per_class_and_top_k():
    pred = _pred([(0, 0, 100, 50, 0.9, 0),    # car
                  (5, 0, 105, 50, 0.8, 0),    # car, IoU 0.905 with the first -> suppressed
                  (5, 0, 105, 50, 0.7, 1),    # pedestrian at the same place -> kept (other class)
                  (300, 0, 400, 50, 0.6, 0),  # far car -> kept
                  (500, 0, 600, 50, 0.1, 2)])  # weak cyclist
    dets = decode(pred, DecodeConfig(top_k=64, nms_iou=0.5))
    assert dets["class_id"].tolist() == [1, 2, 1, 3]
    np.testing.assert_allclose(dets["score"], [0.9, 0.7, 0.6, 0.1], rtol=1e-6)
    assert decode(pred, DecodeConfig(top_k=3, nms_iou=0.5))["score"].tolist() == pytest.approx([0.9, 0.7])
    assert len(decode(pred, DecodeConfig(top_k=64, nms_iou=0.5, score_threshold=0.65))) == 2
    assert len(decode(pred, DecodeConfig(top_k=64, nms_iou=0.95))) == 5  # looser NMS keeps the duplicate


def test_score_is_confidence_times_class_probability():
    pred = _pred([(0, 0, 10, 10, 0.8, 0), (20, 0, 30, 10, 0.6, 1)])
    pred[0, 5:] = [0.5, 0.3, 0.2]  # 0.8 * 0.5 = 0.40 < 0.6 * 1.0
    assert top_boxes(pred, 2).tolist() == [1, 0]
    dets = decode(pred)
    assert dets["score"].tolist() == pytest.approx([0.6, 0.4])


def test_nms_hand_case():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], float)
    assert nms(boxes, np.array([0.5, 0.9, 0.3]), 0.5).tolist() == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_positive_iou_assignment_adds_overlapping_anchors_owned_by_their_best_object():
    from squeeze_perception.detection.loss import box_iou_np, build_targets, cxcywh_to_xyxy

    # Four anchors in a row, 20x20 px: two objects, one over anchor 0, one between anchors 2 and 3.
    anchors = np.array([[10, 10, 20, 20], [30, 10, 20, 20], [50, 10, 20, 20], [62, 10, 20, 20]], np.float64)
    gt = np.array([[0, 0, 20, 20], [54, 0, 74, 20]], np.float64)
    thesis = build_targets(anchors, gt, np.array([0, 1]), positive_iou=0.0)
    assert sorted(thesis.anchor_index.tolist()) == [0, 3]  # one responsible anchor per object
    multi = build_targets(anchors, gt, np.array([0, 1]), positive_iou=0.4)
    iou = box_iou_np(gt, cxcywh_to_xyxy(anchors))
    # anchor 2 overlaps object 1 by (60-54)*20 / (2*400 - 6*20) = 120/680 = 0.18: not a positive;
    # anchor 3 is object 1's best anchor (IoU (72-54)*20/(800-360) = 360/440 = 0.82).
    assert iou[1, 2] < 0.4 and iou[1, 3] > 0.8
    assert sorted(multi.anchor_index.tolist()) == [0, 3]
    loose = build_targets(anchors, gt, np.array([0, 1]), positive_iou=0.15)
    assert sorted(loose.anchor_index.tolist()) == [0, 2, 3]
    extra = int(np.flatnonzero(loose.anchor_index == 2)[0])
    assert loose.labels[extra] == 1  # owned by the object it overlaps most
    np.testing.assert_allclose(loose.boxes[extra], gt[1])
    # its regression target moves anchor 2 onto object 1: eq. 3.3 deltas
    np.testing.assert_allclose(loose.deltas[extra], [(64 - 50) / 20, 0.0, 0.0, 0.0], atol=1e-6)


# --------------------------------------------------------------------------- issue 17: mutation gaps
# Close the mutmut survivors of detection/decode.py (docs/testing.md, "decode").
def _row_of_boxes(scores, classes=None) -> np.ndarray:
    """One 10x10 box per score, 20 px apart (no overlap), as (A, 8) predictions."""
    classes = np.zeros(len(scores), int) if classes is None else classes
    return _pred([(20.0 * i, 0.0, 20.0 * i + 10.0, 10.0, s, c) for i, (s, c) in enumerate(zip(scores, classes))])


def _anchor_of(dets) -> list[int]:
    return (dets["u_min"] / 20.0).round().astype(int).tolist()


def test_equal_scores_in_different_classes_come_out_in_anchor_order():
    # Ties are broken by anchor index (tests/test_mutation_survivors.py), across classes too:
    # the per-class NMS must not leave the output grouped by class.
    pred = _row_of_boxes([0.5, 0.5, 0.9, 0.5], classes=[2, 0, 1, 1])
    dets = decode(pred, DecodeConfig(top_k=64, nms_iou=0.4))
    assert _anchor_of(dets) == [2, 0, 1, 3]
    assert dets["class_id"].tolist() == [2, 3, 1, 2]


def test_equal_scores_keep_anchor_order_when_top_k_is_below_the_anchor_count():
    # The deployed case: top_k = 64 of thousands of anchors, where top_boxes partitions instead of
    # sorting everything. The kept boxes still come best first, equal scores in anchor order.
    rng = np.random.default_rng(3)
    scores = rng.choice(np.array([0.3, 0.5, 0.7, 0.9], np.float32), 400)
    for classes in (np.zeros(400, int), rng.integers(0, 3, 400)):
        dets = decode(_row_of_boxes(scores, classes), DecodeConfig(top_k=64, nms_iou=0.4))
        anchors = _anchor_of(dets)
        assert len(anchors) == 64
        assert anchors == sorted(anchors, key=lambda i: (-scores[i], i))
        assert scores[anchors].min() >= np.sort(scores)[::-1][63]  # a valid top 64
        idx = top_boxes(_row_of_boxes(scores, classes), 64)
        assert idx.tolist() == sorted(idx.tolist(), key=lambda i: (-scores[i], i))


@pytest.mark.parametrize("num", [5, 300])
def test_top_k_at_its_boundaries_keeps_exactly_the_best(num):
    # top_k of 1, 2, all but one, all, and more than all anchors.
    rng = np.random.default_rng(num)
    for _ in range(3):
        scores = (rng.permutation(num).astype(np.float32) + 1) / (num + 1)
        pred = _row_of_boxes(scores)
        for n in (1, 2, num - 1, num, num + 1):
            best = np.argsort(-scores)[:n].tolist()
            assert top_boxes(pred, n).tolist() == best
            if n <= 5:
                assert _anchor_of(decode(pred, DecodeConfig(top_k=n, nms_iou=0.4))) == best


def test_no_anchors_or_top_k_zero_give_no_detections():
    # A (0, 5 + C) prediction and top_k = 0 are valid inputs: nothing to keep, no error.
    empty = decode(np.zeros((0, 8), np.float32))
    assert len(empty) == 0 and empty.dtype == decode(_row_of_boxes([0.5])).dtype
    assert top_boxes(np.zeros((0, 8), np.float32), 64).tolist() == []
    assert len(decode(_row_of_boxes([0.5, 0.7]), DecodeConfig(top_k=0))) == 0


def test_half_precision_predictions_decode_like_float32():
    # A half-precision export (ONNX fp16) hands decode float16 arrays: the scores are computed
    # in float32 all the same, so the detections equal those of the same values in float32.
    rng = np.random.default_rng(7)
    pred = _row_of_boxes(rng.uniform(0.05, 0.95, 30), rng.integers(0, 3, 30))
    pred[:, 5:] = rng.dirichlet(np.ones(3), 30)
    p16 = pred.astype(np.float16)
    a = decode(p16, DecodeConfig(top_k=64, nms_iou=0.4))
    b = decode(p16.astype(np.float32), DecodeConfig(top_k=64, nms_iou=0.4))
    assert len(a) == 30 and np.array_equal(a, b)
