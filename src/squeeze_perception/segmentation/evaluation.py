"""Class-level and instance-level precision / recall / IoU (thesis section 4.4), point-wise
labels from KITTI 3D boxes, and table rendering in the layout of Tables 4.1, 6.1 and 6.2.

Instance matching follows the thesis: ground-truth instances sorted by point count
(largest first), each takes the still unmatched predicted instance of the same class with
the largest IoU; instance-level TP counts only points shared with the matched instance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..interfaces import CLASS_NAMES

OBJECT_CLASSES = (1, 2, 3)
# KITTI object types -> our class ids (Van counts as car, Person_sitting as pedestrian);
# Truck, Tram, Misc and DontCare stay unknown.
KITTI_TYPE_TO_CLASS = {"Car": 1, "Van": 1, "Pedestrian": 2, "Person_sitting": 2, "Cyclist": 3}


@dataclass
class SegCounts:
    """Accumulated point counts per class (index = class id)."""

    n: int = len(CLASS_NAMES)
    tp: np.ndarray = field(default=None)  # type: ignore[assignment]
    pred: np.ndarray = field(default=None)  # type: ignore[assignment]
    gt: np.ndarray = field(default=None)  # type: ignore[assignment]
    inst_tp: np.ndarray = field(default=None)  # type: ignore[assignment]
    frames: int = 0
    instance_frames: int = 0

    def __post_init__(self):
        for name in ("tp", "pred", "gt", "inst_tp"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.n, dtype=np.int64))

    def add_class_level(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred, gt = np.asarray(pred).ravel(), np.asarray(gt).ravel()
        self.tp += np.bincount(gt[pred == gt], minlength=self.n)[: self.n]
        self.pred += np.bincount(pred, minlength=self.n)[: self.n]
        self.gt += np.bincount(gt, minlength=self.n)[: self.n]
        self.frames += 1

    def add_instance_level(self, pred: np.ndarray, pred_inst: np.ndarray, gt: np.ndarray,
                           gt_inst: np.ndarray) -> None:
        self.inst_tp += instance_true_positives(pred, pred_inst, gt, gt_inst, self.n)
        self.instance_frames += 1

    @staticmethod
    def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(b > 0, a / np.maximum(b, 1), np.nan)

    def class_level(self) -> dict[str, np.ndarray]:
        union = self.pred + self.gt - self.tp
        return {"P": self._ratio(self.tp, self.pred), "R": self._ratio(self.tp, self.gt),
                "IoU": self._ratio(self.tp, union)}

    def instance_level(self) -> dict[str, np.ndarray]:
        union = self.pred + self.gt - self.tp
        return {"P": self._ratio(self.inst_tp, self.pred), "R": self._ratio(self.inst_tp, self.gt),
                "IoU": self._ratio(self.inst_tp, union)}


def instance_true_positives(pred: np.ndarray, pred_inst: np.ndarray, gt: np.ndarray,
                            gt_inst: np.ndarray, n_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """Per class: sum over matched pairs of |P_i,c intersect G_M(i),c|."""
    out = np.zeros(n_classes, dtype=np.int64)
    pred, pred_inst = np.asarray(pred).ravel(), np.asarray(pred_inst).ravel()
    gt, gt_inst = np.asarray(gt).ravel(), np.asarray(gt_inst).ravel()
    for c in OBJECT_CLASSES:
        p_sel = (pred == c) & (pred_inst >= 0)
        g_sel = (gt == c) & (gt_inst >= 0)
        if not p_sel.any() or not g_sel.any():
            continue
        p_ids, p_sizes = np.unique(pred_inst[p_sel], return_counts=True)
        g_ids, g_sizes = np.unique(gt_inst[g_sel], return_counts=True)
        both = p_sel & g_sel
        pairs, inter = np.unique(np.stack([gt_inst[both], pred_inst[both]], 1), axis=0, return_counts=True) \
            if both.any() else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
        p_size = dict(zip(p_ids.tolist(), p_sizes.tolist()))
        used: set[int] = set()
        for g in g_ids[np.argsort(-g_sizes, kind="stable")]:
            g_size = int(g_sizes[g_ids == g][0])
            rows = np.flatnonzero(pairs[:, 0] == g) if len(pairs) else np.zeros(0, np.int64)
            best, best_iou, best_inter = -1, 0.0, 0
            for r in rows:
                p = int(pairs[r, 1])
                if p in used:
                    continue
                iou = inter[r] / (g_size + p_size[p] - inter[r])
                if iou > best_iou:
                    best, best_iou, best_inter = p, iou, int(inter[r])
            if best >= 0:
                used.add(best)
                out[c] += best_inter
    return out


# --------------------------------------------------------------------- labels from 3D boxes
def points_in_boxes(points: np.ndarray, labels, calib) -> tuple[np.ndarray, np.ndarray]:
    """Point-wise (class, instance) from KITTI 3D boxes (all points inside a box take its class).

    Computed here with ObjectLabel.corners_rect and the calibration: the box test is done in
    the rectified camera frame, where KITTI boxes rotate about the vertical (y) axis only."""
    n = len(points)
    cls = np.zeros(n, dtype=np.int64)
    inst = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return cls, inst
    rect = calib.velo_to_rect_points(np.asarray(points)[:, :3])
    for k, lab in enumerate(labels):
        c = KITTI_TYPE_TO_CLASS.get(lab.type)
        if c is None:
            continue
        h, w, length = lab.dimensions
        rel = rect - lab.location
        cy, sy = np.cos(lab.rotation_y), np.sin(lab.rotation_y)
        # Into the box frame: undo the rotation about y.
        bx = cy * rel[:, 0] - sy * rel[:, 2]
        bz = sy * rel[:, 0] + cy * rel[:, 2]
        inside = (np.abs(bx) <= length / 2) & (np.abs(bz) <= w / 2) & (rel[:, 1] <= 0) & (rel[:, 1] >= -h)
        cls[inside] = c
        inst[inside] = k
    return cls, inst


# --------------------------------------------------------------------- tables
def _fmt(v: float) -> str:
    return "-" if not np.isfinite(v) else f"{100 * v:.1f}"


def table_class_instance(rows: list[tuple[str, SegCounts]], classes=OBJECT_CLASSES) -> str:
    """Table 4.1 layout: per class, one line per variant, class-level and instance-level P/R/IoU."""
    lines = ["| class | model | P | R | IoU | inst. P | inst. R | inst. IoU |",
             "|---|---|---|---|---|---|---|---|"]
    for c in classes:
        for name, counts in rows:
            cl, il = counts.class_level(), counts.instance_level()
            inst = [_fmt(il[k][c]) for k in ("P", "R", "IoU")] if counts.instance_frames else ["n/a"] * 3
            lines.append(f"| {CLASS_NAMES[c]} | {name} | " + " | ".join(_fmt(cl[k][c]) for k in ("P", "R", "IoU"))
                         + " | " + " | ".join(inst) + " |")
    return "\n".join(lines)


def table_iou(rows: list[tuple[str, SegCounts]], classes=OBJECT_CLASSES, reference: dict | None = None) -> str:
    """Tables 6.1 / 6.2 layout: IoU per class (and the mean over classes with ground truth)."""
    head = " | ".join(CLASS_NAMES[c] for c in classes)
    lines = [f"| model | {head} | average |" + (" thesis |" if reference else ""),
             "|---|" + "---|" * (len(classes) + 1) + ("---|" if reference else "")]
    for name, counts in rows:
        iou = counts.class_level()["IoU"]
        vals = [iou[c] for c in classes]
        finite = [v for v in vals if np.isfinite(v)]
        avg = float(np.mean(finite)) if finite else float("nan")
        ref = f" {reference.get(name, '')} |" if reference else ""
        lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in vals) + f" | {_fmt(avg)} |" + ref)
    return "\n".join(lines)


def kitti_object_frames(root: Path, velodyne_folder: str = "velodyne") -> list[str]:
    return sorted(p.stem for p in (root / velodyne_folder).glob("*.bin"))


# --------------------------------------------------------------------- dataset runners
def model_meta(weights: Path) -> dict:
    import torch

    try:
        return dict(torch.load(weights, map_location="cpu", weights_only=False).get("meta", {}))
    except Exception:  # noqa: BLE001 - meta is informational only
        return {}


def evaluate_grids(pipeline, files: list[Path], renderer=None, progress: bool = True) -> SegCounts:
    """Class-level metrics on lidar_2d grids, cell-wise over cells with a return."""
    import torch
    from tqdm import tqdm

    from .data import load_grid

    counts = SegCounts()
    for f in tqdm(files, desc="grids", disable=not progress, leave=False):
        grid = load_grid(f)
        batch = pipeline.network_input([_GridView(grid)])
        if renderer is not None:
            from .train import apply_rendered_intensity

            batch = apply_rendered_intensity(renderer, torch.from_numpy(batch)).numpy()
        logits = pipeline.run_crf(pipeline.run_network(batch), batch)
        valid = grid[..., 4] > 0
        counts.add_class_level(logits[0].argmax(0)[valid], grid[..., 5].astype(np.int64)[valid])
    return counts


class _GridView:
    """Adapter giving a lidar_2d array the `.grid` attribute pipeline.network_input expects."""

    def __init__(self, grid: np.ndarray):
        self.grid = grid[..., :5]


def evaluate_object_frames(pipeline, root: Path, velodyne_folder: str = "velodyne", max_frames: int = 0,
                           progress: bool = True) -> SegCounts:
    """Class- and instance-level metrics on KITTI-object-layout frames, over the points inside
    the pipeline's field of view. Ground truth: the simulator's exact per-point labels
    (velodyne_labels/) when present, else points inside the 3D boxes (real KITTI)."""
    from tqdm import tqdm

    from ..kitti.calib import load_object_calib
    from ..kitti.labels import read_labels, read_velodyne_bin

    counts = SegCounts()
    frames = kitti_object_frames(root, velodyne_folder)
    if max_frames:
        frames = frames[:max_frames]
    for fid in tqdm(frames, desc=f"{root.name} frames", disable=not progress, leave=False):
        pts = read_velodyne_bin(root / velodyne_folder / f"{fid}.bin")
        exact = root / "velodyne_labels" / f"{fid}.npy"  # the simulator's per-point [class, instance]
        if exact.exists():
            point_labels = np.load(exact)
            gt, gt_inst = point_labels[:, 0].astype(np.int64), point_labels[:, 1].astype(np.int64)
        else:
            gt, gt_inst = points_in_boxes(pts, read_labels(root / "label_2" / f"{fid}.txt"),
                                          load_object_calib(root / "calib" / f"{fid}.txt"))
        res = pipeline.process(pts)
        sel = res.fov_mask if res.fov_mask is not None else np.zeros(len(pts), bool)
        counts.add_class_level(res.labels[sel].astype(np.int64), gt[sel])
        counts.add_instance_level(res.labels[sel], res.instances[sel], gt[sel], gt_inst[sel])
    return counts


def counts_to_json(counts: SegCounts) -> dict:
    out = {"frames": counts.frames, "instance_frames": counts.instance_frames,
           "tp": counts.tp.tolist(), "pred": counts.pred.tolist(), "gt": counts.gt.tolist(),
           "inst_tp": counts.inst_tp.tolist()}
    for level, metrics in (("class", counts.class_level()), ("instance", counts.instance_level())):
        out[level] = {k: [None if not np.isfinite(v) else round(float(v), 4) for v in vals]
                      for k, vals in metrics.items()}
    return out


def counts_from_json(d: dict) -> SegCounts:
    c = SegCounts()
    c.tp, c.pred, c.gt, c.inst_tp = (np.array(d[k], dtype=np.int64) for k in ("tp", "pred", "gt", "inst_tp"))
    c.frames, c.instance_frames = d["frames"], d["instance_frames"]
    return c
