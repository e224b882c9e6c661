"""Class-level and instance-level precision / recall / IoU (thesis section 4.4) on KITTI object
frames (ground truth from the shared point labeler, `kitti.pointwise.label_points`), lidar_2d
grids and SemanticKITTI scans, and table rendering in the layout of Tables 4.1, 6.1 and 6.2.

Instance matching follows the thesis: ground-truth instances sorted by point count
(largest first), each takes the still unmatched predicted instance of the same class with
the largest IoU; instance-level TP counts only points shared with the matched instance.

Undefined is not zero: a class without ground-truth points has no IoU or recall ("n/a", None
in JSON) and stays out of the averages; every figure is shown with the number of true
instances (or, for lidar_2d grids, which carry no instance ids, true points) behind it.
Points the labeler marks ignored (Van, Person_sitting, DontCare regions; SemanticKITTI's
unlabeled and outlier) are left out of prediction and ground truth alike.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ...interfaces import CLASS_NAMES
from ...kitti.pointwise import EVAL_IGNORE_BAND_M, KITTI_TYPE_TO_CLASS, label_points  # noqa: F401 - KITTI_TYPE_TO_CLASS: seg plots
from ...segmentation.data import scale_intensity
from ..jsonsafe import json_safe  # noqa: F401 - also imported from here by callers

OBJECT_CLASSES = (1, 2, 3)


@dataclass
class SegCounts:
    """Accumulated point counts per class (index = class id)."""

    n: int = len(CLASS_NAMES)
    tp: np.ndarray = field(default=None)  # type: ignore[assignment]
    pred: np.ndarray = field(default=None)  # type: ignore[assignment]
    gt: np.ndarray = field(default=None)  # type: ignore[assignment]
    inst_tp: np.ndarray = field(default=None)  # type: ignore[assignment]
    gt_instances: np.ndarray = field(default=None)  # type: ignore[assignment]  # true instances per class
    # confusion[true class, predicted class]: where a class's misses went (a real cyclist called
    # background or pedestrian) and what its false positives were, which P/R/IoU do not tell.
    # Its diagonal and sums repeat tp/gt/pred, which stay the source of the metrics because
    # result files written before it have only those.
    confusion: np.ndarray = field(default=None)  # type: ignore[assignment]
    frames: int = 0
    instance_frames: int = 0

    def __post_init__(self):
        for name in ("tp", "pred", "gt", "inst_tp", "gt_instances"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.n, dtype=np.int64))
        if self.confusion is None:
            self.confusion = np.zeros((self.n, self.n), dtype=np.int64)

    def add_class_level(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred, gt = np.asarray(pred).ravel(), np.asarray(gt).ravel()
        self.tp += np.bincount(gt[pred == gt], minlength=self.n)[: self.n]
        self.pred += np.bincount(pred, minlength=self.n)[: self.n]
        self.gt += np.bincount(gt, minlength=self.n)[: self.n]
        inside = (pred >= 0) & (pred < self.n) & (gt >= 0) & (gt < self.n)
        self.confusion += np.bincount(gt[inside] * self.n + pred[inside],
                                      minlength=self.n * self.n)[: self.n * self.n].reshape(self.n, self.n)
        self.frames += 1

    def add_instance_level(self, pred: np.ndarray, pred_inst: np.ndarray, gt: np.ndarray,
                           gt_inst: np.ndarray) -> None:
        self.inst_tp += instance_true_positives(pred, pred_inst, gt, gt_inst, self.n)
        gt, gt_inst = np.asarray(gt).ravel(), np.asarray(gt_inst).ravel()
        for c in OBJECT_CLASSES:
            self.gt_instances[c] += len(np.unique(gt_inst[(gt == c) & (gt_inst >= 0)]))
        self.instance_frames += 1

    @staticmethod
    def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.where(b > 0, a / np.maximum(b, 1), np.nan)

    def _metrics(self, tp: np.ndarray) -> dict[str, np.ndarray]:
        union = self.pred + self.gt - self.tp
        # IoU and recall need ground truth: a class with none is n/a even when predicted
        # (its false positives show in precision instead).
        has_gt = self.gt > 0
        return {"P": self._ratio(tp, self.pred), "R": self._ratio(tp, self.gt),
                "IoU": np.where(has_gt, self._ratio(tp, union), np.nan)}

    def class_level(self) -> dict[str, np.ndarray]:
        return self._metrics(self.tp)

    def instance_level(self) -> dict[str, np.ndarray]:
        return self._metrics(self.inst_tp)

    def mean_iou(self, classes=OBJECT_CLASSES) -> float:
        """Mean class-level IoU over the classes with ground truth (NaN when none has)."""
        iou = self.class_level()["IoU"]
        vals = [iou[c] for c in classes if np.isfinite(iou[c])]
        return float(np.mean(vals)) if vals else float("nan")

    def support(self, c: int) -> str:
        """What a figure of class c rests on: true instances where known, else true points."""
        return f"n={int(self.gt_instances[c])}" if self.instance_frames else f"{int(self.gt[c])} pts"


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


# --------------------------------------------------------------------- SemanticKITTI
# SemanticKITTI raw label ids (lower 16 bits of each .label entry) -> our classes; moving
# variants fold into their class. Unlabeled (0) and outlier (1) are ignored, as SemanticKITTI's
# own evaluation ignores them; every other class (motorcyclist and bicycle without rider
# included) is background.
SEMANTIC_KITTI_IGNORED = (0, 1)
SEMANTIC_KITTI_TO_CLASS = {10: 1, 252: 1,  # car, moving-car
                           30: 2, 254: 2,  # person, moving-person -> pedestrian
                           31: 3, 253: 3}  # bicyclist, moving-bicyclist -> cyclist


def semantic_kitti_labels(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint32 per point (lower 16 bits class, upper 16 instance) -> (class 0..3, instance id
    or -1, ignored). Instance ids are made unique per class: class * 65536 + instance."""
    raw = np.asarray(raw, dtype=np.uint32)
    semantic = (raw & 0xFFFF).astype(np.int64)
    instance = (raw >> 16).astype(np.int64)
    lut = np.zeros(max(max(SEMANTIC_KITTI_TO_CLASS), int(semantic.max(initial=0))) + 1, np.int64)
    for k, v in SEMANTIC_KITTI_TO_CLASS.items():
        lut[k] = v
    classes = lut[semantic]
    instances = np.where((classes > 0) & (instance > 0), classes * 65536 + instance, -1)
    return classes, instances, np.isin(semantic, SEMANTIC_KITTI_IGNORED)


