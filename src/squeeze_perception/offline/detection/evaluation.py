"""KITTI 2D detection AP as the KITTI object devkit (evaluate_object.cpp) computes it, under two
protocols, and the recall-vs-N_box curve of thesis Fig. 3.5.

Protocols (`PROTOCOLS`):
- ``kitti-2012``: the devkit of the thesis's era. AP averages 11 of the 41 sampled precisions
  (indices 0, 4, ..., 40). Detections are never ignored for being small, so an unmatched
  detection of any height is a false positive.
- ``kitti-2019`` (default): the devkit since October 2019. AP averages the 40 sampled precisions
  at indices 1..40. A detection lower than the level's minimum height (40 / 25 / 25 px, its
  height truncated to whole pixels as the devkit's int32 does) is "small": never a false
  positive, and a true box that only a small detection matches counts as neither hit nor miss.

Both follow the devkit step by step, per class and difficulty level:
1. Ground truth, in label-file order: a box of the class is *valid* when its occlusion,
   truncation and height qualify for the level (0/1/2, 0.15/0.30/0.50, 40/25/25 px), otherwise
   *ignored*; Van (for Car) and Person_sitting (for Pedestrian) are always ignored; other
   types take no part, except DontCare, whose boxes are kept as regions.
2. Matching, per image: for each true box in label order (ignored ones included) take the
   still unassigned detection with overlap above the class's threshold (car 0.7, pedestrian
   and cyclist 0.5; IoU without the +1 pixel; strictly greater). To collect thresholds, the
   highest-scoring candidate wins; to count TP/FP/FN at a threshold, the candidate with the
   highest IoU wins (a small detection only when no other candidate exists). Ties go to the
   detection listed first. A valid box matched by a valid detection is a true positive; an
   ignored box or a small detection makes the pair neither; a valid box left alone is a miss.
3. Unassigned detections of the class (not small) are false positives unless more than the
   class threshold of their own area lies inside a DontCare region.
4. Scores of the true positives (step 2 with "highest score") are sorted and thinned to at
   most 41 thresholds: walking down the sorted list, a score is kept when the recall it
   reaches, i/n_gt, is at least as near the next sampling point k/40 as the recall of the next
   score is (`recall_thresholds`). So with fewer true boxes than 41 the curve has fewer points
   than 41 and AP is capped below 100 even for a perfect detector.
5. At each kept threshold, TP/FP over all images (detections scoring below it left out, so
   equal scores enter together and their order does not matter). Precision slot i = the
   i-th threshold's precision, slots beyond the last threshold are 0, then each slot takes the
   maximum of itself and the slots after it. AP = the protocol's mean of the slots.

Deliberate differences from the devkit: a class x difficulty without valid true boxes is
reported as None ("n/a") and left out of means (the devkit prints 0 or skips the class); a
class with true boxes but no detections gets AP 0 (the devkit skips it); a threshold at which
neither TP nor FP remain (possible when an ignored box takes the detection) has precision 0,
where the devkit's 0/0 would poison the AP with NaN.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...detection.loss import box_iou_np
from ...interfaces import CLASS_IDS, CLASS_NAMES, DETECTION_CLASSES
from ...kitti.labels import KittiFormatError, ObjectLabel

DIFFICULTIES = ("easy", "moderate", "hard")
# Per level: the devkit's MIN_HEIGHT, MAX_OCCLUSION and MAX_TRUNCATION.
MIN_HEIGHT = (40.0, 25.0, 25.0)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.30, 0.50)
IOU_THRESHOLD = {"car": 0.7, "pedestrian": 0.5, "cyclist": 0.5}
KITTI_TYPE = {"car": "Car", "pedestrian": "Pedestrian", "cyclist": "Cyclist"}
NEIGHBOUR_TYPE = {"car": "Van", "pedestrian": "Person_sitting"}
N_SAMPLE_POINTS = 41

# Ground-truth / detection states inside one (image, class, level).
VALID, IGNORED = 0, 1
SMALL = 1  # detection below the level's minimum height (kitti-2019 only)


@dataclass(frozen=True)
class Protocol:
    name: str
    recall_points: int  # 11: slots 0, 4, ..., 40; 40: slots 1..40
    small_detections_ignored: bool
    description: str

    def slots(self) -> np.ndarray:
        return np.arange(0, N_SAMPLE_POINTS, 4) if self.recall_points == 11 else np.arange(1, N_SAMPLE_POINTS)


PROTOCOLS = {
    "kitti-2012": Protocol("kitti-2012", 11, False,
                           "KITTI object devkit before 2019 (the thesis's tables): 11-point AP, small "
                           "unmatched detections are false positives"),
    "kitti-2019": Protocol("kitti-2019", 40, True,
                           "KITTI object devkit since 2019: 40-point AP, detections under the level's "
                           "minimum height (40/25/25 px) ignored"),
}
DEFAULT_PROTOCOL = "kitti-2019"


def get_protocol(protocol: str | Protocol) -> Protocol:
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{protocol}'; one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[protocol]


# --------------------------------------------------------------------- detections of one image
@dataclass(frozen=True)
class FrameDetections:
    """One image's detections in file order: KITTI type names, (N, 4) l t r b boxes, (N,) scores."""

    types: tuple[str, ...]
    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.types)


