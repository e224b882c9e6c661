"""KITTI-devkit AP (kitti-2012 / kitti-2019) on hand-built cases, the expected values derived by
hand in comments; recall-vs-N_box; `det eval --results` and its JSON."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from squeeze_perception.interfaces import DETECTION_DTYPE
from squeeze_perception.kitti.labels import ObjectLabel
from squeeze_perception.offline.detection.evaluation import (class_curve, evaluate, first_match_rank, format_table,
                                                             format_object_matches, frame_statistics, object_matches,
                                                             prepare_frame, read_result_file,
                                                             recall_thresholds, recall_vs_nbox, PROTOCOLS)

CAR, PED = 1, 2


def lab(kind, box, occluded=0, truncated=0.0, score=1.0):
    return ObjectLabel(kind, truncated, occluded, 0.0, np.array(box, float), np.ones(3), np.zeros(3), 0.0, score)


def dets(rows):
    out = np.zeros(len(rows), DETECTION_DTYPE)
    for i, (x1, y1, x2, y2, score, cls) in enumerate(rows):
        out[i] = (x1, y1, x2, y2, score, cls)
    return out


def car_row(n: int) -> list[list[float]]:
    """n easy cars side by side, 80 x 50 px, 20 px apart (no two overlap)."""
    return [[100.0 * i, 100.0, 100.0 * i + 80, 150.0] for i in range(n)]


def perfect(boxes, top=0.9, step=0.01, cls=CAR):
    """One detection per box, exactly on it, scores top, top-step, ... (all distinct)."""
    return [(*b, top - step * i, cls) for i, b in enumerate(boxes)]


def ap(result, cls="car", level="easy"):
    return result["per_class"][cls][level]["ap"]


# ----------------------------------------------------------------- 1. recall sampling
def test_fewer_true_boxes_than_sample_points_caps_ap():
    # 4 easy cars, each found exactly (scores .90 .89 .88 .87), nothing else. n_gt = 4.
    # Thresholds: every true positive's recall (1/4, 2/4, ...) is a step of 0.25 > 1/40, so all
    # 4 scores are kept -> 4 thresholds, precision 1 at each -> slots 0..3 = 1, slots 4..40 = 0.
    # kitti-2019: mean of slots 1..40 = 3/40 = 7.5 %.  kitti-2012: slots 0,4,..,40 -> only slot 0
    # is 1 -> 1/11 = 9.09 %. A perfect detector does not reach 100 with fewer than 41 true boxes.
    boxes = car_row(4)
    labels, d = [[lab("Car", b) for b in boxes]], [dets(perfect(boxes))]
    assert ap(evaluate(d, labels, "kitti-2019")) == pytest.approx(100 * 3 / 40)
    assert ap(evaluate(d, labels, "kitti-2012")) == pytest.approx(100 / 11)
    # With 41 true boxes every slot gets a threshold: 100 under both protocols.
    boxes = car_row(41)
    labels, d = [[lab("Car", b) for b in boxes]], [dets(perfect(boxes, top=0.99, step=0.001))]
    assert ap(evaluate(d, labels, "kitti-2019")) == pytest.approx(100.0)
    assert ap(evaluate(d, labels, "kitti-2012")) == pytest.approx(100.0)


def test_one_found_box_of_three_scores_zero_under_kitti_2019():
    # The real frames have 3 moderate cars. Finding 1 exactly: one threshold, slot 0 only, which
    # kitti-2019 does not average -> 0; kitti-2012 averages slot 0 -> 1/11. Finding 2: slots 0, 1 -> 1/40.
    boxes = car_row(3)
    labels = [[lab("Car", b) for b in boxes]]
    for found, ap_2019 in ((1, 0.0), (2, 100 / 40), (3, 100 * 2 / 40)):
        d = [dets(perfect(boxes[:found]))]
        assert ap(evaluate(d, labels, "kitti-2019")) == pytest.approx(ap_2019)
        assert ap(evaluate(d, labels, "kitti-2012")) == pytest.approx(100 / 11)


def test_thresholds_sit_at_the_nearest_recall_slot():
    # n_gt = 48, ten true positives (scores best first, index i has recall (i+1)/48).
    # Slot k (k = 0, 1, ...) wants recall k/40; score i is kept when its recall is at least as near
    # slot k as the next score's: keep iff k/40 <= ((i+1)/48 + (i+2)/48) / 2  <=>  6k <= 5i + 7.5.
    #   k=0..7 -> i=0..7 (e.g. k=7: 42 <= 5*7+7.5 = 42.5). Slot 7 gets recall 8/48 = 0.1667,
    #   *below* 7/40 = 0.175 because it is nearer than 9/48 = 0.1875 (not the next one up).
    #   k=8 -> 48 <= 5i+7.5 needs i >= 8.1: i=8 (recall 0.1875) is skipped for i=9 (0.2083),
    #   which is nearer 8/40 = 0.2 (and the last score is always kept).
    scores = [1.0 - 0.01 * i for i in range(10)]
    kept = recall_thresholds(scores, 48)
    assert [scores.index(s) for s in kept] == [0, 1, 2, 3, 4, 5, 6, 7, 9]
    # n_gt = 80, 80 true positives: keep iff k/40 <= (i+1.5)/80 <=> 2k <= i+1.5: i = 0, 1, 3, 5, ..., 79
    # (recall 2k/80 = k/40 at slot k >= 1), 41 thresholds in all.
    scores = [float(80 - i) for i in range(80)]
    kept = recall_thresholds(scores, 80)
    assert [80 - s for s in kept] == [0, 1] + list(range(3, 80, 2)) and len(kept) == 41


# ----------------------------------------------------------------- 2. minimum height of detections
def test_small_unmatched_detection_rule_uses_40_25_25_px_and_differs_by_protocol():
    # 41 easy cars found exactly (scores .99 ... .95) plus one unmatched car detection D,
    # 30 px high (between the moderate/hard minimum 25 px and the easy minimum 40 px), score 0.999.
    # n_gt = 41 -> all 41 true positives are thresholds; D scores above all of them, so it is
    # active at every threshold k (k = 0..40, k+1 true positives).
    boxes = car_row(41)
    small = (0.0, 300.0, 60.0, 330.0, 0.999, CAR)
    labels = [[lab("Car", b) for b in boxes]]
    d = [dets(perfect(boxes, top=0.99, step=0.001) + [small])]
    # kitti-2019, easy: D is under 40 px -> ignored -> precision 1 everywhere -> AP 100.
    # kitti-2019, moderate / hard: 30 px >= 25 px -> D is a false positive at every threshold:
    # precision (k+1)/(k+2) grows with k, so the running maximum from the right makes every slot
    # 41/42 -> AP = 41/42 = 97.62 %.
    r19 = evaluate(d, labels, "kitti-2019")
    assert ap(r19, "car", "easy") == pytest.approx(100.0)
    assert ap(r19, "car", "moderate") == pytest.approx(100 * 41 / 42)
    assert ap(r19, "car", "hard") == pytest.approx(100 * 41 / 42)
    # kitti-2012: no height rule for detections: D is a false positive at every level -> 41/42.
    r12 = evaluate(d, labels, "kitti-2012")
    for level in ("easy", "moderate", "hard"):
        assert ap(r12, "car", level) == pytest.approx(100 * 41 / 42)


def test_true_box_matched_only_by_a_small_detection_is_neither_hit_nor_miss():
    # 40 easy cars found exactly, plus car G, 41 px high (valid at easy), whose only detection is
    # 39.5 px high (the devkit's int32 height 39 < 40: small at easy), IoU 39.5/41 = 0.96, score .999.
    # kitti-2019 easy: n_gt = 41, but G's pair is neither TP nor FN -> 40 true positives ->
    # 40 thresholds (all kept, steps of 1/41 > 1/40), precision 1 in slots 0..39, slot 40 = 0:
    # AP = 39/40 = 97.5 %; recall at the last threshold = 40 / (40 + 0 misses) = 1.
    boxes = car_row(40)
    g_box = [5000.0, 100.0, 5080.0, 141.0]
    labels = [[lab("Car", b) for b in boxes] + [lab("Car", g_box)]]
    d = [dets(perfect(boxes, top=0.99, step=0.001) + [(5000.0, 101.5, 5080.0, 141.0, 0.999, CAR)])]
    curve = class_curve(d, labels, "car", 0, "kitti-2019")
    assert curve.n_gt == 41 and len(curve.thresholds) == 40
    # At threshold k the top k+1 cars are found and the other 39-k missed; G never counts.
    assert curve.tp.tolist() == list(range(1, 41)) and curve.fn.tolist() == list(range(39, -1, -1))
    assert curve.fp.tolist() == [0] * 40 and curve.recall()[-1] == 1.0
    assert 100 * curve.average_precision("kitti-2019") == pytest.approx(97.5)
    # kitti-2012: the 39.5 px detection is an ordinary one -> 41 true positives -> AP 100.
    assert ap(evaluate(d, labels, "kitti-2012")) == pytest.approx(100.0)


def test_small_detection_of_another_class_is_ignored_not_a_false_positive_in_2019():
    # A 20 px pedestrian detection (under every minimum) lying on nothing, evaluated for car:
    # kitti-2019 keeps it as a 'small' candidate (never a false positive); kitti-2012 drops it
    # (other class). Either way the car's counts are those of the single perfect car.
    labels = [lab("Car", [100, 100, 180, 150])]
    d = dets([(100, 100, 180, 150, 0.9, CAR), (500, 100, 510, 120, 0.95, PED)])
    for name in PROTOCOLS:
        frame = prepare_frame(read_or_array(d), labels, "car", 0, PROTOCOLS[name])
        s = frame_statistics(frame, 0.5)
        assert (s.tp, s.fp, s.fn) == (1, 0, 0)


def read_or_array(d):
    from squeeze_perception.offline.detection.evaluation import as_frame_detections

    return as_frame_detections(d)


# ----------------------------------------------------------------- 3. matching order
def test_true_boxes_take_detections_in_label_order_by_overlap_not_by_score():
    # Cars A = [0,100,100,200] then B = [20,100,120,200] (label order), all 100 px high.
    # det1 = [8,..,108] score .8:  IoU(A) = 92/108 = 0.852, IoU(B) = 88/112 = 0.786
    # det2 = [-10,..,90] score .9: IoU(A) = 90/110 = 0.818, IoU(B) = 70/130 = 0.538 (< 0.7)
    # Threshold pass (candidate = highest score): A takes det2 (.9), B takes det1 -> TP scores
    # {.9, .8}; n_gt = 2 -> thresholds [.9, .8].
    # t = .9: only det2 active: A takes det2 (TP), B has nothing (FN) -> precision 1/1.
    # t = .8: A takes the highest IoU, det1 (0.852 > 0.818); B's only candidate det2 is under
    # 0.7 -> B FN, det2 FP -> precision 1/2. (Greedy by score would have matched both.)
    # Slots [1, .5, 0...] -> kitti-2019 AP = .5/40 = 1.25 %, kitti-2012 AP = 1/11 = 9.09 %.
    labels = [[lab("Car", [0, 100, 100, 200]), lab("Car", [20, 100, 120, 200])]]
    d = [dets([(8, 100, 108, 200, 0.8, CAR), (-10, 100, 90, 200, 0.9, CAR)])]
    curve = class_curve(d, labels, "car", 0, "kitti-2019")
    np.testing.assert_allclose(curve.thresholds, [0.9, 0.8], atol=1e-6)
    assert curve.tp.tolist() == [1, 1] and curve.fp.tolist() == [0, 1] and curve.fn.tolist() == [1, 1]
    assert ap(evaluate(d, labels, "kitti-2019")) == pytest.approx(100 * 0.5 / 40)
    assert ap(evaluate(d, labels, "kitti-2012")) == pytest.approx(100 / 11)


def test_an_ignored_true_box_earlier_in_the_file_takes_the_detection():
    # Van V = [100,100,200,150] listed before car C = [104,100,204,150]; one detection
    # d = [102,100,202,150]: IoU 98/102 = 0.96 with both. V comes first, takes d (an ignored
    # box: the pair is neither TP nor FP), so C is a miss: tp 0, fp 0, fn 1 -> no true
    # positive, no threshold -> AP 0 (n_gt 1).
    van, car = lab("Van", [100, 100, 200, 150]), lab("Car", [104, 100, 204, 150])
    d = [dets([(102, 100, 202, 150, 0.9, CAR)])]
    frame = prepare_frame(read_or_array(d[0]), [van, car], "car", 0, PROTOCOLS["kitti-2019"])
    s = frame_statistics(frame, 0.9)
    assert (s.tp, s.fp, s.fn) == (0, 0, 1)
    assert ap(evaluate(d, [[van, car]])) == 0.0
    # Car first: C takes d -> one true positive, one threshold -> slot 0 = 1:
    # kitti-2019 1 threshold -> slots 1..40 empty -> 0; kitti-2012 slot 0 -> 1/11.
    assert ap(evaluate(d, [[car, van]], "kitti-2012")) == pytest.approx(100 / 11)
    # A hard car (occluded 2: ignored at easy) listed first behaves like the van at easy.
    hard = lab("Car", [100, 100, 200, 150], occluded=2)
    frame = prepare_frame(read_or_array(d[0]), [hard, car], "car", 0, PROTOCOLS["kitti-2019"])
    s = frame_statistics(frame, 0.9)
    assert (s.tp, s.fp, s.fn) == (0, 0, 1)


# ----------------------------------------------------------------- 4. ties
def test_tied_scores_enter_together_so_their_order_does_not_matter():
    # Cars A, B; det1 on A score .8, det2 on nothing score .8 (tied), det3 on B score .6.
    # TP scores {.8, .6}, n_gt 2 -> thresholds [.8, .6].
    # t = .8: det1 and det2 both active: tp 1, fp 1 -> 1/2.  t = .6: tp 2, fp 1 -> 2/3.
    # Running max from the right: slots [2/3, 2/3, 0, ...].
    # kitti-2019: (2/3)/40 = 1.667 %; kitti-2012: slot 0 only -> (2/3)/11 = 6.06 %.
    # Precision per detection would give 1 at recall 1/2 when det1 came first, 1/2 when det2 did.
    a, b = [100, 100, 180, 150], [400, 100, 480, 150]
    labels = [[lab("Car", a), lab("Car", b)]]
    for order in ([0, 1, 2], [1, 0, 2]):
        rows = [(*a, 0.8, CAR), (700, 100, 780, 150, 0.8, CAR), (*b, 0.6, CAR)]
        d = [dets([rows[i] for i in order])]
        assert ap(evaluate(d, labels, "kitti-2019")) == pytest.approx(100 * (2 / 3) / 40)
        assert ap(evaluate(d, labels, "kitti-2012")) == pytest.approx(100 * (2 / 3) / 11)


# ----------------------------------------------------------------- DontCare, difficulty, n/a
def test_dontcare_difficulty_and_classes_without_true_boxes():
    labels = [[lab("Car", [100, 100, 200, 150]),                 # easy
               lab("Car", [300, 100, 380, 130]),                 # 30 px: moderate and hard only
               lab("Car", [600, 100, 700, 150], occluded=2),     # hard only
               lab("Van", [800, 100, 900, 150]),                 # always ignored for car
               lab("DontCare", [1000, 100, 1100, 200])]]
    d = [dets([(100, 100, 200, 150, 0.9, CAR), (300, 100, 380, 130, 0.8, CAR), (600, 100, 700, 150, 0.7, CAR),
               (800, 100, 900, 150, 0.6, CAR),
               (1010, 110, 1090, 190, 0.5, CAR),    # all of its area inside DontCare: not a false positive
               (1050, 100, 1150, 200, 0.95, CAR)])]  # half inside (0.5 <= 0.7): a false positive
    for level, n_gt in ((0, 1), (1, 2), (2, 3)):
        frame = prepare_frame(read_or_array(d[0]), labels[0], "car", level, PROTOCOLS["kitti-2019"])
        s = frame_statistics(frame, 0.5)
        assert frame.n_gt == n_gt and (s.tp, s.fp, s.fn) == (n_gt, 1, 0)
    res = evaluate(d, labels)
    assert res["per_class"]["pedestrian"]["easy"] == {"ap": None, "n_gt": 0, "precision": [0.0] * 41}
    assert res["per_class"]["pedestrian"]["mean_ap"] is None
    assert res["map_cells"] == 3  # only car's three cells have true boxes; pedestrian/cyclist left out
    assert res["map"] == pytest.approx(np.mean([ap(res, "car", lv) for lv in ("easy", "moderate", "hard")]))
    assert "n/a (n=0)" in format_table(res) and "kitti-2019" in format_table(res)


def test_perfect_detector_on_the_real_frames_is_capped_by_the_box_count(kitti_real):
    from squeeze_perception.kitti.labels import read_labels

    files = sorted(kitti_real.glob("object*/training/label_2/*.txt"))
    labels = [read_labels(f) for f in files]
    d = [[lab(l.type, l.bbox, score=1.0) for l in labs if l.type in ("Car", "Pedestrian", "Cyclist")]
         for labs in labels]
    for name, proto in PROTOCOLS.items():
        res = evaluate(d, labels, name)
        for cls, row in res["per_class"].items():
            for level in ("easy", "moderate", "hard"):
                n = row[level]["n_gt"]
                if n == 0:
                    assert row[level]["ap"] is None
                    continue
                # n (< 41) tied true positives -> n thresholds -> slots 0..n-1 at precision 1
                filled = sum(1 for s in proto.slots() if s < n)
                assert row[level]["ap"] == pytest.approx(100 * filled / len(proto.slots())), (name, cls, level)


# ----------------------------------------------------------------- det eval --results
def write_split(root, frames):
    (root / "label_2").mkdir(parents=True)
    for name, labs in frames.items():
        (root / "label_2" / f"{name}.txt").write_text("".join(l.to_line() + "\n" for l in labs))


def test_det_eval_scores_result_files_and_writes_strict_json(tmp_path, capsys):
    from squeeze_perception.offline.detection.cli import main

    split = tmp_path / "split"
    boxes = car_row(4)
    write_split(split, {"000000": [lab("Car", b) for b in boxes[:2]], "000001": [lab("Car", b) for b in boxes[2:]]})
    res = tmp_path / "results"
    res.mkdir()
    (res / "000000.txt").write_text(
        "Car -1 -1 -10 0.00 100.00 80.00 150.00 -1 -1 -1 -1000 -1000 -1000 -10 0.9\n"
        "Car -1 -1 -10 100.00 100.00 180.00 150.00 -1 -1 -1 -1000 -1000 -1000 -10 0.8\n")
    (res / "000001.txt").write_text("")  # no detections in this frame
    out = tmp_path / "eval.json"
    assert main(["eval", "--results", str(res), "--split", str(split), "--json", str(out)]) == 0

    def no_constants(token):
        raise AssertionError(f"invalid JSON token {token}")

    result = json.loads(out.read_text(), parse_constant=no_constants)
    # 2 of 4 cars found: thresholds [.9, .8] (recall steps 1/4), precision 1 at both: slots 0, 1
    # -> kitti-2019 AP = 1/40 = 2.5 %; pedestrian / cyclist have no true boxes -> null.
    assert result["protocol"] == "kitti-2019" and result["images"] == 2
    assert result["per_class"]["car"]["easy"]["ap"] == pytest.approx(2.5)
    assert result["per_class"]["cyclist"]["easy"]["ap"] is None
    assert "n/a (n=0)" in capsys.readouterr().out
    assert main(["eval", "--results", str(res), "--split", str(split), "--protocol", "kitti-2012",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text(), parse_constant=no_constants)
    assert result["protocol"] == "kitti-2012"
    assert result["per_class"]["car"]["easy"]["ap"] == pytest.approx(100 / 11)  # slot 0 of 0,4,..,40
    (res / "000001.txt").unlink()
    with pytest.raises(FileNotFoundError, match="000001"):
        main(["eval", "--results", str(res), "--split", str(split)])


def test_result_file_needs_a_score_column(tmp_path):
    from squeeze_perception.kitti.labels import KittiFormatError

    path = tmp_path / "000000.txt"
    path.write_text("Car 0 0 0 1 2 3 4 1 1 1 0 0 0 0\n")  # 15 columns: a label, not a result
    with pytest.raises(KittiFormatError, match="16 columns"):
        read_result_file(path)
    path.write_text("Car 0 0 0 1 2 3 40 1 1 1 0 0 0 0 0.25\n")
    d = read_result_file(path)
    assert d.types == ("Car",) and d.scores.tolist() == [0.25] and d.boxes.tolist() == [[1, 2, 3, 40]]


def test_json_safe_turns_nan_into_null():
    from squeeze_perception.offline.detection.cli import json_safe

    text = json.dumps(json_safe({"a": float("nan"), "b": [np.float32(1.5), math.inf], "c": np.int64(3)}),
                      allow_nan=False)
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": 3}


# ----------------------------------------------------------------- recall vs N_box
def test_recall_vs_nbox_counts_best_rank_of_a_matching_box():
    labels = [lab("Car", [100, 100, 200, 150]), lab("Pedestrian", [300, 50, 340, 150])]
    pred = np.zeros((4, 8), np.float32)
    pred[0, :5] = (700, 0, 800, 50, 0.9); pred[0, 5] = 1        # rank 0: wrong place
    pred[1, :5] = (100, 100, 200, 150, 0.8); pred[1, 6] = 1     # rank 1: right place, wrong class
    pred[2, :5] = (101, 100, 201, 150, 0.7); pred[2, 5] = 1     # rank 2: the car
    pred[3, :5] = (300, 50, 340, 150, 0.6); pred[3, 6] = 1      # rank 3: the pedestrian
    ranks, n = first_match_rank(pred, labels)
    assert n == 2 and ranks.tolist() == [2, 3]
    np.testing.assert_allclose(recall_vs_nbox([ranks], [1, 2, 3, 4, 100]), [0, 0, 0.5, 1, 1])


def test_object_matches_tells_a_regression_miss_from_a_decoding_miss():
    labels = [lab("Car", [100, 100, 200, 150]), lab("Pedestrian", [300, 50, 340, 150]),
              lab("Car", [500, 100, 600, 110])]  # 10 px tall: ignored at every level, so no row
    raw = np.zeros((3, 8), np.float32)
    raw[0, :5] = (100, 100, 200, 150, 0.5); raw[0, 5] = 1    # the car exactly, but NMS/top-k dropped it
    raw[1, :5] = (300, 50, 340, 100, 0.9); raw[1, 6] = 1     # pedestrian box half as tall: IoU 0.5
    raw[2, :5] = (110, 100, 210, 150, 0.8); raw[2, 5] = 1    # car shifted by 10 px: IoU 90/110
    kept = dets([(110, 100, 210, 150, 0.8, CAR), (700, 0, 800, 50, 0.95, CAR), (300, 50, 340, 100, 0.9, PED)])
    rows = object_matches(kept, raw, labels)
    assert [(r["class"], r["difficulty"]) for r in rows] == [("car", "easy"), ("pedestrian", "easy")]
    car, ped = rows
    # Among kept cars by score: the wrong one (0.95) is rank 0, the shifted one rank 1.
    assert car["kept_iou"] == pytest.approx(90 / 110) and car["kept_rank"] == 1 and car["kept_score"] == pytest.approx(0.8)
    assert car["raw_iou"] == pytest.approx(1.0)
    assert ped["kept_iou"] == pytest.approx(0.5) and ped["kept_rank"] == 0 and ped["raw_iou"] == pytest.approx(0.5)
    # How the best raw box is wrong, edge by edge: the pedestrian's ends 50 px short at the bottom.
    assert car["raw_edges"] == [0, 0, 0, 0] and ped["raw_edges"] == [0, 0, 0, -50]
    text = format_object_matches({"000007": rows})
    assert text.splitlines()[2].split()[-8:-4] == ["+0", "+0", "+0", "-50"]
    # 0.82 > 0.7 is found; the pedestrian's 0.5 is not above its 0.5 threshold, in kept or raw boxes.
    assert "yes" in text.splitlines()[1] and "no box close enough" in text.splitlines()[2]
    lost = object_matches(dets([(700, 0, 800, 50, 0.95, CAR)]), raw, labels[:1])[0]
    assert lost["kept_iou"] == 0.0 and "lost in NMS/top-k" in format_object_matches({"x": [lost]})
