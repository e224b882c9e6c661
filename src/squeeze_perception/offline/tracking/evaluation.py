"""CLEAR MOT, identity and HOTA metrics for tracker output against ground-truth tracks.

The metrics come from TrackEval (`trackeval==1.3.0`, the HOTA authors' code, packaged on
PyPI; it also implements CLEAR MOT and IDF1). `motmetrics==1.4.0` was the alternative: no
HOTA and it needs pandas, so it was not used. TrackEval only needs, per frame, the ids on
both sides and a similarity matrix; ours is a bird's-eye-view centre-distance similarity

    sim = max(0, 1 - d / d_max)     (d_max = 2 m by default)

so CLEAR's match threshold 0.5 means "centres within 1 m", HOTA averages over 1.9 m ... 0.1 m,
and MOTP (mean similarity of matches) converts back to metres as d_max * (1 - MOTP).

Evaluation region: ground truth and tracks within `max_range_m` and the front field of view
(`fov_deg`, SqueezeSeg's 90 degrees). Ground truth with fewer than `min_points` LiDAR points,
and class 0 objects (vans, trucks: no class of ours), are "don't care": tracks on them are
neither rewarded nor counted as false positives.
"""
from __future__ import annotations

import contextlib
import io
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from ... import interfaces as itf
from .scenarios import GT_DTYPE, GroundTruthSequence

SUMMARY_KEYS = ("HOTA", "DetA", "AssA", "MOTA", "MOTP", "MOTP_m", "IDF1", "IDSW", "Frag", "CLR_TP",
                "CLR_FN", "CLR_FP", "MT", "ML")


@dataclass(frozen=True)
class EvalRegion:
    max_range_m: float = 50.0
    fov_deg: float = 90.0
    min_points: int = 1
    d_max_m: float = 2.0


# --------------------------------------------------------------------------- ground truth IO
def _parse_kitti_time(line: str) -> float | None:
    line = line.strip()
    if not line:
        return None
    m = re.match(r"(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2})(?:\.(\d+))?", line)
    if not m:
        try:
            return float(line)
        except ValueError:
            return None
    base = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
    frac = m.group(2) or "0"
    return base + int(frac) / 10 ** len(frac)


def read_tracks_velo(csv_path: str | Path, timestamps: str | Path | None = None,
                     default_dt: float = 0.1) -> GroundTruthSequence:
    """tracks_velo.csv (frame,track_id,class_id,x,y,z,length,width,height,yaw,vx,vy,num_points)."""
    path = Path(csv_path)
    raw = np.genfromtxt(path, delimiter=",", names=True, dtype=None, encoding="utf-8")
    raw = np.atleast_1d(raw)
    missing = [c for c in ("frame", *GT_DTYPE.names) if c not in (raw.dtype.names or ())]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    n_frames = int(raw["frame"].max()) + 1 if len(raw) else 0
    if timestamps is None:
        candidate = path.parent / "velodyne_points" / "timestamps.txt"
        timestamps = candidate if candidate.exists() else None
    stamps = np.arange(n_frames) * default_dt
    if timestamps is not None:
        parsed = [_parse_kitti_time(line) for line in Path(timestamps).read_text().splitlines()]
        parsed = [p for p in parsed if p is not None]
        if len(parsed) >= n_frames:
            stamps = np.array(parsed[:n_frames]) - parsed[0]
        n_frames = max(n_frames, len(parsed))
        if len(parsed) > len(stamps):
            stamps = np.array(parsed) - parsed[0]
    frames = []
    for k in range(n_frames):
        rows = raw[raw["frame"] == k]
        arr = np.zeros(len(rows), GT_DTYPE)
        for name in GT_DTYPE.names:
            arr[name] = rows[name]
        frames.append(arr)
    return GroundTruthSequence(path.parent.name, stamps, frames)


def find_sequences(root: str | Path) -> list[Path]:
    """Every raw/<date>/<drive>_sync/tracks_velo.csv under root, sorted."""
    return sorted(Path(root).glob("raw/*/*_sync/tracks_velo.csv"))


# --------------------------------------------------------------------------- metrics
def _in_region(x: np.ndarray, y: np.ndarray, region: EvalRegion) -> np.ndarray:
    az = np.degrees(np.abs(np.arctan2(y, x)))
    return (np.hypot(x, y) <= region.max_range_m) & (az <= region.fov_deg / 2) & (x > 0)


def _similarity(gt: np.ndarray, trk: np.ndarray, d_max: float) -> np.ndarray:
    if len(gt) == 0 or len(trk) == 0:
        return np.zeros((len(gt), len(trk)))
    d = np.hypot(gt["x"][:, None] - trk["x"][None, :], gt["y"][:, None] - trk["y"][None, :])
    return np.clip(1.0 - d / d_max, 0.0, 1.0)


