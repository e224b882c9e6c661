"""Instance precision and recall against KITTI 3D boxes in bird's-eye view (BEV).

LATTE (thesis ch. 5, Table 5.2) counts an annotated box as a true positive when it overlaps a
ground-truth box by more than 50 %; we apply that to the pipeline's instances: the LATTE box
fitted to each DBSCAN instance against the KITTI 3D box projected to the ground plane, per
class, with BEV IoU >= `iou_threshold` (0.5).

- Ground truth: the KITTI boxes of Car, Pedestrian and Cyclist, converted from the rectified
  camera frame to the Velodyne frame with the frame's calibration. Van and Person_sitting, the
  neighbouring classes the KITTI devkit ignores (and `kitti.pointwise.label_points` ignores),
  are ignored boxes of car and pedestrian: a prediction matching one is not counted.
  Truck / Tram / Misc are background: a car instance on a truck is a false positive.
- A ground-truth box with fewer than `min_gt_points` points of the evaluated scan inside the
  pipeline's field of view is *ignored* (no instance of minPts 20 can be formed from it): it is
  not a miss, and a prediction matched to it is not counted.
- KITTI labels only objects seen by camera 2, so a prediction counts only when its box centre
  projects into the image (in front of the camera); a prediction whose centre falls into a
  `DontCare` rectangle is ignored unless it matches a box.
- Matching per class and frame: pairs with IoU >= threshold, greedily by decreasing IoU,
  one-to-one. TP = matched non-ignored boxes, FN = unmatched non-ignored boxes, FP = counted
  predictions matched to nothing. Precision = TP / (TP + FP), recall = TP / (TP + FN), summed
  over frames.

BEV IoU of two rotated rectangles: convex polygon intersection (Sutherland-Hodgman clipping)
and the shoelace area, exact for convex polygons.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...interfaces import CLASS_NAMES
from ...kitti.pointwise import IGNORED_TYPES, OBJECT_TYPE_TO_CLASS
from .evaluation import OBJECT_CLASSES, real_object_sources

NEIGHBOUR_CLASS = {"Van": 1, "Person_sitting": 2}  # ignored boxes of these classes

KITTI_IMAGE_SIZE = (1242, 375)  # used when the frame's image is missing


# --------------------------------------------------------------------- geometry
def polygon_area(poly: np.ndarray) -> float:
    """Signed shoelace area (positive counter-clockwise)."""
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _ccw(poly: np.ndarray) -> np.ndarray:
    poly = np.asarray(poly, dtype=np.float64)
    return poly if polygon_area(poly) >= 0 else poly[::-1]


def clip_convex(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Intersection of two convex counter-clockwise polygons (Sutherland-Hodgman)."""
    out = list(map(tuple, subject))
    n = len(clip)
    for i in range(n):
        if not out:
            break
        a, b = clip[i], clip[(i + 1) % n]
        edge = b - a

        def inside(p):
            return edge[0] * (p[1] - a[1]) - edge[1] * (p[0] - a[0]) >= 0.0

        def cross_point(p, q):
            d = np.subtract(q, p)
            den = edge[0] * d[1] - edge[1] * d[0]
            t = (edge[1] * (p[0] - a[0]) - edge[0] * (p[1] - a[1])) / den
            return (p[0] + t * d[0], p[1] + t * d[1])

        src, out = out, []
        for j in range(len(src)):
            p, q = src[j], src[(j + 1) % len(src)]
            if inside(q):
                if not inside(p):
                    out.append(cross_point(p, q))
                out.append(q)
            elif inside(p):
                out.append(cross_point(p, q))
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def bev_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two convex polygons given as (K, 2) corner arrays (any orientation)."""
    a, b = _ccw(a), _ccw(b)
    area_a, area_b = polygon_area(a), polygon_area(b)
    # Far apart: skip the clipping.
    if np.linalg.norm(a.mean(0) - b.mean(0)) > np.ptp(a, 0).max() + np.ptp(b, 0).max():
        return 0.0
    inter = max(polygon_area(clip_convex(a, b)), 0.0)
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def bev_iou_matrix(pred: list[np.ndarray], gt: list[np.ndarray]) -> np.ndarray:
    return np.array([[bev_iou(p, g) for g in gt] for p in pred]).reshape(len(pred), len(gt))


# --------------------------------------------------------------------- ground truth
@dataclass
class GtBox:
    cls: int
    corners: np.ndarray  # (4, 2) Velodyne x, y
    points: int = 0  # scan points inside the box (within the evaluated field of view)
    ignored: bool = False


def _box_class(label) -> int | None:
    return OBJECT_TYPE_TO_CLASS.get(label.type, NEIGHBOUR_CLASS.get(label.type))


def gt_boxes_bev(labels, calib) -> list[GtBox]:
    """Boxes of Car / Pedestrian / Cyclist, and Van / Person_sitting as ignored car / pedestrian."""
    out = []
    for lab in labels:
        c = _box_class(lab)
        if c is not None:
            out.append(GtBox(c, calib.rect_to_velo(lab.corners_rect()[:4])[:, :2], ignored=lab.type in IGNORED_TYPES))
    return out


def instance_box_corners(table: np.ndarray) -> list[np.ndarray]:
    from ...segmentation.boxfit import Box

    return [Box(r["x"], r["y"], r["z"], r["length"], r["width"], r["height"], r["yaw"]).corners_xy() for r in table]


def png_size(path: Path) -> tuple[int, int] | None:
    try:
        head = Path(path).read_bytes()[:24]
    except OSError:
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", head[16:24])


# --------------------------------------------------------------------- counting
@dataclass
class InstanceCounts:
    n: int = len(CLASS_NAMES)
    tp: np.ndarray = field(default=None)  # type: ignore[assignment]
    fp: np.ndarray = field(default=None)  # type: ignore[assignment]
    fn: np.ndarray = field(default=None)  # type: ignore[assignment]
    ignored_gt: np.ndarray = field(default=None)  # type: ignore[assignment]
    ignored_pred: np.ndarray = field(default=None)  # type: ignore[assignment]
    matched_iou: list = field(default_factory=list)  # (class, IoU) of every TP
    frames: int = 0

    def __post_init__(self):
        for name in ("tp", "fp", "fn", "ignored_gt", "ignored_pred"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.n, dtype=np.int64))

    def precision(self) -> np.ndarray:
        d = self.tp + self.fp
        return np.where(d > 0, self.tp / np.maximum(d, 1), np.nan)

    def recall(self) -> np.ndarray:
        d = self.tp + self.fn
        return np.where(d > 0, self.tp / np.maximum(d, 1), np.nan)

    def to_json(self) -> dict:
        def r(v):
            return [None if not np.isfinite(x) else round(float(x), 4) for x in v]

        return {"frames": self.frames, "tp": self.tp.tolist(), "fp": self.fp.tolist(), "fn": self.fn.tolist(),
                "ignored_gt": self.ignored_gt.tolist(), "ignored_pred": self.ignored_pred.tolist(),
                "precision": r(self.precision()), "recall": r(self.recall()),
                "mean_matched_iou": r([np.mean([i for c2, i in self.matched_iou if c2 == c]) if any(
                    c2 == c for c2, _ in self.matched_iou) else np.nan for c in range(self.n)])}


def match_frame(pred_corners: list[np.ndarray], pred_cls: np.ndarray, pred_counted: np.ndarray,
                gt: list[GtBox], counts: InstanceCounts, iou_threshold: float = 0.5) -> list[tuple[int, int, float]]:
    """Add one frame's TP / FP / FN to `counts`; returns the matched (pred, gt, IoU) pairs.

    pred_counted: (P,) bool, False for predictions outside the labelled region (ignored
    unless they match a box)."""
    pred_cls = np.asarray(pred_cls)
    pairs_out = []
    for c in OBJECT_CLASSES:
        p_idx = np.flatnonzero(pred_cls == c)
        g_idx = [k for k, g in enumerate(gt) if g.cls == c]
        iou = bev_iou_matrix([pred_corners[i] for i in p_idx], [gt[k].corners for k in g_idx])
        cand = np.argwhere(iou >= iou_threshold)
        order = np.argsort(-iou[cand[:, 0], cand[:, 1]], kind="stable") if len(cand) else []
        used_p, used_g = set(), set()
        for o in order:
            i, j = cand[o]
            if i in used_p or j in used_g:
                continue
            used_p.add(i)
            used_g.add(j)
            pairs_out.append((int(p_idx[i]), int(g_idx[j]), float(iou[i, j])))
            if gt[g_idx[j]].ignored:
                counts.ignored_pred[c] += 1
            else:
                counts.tp[c] += 1
                counts.matched_iou.append((c, float(iou[i, j])))
        for j, k in enumerate(g_idx):
            if gt[k].ignored:
                counts.ignored_gt[c] += 1
            elif j not in used_g:
                counts.fn[c] += 1
        for i, p in enumerate(p_idx):
            if i in used_p:
                continue
            if pred_counted[p]:
                counts.fp[c] += 1
            else:
                counts.ignored_pred[c] += 1
    counts.frames += 1
    return pairs_out


# --------------------------------------------------------------------- real KITTI object frames
@dataclass
class ObjectFrame:
    name: str  # e.g. "object/000001"
    velodyne: Path
    label: Path
    calib: Path
    image: Path


def real_object_frames(root: Path) -> list[ObjectFrame]:
    """The labelled real object frames of ../shared/data/kitti_real: object/training (full
    scans, 000000-000002) and object_reduced/training (camera-frustum scan, 000134)."""
    out = []
    for base, velo in real_object_sources(root):  # the same frames seg eval scores as real_object
        for f in sorted((base / velo).glob("*.bin")):
            fid = f.stem
            out.append(ObjectFrame(f"{base.parent.name}/{fid}", f, base / "label_2" / f"{fid}.txt",
                                   base / "calib" / f"{fid}.txt", base / "image_2" / f"{fid}.png"))
    return out


def evaluate_frame(pipeline, frame: ObjectFrame, inst: InstanceCounts, point_counts=None,
                   iou_threshold: float = 0.5, min_gt_points: int = 20) -> dict:
    """Run the pipeline on one labelled frame; add instance counts (and class-level point counts
    over the field of view, ignored points left out as in seg eval, to `point_counts`, an
    evaluation.SegCounts, when given)."""
    from ...kitti.calib import load_object_calib
    from ...kitti.labels import read_labels, read_velodyne_bin
    from ...kitti.pointwise import EVAL_IGNORE_BAND_M, label_points

    pts = read_velodyne_bin(frame.velodyne)
    labels = read_labels(frame.label)
    calib = load_object_calib(frame.calib)
    res = pipeline.process(pts)
    fov = res.fov_mask if res.fov_mask is not None else np.zeros(len(pts), bool)
    from ...kitti.pointwise import points_in_box

    truth = label_points(pts, labels, calib, ignore_band=EVAL_IGNORE_BAND_M)  # point counts only
    k_of_box = [k for k, lab in enumerate(labels) if _box_class(lab) is not None]
    boxes = gt_boxes_bev(labels, calib)  # same order
    for b, k in zip(boxes, k_of_box):
        b.points = int((points_in_box(pts, labels[k], calib) & fov).sum())
        b.ignored = b.ignored or b.points < min_gt_points
    corners = instance_box_corners(res.table)
    w, h = png_size(frame.image) or KITTI_IMAGE_SIZE
    centres = np.array([[r["x"], r["y"], r["z"]] for r in res.table]).reshape(-1, 3)
    uv, depth = calib.project_velo(centres)
    counted = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    for lab in labels:
        if lab.type == "DontCare":
            l, t, r, b = lab.bbox
            counted &= ~((uv[:, 0] >= l) & (uv[:, 0] <= r) & (uv[:, 1] >= t) & (uv[:, 1] <= b))
    pairs = match_frame(corners, res.table["class_id"], counted, boxes, inst, iou_threshold)
    if point_counts is not None:
        sel = fov & ~truth.ignored
        point_counts.add_class_level(res.labels[sel].astype(np.int64), truth.classes[sel].astype(np.int64))
    return {"frame": frame.name, "points": int(len(pts)), "in_fov": int(fov.sum()),
            "instances": int(len(res.table)), "counted_instances": int(counted.sum()),
            "ground_removed_points": int(res.ground_removed.sum()) if res.ground_removed is not None else 0,
            "ground_ms": round(res.ground_ms, 3),
            "gt": [{"class": CLASS_NAMES[b.cls], "points": b.points, "ignored": b.ignored} for b in boxes],
            "matches": [{"class": CLASS_NAMES[int(res.table["class_id"][p])], "iou": round(i, 3)} for p, _, i in pairs]}


def evaluate_real_instances(pipeline, root: Path, iou_threshold: float = 0.5, min_gt_points: int = 20) -> dict:
    """Instance P/R (BEV IoU) and point-level P/R/IoU over the real labelled object frames."""
    from .evaluation import SegCounts, counts_to_json

    inst, pts = InstanceCounts(), SegCounts()
    frames = [evaluate_frame(pipeline, f, inst, pts, iou_threshold, min_gt_points) for f in real_object_frames(root)]
    return {"instances": inst.to_json(), "points": counts_to_json(pts), "frames": frames,
            "iou_threshold": iou_threshold, "min_gt_points": min_gt_points}


def _pct(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def table_instances(rows: list[tuple[str, dict]], classes=OBJECT_CLASSES) -> str:
    """Per class and variant: instance TP / FP / FN, precision, recall (BEV IoU >= threshold),
    and point-level P / R / IoU."""
    lines = ["| class | variant | TP | FP | FN | inst. P | inst. R | point P | point R | point IoU |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in classes:
        for name, r in rows:
            i, p = r["instances"], r["points"]["class"]
            lines.append(f"| {CLASS_NAMES[c]} | {name} | {i['tp'][c]} | {i['fp'][c]} | {i['fn'][c]} | "
                         f"{_pct(i['precision'][c])} | {_pct(i['recall'][c])} | {_pct(p['P'][c])} | "
                         f"{_pct(p['R'][c])} | {_pct(p['IoU'][c])} |")
    return "\n".join(lines)


def ground_latency(pipeline, root: Path, repeats: int = 30) -> dict:
    """CPU time of the ground stage (segmented fit over the field of view + test of the points the
    network labelled as objects), per real frame, `repeats` times on this thread
    (time.thread_time: time the thread ran, so other jobs on a shared machine inflate it less
    than wall time). The network labels come from one pipeline run with ground removal off."""
    import time

    from ...kitti.labels import read_velodyne_bin
    from ...segmentation.ground import fit_segmented_ground

    was, pipeline.ground_removal = pipeline.ground_removal, False
    out = {}
    try:
        for f in real_object_frames(root):
            pts = read_velodyne_bin(f.velodyne)
            res = pipeline.process(pts)
            fov = res.fov_mask
            p = pts[fov, :4].astype(np.float32)
            obj = p[res.labels[fov] > 0]
            ts = []
            for _ in range(repeats):
                t0 = time.thread_time()
                g = fit_segmented_ground(p, threshold=pipeline.ground_threshold, max_slope_deg=pipeline.ground_max_slope)
                g.is_ground(obj)
                ts.append((time.thread_time() - t0) * 1e3)
            out[f.name] = {"fov_points": int(len(p)), "object_points": int(len(obj)),
                           "median_ms": round(float(np.median(ts)), 3), "min_ms": round(float(np.min(ts)), 3),
                           "max_ms": round(float(np.max(ts)), 3)}
    finally:
        pipeline.ground_removal = was
    return out


# --------------------------------------------------------------------- CLI (`seg eval --instances`)
# (variant name, ground removal, size gate, box completion): the stages after the network added one
# at a time; the last is the node's default.
PIPELINE_VARIANTS = (("ground removal off", False, False, False), ("ground removal on", True, False, False),
                     ("ground removal on + size gate", True, True, False),
                     ("ground removal on + size gate + box completion", True, True, True))


def run_instance_eval(args) -> int:
    """`squeeze-perception seg eval --instances`: for each model of --models, the real labelled
    object frames with ground removal off, on, on + the size gate, and + box completion (the node's
    default); table on stdout, JSON in --out (default out/seg/instances.json),
    and docs/img/seg_real_topview.png (frame 000134, first model, off vs on)."""
    import json

    import torch

    from ...paths import kitti_real_dir, project_root
    from ...segmentation.pipeline import SegmentationPipeline

    torch.set_num_threads(max(args.threads, 1))
    root = Path(args.kitti_root) if args.kitti_root else kitti_real_dir()
    results, rows = {}, []
    dbscan = {k: v for k, v in (("cluster_eps", getattr(args, "cluster_eps", None)),
                                 ("cluster_min_points", getattr(args, "cluster_min_points", None)))
              if v is not None}  # unset: the node's defaults
    for name in args.models.split(","):
        for key_stage, ground, gate, completion in PIPELINE_VARIANTS:
            key = f"{name}, {key_stage}"
            pl = SegmentationPipeline(name, backend=args.backend, fov="front", ground_removal=ground,
                                      size_gate=gate, box_completion=completion, num_threads=args.threads, **dbscan)
            results[key] = evaluate_real_instances(pl, root, args.iou_threshold)
            rows.append((key, results[key]))
            i = results[key]["instances"]
            print(f"{key}: car instances TP {i['tp'][1]} FP {i['fp'][1]} FN {i['fn'][1]}, "
                  f"P {_pct(i['precision'][1])} R {_pct(i['recall'][1])}, "
                  f"car point IoU {_pct(results[key]['points']['class']['IoU'][1])}")
    lat = ground_latency(pl, root)
    results["ground_latency_ms"] = lat
    for fname, v in lat.items():
        print(f"ground stage {fname}: {v['fov_points']} points in view, {v['object_points']} labelled objects: "
              f"median {v['median_ms']:.2f} ms, min {v['min_ms']:.2f} ms (thread CPU time, {args.threads} thread)")
    out = project_root() / (getattr(args, "out", "") or "out/seg/instances.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    print(table_instances(rows))
    if not args.no_plot:
        print(plot_real_topview(args.models.split(",")[0], root, args.backend, args.threads))
    return 0


def plot_real_topview(model: str, root: Path, backend: str = "onnxruntime", threads: int = 1,
                      frame: str = "object_reduced/000134") -> Path:
    from ...kitti.calib import load_object_calib
    from ...kitti.labels import read_labels, read_velodyne_bin
    from ...paths import project_root
    from ...segmentation.pipeline import SegmentationPipeline
    from .plots import plot_top_view_ground

    f = next(fr for fr in real_object_frames(root) if fr.name == frame)
    pts = read_velodyne_bin(f.velodyne)
    calib = load_object_calib(f.calib)
    gt = [b.corners for b in gt_boxes_bev(read_labels(f.label), calib)]
    panels = []
    for ground in (False, True):  # the network + CRF alone; what the node publishes (ground, gate, completion)
        res = SegmentationPipeline(model, backend=backend, ground_removal=ground, size_gate=ground,
                                   box_completion=ground, num_threads=threads).process(pts)
        stages = "ground removal + size gate + box completion" if ground else "network + CRF + DBSCAN only"
        panels.append((f"{stages}: {len(res.table)} instances", res))
    ground_mask = panels[1][1].ground.is_ground(pts) & panels[1][1].fov_mask if panels[1][1].ground else None
    return plot_top_view_ground(pts, panels, ground_mask, gt, project_root() / "docs" / "img" / "seg_real_topview.png",
                                f"{model} on real KITTI {frame.split('/')[-1]}: predicted classes, DBSCAN + LATTE boxes "
                                "(solid), ground truth (dashed)\nright: ground (brown) removed before DBSCAN, oversized "
                                "instances rejected, partly seen boxes completed")


# --------------------------------------------------------------------- threshold choice on synthetic scans
def synthetic_threshold_sweep(root: Path, thresholds=(0.1, 0.15, 0.2, 0.25, 0.3, 0.4)) -> list[dict]:
    """Ground threshold vs the share of object points (the simulator's exact car / pedestrian /
    cyclist labels, velodyne_labels/) that the segmented ground would remove, and the share of
    background points it marks as ground, over the front field of view of synthetic object frames.
    Used to pick `ground_threshold` (never the real frames)."""
    from ...kitti.labels import read_velodyne_bin
    from ...kitti.projection import spherical_project
    from ...segmentation.ground import fit_segmented_ground

    tot = {t: np.zeros(4, dtype=np.int64) for t in thresholds}
    for f in sorted((Path(root) / "velodyne").glob("*.bin")):
        pts = read_velodyne_bin(f)
        lab = np.load(Path(root) / "velodyne_labels" / f"{f.stem}.npy")[:, 0]
        fov = spherical_project(pts[:, :4], fov="front").in_fov
        p, obj = pts[fov], lab[fov] > 0
        for t in thresholds:
            g = fit_segmented_ground(p, threshold=t).is_ground(p)
            tot[t] += [(g & obj).sum(), obj.sum(), (g & ~obj).sum(), (~obj).sum()]
    return [{"threshold": t, "object_points_removed": round(float(v[0] / max(v[1], 1)), 4),
             "background_marked_ground": round(float(v[2] / max(v[3], 1)), 4), "object_points": int(v[1])}
            for t, v in tot.items()]


# --------------------------------------------------------------------- size gate check on synthetic scans
def synthetic_size_gate_check(root: Path, model: str, backend: str = "onnxruntime", max_frames: int = 0) -> dict:
    """What the size gate rejects on synthetic object frames with exact point labels and instance
    ids (velodyne_labels/), front view, ground removal on: per class, rejected instances that are
    true (at least half their points belong to one true object of their class) or false, and the
    object-labelled points they held, true or false; also the instances kept. Used to check the
    a-priori limits (never the real frames)."""
    from ...kitti.labels import read_velodyne_bin
    from ...segmentation.pipeline import SegmentationPipeline, SegmentationResult

    pl = SegmentationPipeline(model, backend=backend, fov="front", ground_removal=True, size_gate=False,
                              num_threads=1)
    keys = ("rejected_true", "rejected_false", "kept_true", "kept_false",
            "rejected_true_points", "rejected_false_points", "kept_true_points", "kept_false_points")
    out = {CLASS_NAMES[c]: dict.fromkeys(keys, 0) for c in OBJECT_CLASSES}
    causes: dict[str, int] = {}
    files = sorted((Path(root) / "velodyne").glob("*.bin"))
    for f in files[:max_frames or None]:
        pts = read_velodyne_bin(f)
        truth = np.load(Path(root) / "velodyne_labels" / f"{f.stem}.npy")  # (N, 2): class, instance id
        res = pl.process(pts)  # gate off; then the pipeline's own gate step on copies of its output
        gated = SegmentationResult.empty(0)
        gated.ground = res.ground
        pl.reject_implausible(np.asarray(pts[:, :4], np.float32), res.labels.copy(), res.instances.copy(),
                              res.table, gated)
        rejected = set(gated.size_rejected["instance_id"].tolist())
        for cause in gated.size_rejected_causes:
            causes[cause] = causes.get(cause, 0) + 1
        for row in res.table:
            sel = res.instances == row["instance_id"]
            cls = int(row["class_id"])
            if cls not in OBJECT_CLASSES:
                continue
            same = truth[sel, 0] == cls
            _, counts = np.unique(truth[sel, 1][same], return_counts=True)
            is_true = bool(len(counts)) and counts.max() * 2 >= sel.sum()
            kind = "rejected" if int(row["instance_id"]) in rejected else "kept"
            d = out[CLASS_NAMES[cls]]
            d[f"{kind}_{'true' if is_true else 'false'}"] += 1
            d[f"{kind}_true_points"] += int(same.sum())
            d[f"{kind}_false_points"] += int((~same).sum())
    return {"model": model, "frames": len(files[:max_frames or None]), "classes": out, "causes": causes}


if __name__ == "__main__":
    # python -m squeeze_perception.offline.segmentation.instance_eval SYNTH_OBJECT_ROOT             (ground threshold)
    # python -m squeeze_perception.offline.segmentation.instance_eval SYNTH_OBJECT_ROOT --size-gate MODEL [FRAMES]
    import sys

    if len(sys.argv) > 3 and sys.argv[2] == "--size-gate":
        import json

        check = synthetic_size_gate_check(Path(sys.argv[1]), sys.argv[3], max_frames=int(sys.argv[4]) if len(sys.argv) > 4 else 0)
        print(json.dumps(check, indent=1))
    else:
        for row in synthetic_threshold_sweep(Path(sys.argv[1])):
            print(f"threshold {row['threshold']:.2f} m: object points removed {100 * row['object_points_removed']:.2f} % "
                  f"of {row['object_points']}, background points marked ground {100 * row['background_marked_ground']:.1f} %")
