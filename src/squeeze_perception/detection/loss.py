"""The SqueezeDet multi-task loss, eq. 3.2 of the thesis.

For each image: every ground-truth box is given to the anchor with the largest IoU (eq. 3.3
gives that anchor's regression target); that anchor regresses its deltas (lambda_bbox), its
sigmoid confidence towards the IoU of its predicted box with the ground truth
(lambda_conf+), and its softmax class towards the label (cross-entropy). All other anchors
have their confidence pushed to 0 (lambda_conf-). The box, positive-confidence and class
terms are divided by N_obj, the negative-confidence term by W*H*K - N_obj. The batch loss is
the mean over images. (Eq. 3.2 prints the class term as +l log p; it is the cross-entropy,
i.e. -l log p.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LAMBDA_BBOX = 5.0
LAMBDA_CONF_POS = 75.0
LAMBDA_CONF_NEG = 100.0


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N,4) and (M,4) x1,y1,x2,y2 boxes -> (N,M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    return np.stack([boxes[..., 0] - boxes[..., 2] / 2, boxes[..., 1] - boxes[..., 3] / 2,
                     boxes[..., 0] + boxes[..., 2] / 2, boxes[..., 1] + boxes[..., 3] / 2], -1)


def encode_deltas(anchors_cxcywh: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """Eq. 3.3: ground-truth deltas of boxes relative to their anchors (both (N,4))."""
    gx = (gt_xyxy[:, 0] + gt_xyxy[:, 2]) / 2
    gy = (gt_xyxy[:, 1] + gt_xyxy[:, 3]) / 2
    gw = gt_xyxy[:, 2] - gt_xyxy[:, 0]
    gh = gt_xyxy[:, 3] - gt_xyxy[:, 1]
    ax, ay, aw, ah = anchors_cxcywh.T
    return np.stack([(gx - ax) / aw, (gy - ay) / ah, np.log(gw / aw), np.log(gh / ah)], 1)


def assign_anchors(anchors_cxcywh: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """Index of the responsible anchor for each ground-truth box (largest IoU).

    When two boxes want the same anchor, the later one takes its next-best free anchor so
    each object keeps its own responsible anchor (N_obj stays the number of objects).
    """
    if len(gt_xyxy) == 0:
        return np.zeros(0, dtype=np.int64)
    iou = box_iou_np(gt_xyxy, cxcywh_to_xyxy(anchors_cxcywh))
    taken: set[int] = set()
    out = np.empty(len(gt_xyxy), dtype=np.int64)
    for g in range(len(gt_xyxy)):
        for idx in np.argsort(-iou[g], kind="stable"):
            if int(idx) not in taken:
                out[g] = idx
                taken.add(int(idx))
                break
    return out


@dataclass
class Targets:
    """Per-image training targets (numpy, built once per sample)."""

    anchor_index: np.ndarray  # (n_obj,) responsible anchors
    deltas: np.ndarray  # (n_obj, 4) eq. 3.3
    boxes: np.ndarray  # (n_obj, 4) x1,y1,x2,y2 ground truth
    labels: np.ndarray  # (n_obj,) 0..C-1 (class_id - 1)


def build_targets(anchors_cxcywh: np.ndarray, gt_xyxy: np.ndarray, labels: np.ndarray,
                  positive_iou: float = 0.0) -> Targets:
    """Training targets of one image.

    positive_iou = 0 is the thesis's assignment: one responsible anchor per object. With
    positive_iou > 0, every other anchor whose own box overlaps an object by at least that IoU
    is responsible for it too (the object it overlaps most): it regresses that object's deltas
    and its confidence learns the IoU of its predicted box. Why: with one positive per object
    the neighbouring anchors see the same image content but are only pushed towards 0 with the
    tiny weight lambda_conf- / (WHK - N_obj); until they learn it, worse-placed neighbours
    outscore the responsible anchor and NMS keeps the wrong box. Training the neighbours'
    confidence towards their own IoU ranks overlapping boxes by localisation quality from the
    start, which is the order NMS needs. All positive terms are divided by the number of
    positive anchors."""
    gt_xyxy = np.asarray(gt_xyxy, dtype=np.float64).reshape(-1, 4)
    keep = (gt_xyxy[:, 2] > gt_xyxy[:, 0]) & (gt_xyxy[:, 3] > gt_xyxy[:, 1])
    gt_xyxy, labels = gt_xyxy[keep], np.asarray(labels, dtype=np.int64)[keep]
    idx = assign_anchors(anchors_cxcywh, gt_xyxy)
    owner = np.arange(len(idx))
    if positive_iou > 0 and len(idx):
        iou = box_iou_np(gt_xyxy, cxcywh_to_xyxy(anchors_cxcywh))
        best_gt = iou.argmax(0)
        extra = np.flatnonzero(iou.max(0) >= positive_iou)
        extra = extra[~np.isin(extra, idx)]
        idx = np.concatenate([idx, extra])
        owner = np.concatenate([owner, best_gt[extra]])
    gt_pos = gt_xyxy[owner]
    deltas = encode_deltas(anchors_cxcywh[idx], gt_pos) if len(idx) else np.zeros((0, 4))
    return Targets(idx, deltas.astype(np.float32), gt_pos.astype(np.float32), labels[owner])


def _iou_torch(a, b):
    """Element-wise IoU of two (N,4) x1,y1,x2,y2 tensors."""
    import torch

    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    return inter / union.clamp(min=1e-9)


def squeezedet_loss(deltas, conf_logits, cls_logits, anchors, targets: list[Targets],
                    lambda_bbox: float = LAMBDA_BBOX, lambda_conf_pos: float = LAMBDA_CONF_POS,
                    lambda_conf_neg: float = LAMBDA_CONF_NEG) -> tuple:
    """Eq. 3.2 averaged over the batch; returns (total, {"bbox", "conf", "class"} floats).

    deltas (N,A,4), conf_logits (N,A), cls_logits (N,A,C) from `forward_raw`; anchors (A,4)
    cx,cy,w,h. Images without objects contribute only the negative-confidence term.
    """
    import torch
    import torch.nn.functional as F

    from .models import transform_boxes

    n_img, n_anchor = conf_logits.shape
    conf = torch.sigmoid(conf_logits)
    totals = {"bbox": conf.new_zeros(()), "conf": conf.new_zeros(()), "class": conf.new_zeros(())}
    for b, tgt in enumerate(targets):
        n_obj = len(tgt.anchor_index)
        responsible = torch.zeros(n_anchor, dtype=torch.bool, device=conf.device)
        if n_obj:
            idx = torch.as_tensor(tgt.anchor_index, device=conf.device)
            responsible[idx] = True
            d_pred = deltas[b, idx]
            d_gt = torch.as_tensor(tgt.deltas, device=conf.device)
            totals["bbox"] = totals["bbox"] + lambda_bbox / n_obj * ((d_pred - d_gt) ** 2).sum()
            with torch.no_grad():  # the IoU target is a label, not a path for gradients
                pred_boxes = transform_boxes(anchors[idx], d_pred)
                iou_gt = _iou_torch(pred_boxes, torch.as_tensor(tgt.boxes, device=conf.device))
            totals["conf"] = totals["conf"] + lambda_conf_pos / n_obj * ((conf[b, idx] - iou_gt) ** 2).sum()
            labels = torch.as_tensor(tgt.labels, device=conf.device)
            totals["class"] = totals["class"] + F.cross_entropy(cls_logits[b, idx], labels, reduction="sum") / n_obj
        neg = ~responsible
        totals["conf"] = totals["conf"] + lambda_conf_neg / (n_anchor - n_obj) * (conf[b, neg] ** 2).sum()
    totals = {k: v / n_img for k, v in totals.items()}
    total = totals["bbox"] + totals["conf"] + totals["class"]
    return total, {k: float(v.detach()) for k, v in totals.items()}