def read_semantic_kitti_label(path: str | Path, n_points: int) -> np.ndarray:
    from ...kitti.labels import KittiFormatError

    raw = np.fromfile(path, dtype="<u4")
    if len(raw) != n_points:
        raise KittiFormatError(f"SemanticKITTI label file '{path}' has {len(raw)} entries for {n_points} points")
    return raw


def semantic_kitti_frames(root: str | Path, sequences: list[str] | None = None) -> list[tuple[Path, Path]]:
    """(velodyne .bin, labels .label) pairs under root/sequences/NN/, sorted; frames without a
    label file are left out (the test sequences 11-21 have none)."""
    base = Path(root) / "sequences"
    if not base.is_dir():
        raise FileNotFoundError(f"no sequences/ folder in {root} (expected sequences/NN/velodyne/*.bin)")
    seqs = sorted(p.name for p in base.iterdir() if p.is_dir()) if not sequences else list(sequences)
    out = []
    for seq in seqs:
        for scan in sorted((base / seq / "velodyne").glob("*.bin")):
            label = base / seq / "labels" / f"{scan.stem}.label"
            if label.exists():
                out.append((scan, label))
    return out


def evaluate_semantic_kitti(pipelines: dict, root: str | Path, sequences: list[str] | None = None,
                            max_frames: int = 0, progress: bool = True) -> dict[str, "SegCounts"]:
    """Class- and instance-level counts per view on SemanticKITTI scans. pipelines: view name ->
    pipeline (e.g. {"full": fov full, "front": fov front}); each view counts the points in its
    pipeline's field of view, ignored points left out. max_frames: at most this many scans,
    evenly spaced over the sorted list."""
    from tqdm import tqdm

    from ...kitti.labels import read_velodyne_bin

    frames = semantic_kitti_frames(root, sequences)
    if max_frames and len(frames) > max_frames:
        # Spread evenly: neighbouring scans of a drive are nearly the same scene.
        frames = [frames[i] for i in np.unique(np.linspace(0, len(frames) - 1, max_frames).round().astype(int))]
    if not frames:
        raise FileNotFoundError(f"no labelled SemanticKITTI scans under {root}/sequences")
    counts = {view: SegCounts() for view in pipelines}
    for scan, label in tqdm(frames, desc="SemanticKITTI", disable=not progress, leave=False):
        pts = read_velodyne_bin(scan)
        gt, gt_inst, ignored = semantic_kitti_labels(read_semantic_kitti_label(label, len(pts)))
        for view, pl in pipelines.items():
            _add_frame(counts[view], pl.process(pts), gt, gt_inst, ignored)
    return counts


