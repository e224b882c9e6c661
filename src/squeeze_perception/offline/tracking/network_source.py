"""Tracker inputs from the shipped networks (`track eval --source network`).

For every frame of a raw drive: the Velodyne scan goes through the segmentation pipeline as
squeezeseg_node runs it (node parameters from config/squeezeseg.yaml, the node's own
`build_pipeline` and `mask_implausible_points`), the camera image through SqueezeDet as
squeezedet_node runs it (`build_detector`, `detect_image`), and both tables reach the tracker
as tracker_node receives them: published as PointCloud2 tables, decoded with `cloud_to_table`
and cleaned by the plausibility checks with the tracker's limits.

The networks are the slow part (seconds per frame here, against a few ms of tracking), so
their per-frame outputs are cached, one .npz per drive and network, named by model and a key
over the model name, backend, weights checksum, the node parameters that change the output and
the drive's scans or images. Re-running the tracker variants, or another tracker setting, reads
the cache and loads no network.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ... import interfaces as itf
from ...paths import config_dir, project_root

DEFAULT_CACHE_DIR = project_root() / "out" / "track_network"
# Node parameters that do not change a network's output (threads, size limits that only refuse).
_NOT_IN_KEY = {"num_threads", "max_points", "annotate"}


class NetworkSourceError(RuntimeError):
    """The network source cannot produce inputs (missing scans, model refused); text for users."""


def node_params(specs, config_file: Path, node_name: str, overrides: dict | None = None) -> dict:
    """A node's parameters as the node starts with them: its ParamSpec defaults, then its YAML
    params file, then `overrides` (None values ignored)."""
    import yaml

    params = {s.name: s.default for s in specs}
    if config_file.exists():
        data = yaml.safe_load(config_file.read_text()) or {}
        from_file = data.get(node_name, {}).get("ros__parameters", {})
        params.update({k: v for k, v in from_file.items() if k in params})
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in params:
            raise NetworkSourceError(f"{node_name} has no parameter '{key}'")
        params[key] = value
    return params


def segmentation_params(model: str | None = None, backend: str | None = None, weights: str | None = None,
                        num_threads: int = 1, config_file: Path | None = None) -> dict:
    from ...nodes.squeezeseg_node import PARAMS

    return node_params(PARAMS, config_file or config_dir() / "squeezeseg.yaml", "squeezeseg_node",
                       dict(model=model, backend=backend, weights=weights, num_threads=num_threads))


def detection_params(model: str | None = None, backend: str | None = None, weights: str | None = None,
                     num_threads: int = 1, config_file: Path | None = None) -> dict:
    from ...nodes.squeezedet_node import PARAMS

    return node_params(PARAMS, config_file or config_dir() / "squeezedet.yaml", "squeezedet_node",
                       dict(model=model, backend=backend, weights=weights, num_threads=num_threads))


def tracker_table_params(config_file: Path | None = None) -> dict:
    """The tracker node's plausibility limits on its input tables (defaults + its YAML)."""
    from ...nodes.limits import TABLE_LIMIT_PARAMS

    return node_params(TABLE_LIMIT_PARAMS, config_file or config_dir() / "tracker.yaml", "tracker_node")


def weights_checksum(task: str, params: dict) -> str:
    """sha256 of the file the model's weights come from (the torch checkpoint, whose graph the
    onnxruntime backend exports, or the ONNX file of an ONNX-only model); 'missing' when absent
    (loading the model then fails with the reason)."""
    from ...backends.common import sha256_file
    from ...registry import get_model

    spec = get_model(params["model"], task=task)
    path = Path(params["weights"]) if params.get("weights") else spec.weights_path()
    if path is None or not path.exists():
        return "missing"
    return sha256_file(path)


def _files_signature(paths: list[Path]) -> list:
    # Size and modification time: a regenerated drive changes them, hashing ~2 MB scans would not pay.
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths]


