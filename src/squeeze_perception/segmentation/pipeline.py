"""ROS-free LiDAR segmentation pipeline: cloud -> labels, instances and boxes.

Stages (timed separately, the names the node reports): projection, network, crf,
clustering (including ground removal when on; its own time is also in
`SegmentationResult.ground_ms`), boxfit, size_gate (0 when off).
Ground removal (LATTE, thesis ch. 5; `ground.fit_segmented_ground`) runs before DBSCAN: the
segmented ground planes are fitted to the points in the field of view, and every point the
network labelled car / pedestrian / cyclist that lies less than `ground_threshold` above its
segment's plane is relabelled 0, so ground can never form an instance. The published labels
are these cleaned labels (labels and instances stay consistent: no object-labelled point
without a chance of an instance because of the ground).
Size gate (`size_gate.py`, on by default) after the box fit: an instance longer, wider or taller
above the ground than any object of its class (KITTI size statistics + `size_gate_sigmas`
standard deviations + `size_gate_slack` m) is rejected, its points relabelled 0 and instance -1,
for the same consistency; the rejected rows and their causes stay in the result
(`size_rejected`, `size_rejected_causes`) so a node counts them. It is a stage of its own.
Field of view: "front" projects the front 90 degrees onto 64x512 (the training layout);
"full" covers 360 degrees as four 64x512 tiles, the cloud turned by 0, 90, 180 and 270 degrees
so each tile looks like a front view to the network, run as one batch of four (the model
was trained on front views only, so the tiles keep its input statistics).
Every input point gets a label: points outside the projected FOV get 0 and instance -1.
ONNX-only models (ModelSpec builder None, run by onnxruntime): the graph must map the
(N, C, 64, 512) grid to per-class logits (N, classes, 64, 512), as our exported SqueezeSeg graphs
do. The learned CRF's weights live in a torch checkpoint (`crf.*`), which such a model has not,
so it runs without the CRF (`crf` is ignored, said once per model as a RuntimeWarning, and the
crf stage takes no time) rather than with made-up compatibilities. The same holds for an
architecture without a CRF (the searched, mixed-precision and distilled nets of
segmentation/searched_net.py, registered from their manifests): raw 5-channel grid in, logits out.
A model must take the 64x512 grid (refused on load otherwise, e.g. a `--tiny` 16x64 net). A model
whose classes are a subset of the interface's (a distilled net: unknown, car) has its output
indices mapped to the interface class ids by name.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import interfaces as itf
from ..backends import ModelLoadError, load_state_dict
from ..energy import InferenceResult, MeteredBackend
from ..registry import ModelSpec, get_backend, get_model
from . import constants as K
from .boxfit import finish_boxes, heading_table, rectangle_fit
from .clustering import CLUSTERERS, cluster_by_class
from .ground import SegmentedGround, fit_segmented_ground
from .box_completion import complete_boxes
from .size_gate import class_size_limits, gate_instances, instance_tops

# The instance's "top" for the size gate: this quantile of its point heights above the ground, so
# a few mixed returns (an edge smeared towards the wall behind) cannot reject a true object.
SIZE_GATE_TOP_QUANTILE = 0.95

STAGES = K.PIPELINE_STAGES
FOVS = ("front", "full")


class PointsError(ValueError):
    """Input points that cannot be segmented (shape); the text is shown to users."""


@dataclass
class SegmentationResult:
    labels: np.ndarray  # (N,) int32 class id per input point
    instances: np.ndarray  # (N,) int32 instance id per input point, -1 none
    table: np.ndarray  # INSTANCE_DTYPE rows
    timings_ms: dict[str, float] = field(default_factory=dict)
    cell_labels: np.ndarray | None = None  # (T, 64, 512) per tile
    in_fov: int = 0  # points that reached a grid cell's column/row
    fov_mask: np.ndarray | None = None  # (N,) bool, the points counted in in_fov
    ground_removed: np.ndarray | None = None  # (N,) bool, object-labelled points relabelled 0 as ground
    ground: SegmentedGround | None = None  # the fitted ground (None when ground removal is off)
    ground_ms: float = 0.0  # ground fit + test, part of the clustering stage
    inference: InferenceResult | None = None  # the network call: latency, energy, emulated (outputs dropped)
    size_rejected: np.ndarray | None = None  # INSTANCE_DTYPE rows the size gate rejected (None: gate off)
    size_rejected_causes: list[str] = field(default_factory=list)  # size_gate.CAUSES, one per rejected row

    @staticmethod
    def empty(n: int = 0) -> "SegmentationResult":
        return SegmentationResult(np.zeros(n, np.int32), np.full(n, -1, np.int32), itf.empty(itf.INSTANCE_DTYPE),
                                  {s: 0.0 for s in STAGES})


def rotate_z(xy: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    out = xy.copy()
    out[:, 0] = c * xy[:, 0] - s * xy[:, 1]
    out[:, 1] = s * xy[:, 0] + c * xy[:, 1]
    return out


def project_tiles(points: np.ndarray, fov: str, native: bool = True):
    """(list of SphericalProjection, (N,) tile index of each point or -1).

    The C kernel of `_stages_native` gives the same projections, bit for bit, for (N, >=4) float32
    points (what `process` passes); the numpy code below is the definition and the fallback
    (native=False, no C compiler, SQUEEZE_PERCEPTION_NATIVE_STAGES=0, other dtypes)."""
    from ..kitti.projection import azimuth_cols, beam_rows, spherical_project

    if fov not in FOVS:
        raise ValueError(f"fov must be one of {FOVS}, got '{fov}'")
    if native:
        from ._stages_native import project_tiles_native

        out = project_tiles_native(points, fov)
        if out is not None:
            return out
    if fov == "front":
        # Only the points inside the front 90 degrees (about a quarter of a scan) can take a cell:
        # their beam rows are all the projection needs, and the row search is its costliest step.
        front_cols = azimuth_cols(points, "front")  # the projection reuses them
        rows = np.full(len(points), -1, dtype=np.int64)
        in_front = front_cols >= 0
        rows[in_front] = beam_rows(points[in_front])
    else:
        front_cols = None
        rows = beam_rows(points)  # independent of the rotation about z, computed once
    n_tiles = 1 if fov == "front" else 4
    owner = np.full(len(points), -1, dtype=np.int64)
    projs = []
    for t in range(n_tiles):
        rotated = rotate_z(points[:, :4], t * np.pi / 2) if t else points[:, :4]
        proj = spherical_project(rotated, fov="front", rows=rows, cols=front_cols if t == 0 else None)
        claim = proj.in_fov & (owner < 0)  # boundary points belong to the first tile only
        owner[claim] = t
        projs.append(proj)
    return projs, owner


class SegmentationPipeline:
    def __init__(self, model: str = "squeezesegv2", backend: str = "torch", weights: str = "",
                 fov: str = "front", crf: bool = True, cluster_eps: float = K.CLUSTER_EPS_M,
                 cluster_min_points: int = K.CLUSTER_MIN_POINTS, clustering: str = "fast", ground_removal: bool = True,
                 ground_threshold: float = 0.15, ground_max_slope: float = 15.0, size_gate: bool = True,
                 size_gate_sigmas: float = 4.0, size_gate_slack: float = 0.3, num_threads: int = 0,
                 box_completion: bool = True):
        if fov not in FOVS:
            raise ValueError(f"fov must be one of {FOVS}, got '{fov}'")
        if clustering not in CLUSTERERS:
            raise ValueError(f"clustering must be one of {sorted(CLUSTERERS)}, got '{clustering}'")
        self.fov, self.use_crf = fov, crf
        self.cluster_eps, self.cluster_min_points = cluster_eps, cluster_min_points
        self.clustering, self.ground_removal = clustering, ground_removal
        self.ground_threshold, self.ground_max_slope = ground_threshold, ground_max_slope
        self.size_gate, self.size_gate_sigmas, self.size_gate_slack = size_gate, size_gate_sigmas, size_gate_slack
        self.box_completion = box_completion
        self.spec: ModelSpec = get_model(model, task="segmentation")
        self.class_ids = interface_class_ids(self.spec)
        check_grid_input(self.spec)
        self.backend_name = backend
        backend_spec = get_backend(backend)
        self.backend = backend_spec.create(self.spec, weights=weights or None, num_threads=num_threads)
        self.meter = MeteredBackend(self.backend, backend_spec, self.spec)
        self.last_inference: InferenceResult | None = None
        self.crf = None if self.spec.onnx_only else self._load_crf(weights)
        if self.crf is None and crf:
            why = ("is ONNX only (no torch checkpoint with the learned CRF)" if self.spec.onnx_only
                   else "has no learned CRF in its architecture")
            _say_once(f"model '{self.spec.name}' {why}: segmenting without the CRF")
        if clustering == "fast":  # compile / load the DBSCAN kernel now, not during the first frame
            from ._dbscan_native import load as load_dbscan_kernel

            load_dbscan_kernel()

    def _load_crf(self, weights: str):
        """The CRF's learned compatibility weights live in the torch checkpoint under 'crf.'."""
        from .crf import RecurrentCRF

        path = Path(weights) if weights and not str(weights).endswith(".onnx") else self.spec.weights_path()
        crf = RecurrentCRF(K.NUM_CLASSES)
        state = {k[4:]: v for k, v in load_state_dict(path).items() if k.startswith("crf.")}
        if not state and not hasattr(self.spec.build(), "crf"):
            return None  # the architecture has none (a searched net); weights missing one are refused below
        try:
            crf.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"weights '{path}' have no usable CRF parameters: {str(exc).splitlines()[0]}") from exc
        return crf.eval()

    def warm_up(self) -> float | None:
        """Segment a small synthetic scan (a 64 x 512 fan 10 m ahead) once, so the first real
        scan does not pay the lazy set-up of the backend and kernels (squeezesegv2 int8: 150 ms
        on the first scan, 55 after). Returns its ms; None, doing nothing, for an emulated
        backend (a real accelerator link would count and carry the scan)."""
        if self.meter.emulated:
            return None
        az, el = np.meshgrid(np.radians(np.linspace(-40, 40, 512)), np.radians(np.linspace(-20, 2, 64)))
        fan = np.stack([10 * np.cos(el) * np.cos(az), 10 * np.cos(el) * np.sin(az), 10 * np.sin(el),
                        np.full_like(az, 0.5)], -1).reshape(-1, 4).astype(np.float32)
        t0 = time.perf_counter()
        self.process(fan)
        return (time.perf_counter() - t0) * 1e3

    # ------------------------------------------------------------------ stages
    def network_input(self, projs) -> np.ndarray:
        from .data import to_input

        return np.stack([to_input(p.grid, self.spec.input_shape[0]) for p in projs])

    def run_network(self, batch: np.ndarray) -> np.ndarray:
        run = self.meter.infer(batch)
        out = run.outputs
        run.outputs = None  # the logits are returned; the record keeps latency and energy only
        self.last_inference = run
        return np.asarray(out[0] if isinstance(out, (tuple, list)) else out, dtype=np.float32)

    def run_crf(self, logits: np.ndarray, batch: np.ndarray) -> np.ndarray:
        import torch

        if not self.use_crf or self.crf is None:  # None: an ONNX-only model has no learned CRF
            return logits
        x = torch.from_numpy(batch)
        mask = (x[:, 4:5] > 0).float()
        with torch.inference_mode():
            return self.crf(torch.from_numpy(logits), x[:, :3], mask).numpy()

    def remove_ground(self, p: np.ndarray, in_fov: np.ndarray, labels: np.ndarray,
                      result: SegmentationResult) -> np.ndarray:
        """Fit the segmented ground to the points in the field of view, relabel object-labelled
        ground points 0 in place; returns their indices. Only object-labelled points are tested."""
        t0 = time.perf_counter()
        removed = np.zeros(0, dtype=np.int64)
        if in_fov.sum() >= 3:
            result.ground = fit_segmented_ground(p[in_fov], threshold=self.ground_threshold,
                                                 max_slope_deg=self.ground_max_slope)
            obj = np.flatnonzero(labels > 0)
            removed = obj[result.ground.is_ground(p[obj])]
            labels[removed] = 0
        result.ground_ms = (time.perf_counter() - t0) * 1e3
        return removed

    def reject_implausible(self, p: np.ndarray, labels: np.ndarray, instances: np.ndarray, table: np.ndarray,
                           result: SegmentationResult) -> np.ndarray:
        """The size gate: drop the rows no object of their class could produce, relabel their points 0
        / instance -1 in place, keep the rows and causes in `result`; returns the kept rows."""
        result.size_rejected = table[:0]
        if not len(table):
            return table
        clustered = np.flatnonzero(instances >= 0)  # a few thousand of the scan's points: work on those only
        tops = None
        if result.ground is not None:
            tops = instance_tops(result.ground.height(p[clustered]), instances[clustered], table["instance_id"],
                                 SIZE_GATE_TOP_QUANTILE)
        keep, causes = gate_instances(table, tops, class_size_limits(self.size_gate_sigmas, self.size_gate_slack))
        if keep.all():
            return table
        hit = clustered[np.isin(instances[clustered], table["instance_id"][~keep])]
        labels[hit] = 0
        instances[hit] = -1
        result.size_rejected = table[~keep]
        result.size_rejected_causes = [c for c in causes if c is not None]
        return table[keep]

    def process(self, points: np.ndarray) -> SegmentationResult:
        """points: (N, >=4) float [x, y, z, intensity]; non-finite rows get label 0 / instance -1."""
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[1] < 4:
            raise PointsError(f"points must be (N, >=4) [x, y, z, intensity], got shape {pts.shape}")
        n = len(pts)
        finite = np.isfinite(pts[:, :4]).all(1)
        result = SegmentationResult.empty(n)
        if not finite.any():
            return result
        good = np.flatnonzero(finite)
        # No gather when every row is finite (the usual case): a plain copy is several times cheaper
        # than the fancy-indexed one; a copy all the same, so nothing below can touch the caller's array.
        p = np.array(pts[:, :4] if len(good) == n else pts[good, :4], dtype=np.float32)
        t = {}
        t0 = time.perf_counter()
        projs, owner = project_tiles(p, self.fov)
        batch = self.network_input(projs)
        t["projection"] = (time.perf_counter() - t0) * 1e3
        result.in_fov = int((owner >= 0).sum())
        result.fov_mask = np.zeros(n, dtype=bool)
        result.fov_mask[good[owner >= 0]] = True
        if result.in_fov == 0:
            result.timings_ms.update(t)
            return result
        t0 = time.perf_counter()
        self.last_inference = None
        logits = self.run_network(batch)
        t["network"] = (time.perf_counter() - t0) * 1e3
        result.inference = self.last_inference
        t0 = time.perf_counter()
        logits = self.run_crf(logits, batch)
        t["crf"] = (time.perf_counter() - t0) * 1e3
        probs = _softmax(logits)
        cell_labels = probs.argmax(1) if self.class_ids is None else self.class_ids[probs.argmax(1)]
        cell_conf = probs.max(1)
        labels = np.zeros(len(p), dtype=np.int64)
        conf = np.zeros(len(p), dtype=np.float32)
        for k, proj in enumerate(projs):
            sel = owner == k
            labels[sel] = cell_labels[k][proj.rows[sel], proj.cols[sel]]
            conf[sel] = cell_conf[k][proj.rows[sel], proj.cols[sel]]
        t0 = time.perf_counter()
        if self.ground_removal:
            removed = self.remove_ground(p, owner >= 0, labels, result)
            result.ground_removed = np.zeros(n, dtype=bool)
            result.ground_removed[good[removed]] = True
        instances = cluster_by_class(p[:, :3], labels, self.cluster_eps, self.cluster_min_points,
                                     self.clustering)
        t["clustering"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        table = boxes_for_instances(p, labels, instances, conf)
        t["boxfit"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        if self.size_gate:
            table = self.reject_implausible(p, labels, instances, table, result)
        t["size_gate"] = (time.perf_counter() - t0) * 1e3
        if self.box_completion:  # after the gate, which judges the measured sizes; timed with the box fit
            t0 = time.perf_counter()
            table = complete_boxes(table)
            t["boxfit"] += (time.perf_counter() - t0) * 1e3
        result.labels[good] = labels
        result.instances[good] = instances
        result.table = table
        result.cell_labels = cell_labels
        result.timings_ms.update(t)
        return result


def interface_class_ids(spec: ModelSpec) -> np.ndarray | None:
    """Interface class id of each of the model's output channels by name (None: the model's
    classes are the interface's, in order); a class the interface does not know is refused."""
    if tuple(spec.classes) == tuple(itf.CLASS_NAMES):
        return None
    unknown = [c for c in spec.classes if c not in itf.CLASS_IDS]
    if unknown:
        raise ModelLoadError(f"model '{spec.name}' has classes {list(unknown)} that the segmentation interface "
                             f"does not know (it publishes {list(itf.CLASS_NAMES)})")
    return np.array([itf.CLASS_IDS[c] for c in spec.classes], dtype=np.int64)


def check_grid_input(spec: ModelSpec) -> None:
    """The pipeline feeds the 64x512 front-view grid with 5 (x, y, z, intensity, range) or 6 (+ mask)
    channels; a model built for another grid is refused on load, not on the first frame."""
    channels, height, width = spec.input_shape
    if (height, width) != (K.GRID_HEIGHT, K.GRID_WIDTH) or channels not in (5, 6):
        raise ModelLoadError(
            f"model '{spec.name}' takes a {channels}x{height}x{width} input; the segmentation pipeline feeds "
            f"5 or 6 channels on the {K.GRID_HEIGHT}x{K.GRID_WIDTH} front-view grid (a --tiny offline model is "
            "for the tests only)")


_SAID: set[str] = set()


def _say_once(message: str) -> None:
    """A RuntimeWarning, once per process and message (a node reloading the model says it once)."""
    if message not in _SAID:
        _SAID.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def boxes_for_instances(points: np.ndarray, labels: np.ndarray, instances: np.ndarray,
                        confidence: np.ndarray, native: bool = True) -> np.ndarray:
    """One INSTANCE_DTYPE row per instance id (ascending): rectangle_fit box, majority label (the
    smallest among equal counts), point count, mean confidence. The C kernel of `_stages_native`
    fits all boxes in one call, bit for bit rectangle_fit's; native=False (or no kernel, or a
    non-finite coordinate) fits each instance with rectangle_fit."""
    clustered = np.flatnonzero(instances >= 0)
    # One stable sort groups every instance's points (in cloud order, as a mask per instance
    # would, but without a pass over the whole cloud per instance).
    order = clustered[np.argsort(instances[clustered], kind="stable")]
    ids, starts = np.unique(instances[order], return_index=True)
    table = np.zeros(len(ids), dtype=itf.INSTANCE_DTYPE)
    if not len(ids):
        return table
    counts = np.diff(np.append(starts, len(order)))
    grouped_labels = np.asarray(labels)[order]
    fits = None
    if native and grouped_labels.dtype.kind in "iu" and grouped_labels.min() >= 0:
        from ._stages_native import rectangle_fits

        fits = rectangle_fits(np.asarray(points)[order, :3], starts, counts)
    if fits is None:
        for row, (inst, sel) in enumerate(zip(ids, np.split(order, starts[1:]))):
            box = rectangle_fit(points[sel, :3])
            table[row] = (int(inst), int(np.bincount(labels[sel]).argmax()), box.x, box.y, box.z, box.length,
                          box.width, box.height, box.yaw, len(sel), float(confidence[sel].mean()))
        return table
    best, thetas, ext1, ext2, m1, m2, z_min, z_max = fits
    _, cos_t, sin_t = heading_table()
    box = finish_boxes(thetas[best], cos_t[best], sin_t[best], ext1, ext2, m1, m2, z_min, z_max)
    # Majority label per instance: one bincount over (instance row, label) pairs; argmax takes the
    # first, i.e. smallest, label among equal counts, as bincount(labels[sel]).argmax() does.
    n_labels = int(grouped_labels.max()) + 1
    votes = np.bincount(np.repeat(np.arange(len(ids)), counts) * n_labels + grouped_labels,
                        minlength=len(ids) * n_labels).reshape(len(ids), n_labels)
    # The mean confidence stays numpy's mean of each instance's values (pairwise float32 sums, which
    # a one-pass vectorised sum would round differently): a slice of one gather per instance.
    grouped_conf = np.asarray(confidence)[order]
    score = [float(grouped_conf[a:a + c].mean()) for a, c in zip(starts, counts)]
    table["instance_id"] = ids
    table["class_id"] = votes.argmax(1)
    for k in ("x", "y", "z", "length", "width", "height", "yaw"):
        table[k] = box[k]
    table["num_points"] = counts
    table["score"] = score
    return table