def _add_frame(counts: "SegCounts", res, gt: np.ndarray, gt_inst: np.ndarray, ignored: np.ndarray) -> None:
    sel = res.fov_mask if res.fov_mask is not None else np.zeros(len(gt), bool)
    sel = sel & ~ignored
    counts.add_class_level(res.labels[sel].astype(np.int64), gt[sel])
    counts.add_instance_level(res.labels[sel], res.instances[sel], gt[sel], gt_inst[sel])


# --------------------------------------------------------------------- tables
def format_percent(v: float) -> str:
    """A metric in [0, 1] as a percentage with one decimal; "n/a" where it is undefined (NaN)."""
    return "n/a" if not np.isfinite(v) else f"{100 * v:.1f}"


def table_class_instance(rows: list[tuple[str, SegCounts]], classes=OBJECT_CLASSES) -> str:
    """Table 4.1 layout: per class, one line per variant, class-level and instance-level P/R/IoU,
    and the true instances (or points) behind them."""
    lines = ["| class | model | P | R | IoU | inst. P | inst. R | inst. IoU | truth |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in classes:
        for name, counts in rows:
            cl, il = counts.class_level(), counts.instance_level()
            inst = [format_percent(il[k][c]) for k in ("P", "R", "IoU")] if counts.instance_frames else ["n/a"] * 3
            cls = [format_percent(cl[k][c]) for k in ("P", "R", "IoU")]
            lines.append(f"| {CLASS_NAMES[c]} | {name} | " + " | ".join(cls + inst) + f" | {counts.support(c)} |")
    return "\n".join(lines)


def table_confusion(rows: list[tuple[str, SegCounts]]) -> str:
    """Per variant, each class's true points split by the class predicted for them, in % of the
    class's true points (row sums 100); a variant without a confusion matrix (old JSON) is skipped."""
    names = list(CLASS_NAMES)
    lines = ["| model | true class (points) | " + " | ".join(f"called {n}" for n in names) + " |",
             "|---|---|" + "---|" * len(names)]
    for name, counts in rows:
        if counts.n != len(names) or not counts.confusion.any():
            continue
        for c in range(counts.n):
            total = int(counts.confusion[c].sum())
            if total == 0:
                continue
            share = [format_percent(v / total) for v in counts.confusion[c]]
            lines.append(f"| {name} | {CLASS_NAMES[c]} ({total}) | " + " | ".join(share) + " |")
    return "\n".join(lines)


def table_iou(rows: list[tuple[str, SegCounts]], classes=OBJECT_CLASSES, reference: dict | None = None) -> str:
    """Tables 6.1 / 6.2 layout: IoU per class with its true instances (or points), and the mean
    over the classes that have ground truth."""
    head = " | ".join(CLASS_NAMES[c] for c in classes)
    lines = [f"| model | {head} | average |" + (" thesis |" if reference else ""),
             "|---|" + "---|" * (len(classes) + 1) + ("---|" if reference else "")]
    for name, counts in rows:
        iou = counts.class_level()["IoU"]
        avg = counts.mean_iou(classes)
        ref = f" {reference.get(name, '')} |" if reference else ""
        lines.append(f"| {name} | " + " | ".join(f"{format_percent(iou[c])} ({counts.support(c)})" for c in classes)
                     + f" | {format_percent(avg)} |" + ref)
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


def evaluate_grids(pipeline, files: list[Path], renderer=None, progress: bool = True,
                   with_ground: SegCounts | None = None) -> SegCounts:
    """Class-level metrics on lidar_2d grids, cell-wise over cells with a return: the network and
    the CRF, as the thesis's Tables 6.1 / 6.2 score them. `with_ground`: also count, into it,
    the labels after the pipeline's ground stage (`SegmentationPipeline.remove_ground`, its
    threshold and slope: object-labelled cells on the fitted ground become background), which
    is what the node publishes."""
    import torch
    from tqdm import tqdm

    from ...segmentation.data import load_grid

    counts = SegCounts()
    for f in tqdm(files, desc="grids", disable=not progress, leave=False):
        grid = load_grid(f)
        batch = pipeline.network_input([_GridView(grid)])
        if renderer is not None:
            from .train import apply_rendered_intensity

            batch = apply_rendered_intensity(renderer, torch.from_numpy(batch)).numpy()
        logits = pipeline.run_crf(pipeline.run_network(batch), batch)
        valid = grid[..., 4] > 0
        pred, gt = logits[0].argmax(0)[valid], grid[..., 5].astype(np.int64)[valid]
        counts.add_class_level(pred, gt)
        if with_ground is not None:
            cells = grid[..., :3][valid].astype(np.float64)
            pipeline.remove_ground(cells, np.ones(len(cells), bool), pred, SimpleNamespace())
            with_ground.add_class_level(pred, gt)
    return counts


def training_class_weights(meta: dict, weights_dir: Path | None = None) -> np.ndarray | None:
    """The class weights a segmentation checkpoint's loss used (`seg train --class-weights`), from its
    meta; a PDC model's from the checkpoint it was calibrated from (`calibrated_from`, looked up in
    `weights_dir`). None: trained without weights (all 1)."""
    from .train import parse_class_weights

    text = (meta.get("config") or {}).get("class_weights")
    if text:
        return parse_class_weights(text)
    source = meta.get("calibrated_from")
    if source and weights_dir is not None and (weights_dir / source).exists():
        return training_class_weights(model_meta(weights_dir / source), weights_dir)
    return None


def logit_adjustment(class_weights: np.ndarray, tau: float) -> np.ndarray:
    """Per-class offsets undoing a share tau of a class-weighted loss's pull towards the weighted
    classes: a loss that weights class c by w_c trains the logits towards log w_c + log p(c | x), so
    subtracting tau * log w_c moves the argmax back (post-hoc logit adjustment, Menon et al. 2021;
    tau 0: unchanged, 1: fully undone)."""
    return (-tau * np.log(np.asarray(class_weights, np.float64))).astype(np.float32)


def logit_adjusted_pipeline(offsets: np.ndarray, *args, **kwargs):
    """A SegmentationPipeline whose class scores get fixed per-class `offsets` after the CRF, before
    every argmax (grids and whole scans alike). Offline only: the node does not run it (the
    experiment that would have shipped it chose tau 0, docs/segmentation.md)."""
    from ...segmentation.pipeline import SegmentationPipeline

    class LogitAdjustedPipeline(SegmentationPipeline):
        def run_crf(self, logits: np.ndarray, batch: np.ndarray) -> np.ndarray:
            return super().run_crf(logits, batch) + self.logit_offsets[None, :, None, None]

    pipeline = LogitAdjustedPipeline(*args, **kwargs)
    pipeline.logit_offsets = np.asarray(offsets, np.float32)
    return pipeline


class _GridView:
    """Adapter giving a lidar_2d array the `.grid` attribute pipeline.network_input expects."""

    def __init__(self, grid: np.ndarray):
        self.grid = grid[..., :5]


def perturb_intensity(points: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """A copy of (N, 4) points with the intensity column changed, to ask how much a network's labels
    hang on intensity (`seg eval --perturb-intensity`): "shuffle" permutes the readings among the
    scan's points (same histogram, no tie to the surface), "const:V" sets every reading to V,
    "scale:F" multiplies them by F (clipped to 0..1), "" leaves them."""
    if not mode:
        return points
    out = np.array(points, dtype=np.float32, copy=True)
    kind, _, value = mode.partition(":")
    if kind == "shuffle" and not value:
        out[:, 3] = rng.permutation(out[:, 3])
    elif kind == "const" and value:
        out[:, 3] = float(value)
    elif kind == "scale" and value:
        out = scale_intensity(out, float(value))  # the training augmentation's gain, applied at test time
    else:
        raise ValueError(f"unknown intensity perturbation '{mode}': shuffle, const:V or scale:F")
    return out


def evaluate_object_frames(pipeline, root: Path, velodyne_folder: str = "velodyne", max_frames: int = 0,
                           progress: bool = True, counts: SegCounts | None = None,
                           ignore_band: float = EVAL_IGNORE_BAND_M, intensity: str = "",
                           seed: int = 0) -> SegCounts:
    """Class- and instance-level metrics on KITTI-object-layout frames, over the points inside
    the pipeline's field of view. Ground truth: the simulator's exact per-point labels
    (velodyne_labels/) when present, else `label_points` on the 3D boxes (real KITTI), whose
    ignored points are left out, and with them the points within `ignore_band` metres outside an
    object box (kitti.pointwise, "Boundary band"; 0 counts them as background, the protocol
    before 2026-12-05). `counts` adds these frames to an earlier set's totals. `intensity`: a
    `perturb_intensity` mode applied to each scan before the network (labels unchanged)."""
    from tqdm import tqdm

    from ...kitti.calib import load_object_calib
    from ...kitti.labels import read_labels, read_velodyne_bin

    counts = SegCounts() if counts is None else counts
    frames = kitti_object_frames(root, velodyne_folder)
    if max_frames:
        frames = frames[:max_frames]
    for fid in tqdm(frames, desc=f"{root.name} frames", disable=not progress, leave=False):
        pts = read_velodyne_bin(root / velodyne_folder / f"{fid}.bin")
        exact = root / "velodyne_labels" / f"{fid}.npy"  # the simulator's per-point [class, instance]
        if exact.exists():
            point_labels = np.load(exact)
            gt, gt_inst = point_labels[:, 0].astype(np.int64), point_labels[:, 1].astype(np.int64)
            ignored = np.zeros(len(pts), bool)
        else:
            lab = label_points(pts, read_labels(root / "label_2" / f"{fid}.txt"),
                               load_object_calib(root / "calib" / f"{fid}.txt"), ignore_band=ignore_band)
            gt, gt_inst, ignored = lab.classes.astype(np.int64), lab.instances.astype(np.int64), lab.ignored
        if intensity:  # one seeded stream per frame: the same perturbation whatever frames run before it
            pts = perturb_intensity(pts, intensity, np.random.default_rng([seed, int(fid)]))
        _add_frame(counts, pipeline.process(pts), gt, gt_inst, ignored)
    return counts


def real_object_sources(kitti_root: Path) -> list[tuple[Path, str]]:
    """The real object frames scored together as `real_object`: the full scans of object/ and the
    camera-view scan of object_reduced/, as (root, velodyne folder) pairs."""
    return [(kitti_root / "object" / "training", "velodyne"),
            (kitti_root / "object_reduced" / "training", "velodyne_reduced")]


def intensity_sweep(pipeline, sources: list[tuple[Path, str]], gains: list[float], max_frames: int = 0,
                    progress: bool = True) -> dict[float, SegCounts]:
    """Counts over the object frames of `sources` ((root, velodyne folder) pairs, summed) with
    every scan's intensity times each gain (1: as recorded; `perturb_intensity` "scale:F", clipped
    to [0, 1]): how a model's labels hold when the sensor reports a brighter or dimmer level
    (`seg intensity-sweep`)."""
    out = {}
    for gain in gains:
        counts = SegCounts()
        for root, folder in sources:
            evaluate_object_frames(pipeline, root, folder, max_frames=max_frames, progress=progress, counts=counts,
                                   intensity="" if gain == 1 else f"scale:{gain:g}")
        out[gain] = counts
    return out


def counts_to_json(counts: SegCounts) -> dict:
    """JSON-ready counts and metrics (None where undefined), the mean IoU over the object classes
    with ground truth and which classes have none."""
    out = {"frames": counts.frames, "instance_frames": counts.instance_frames,
           "tp": counts.tp.tolist(), "pred": counts.pred.tolist(), "gt": counts.gt.tolist(),
           "inst_tp": counts.inst_tp.tolist(), "gt_instances": counts.gt_instances.tolist(),
           "confusion": counts.confusion.tolist()}
    for level, metrics in (("class", counts.class_level()), ("instance", counts.instance_level())):
        out[level] = {k: [None if not np.isfinite(v) else round(float(v), 4) for v in vals]
                      for k, vals in metrics.items()}
    mean = counts.mean_iou()
    out["mean_iou"] = round(mean, 4) if np.isfinite(mean) else None
    out["classes_without_gt"] = [CLASS_NAMES[c] for c in OBJECT_CLASSES if counts.gt[c] == 0]
    return out


def counts_from_json(d: dict) -> SegCounts:
    c = SegCounts()
    c.tp, c.pred, c.gt, c.inst_tp = (np.array(d[k], dtype=np.int64) for k in ("tp", "pred", "gt", "inst_tp"))
    c.gt_instances = np.array(d.get("gt_instances", [0] * c.n), dtype=np.int64)  # absent before instance counts
    if "confusion" in d:  # absent in results written before 2026-12-05
        c.confusion = np.array(d["confusion"], dtype=np.int64)
    c.frames, c.instance_frames = d["frames"], d["instance_frames"]
    return c