def detections_from_array(dets: np.ndarray) -> FrameDetections:
    """A DETECTION_DTYPE table (class_id 1..3) in its own row order."""
    names = [KITTI_TYPE.get(CLASS_NAMES[c], CLASS_NAMES[c]) if 0 <= c < len(CLASS_NAMES) else str(c)
             for c in np.asarray(dets["class_id"]).tolist()]
    boxes = np.stack([dets["u_min"], dets["v_min"], dets["u_max"], dets["v_max"]], 1).astype(np.float64)
    return FrameDetections(tuple(names), boxes.reshape(-1, 4), np.asarray(dets["score"], np.float64))


def detections_from_labels(labels: list[ObjectLabel]) -> FrameDetections:
    boxes = np.array([lab.bbox for lab in labels], np.float64).reshape(-1, 4)
    return FrameDetections(tuple(lab.type for lab in labels), boxes, np.array([lab.score for lab in labels], np.float64))


def as_frame_detections(dets) -> FrameDetections:
    if isinstance(dets, FrameDetections):
        return dets
    if isinstance(dets, np.ndarray) and dets.dtype.names and "class_id" in dets.dtype.names:
        return detections_from_array(dets)
    return detections_from_labels(list(dets))


def read_result_file(path: str | Path) -> FrameDetections:
    """A KITTI result file: label_2 lines with a 16th column, the score (the devkit's format)."""
    p = Path(path)
    types, boxes, scores = [], [], []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 16:
            raise KittiFormatError(f"{p}:{n}: a result line has 16 columns (label_2 + score), got {len(parts)}")
        try:
            vals = [float(v) for v in parts[1:]]
        except ValueError as exc:
            raise KittiFormatError(f"{p}:{n}: {exc}") from None
        types.append(parts[0])
        boxes.append(vals[3:7])
        scores.append(vals[14])
    return FrameDetections(tuple(types), np.array(boxes, np.float64).reshape(-1, 4), np.array(scores, np.float64))


def write_result_file(path: str | Path, dets: np.ndarray) -> None:
    """DETECTION_DTYPE rows -> a KITTI result file (3D fields set to the devkit's 'unknown' values)."""
    lines = []
    for d in np.asarray(dets):
        name = KITTI_TYPE.get(CLASS_NAMES[int(d["class_id"])], CLASS_NAMES[int(d["class_id"])])
        lines.append(f"{name} -1 -1 -10 {d['u_min']:.2f} {d['v_min']:.2f} {d['u_max']:.2f} {d['v_max']:.2f} "
                     f"-1 -1 -1 -1000 -1000 -1000 -10 {d['score']:.6f}\n")
    Path(path).write_text("".join(lines))


