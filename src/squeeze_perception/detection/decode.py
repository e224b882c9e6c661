"""From network output to detections: top-N by confidence, then per-class NMS.

The score of a box is max_c P(class_c | object) * P(object) (thesis §3.3). NMS is written in
numpy because torchvision (torchvision.ops.nms) is not installable beside this torch build;
it runs on at most top_k boxes, so its quadratic cost is negligible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..interfaces import DETECTION_DTYPE
from .loss import box_iou_np


@dataclass(frozen=True)
class DecodeConfig:
    top_k: int = 64
    nms_iou: float = 0.4
    score_threshold: float = 0.0


def scores_and_classes(pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pred (A, 5+C) -> score (A,), class index 0..C-1 (A,)."""
    probs = pred[:, 5:]
    cls = probs.argmax(1)
    return pred[:, 4] * probs[np.arange(len(pred)), cls], cls


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS, highest score first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while len(order):
        i = order[0]
        keep.append(i)
        if len(order) == 1:
            break
        ious = box_iou_np(boxes[i][None], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def top_boxes(pred: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n most confident boxes (by class score), best first, equal scores in
    anchor order."""
    scores, _ = scores_and_classes(pred)
    n = min(n, len(scores))
    # argpartition leaves its n picks in no particular order: put them back in anchor order
    # before the stable sort, so that ties come out by anchor index.
    idx = np.sort(np.argpartition(-scores, n - 1)[:n]) if n < len(scores) else np.arange(len(scores))
    return idx[np.argsort(-scores[idx], kind="stable")]


def decode(pred: np.ndarray, config: DecodeConfig = DecodeConfig()) -> np.ndarray:
    """One image's (A, 5+C) predictions -> DETECTION_DTYPE rows in the model-input pixels,
    sorted by score (equal scores in anchor order). class_id = class index + 1 (car 1,
    pedestrian 2, cyclist 3)."""
    pred = np.asarray(pred, dtype=np.float32)
    idx = top_boxes(pred, config.top_k)
    scores, cls = scores_and_classes(pred[idx])
    boxes = pred[idx, :4]
    keep_all = []
    for c in np.unique(cls):
        members = np.flatnonzero(cls == c)
        keep_all.extend(members[nms(boxes[members], scores[members], config.nms_iou)])
    # Positions in idx run best first, ties in anchor order: sorting the kept positions orders
    # the detections the same way across classes (sorting by score alone would group ties by class).
    keep = np.asarray(sorted(keep_all), dtype=np.int64)
    keep = keep[scores[keep] >= config.score_threshold] if len(keep) else keep
    out = np.zeros(len(keep), dtype=DETECTION_DTYPE)
    if len(keep):
        out["u_min"], out["v_min"], out["u_max"], out["v_max"] = boxes[keep].T
        out["score"] = scores[keep]
        out["class_id"] = cls[keep] + 1
    return out
