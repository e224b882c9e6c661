"""Tests named after the planted bugs that used to survive the suite (issue 17).

Each expectation comes from a definition, not from what the code prints today:
- NMS: the SqueezeDet reference implementation (and torchvision.ops.nms) suppresses a box
  only when its IoU with a kept box is *larger* than the threshold; at equality both stay.
- KITTI difficulty: the object devkit (evaluate_object.cpp) ignores a ground-truth box at
  level L when truncation > MAX_TRUNCATION[L] (0.15 / 0.30 / 0.50), occlusion >
  MAX_OCCLUSION[L] (0 / 1 / 2) or height <= MIN_HEIGHT[L] (40 / 25 / 25 px).
- Association (tracking/association.py docstring): a pair is allowed only inside the
  chi-square gate AND within the Euclidean radius; the assignment is the minimum-cost
  one-to-one matching over allowed pairs.
- StampSync (tracking/sync.py docstring): the *nearest* detection table within tolerance is
  attached, whichever side of the instance stamp it lies on.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.stats import chi2

from squeeze_perception import interfaces as itf
from squeeze_perception.detection.decode import DecodeConfig, decode, nms
from squeeze_perception.detection.loss import box_iou_np
from squeeze_perception.kitti.labels import ObjectLabel
from squeeze_perception.tracking.association import CHI2_2DOF, assign, gated_cost
from squeeze_perception.tracking.sync import StampSync

MS = 1_000_000


# --------------------------------------------------------------------------- NMS
# 30x10 boxes offset by 10 px: intersection 20*10 = 200, union 300 + 300 - 200 = 400,
# IoU = 0.5 exactly in binary floating point.
BOX_A = [0.0, 0.0, 30.0, 10.0]
BOX_B = [10.0, 0.0, 40.0, 10.0]


def test_nms_keeps_box_whose_iou_equals_threshold():
    boxes = np.array([BOX_A, BOX_B])
    assert box_iou_np(boxes[:1], boxes[1:])[0, 0] == 0.5  # the construction is exact
    # IoU == threshold is not "larger than the threshold": both boxes are kept
    assert nms(boxes, np.array([0.9, 0.8]), 0.5).tolist() == [0, 1]
    # order of the scores does not matter, the best box comes first
    assert nms(boxes, np.array([0.3, 0.8]), 0.5).tolist() == [1, 0]


def test_nms_suppresses_box_just_above_threshold():
    boxes = np.array([BOX_A, BOX_B])
    assert nms(boxes, np.array([0.9, 0.8]), 0.5 - 1e-9).tolist() == [0]
    assert nms(boxes, np.array([0.9, 0.8]), 0.5 + 1e-9).tolist() == [0, 1]


def test_decode_nms_iou_parameter_is_a_strict_upper_bound_on_suppression():
    pred = np.zeros((2, 8), np.float32)
    pred[0, :5] = (*BOX_A, 0.9)
    pred[1, :5] = (*BOX_B, 0.8)
    pred[:, 5] = 1.0  # both cars
    assert len(decode(pred, DecodeConfig(nms_iou=0.5))) == 2
    assert len(decode(pred, DecodeConfig(nms_iou=0.49))) == 1


def _spread(scores) -> np.ndarray:
    """One car per score, 20 px apart (no overlap), as (A, 8) predictions."""
    pred = np.zeros((len(scores), 8), np.float32)
    for i, sc in enumerate(scores):
        pred[i, :5] = (20.0 * i, 0.0, 20.0 * i + 10.0, 10.0, sc)
        pred[i, 5] = 1.0
    return pred


def test_equal_scores_keep_anchor_order_in_nms_and_decode():
    """Ties are broken by anchor index, so the output does not depend on the sort algorithm
    (numpy's default quicksort reorders equal keys in arrays of this size)."""
    rng = np.random.default_rng(0)
    scores = rng.choice(np.array([0.5, 0.7, 0.9], np.float32), 40)
    expected = sorted(range(40), key=lambda i: (-scores[i], i))
    pred = _spread(scores)
    assert nms(pred[:, :4], scores, 0.4).tolist() == expected
    dets = decode(pred, DecodeConfig(top_k=64, nms_iou=0.4))
    assert (dets["u_min"] / 20.0).astype(int).tolist() == expected


def test_top_k_keeps_exactly_the_best_boxes():
    rng = np.random.default_rng(1)
    for n in (1, 5, 64):
        scores = rng.permutation(200).astype(np.float32) / 200.0
        dets = decode(_spread(scores), DecodeConfig(top_k=n, nms_iou=0.4))
        assert sorted((dets["u_min"] / 20.0).astype(int).tolist()) == sorted(np.argsort(-scores)[:n].tolist())


def test_nms_returns_integer_indices_even_when_empty():
    keep = nms(np.zeros((0, 4)), np.zeros(0), 0.5)
    assert keep.dtype == np.int64
    assert np.zeros((0, 4))[keep].shape == (0, 4)  # usable as an index


def test_score_equal_to_threshold_is_kept():
    # "drop boxes scoring below this" (docs/interfaces.md): 0.5 * 1.0 == 0.5 stays
    pred = _spread([0.5, 0.25])
    assert decode(pred, DecodeConfig(score_threshold=0.5))["score"].tolist() == [0.5]
    assert len(decode(pred, DecodeConfig(score_threshold=0.5 + 1e-6))) == 0


# --------------------------------------------------------------------------- KITTI difficulty
def _label(height=50.0, occluded=0, truncated=0.0) -> ObjectLabel:
    return ObjectLabel("Car", truncated, occluded, 0.0, np.array([100.0, 100.0, 200.0, 100.0 + height]),
                       np.ones(3), np.zeros(3), 0.0)


@pytest.mark.parametrize("truncated, occluded, expected", [
    (0.15, 0, 0),  # at the easy limit
    (0.16, 0, 1),  # just over: moderate
    (0.30, 0, 1),  # at the moderate limit
    (0.31, 0, 2),  # just over: hard
    (0.50, 0, 2),  # at the hard limit
    (0.51, 0, -1),  # just over: ignored at every level
    (0.30, 1, 1),  # moderate limits together
    (0.50, 2, 2),  # hard limits together
])
def test_kitti_difficulty_truncation_limits(truncated, occluded, expected):
    assert _label(truncated=truncated, occluded=occluded).difficulty() == expected


@pytest.mark.parametrize("occluded, expected", [(0, 0), (1, 1), (2, 2), (3, -1)])
def test_kitti_difficulty_occlusion_limits(occluded, expected):
    assert _label(occluded=occluded).difficulty() == expected


@pytest.mark.parametrize("height, expected", [
    (40.01, 0),  # taller than 40 px: easy
    (40.0, 1),  # the devkit requires height > 40 for easy: exactly 40 px is moderate
    (25.01, 1),
    (25.0, -1),  # and height > 25 for moderate and hard: exactly 25 px is ignored
    (24.0, -1),
])
def test_kitti_difficulty_min_height_limits(height, expected):
    assert _label(height=height).difficulty() == expected


def test_kitti_difficulty_truncation_reads_from_label_text(tmp_path):
    """Label files store truncation with two decimals; 0.30 read from text is still moderate."""
    from squeeze_perception.kitti.labels import read_labels

    path = tmp_path / "000000.txt"
    path.write_text("Car 0.30 1 0.00 100.00 100.00 200.00 150.00 1.50 1.60 3.90 0.00 1.70 20.00 0.00\n"
                    "Car 0.31 1 0.00 100.00 100.00 200.00 150.00 1.50 1.60 3.90 0.00 1.70 20.00 0.00\n")
    assert [lab.difficulty() for lab in read_labels(path)] == [1, 2]


# --------------------------------------------------------------------------- chi-square gate
def test_chi2_gate_constants_are_the_2dof_quantiles():
    for p, q in CHI2_2DOF.items():
        assert q == pytest.approx(chi2.ppf(p, df=2), abs=1e-3)


def test_chi2_gate_rejects_pair_the_euclidean_gate_accepts():
    # S = P + R = 0.2 I; a 2 m offset gives d^2 = 4 / 0.2 = 20 > 13.816 (99.9 % gate),
    # while the Euclidean gate of 3 m would let it through.
    cov = np.eye(2)[None] * 0.1
    cost, allowed = gated_cost(np.zeros((1, 2)), cov, np.array([1]), np.array([3.0]),
                               np.array([[2.0, 0.0]]), cov, np.array([1]))
    assert not allowed[0, 0]
    result = assign(cost, allowed)
    assert len(result.matches) == 0
    assert result.unmatched_tracks.tolist() == [0] and result.unmatched_measurements.tolist() == [0]


def test_chi2_gate_boundary_and_anisotropy():
    # Along the long axis of S (variance 4.0 in x, 0.04 in y) a 1.4 m offset is d^2 = 0.49:
    # inside; the same 1.4 m along y is d^2 = 49: outside. Both are within the 3 m radius.
    track_cov = np.diag([3.9, 0.02])[None]
    meas_cov = np.diag([0.1, 0.02])[None]
    meas = np.array([[1.4, 0.0], [0.0, 1.4]])
    cost, allowed = gated_cost(np.zeros((1, 2)), track_cov, np.array([1]), np.array([3.0]), meas,
                               np.repeat(meas_cov, 2, axis=0), np.array([1, 1]))
    assert allowed[0].tolist() == [True, False]
    # the gate is inclusive of its quantile (d^2 <= gate): sqrt(gate * 0.2) lands on it
    gate = CHI2_2DOF[0.999]
    at = np.array([[np.sqrt(gate * 0.2) * (1 - 1e-12), 0.0], [np.sqrt(gate * 0.2) * (1 + 1e-6), 0.0]])
    cov = np.eye(2)[None] * 0.1
    _, allowed = gated_cost(np.zeros((1, 2)), cov, np.array([1]), np.array([10.0]), at,
                            np.repeat(cov, 2, axis=0), np.array([1, 1]))
    assert allowed[0].tolist() == [True, False]


# --------------------------------------------------------------------------- StampSync nearest
def _det(n=1):
    return np.zeros(n, itf.DETECTION_DTYPE)


@pytest.mark.parametrize("before_ms, after_ms, nearest_ms", [
    (80, 105, 105),  # the later candidate is nearer
    (97, 120, 97),  # the earlier candidate is nearer
    (60, 101, 101),
])
def test_stamp_sync_takes_nearest_candidate_on_either_side(before_ms, after_ms, nearest_ms):
    sync = StampSync(tolerance_s=0.05)
    assert sync.push_detections(before_ms * MS, _det(1), 0.0) == []
    assert sync.push_detections(after_ms * MS, _det(2), 0.0) == []
    out = sync.push_instances(100 * MS, itf.empty(itf.INSTANCE_DTYPE), 0.0)
    assert len(out) == 1 and out[0].detection_stamp_ns == nearest_ms * MS
    assert len(out[0].detections) == (1 if nearest_ms == before_ms else 2)


def test_stamp_sync_ignores_nearer_candidate_outside_tolerance_on_neither_side():
    sync = StampSync(tolerance_s=0.01)
    sync.push_detections(85 * MS, _det(), 0.0)  # 15 ms before: outside 10 ms
    sync.push_detections(108 * MS, _det(), 0.0)  # 8 ms after: inside
    out = sync.push_instances(100 * MS, itf.empty(itf.INSTANCE_DTYPE), 0.0)
    assert out[0].detection_stamp_ns == 108 * MS


# --------------------------------------------------------------------------- Hungarian
def _brute_force(cost: np.ndarray, allowed: np.ndarray) -> tuple[int, float]:
    """(most matches, least total cost among those) over every partial one-to-one matching."""
    n_t, n_m = cost.shape
    best = (0, 0.0)
    for choice in itertools.product(range(-1, n_m), repeat=n_t):
        used = [c for c in choice if c >= 0]
        if len(used) != len(set(used)) or any(not allowed[t, c] for t, c in enumerate(choice) if c >= 0):
            continue
        key = (len(used), sum(cost[t, c] for t, c in enumerate(choice) if c >= 0))
        if key[0] > best[0] or (key[0] == best[0] and key[1] < best[1]):
            best = key
    return best


def _check_optimal(cost: np.ndarray, allowed: np.ndarray) -> None:
    result = assign(cost, allowed)
    m = result.matches
    assert all(allowed[t, d] for t, d in m)
    assert len(set(m[:, 0])) == len(m) and len(set(m[:, 1])) == len(m)
    assert sorted(result.unmatched_tracks.tolist() + m[:, 0].tolist()) == list(range(cost.shape[0]))
    assert sorted(result.unmatched_measurements.tolist() + m[:, 1].tolist()) == list(range(cost.shape[1]))
    n, total = _brute_force(cost, allowed)
    assert len(m) == n
    assert cost[m[:, 0], m[:, 1]].sum() == pytest.approx(total)


def test_hungarian_on_non_square_non_symmetric_cost():
    # 2 tracks x 3 measurements; the optimum (0->2, 1->0, total 3) is not what the transpose gives
    cost = np.array([[5.0, 4.0, 1.0],
                     [2.0, 9.0, 7.0]])
    allowed = np.ones_like(cost, bool)
    result = assign(cost, allowed)
    assert sorted(map(tuple, result.matches.tolist())) == [(0, 2), (1, 0)]
    assert result.unmatched_measurements.tolist() == [1]
    rows, cols = linear_sum_assignment(cost)
    assert cost[rows, cols].sum() == cost[result.matches[:, 0], result.matches[:, 1]].sum() == 3.0
    # and the tall case (more tracks than measurements)
    result = assign(cost.T.copy(), allowed.T.copy())
    assert sorted(map(tuple, result.matches.tolist())) == [(0, 1), (2, 0)]
    assert result.unmatched_tracks.tolist() == [1]


@pytest.mark.parametrize("shape", [(3, 3), (2, 4), (4, 2), (3, 5), (5, 3)])
def test_hungarian_matches_brute_force_on_random_costs(shape):
    rng = np.random.default_rng(17 + shape[0] * 10 + shape[1])
    for _ in range(20):
        cost = rng.uniform(-3.0, 10.0, shape)  # negative costs too (log det S can be negative)
        allowed = rng.random(shape) < 0.7
        if not allowed.any():
            allowed[0, 0] = True
        _check_optimal(cost, allowed)
        _check_optimal(cost, np.ones(shape, bool))