def cache_key(task: str, params: dict, inputs: list[Path]) -> str:
    relevant = {k: v for k, v in sorted(params.items()) if k not in _NOT_IN_KEY}
    blob = json.dumps({"task": task, "params": relevant, "weights_sha256": weights_checksum(task, params),
                       "inputs": _files_signature(inputs)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- per-drive outputs
@dataclass
class DriveOutputs:
    """One network's per-frame tables on one drive, as the network's node publishes them."""

    tables: list[np.ndarray]  # per frame: INSTANCE_DTYPE (segmentation) or DETECTION_DTYPE (detection)
    frame_ms: np.ndarray  # (F,) wall ms of the node's work per frame
    network_ms: np.ndarray  # (F,) of that, the network call
    path: Path
    from_cache: bool = False

    def save(self, meta: dict) -> None:
        rows = np.concatenate(self.tables) if self.tables else np.zeros(0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp.npz")
        np.savez(tmp, rows=rows, counts=np.array([len(t) for t in self.tables], np.int64),
                 frame_ms=self.frame_ms, network_ms=self.network_ms, meta=json.dumps(meta, default=str))
        tmp.replace(self.path)  # a run killed mid-write leaves no half cache behind

    @staticmethod
    def load(path: Path, dtype: np.dtype, n_frames: int) -> "DriveOutputs | None":
        try:
            with np.load(path, allow_pickle=False) as z:
                rows, counts = z["rows"], z["counts"]
                frame_ms, network_ms = z["frame_ms"], z["network_ms"]
        except (OSError, KeyError, ValueError):
            return None  # unreadable: computed again
        if len(counts) != n_frames or rows.dtype != dtype or counts.sum() != len(rows):
            return None
        tables = np.split(rows, np.cumsum(counts)[:-1]) if n_frames else []
        return DriveOutputs(list(tables), frame_ms, network_ms, path, from_cache=True)


@dataclass
class NetworkSource:
    """Segmentation (and optionally detection) outputs per drive, computed once and cached."""

    seg_params: dict
    det_params: dict | None = None
    cache_dir: Path = DEFAULT_CACHE_DIR
    refresh: bool = False  # ignore existing cache files (they are overwritten)
    _pipeline: object = field(default=None, repr=False)
    _detector: object = field(default=None, repr=False)
    computed_frames: dict = field(default_factory=lambda: {"segmentation": 0, "detection": 0})

    # -- what runs where
    @staticmethod
    def scans(drive_dir: Path, n_frames: int) -> list[Path]:
        paths = sorted((drive_dir / "velodyne_points" / "data").glob("*.bin"))[:n_frames]
        if len(paths) < n_frames:
            raise NetworkSourceError(f"{drive_dir}: {len(paths)} Velodyne scans for {n_frames} ground-truth "
                                     "frames; regenerate the drive (squeeze-perception synth ...)")
        return paths

    @staticmethod
    def images(drive_dir: Path, n_frames: int) -> list[Path]:
        paths = sorted((drive_dir / "image_02" / "data").glob("*.png"))[:n_frames]
        if len(paths) < n_frames:
            raise NetworkSourceError(f"{drive_dir}: {len(paths)} camera images for {n_frames} ground-truth frames")
        return paths

    def cache_path(self, drive_dir: Path, task: str, inputs: list[Path]) -> Path:
        params = self.seg_params if task == "segmentation" else self.det_params
        short = "seg" if task == "segmentation" else "det"
        name = f"{short}_{params['model']}_{params['backend']}_{cache_key(task, params, inputs)}.npz"
        return self.cache_dir / drive_dir.parent.name / drive_dir.name / name

    def describe(self) -> str:
        seg = self.seg_params
        text = (f"SqueezeSeg pipeline '{seg['model']}' ({seg['backend']}, weights sha256 "
                f"{weights_checksum('segmentation', seg)[:12]}, crf {seg['crf']}, ground removal "
                f"{seg['ground_removal']}, DBSCAN eps {seg['cluster_eps']} m / min {seg['cluster_min_points']}, "
                f"size gate {seg['size_gate']}, box completion {seg.get('box_completion', False)})")
        if self.det_params is not None:
            det = self.det_params
            text += (f" + SqueezeDet '{det['model']}' ({det['backend']}, weights sha256 "
                     f"{weights_checksum('detection', det)[:12]}, score >= {det['score_threshold']})")
        else:
            text += ", no camera detector"
        return text

    # -- the networks, loaded only on a cache miss
    def _segment(self, path: Path):
        from ...kitti.labels import read_velodyne_bin
        from ...nodes.squeezeseg_node import build_pipeline, mask_implausible_points

        if self._pipeline is None:
            self._pipeline = build_pipeline(self.seg_params)
        points = read_velodyne_bin(path)
        work, _ = mask_implausible_points(points, self.seg_params)
        result = self._pipeline.process(work)
        return result.table, float(result.timings_ms.get("network", 0.0) + result.timings_ms.get("crf", 0.0))

    def _detect(self, path: Path):
        from ...kitti.datasets import read_image
        from ...nodes.squeezedet_node import build_detector, detect_image, to_rgb8

        if self._detector is None:
            self._detector = build_detector(self.det_params)
        pred = detect_image(self._detector, to_rgb8(read_image(path)), self.det_params)
        return pred.detections, float(pred.latency_ms or 0.0)

    def drive_outputs(self, drive_dir: Path, n_frames: int, task: str,
                      advance: Callable[[int], None] | None = None) -> DriveOutputs:
        """The cached outputs of `task` on the drive's first n_frames frames, computed on a miss."""
        import time

        inputs = self.scans(drive_dir, n_frames) if task == "segmentation" else self.images(drive_dir, n_frames)
        path = self.cache_path(drive_dir, task, inputs)
        dtype = itf.INSTANCE_DTYPE if task == "segmentation" else itf.DETECTION_DTYPE
        if not self.refresh and path.exists():
            cached = DriveOutputs.load(path, dtype, n_frames)
            if cached is not None:
                return cached
        run = self._segment if task == "segmentation" else self._detect
        tables, frame_ms, network_ms = [], [], []
        for p in inputs:
            t0 = time.perf_counter()
            table, net_ms = run(p)
            frame_ms.append((time.perf_counter() - t0) * 1e3)
            network_ms.append(net_ms)
            tables.append(np.asarray(table, dtype=dtype))
            self.computed_frames[task] += 1
            if advance is not None:
                advance(1)
        out = DriveOutputs(tables, np.asarray(frame_ms), np.asarray(network_ms), path)
        params = self.seg_params if task == "segmentation" else self.det_params
        out.save({"task": task, "drive": str(drive_dir), "params": params,
                  "weights_sha256": weights_checksum(task, params)})
        return out

    def pending_frames(self, drives: list[tuple[Path, int]]) -> int:
        """Frames the networks still have to run (cache misses), for the progress bar."""
        total = 0
        for drive_dir, n in drives:
            tasks = [("segmentation", self.scans)] + ([("detection", self.images)] if self.det_params else [])
            for task, inputs in tasks:
                path = self.cache_path(drive_dir, task, inputs(drive_dir, n))
                if self.refresh or not path.exists():
                    total += n
        return total

    def outputs(self, drives: list[tuple[Path, int]], progress: bool = True):
        """Per drive: (segmentation DriveOutputs, detection DriveOutputs or None)."""
        from tqdm import tqdm

        pending = self.pending_frames(drives)
        with tqdm(total=pending, desc="networks (frames)", unit="frame", disable=not progress or pending == 0,
                  leave=False) as bar:
            out = []
            for drive_dir, n in drives:
                bar.set_postfix_str(f"{drive_dir.name}")
                seg = self.drive_outputs(drive_dir, n, "segmentation", bar.update)
                det = self.drive_outputs(drive_dir, n, "detection", bar.update) if self.det_params else None
                out.append((seg, det))
        return out


# --------------------------------------------------------------------------- as the tracker receives them
def as_received(table: np.ndarray, dtype: np.dtype, check, limits) -> np.ndarray:
    """A published table as tracker_node gets it: through a PointCloud2 (table_to_cloud ->
    cloud_to_table) and its plausibility check with the tracker's limits."""
    from ...msgs_conv import cloud_to_table, table_to_cloud

    try:
        msg = table_to_cloud(np.asarray(table, dtype=dtype))
    except ImportError:  # no ROS messages installed: the packed table is what the message carries
        received = np.asarray(table, dtype=dtype).copy()
    else:
        received = cloud_to_table(msg, dtype)
    kept, _ = check(received, limits)
    return kept


def tracker_inputs(seg: DriveOutputs, det: DriveOutputs | None, table_params: dict
                   ) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(instances, detections or None) per frame, the format `run_sequence` and the nodes use."""
    from ...nodes.limits import table_limits
    from ...plausibility import check_detections, check_instances

    limits = table_limits(table_params)
    out = []
    for k, inst in enumerate(seg.tables):
        received_inst = as_received(inst, itf.INSTANCE_DTYPE, check_instances, limits)
        received_det = None
        if det is not None:
            received_det = as_received(det.tables[k], itf.DETECTION_DTYPE, check_detections, limits)
        out.append((received_inst, received_det))
    return out