# --------------------------------------------------------------------- one image, class, level
def devkit_overlap(a: np.ndarray, b: np.ndarray, own_area: bool = False) -> np.ndarray:
    """(A, B) overlap of boxes as the devkit computes it: no +1 pixel, 0 where the boxes do not
    overlap; IoU, or (own_area) intersection / area of the row box."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    denom = np.broadcast_to(area_a, inter.shape) if own_area else area_a + area_b - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(inter > 0, inter / denom, 0.0)
    return np.where(np.isnan(out), 0.0, out)  # degenerate boxes: no overlap


@dataclass
class ClassFrame:
    """One image reduced to what one class at one level needs (the devkit's cleanData)."""

    gt_state: np.ndarray  # (G,) VALID or IGNORED, label-file order
    det_state: np.ndarray  # (D,) VALID or SMALL, file order
    scores: np.ndarray  # (D,)
    iou: np.ndarray  # (G, D)
    in_dontcare: np.ndarray  # (D,) bool: own-area overlap with some DontCare region above the threshold
    n_gt: int
    min_overlap: float

    def __post_init__(self):
        # The matching loop runs once per threshold: keep, per true box, only the detections that
        # overlap it enough (file order), as plain Python values.
        self.candidates = [np.flatnonzero(row > self.min_overlap).tolist() for row in self.iou]
        self.score_list = self.scores.tolist()
        self.valid_list = (self.det_state == VALID).tolist()
        self.gt_valid_list = (self.gt_state == VALID).tolist()
        # Detections that become false positives unless a true box takes them.
        self.fp_pool = (self.det_state == VALID) & ~self.in_dontcare
        self.fp_pool_list = self.fp_pool.tolist()
        self.fp_pool_scores = np.sort(self.scores[self.fp_pool])


@dataclass
class ImageData:
    """What every class and level of one image shares, computed once: types, heights, overlaps."""

    det_types: np.ndarray  # (D,) lower-case type names, file order
    det_heights: np.ndarray  # (D,) whole pixels, truncated as the devkit's int32 does (39.9 -> 39)
    scores: np.ndarray  # (D,)
    gt_types: np.ndarray  # (G,) lower-case, label-file order, DontCare rows left out
    gt_heights: np.ndarray
    gt_occluded: np.ndarray
    gt_truncated: np.ndarray
    iou: np.ndarray  # (G, D)
    dontcare_overlap: np.ndarray  # (D, C) share of each detection's own area inside each DontCare region


def image_data(dets, labels: list[ObjectLabel]) -> ImageData:
    d = as_frame_detections(dets)
    boxes = [lab for lab in labels if lab.type.lower() != "dontcare"]
    regions = np.array([lab.bbox for lab in labels if lab.type.lower() == "dontcare"], np.float64).reshape(-1, 4)
    gt_boxes = np.array([lab.bbox for lab in boxes], np.float64).reshape(-1, 4)
    return ImageData(
        np.array([t.lower() for t in d.types], dtype=object),
        np.floor(np.abs(d.boxes[:, 3] - d.boxes[:, 1])).astype(np.int64),
        d.scores.astype(np.float64),
        np.array([lab.type.lower() for lab in boxes], dtype=object),
        gt_boxes[:, 3] - gt_boxes[:, 1],
        np.array([lab.occluded for lab in boxes], np.float64),
        np.array([lab.truncated for lab in boxes], np.float64),
        devkit_overlap(gt_boxes, d.boxes),
        devkit_overlap(d.boxes, regions, own_area=True))


def prepare_frame(dets, labels: list[ObjectLabel] | None, cls: str, level: int, protocol: Protocol) -> ClassFrame:
    """The devkit's cleanData for one class and level. dets: detections with labels, or an
    ImageData (labels then unused)."""
    img = dets if isinstance(dets, ImageData) else image_data(dets, labels or [])
    kind, neighbour = KITTI_TYPE[cls].lower(), NEIGHBOUR_TYPE.get(cls, "").lower()
    of_class = img.gt_types == kind
    too_hard = ((img.gt_occluded > MAX_OCCLUSION[level]) | (img.gt_truncated > MAX_TRUNCATION[level])
                | (img.gt_heights < MIN_HEIGHT[level]))
    valid_gt = of_class & ~too_hard
    # Boxes of other types (Truck, Cyclist for car, ...) take no part: a detection on one is a false positive.
    gt_rows = np.flatnonzero(of_class | ((img.gt_types == neighbour) if neighbour else False))
    small = img.det_heights < MIN_HEIGHT[level] if protocol.small_detections_ignored else np.zeros(len(img.scores), bool)
    # A small detection of any class stays in (as the devkit): it can still be assigned to this
    # class's true box and then removes that box from hits and misses.
    det_cols = np.flatnonzero(small | (img.det_types == kind))
    thr = IOU_THRESHOLD[cls]
    in_dc = (img.dontcare_overlap[det_cols] > thr).any(1) if img.dontcare_overlap.shape[1] else \
        np.zeros(len(det_cols), bool)
    return ClassFrame(np.where(valid_gt[gt_rows], VALID, IGNORED).astype(np.int8),
                      np.where(small[det_cols], SMALL, VALID).astype(np.int8), img.scores[det_cols],
                      img.iou[np.ix_(gt_rows, det_cols)], in_dc, int(valid_gt.sum()), thr)


@dataclass
class FrameStats:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tp_scores: list = field(default_factory=list)


def frame_statistics(frame: ClassFrame, threshold: float | None = None) -> FrameStats:
    """The devkit's computeStatistics. threshold None: the pass that collects true-positive
    scores (candidates chosen by score, no FP). Otherwise detections scoring below threshold
    are left out, candidates are chosen by IoU and false positives are counted."""
    stats = FrameStats()
    scores, valid_det = frame.score_list, frame.valid_list
    assigned: set[int] = set()
    for g, cands in enumerate(frame.candidates):
        live = [j for j in cands if j not in assigned and (threshold is None or scores[j] >= threshold)]
        if not live:
            if frame.gt_valid_list[g]:
                stats.fn += 1
            continue
        if threshold is None:
            j = max(live, key=scores.__getitem__)  # max() keeps the first of equal scores
        else:
            valid = [j for j in live if valid_det[j]]
            if valid:
                row = frame.iou[g]
                j = max(valid, key=lambda k: row[k])  # highest IoU, the first of equal ones
            else:
                j = live[0]  # only small detections overlap: the first one
        assigned.add(j)
        if frame.gt_valid_list[g] and valid_det[j]:
            stats.tp += 1
            stats.tp_scores.append(scores[j])
    if threshold is not None:
        # False positives: active detections of the pool (valid, outside DontCare) left unassigned.
        active = len(frame.fp_pool_scores) - int(np.searchsorted(frame.fp_pool_scores, threshold, side="left"))
        taken = sum(1 for j in assigned if frame.fp_pool_list[j])  # assigned ones are all active
        stats.fp = active - taken
    return stats


def recall_thresholds(tp_scores, n_gt: int, n_sample_points: int = N_SAMPLE_POINTS) -> list[float]:
    """The devkit's getThresholds: from the true positives' scores (best first) keep the one whose
    recall (i+1)/n_gt lies nearest the next sampling point k/(n-1); the last score is always kept."""
    scores = sorted((float(s) for s in tp_scores), reverse=True)
    kept: list[float] = []
    current_recall = 0.0  # accumulated in steps of 1/40 as the devkit does (same rounding)
    for i, score in enumerate(scores):
        last = i == len(scores) - 1
        left = (i + 1) / float(n_gt)
        right = (i + 2) / float(n_gt) if not last else left
        if (right - current_recall) < (current_recall - left) and not last:
            continue  # the next score's recall is nearer the sampling point
        kept.append(score)
        current_recall += 1.0 / (n_sample_points - 1.0)
    return kept


@dataclass
class DevkitCurve:
    thresholds: np.ndarray  # kept scores, best first
    tp: np.ndarray  # per threshold, summed over images
    fp: np.ndarray
    fn: np.ndarray
    n_gt: int

    def precision_slots(self) -> np.ndarray:
        """(41,) precision per slot after the devkit's running maximum from the right."""
        slots = np.zeros(N_SAMPLE_POINTS)
        denom = self.tp + self.fp
        raw = np.where(denom > 0, self.tp / np.maximum(denom, 1), 0.0)
        slots[:len(raw)] = raw
        for i in range(len(raw)):
            slots[i] = slots[i:].max()
        return slots

    def recall(self) -> np.ndarray:
        denom = self.tp + self.fn
        return np.where(denom > 0, self.tp / np.maximum(denom, 1), 0.0)

    def average_precision(self, protocol: str | Protocol = DEFAULT_PROTOCOL) -> float | None:
        """AP in [0, 1] under the protocol's sampling; None without valid true boxes."""
        if self.n_gt == 0:
            return None
        return float(self.precision_slots()[get_protocol(protocol).slots()].mean())


def class_curve(dets_per_image, labels_per_image, cls: str, level: int,
                protocol: str | Protocol = DEFAULT_PROTOCOL) -> DevkitCurve:
    """The devkit's eval_class for one class and difficulty level over all images
    (labels_per_image None: dets_per_image holds ImageData)."""
    proto = get_protocol(protocol)
    images = dets_per_image if labels_per_image is None else \
        [image_data(d, labels) for d, labels in zip(dets_per_image, labels_per_image)]
    frames = [prepare_frame(img, None, cls, level, proto) for img in images]
    n_gt = sum(f.n_gt for f in frames)
    tp_scores = [s for f in frames for s in frame_statistics(f).tp_scores]
    thresholds = np.array(recall_thresholds(tp_scores, n_gt) if n_gt else [], np.float64)
    tp, fp, fn = (np.zeros(len(thresholds), np.int64) for _ in range(3))
    for f in frames:
        if not any(f.candidates):
            # Nothing can be matched: every valid box is a miss and every active pool detection
            # a false positive, at every threshold.
            fn += int((f.gt_state == VALID).sum())
            fp += len(f.fp_pool_scores) - np.searchsorted(f.fp_pool_scores, thresholds, side="left")
            continue
        for t, thr in enumerate(thresholds):
            s = frame_statistics(f, thr)
            tp[t] += s.tp
            fp[t] += s.fp
            fn[t] += s.fn
    return DevkitCurve(thresholds, tp, fp, fn, n_gt)


# --------------------------------------------------------------------- all classes and levels
def evaluate(dets_per_image, labels_per_image, protocol: str | Protocol = DEFAULT_PROTOCOL,
             classes: tuple[str, ...] = DETECTION_CLASSES) -> dict:
    """AP (%) per class and difficulty under one protocol.

    dets_per_image: per image a DETECTION_DTYPE table, a FrameDetections or a list of
    ObjectLabel with scores (a result file). Returns a JSON-ready dict (None, never NaN):
    {"protocol", "description", "recall_points", "per_class": {cls: {level: {"ap", "n_gt",
    "precision"}, "mean_ap"}}, "mean_ap_by_level": {level: ...}, "map", "map_cells"}; "map"
    averages the class x level cells that have true boxes (the thesis's mAP averages all 9)."""
    proto = get_protocol(protocol)
    images = [image_data(d, labels) for d, labels in zip(dets_per_image, labels_per_image)]
    per_class: dict = {}
    cells: list[float] = []
    by_level: dict[str, list[float]] = {d: [] for d in DIFFICULTIES}
    for cls in classes:
        row: dict = {}
        for level, name in enumerate(DIFFICULTIES):
            curve = class_curve(images, None, cls, level, proto)
            ap = curve.average_precision(proto)
            ap = None if ap is None else 100.0 * ap
            row[name] = {"ap": ap, "n_gt": curve.n_gt,
                         "precision": [round(float(p), 6) for p in curve.precision_slots()]}
            if ap is not None:
                cells.append(ap)
                by_level[name].append(ap)
        row["mean_ap"] = _mean([row[d]["ap"] for d in DIFFICULTIES])
        per_class[cls] = row
    return {"protocol": proto.name, "description": proto.description, "recall_points": proto.recall_points,
            "per_class": per_class, "mean_ap_by_level": {d: _mean(v) for d, v in by_level.items()},
            "map": _mean(cells), "map_cells": len(cells)}


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def format_table(result: dict) -> str:
    """Plain-text AP table: one cell per class and level, 'AP (n=true boxes)' or 'n/a (n=0)'."""
    def fmt(v):
        return "n/a" if v is None else f"{v:.1f}"

    lines = [f"AP (%) under {result['protocol']}: {result['description']}; n = valid true boxes",
             f"{'class':12s} " + " ".join(f"{d:>16s}" for d in DIFFICULTIES) + f" {'mean':>7s}"]
    for cls, row in result["per_class"].items():
        cells = [f"{fmt(row[d]['ap'])} (n={row[d]['n_gt']})" for d in DIFFICULTIES]
        lines.append(f"{cls:12s} " + " ".join(f"{c:>16s}" for c in cells) + f" {fmt(row['mean_ap']):>7s}")
    lines.append(f"mAP {fmt(result['map'])} ({result['protocol']}, mean of {result['map_cells']} class x level cells "
                 "with true boxes); by level " + ", ".join(f"{d} {fmt(v)}" for d, v in result["mean_ap_by_level"].items()))
    return "\n".join(lines)


# --------------------------------------------------------------------- recall vs N_box
def _scored_truths(labels: list[ObjectLabel]) -> list[tuple[ObjectLabel, str]]:
    """The car/pedestrian/cyclist true boxes of any difficulty (easy..hard), with their class."""
    return [(lab, cls) for lab in labels for cls in DETECTION_CLASSES
            if lab.type == KITTI_TYPE[cls] and lab.difficulty() >= 0]


def first_match_rank(pred: np.ndarray, labels: list[ObjectLabel]) -> tuple[np.ndarray, int]:
    """For every car/pedestrian/cyclist ground truth of any difficulty (easy..hard), the rank
    (0-based, by class score) of the best-ranked predicted box of the same class with IoU above
    the class threshold (a huge number when none). pred: (A, 5+C) in image pixels.
    Returns (ranks, number of ground-truth boxes)."""
    from ...detection.decode import scores_and_classes

    gts = [(lab.bbox, cls) for lab, cls in _scored_truths(labels)]
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


def object_matches(kept, raw: np.ndarray, labels: list[ObjectLabel]) -> list[dict]:
    """Why each car/pedestrian/cyclist true box (any difficulty) was or was not found: the best IoU
    among the image's kept detections of its class (with that detection's score and its rank among
    them, 0 = top) and the best IoU among all raw boxes of its class before NMS and top-k
    (raw: (A, 5+C) as `first_match_rank` takes). A box the devkit misses with raw IoU above the
    class threshold was lost in decoding (NMS, top-k); below it, in the network's regression.
    `raw_edges` says how that best raw box is wrong: its left, top, right and bottom edge minus the
    true box's, in pixels (a box 20 px short on the right has right -20)."""
    from ...detection.decode import scores_and_classes

    kept = as_frame_detections(kept)
    raw_scores, raw_cls = scores_and_classes(raw)
    rows = []
    for lab, cls in _scored_truths(labels):
        bbox = np.asarray(lab.bbox, np.float64)[None]
        mine = np.flatnonzero(np.asarray(kept.types) == KITTI_TYPE[cls])
        row = {"class": cls, "difficulty": DIFFICULTIES[lab.difficulty()], "bbox": [round(float(v), 1) for v in lab.bbox],
               "height_px": round(float(lab.bbox[3] - lab.bbox[1]), 1), "threshold": IOU_THRESHOLD[cls],
               "kept_iou": 0.0, "kept_score": None, "kept_rank": None, "kept_box": None, "raw_iou": 0.0,
               "raw_box": None, "raw_edges": None}
        if len(mine):
            order = mine[np.argsort(-kept.scores[mine], kind="stable")]
            iou = box_iou_np(bbox, kept.boxes[order])[0]
            best = int(np.argmax(iou))
            row.update(kept_iou=float(iou[best]), kept_score=float(kept.scores[order[best]]), kept_rank=best,
                       kept_box=[round(float(v), 1) for v in kept.boxes[order[best]]])
        same = np.flatnonzero(raw_cls + 1 == CLASS_IDS[cls])
        if len(same):
            raw_iou = box_iou_np(bbox, raw[same, :4])[0]
            best_raw = raw[same[int(np.argmax(raw_iou))], :4].astype(np.float64)
            row.update(raw_iou=float(raw_iou.max()), raw_box=[round(float(v), 1) for v in best_raw],
                       raw_edges=[round(float(v), 1) for v in best_raw - bbox[0]])
        rows.append(row)
    return rows


def format_object_matches(rows_per_frame: dict[str, list[dict]]) -> str:
    """Plain-text table of `object_matches` rows, one line per true box."""
    lines = [f"{'frame':>8s} {'class':10s} {'level':8s} {'h px':>5s} {'kept IoU':>8s} {'rank':>4s} {'score':>5s} "
             f"{'raw IoU':>7s} {'its edges - truth (l t r b px)':>30s}  found"]
    for frame, rows in rows_per_frame.items():
        for r in rows:
            found = "yes" if r["kept_iou"] > r["threshold"] else (
                "lost in NMS/top-k" if r["raw_iou"] > r["threshold"] else "no box close enough")
            edges = "-" if r.get("raw_edges") is None else " ".join(f"{v:+.0f}" for v in r["raw_edges"])
            lines.append(f"{frame:>8s} {r['class']:10s} {r['difficulty']:8s} {r['height_px']:5.0f} {r['kept_iou']:8.2f} "
                         f"{'-' if r['kept_rank'] is None else r['kept_rank']:>4} "
                         f"{'-' if r['kept_score'] is None else format(r['kept_score'], '.2f'):>5s} {r['raw_iou']:7.2f} "
                         f"{edges:>30s}  {found}")
    return "\n".join(lines)


def recall_vs_nbox(ranks_per_image: list[np.ndarray], n_values) -> np.ndarray:
    """Overall recall when each image keeps its top-N boxes, for each N in n_values."""
    ranks = np.concatenate(ranks_per_image) if ranks_per_image else np.zeros(0, np.int64)
    if len(ranks) == 0:
        return np.full(len(n_values), np.nan)
    return np.asarray([(ranks < n).mean() for n in n_values], dtype=np.float64)


__all__ = ["PROTOCOLS", "DEFAULT_PROTOCOL", "Protocol", "FrameDetections", "evaluate", "class_curve",
           "prepare_frame", "frame_statistics", "recall_thresholds", "read_result_file", "write_result_file",
           "first_match_rank", "recall_vs_nbox", "format_table", "object_matches", "format_object_matches"]
