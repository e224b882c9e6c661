"""KITTI 2D detection evaluation: AP per class and difficulty, 11- and 40-point, and the
recall-vs-N_box curve of thesis Fig. 3.5.

Rules follow the KITTI object devkit:
- A ground-truth box counts at difficulty L (0 easy, 1 moderate, 2 hard) when its own
  difficulty (height / occlusion / truncation, `ObjectLabel.difficulty`) is <= L. Harder boxes
  of the class, and boxes of the neighbouring class (Van for Car, Person_sitting for
  Pedestrian), are "ignored": a detection on them is neither a true nor a false positive.
- Detections are matched greedily in score order to the unmatched ground truth with the
  largest IoU above the class threshold (car 0.7, pedestrian / cyclist 0.5; strictly greater,
  as the devkit). Unmatched detections lower than the difficulty's minimum height (40 / 25 /
  25 px) or lying mostly (intersection / own area > threshold) inside a DontCare region are
  ignored; the rest are false positives.
- AP is the mean interpolated precision (max precision at recall >= r) over r in
  {0, 0.1, ..., 1} (11-point) or {1/40, 2/40, ..., 1} (40-point, the devkit since 2019).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..interfaces import CLASS_IDS, DETECTION_CLASSES
from ..kitti.labels import ObjectLabel
from .loss import box_iou_np

DIFFICULTIES = ("easy", "moderate", "hard")
MIN_HEIGHT = (40.0, 25.0, 25.0)
IOU_THRESHOLD = {"car": 0.7, "pedestrian": 0.5, "cyclist": 0.5}
KITTI_TYPE = {"car": "Car", "pedestrian": "Pedestrian", "cyclist": "Cyclist"}
NEIGHBOUR_TYPE = {"car": "Van", "pedestrian": "Person_sitting"}
RECALL_POINTS_11 = np.linspace(0.0, 1.0, 11)
RECALL_POINTS_40 = np.linspace(1.0 / 40, 1.0, 40)


@dataclass
class PRCurve:
    scores: np.ndarray  # non-ignored detections, best first
    tp: np.ndarray  # bool per detection
    n_gt: int

    def precision_recall(self) -> tuple[np.ndarray, np.ndarray]:
        ctp = np.cumsum(self.tp)
        cfp = np.cumsum(~self.tp)
        precision = ctp / np.maximum(ctp + cfp, 1)
        recall = ctp / max(self.n_gt, 1)
        return precision, recall

    def average_precision(self, recall_points: np.ndarray) -> float:
        if self.n_gt == 0:
            return float("nan")
        precision, recall = self.precision_recall()
        values = []
        for r in recall_points:
            reached = precision[recall >= r - 1e-12]
            values.append(reached.max() if len(reached) else 0.0)
        return float(np.mean(values))


def match_image(dets: np.ndarray, labels: list[ObjectLabel], cls: str, level: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One image, one class, one difficulty -> (scores, state per det: 1 TP, 0 FP, -1 ignored,
    number of valid ground-truth boxes)."""
    class_id = CLASS_IDS[cls]
    dets = dets[dets["class_id"] == class_id]
    dets = dets[np.argsort(-dets["score"], kind="stable")]
    gt_boxes, gt_valid, dontcare = [], [], []
    for lab in labels:
        if lab.type == KITTI_TYPE[cls]:
            d = lab.difficulty()
            gt_boxes.append(lab.bbox)
            gt_valid.append(0 <= d <= level)
        elif lab.type == NEIGHBOUR_TYPE.get(cls):
            gt_boxes.append(lab.bbox)
            gt_valid.append(False)
        elif lab.type == "DontCare":
            dontcare.append(lab.bbox)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_valid = np.asarray(gt_valid, dtype=bool)
    det_boxes = np.stack([dets["u_min"], dets["v_min"], dets["u_max"], dets["v_max"]], 1).astype(np.float64)
    state = np.zeros(len(dets), dtype=np.int8)
    thr = IOU_THRESHOLD[cls]
    iou = box_iou_np(det_boxes, gt_boxes) if len(gt_boxes) else np.zeros((len(dets), 0))
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for i in range(len(dets)):
        cand = np.where(~taken & (iou[i] > thr), iou[i], -1.0) if iou.shape[1] else np.zeros(0)
        if len(cand) and cand.max() > thr:
            g = int(cand.argmax())
            taken[g] = True
            state[i] = 1 if gt_valid[g] else -1
            continue
        height = det_boxes[i, 3] - det_boxes[i, 1]
        if height < MIN_HEIGHT[level] or _in_dontcare(det_boxes[i], dontcare, thr):
            state[i] = -1
    return dets["score"].astype(np.float64), state, int(gt_valid.sum())


def _in_dontcare(box: np.ndarray, regions: list[np.ndarray], thr: float) -> bool:
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
    for r in regions:
        iw = min(box[2], r[2]) - max(box[0], r[0])
        ih = min(box[3], r[3]) - max(box[1], r[1])
        if iw > 0 and ih > 0 and iw * ih / area > thr:
            return True
    return False