def build_trackeval_data(seq: GroundTruthSequence, tracks: list[np.ndarray], region: EvalRegion = EvalRegion(),
                         class_id: int | None = None) -> dict:
    """TrackEval's per-sequence dict; class_id None = class-agnostic, else one class only."""
    if len(tracks) != len(seq.frames):
        raise ValueError(f"{len(tracks)} track frames for a {len(seq.frames)}-frame sequence")
    gt_ids, trk_ids, sims = [], [], []
    gt_map: dict[int, int] = {}
    trk_map: dict[int, int] = {}
    for gt, trk in zip(seq.frames, tracks):
        gt = gt[_in_region(gt["x"], gt["y"], region)]
        trk = trk[_in_region(trk["x"], trk["y"], region)]
        if class_id is not None:
            gt, trk = gt[gt["class_id"] == class_id], trk[trk["class_id"] == class_id]
        care = (gt["num_points"] >= region.min_points) & (gt["class_id"] > 0)
        ignored, gt = gt[~care], gt[care]
        if len(ignored) and len(trk):  # tracks on don't-care objects are removed, as KITTI does
            sim_ign = _similarity(ignored, trk, region.d_max_m)
            r, c = linear_sum_assignment(-sim_ign)
            drop = c[sim_ign[r, c] >= 0.5]
            trk = np.delete(trk, drop)
        g = np.array([gt_map.setdefault(int(i), len(gt_map)) for i in gt["track_id"]], dtype=int)
        t = np.array([trk_map.setdefault(int(i), len(trk_map)) for i in trk["track_id"]], dtype=int)
        gt_ids.append(g)
        trk_ids.append(t)
        sims.append(_similarity(gt, trk, region.d_max_m))
    return {
        "num_timesteps": len(seq.frames), "gt_ids": gt_ids, "tracker_ids": trk_ids, "similarity_scores": sims,
        "num_gt_ids": len(gt_map), "num_tracker_ids": len(trk_map),
        "num_gt_dets": int(sum(len(g) for g in gt_ids)), "num_tracker_dets": int(sum(len(t) for t in trk_ids)),
        "seq": seq.name,
    }


def _metrics():
    # TrackEval prints its config on construction; keep our CLI output clean.
    from trackeval.metrics import CLEAR, HOTA, Identity

    with contextlib.redirect_stdout(io.StringIO()):
        return HOTA(), CLEAR({"THRESHOLD": 0.5, "PRINT_CONFIG": False}), Identity({"THRESHOLD": 0.5,
                                                                                   "PRINT_CONFIG": False})


def evaluate(sequences: list[GroundTruthSequence], tracks: list[list[np.ndarray]],
             region: EvalRegion = EvalRegion(), class_id: int | None = None) -> dict[str, float]:
    """Metrics combined over sequences (TrackEval's own combination rules)."""
    hota, clear, ident = _metrics()
    per_seq = {"hota": {}, "clear": {}, "id": {}}
    for seq, trk in zip(sequences, tracks):
        data = build_trackeval_data(seq, trk, region, class_id)
        key = f"{seq.name}#{len(per_seq['hota'])}"
        per_seq["hota"][key] = hota.eval_sequence(data)
        per_seq["clear"][key] = clear.eval_sequence(data)
        per_seq["id"][key] = ident.eval_sequence(data)
    h = hota.combine_sequences(per_seq["hota"])
    c = clear.combine_sequences(per_seq["clear"])
    i = ident.combine_sequences(per_seq["id"])
    return summarise(h, c, i, region)


def summarise(h: dict, c: dict, i: dict, region: EvalRegion) -> dict[str, float]:
    out = {"HOTA": float(np.mean(h["HOTA"])), "DetA": float(np.mean(h["DetA"])),
           "AssA": float(np.mean(h["AssA"]))}
    for k in ("MOTA", "MOTP", "IDSW", "Frag", "CLR_TP", "CLR_FN", "CLR_FP", "MT", "ML"):
        out[k] = float(c[k])
    out["MOTP_m"] = region.d_max_m * (1.0 - out["MOTP"]) if out["CLR_TP"] > 0 else float("nan")
    out["IDF1"] = float(i["IDF1"])
    return out


def empty_tracks(n: int) -> list[np.ndarray]:
    return [itf.empty(itf.TRACK_DTYPE) for _ in range(n)]


def input_quality(sequences: list[GroundTruthSequence], inputs: list[list[tuple[np.ndarray, np.ndarray | None]]],
                  region: EvalRegion = EvalRegion(), match_m: float = 1.0) -> dict[str, float]:
    """How good the tracker's inputs are before any tracking, class-agnostic, in the evaluation
    region: instances per frame, the share of them within `match_m` of a ground-truth object
    (one instance per object, Hungarian), the share of cared-for objects that got one, and
    camera boxes per frame. Says whether a tracker's misses and false tracks come from its inputs."""
    n_inst = n_matched = n_gt = n_gt_hit = n_det = frames = 0
    for seq, seq_inputs in zip(sequences, inputs):
        for gt, (inst, det) in zip(seq.frames, seq_inputs):
            frames += 1
            n_det += 0 if det is None else len(det)
            gt = gt[_in_region(gt["x"], gt["y"], region) & (gt["num_points"] >= region.min_points)
                    & (gt["class_id"] > 0)]
            inst = inst[_in_region(inst["x"], inst["y"], region)]
            n_inst += len(inst)
            n_gt += len(gt)
            if len(gt) and len(inst):
                d = np.hypot(gt["x"][:, None] - inst["x"][None, :], gt["y"][:, None] - inst["y"][None, :])
                # gated, so a far pair never displaces a near one
                r, c = linear_sum_assignment(np.where(d <= match_m, d, 1e6))
                hits = int((d[r, c] <= match_m).sum())
                n_matched += hits
                n_gt_hit += hits
    return {"instances_per_frame": n_inst / max(frames, 1), "instance_precision": n_matched / max(n_inst, 1),
            "object_recall": n_gt_hit / max(n_gt, 1), "detections_per_frame": n_det / max(frames, 1),
            "frames": frames}