def pr_curve(dets_per_image: list[np.ndarray], labels_per_image: list[list[ObjectLabel]], cls: str,
             level: int) -> PRCurve:
    scores, tps, n_gt = [], [], 0
    for dets, labels in zip(dets_per_image, labels_per_image):
        s, state, n = match_image(dets, labels, cls, level)
        scores.append(s[state >= 0])
        tps.append(state[state >= 0] == 1)
        n_gt += n
    scores = np.concatenate(scores) if scores else np.zeros(0)
    tps = np.concatenate(tps) if tps else np.zeros(0, bool)
    order = np.argsort(-scores, kind="stable")
    return PRCurve(scores[order], tps[order], n_gt)


def evaluate(dets_per_image: list[np.ndarray], labels_per_image: list[list[ObjectLabel]],
             classes: tuple[str, ...] = DETECTION_CLASSES) -> dict:
    """{"per_class": {cls: {difficulty: {"ap11", "ap40", "n_gt"}}}, "map11", "map40"} (AP in %,
    NaN where a class has no ground truth at that difficulty; means skip NaN)."""
    per_class: dict = {}
    all11, all40 = [], []
    for cls in classes:
        per_class[cls] = {}
        for level, name in enumerate(DIFFICULTIES):
            curve = pr_curve(dets_per_image, labels_per_image, cls, level)
            ap11 = 100 * curve.average_precision(RECALL_POINTS_11)
            ap40 = 100 * curve.average_precision(RECALL_POINTS_40)
            per_class[cls][name] = {"ap11": ap11, "ap40": ap40, "n_gt": curve.n_gt}
            all11.append(ap11)
            all40.append(ap40)
        vals = [per_class[cls][d]["ap11"] for d in DIFFICULTIES]
        per_class[cls]["mean_ap11"] = _nanmean(vals)
        per_class[cls]["mean_ap40"] = _nanmean([per_class[cls][d]["ap40"] for d in DIFFICULTIES])
    return {"per_class": per_class, "map11": _nanmean(all11), "map40": _nanmean(all40)}


def _nanmean(values) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")


def first_match_rank(pred: np.ndarray, labels: list[ObjectLabel]) -> tuple[np.ndarray, int]:
    """For every car/pedestrian/cyclist ground truth of any difficulty (easy..hard), the rank
    (0-based, by class score) of the best-ranked predicted box of the same class with IoU above
    the class threshold (a huge number when none). pred: (A, 5+C) in image pixels.
    Returns (ranks, number of ground-truth boxes)."""
    from .decode import scores_and_classes

    gts = [(lab.bbox, cls) for lab in labels for cls in DETECTION_CLASSES
           if lab.type == KITTI_TYPE[cls] and lab.difficulty() >= 0]
    if not gts:
        return np.zeros(0, np.int64), 0
    scores, cls_idx = scores_and_classes(pred)
    order = np.argsort(-scores, kind="stable")
    boxes, cls_sorted = pred[order, :4], cls_idx[order] + 1
    ranks = np.full(len(gts), np.iinfo(np.int64).max, dtype=np.int64)
    for g, (bbox, cls) in enumerate(gts):
        same = np.flatnonzero(cls_sorted == CLASS_IDS[cls])
        if len(same) == 0:
            continue
        iou = box_iou_np(np.asarray(bbox)[None], boxes[same])[0]
        hit = same[iou > IOU_THRESHOLD[cls]]
        if len(hit):
            ranks[g] = int(hit.min())
    return ranks, len(gts)


def recall_vs_nbox(ranks_per_image: list[np.ndarray], n_values) -> np.ndarray:
    """Overall recall when each image keeps its top-N boxes, for each N in n_values."""
    ranks = np.concatenate(ranks_per_image) if ranks_per_image else np.zeros(0, np.int64)
    if len(ranks) == 0:
        return np.full(len(n_values), np.nan)
    return np.asarray([(ranks < n).mean() for n in n_values], dtype=np.float64)


def format_table(result: dict) -> str:
    """Plain-text AP table (11-point / 40-point) per class and difficulty."""
    lines = [f"{'class':12s} " + " ".join(f"{d:>15s}" for d in DIFFICULTIES) + f" {'mean':>15s}"]
    for cls, row in result["per_class"].items():
        cells = [f"{row[d]['ap11']:6.1f}/{row[d]['ap40']:5.1f} n{row[d]['n_gt']:<3d}" for d in DIFFICULTIES]
        lines.append(f"{cls:12s} " + " ".join(f"{c:>15s}" for c in cells)
                     + f" {row['mean_ap11']:7.1f}/{row['mean_ap40']:5.1f}")
    lines.append(f"mAP (11-point) {result['map11']:.1f}   mAP (40-point) {result['map40']:.1f}")
    return "\n".join(lines)


__all__ = ["evaluate", "pr_curve", "match_image", "first_match_rank", "recall_vs_nbox", "format_table"]
