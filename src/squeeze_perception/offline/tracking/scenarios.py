"""Ground-truth track sequences and a seeded sensor-noise model that turns them into inputs.

Used by the tests (scripted crossing / occlusion / dropout cases), by `track bench`
(random traffic of N objects) and by `track eval` (synthetic sequences from the synth
engineer's `tracks_velo.csv`, made into noisy LiDAR instances and camera boxes here).

The noise model, documented in docs/tracking.md, stands in for the SqueezeSeg and
SqueezeDet nodes so fusion can be measured on a fixed, reproducible input:

* LiDAR instances (front `fov_deg` only, as SqueezeSeg): centre noise (class std + 1 % of range), size noise, yaw noise with a
  front/back flip, misses (certain when the object has no LiDAR points, likelier when it
  has few), class confusion, and clutter - static blobs (poles, bushes) seen in most
  frames plus one-frame blobs - with middling scores.
* Camera boxes: the ground-truth 3D box projected with the calibration, pixel jitter,
  misses (likelier for small boxes), rare class confusion, a few random false boxes.
  Clutter has no camera box: that is what fusion exploits.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ... import interfaces as itf
from ...tracking.fusion import project_boxes

GT_DTYPE = np.dtype(
    [("track_id", "<i4"), ("class_id", "<i4"), ("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
     ("length", "<f4"), ("width", "<f4"), ("height", "<f4"), ("yaw", "<f4"),
     ("vx", "<f4"), ("vy", "<f4"), ("num_points", "<i4")]
)

CLASS_BOX = {1: (4.0, 1.7, 1.5), 2: (0.8, 0.6, 1.75), 3: (1.8, 0.6, 1.7)}
CLASS_SPEED = {1: (4.0, 14.0), 2: (0.8, 1.8), 3: (3.0, 7.0)}
GROUND_Z = -1.73


@dataclass
class GroundTruthSequence:
    name: str
    stamps_s: np.ndarray  # (F,)
    frames: list[np.ndarray]  # F arrays of GT_DTYPE

    def __len__(self) -> int:
        return len(self.frames)


def _row(track_id: int, cls: int, x: float, y: float, yaw: float, vx: float, vy: float,
         num_points: int) -> tuple:
    length, width, height = CLASS_BOX[cls]
    return (track_id, cls, x, y, GROUND_Z + height / 2, length, width, height, yaw, vx, vy, num_points)


def points_for_range(cls: int, rng: float) -> int:
    """Rough HDL-64E return count on an object at this range (falls with range squared)."""
    area = {1: 6.0, 2: 1.0, 3: 1.5}[cls]
    return int(area * 1500.0 / max(rng, 1.0) ** 2)


def linear_motion(name: str, objects: list[dict], n_frames: int, dt: float = 0.1,
                  hidden: dict[int, range] | None = None) -> GroundTruthSequence:
    """Objects moving at constant velocity (+ optional acceleration `a`, turn rate `w`).

    objects: dicts with id, cls, x, y, speed, heading, and optional a (m/s^2), w (rad/s).
    hidden: track id -> frame range in which the object has no LiDAR points (occluded).
    """
    hidden = hidden or {}
    state = [dict(o) for o in objects]
    frames = []
    for k in range(n_frames):
        rows = []
        for o in state:
            vx, vy = o["speed"] * np.cos(o["heading"]), o["speed"] * np.sin(o["heading"])
            n_pts = points_for_range(o["cls"], float(np.hypot(o["x"], o["y"])))
            if k in hidden.get(o["id"], ()):
                n_pts = 0
            rows.append(_row(o["id"], o["cls"], o["x"], o["y"], o["heading"], vx, vy, n_pts))
            o["x"] += vx * dt
            o["y"] += vy * dt
            o["speed"] = max(0.0, o["speed"] + o.get("a", 0.0) * dt)
            o["heading"] += o.get("w", 0.0) * dt
        frames.append(np.array(rows, dtype=GT_DTYPE))
    return GroundTruthSequence(name, np.arange(n_frames) * dt, frames)


def crossing_pair(cls: int = 2, n_frames: int = 80, dt: float = 0.1, lateral_gap_m: float = 0.7) -> GroundTruthSequence:
    """Two objects walking (driving) towards each other in lanes `lateral_gap_m` apart; they pass mid-sequence."""
    speed = {1: 8.0, 2: 1.4, 3: 5.0}[cls]
    half = speed * n_frames * dt / 2
    return linear_motion("crossing_pair", [
        dict(id=1, cls=cls, x=12.0, y=-half, speed=speed, heading=np.pi / 2),
        dict(id=2, cls=cls, x=12.0 + lateral_gap_m, y=half, speed=speed, heading=-np.pi / 2),
    ], n_frames, dt)


def x_crossing(n_frames: int = 60, dt: float = 0.1) -> GroundTruthSequence:
    """Two cars on perpendicular paths through the same point, 0.3 s apart."""
    speed = 8.0
    t_cross = n_frames * dt / 2
    return linear_motion("x_crossing", [
        dict(id=1, cls=1, x=20.0 - speed * t_cross, y=0.0, speed=speed, heading=0.0),
        dict(id=2, cls=1, x=20.0, y=-speed * (t_cross + 0.3), speed=speed, heading=np.pi / 2),
    ], n_frames, dt)


def occlusion_gap(gap_frames: int = 5, n_frames: int = 50, dt: float = 0.1, cls: int = 1) -> GroundTruthSequence:
    """One object crossing in front; no LiDAR points for `gap_frames` frames from frame 20."""
    speed = {1: 8.0, 2: 1.4, 3: 5.0}[cls]
    return linear_motion("occlusion_gap", [
        dict(id=1, cls=cls, x=15.0, y=-speed * n_frames * dt / 2, speed=speed, heading=np.pi / 2)],
        n_frames, dt, hidden={1: range(20, 20 + gap_frames)})


def random_traffic(n_objects: int, n_frames: int = 100, dt: float = 0.1, seed: int = 0,
                   fov_deg: float = 90.0) -> GroundTruthSequence:
    """n objects of random class, starting in the front field of view, gently turning/accelerating."""
    rng = np.random.default_rng(seed)
    objects = []
    for i in range(n_objects):
        cls = int(rng.choice([1, 1, 2, 3]))
        r = rng.uniform(6.0, 45.0)
        az = np.deg2rad(rng.uniform(-fov_deg / 2, fov_deg / 2))
        lo, hi = CLASS_SPEED[cls]
        objects.append(dict(id=i + 1, cls=cls, x=r * np.cos(az), y=r * np.sin(az),
                            speed=rng.uniform(lo, hi) * rng.choice([0.0, 1.0], p=[0.2, 0.8]),
                            heading=rng.uniform(-np.pi, np.pi), a=rng.normal(0, 0.3), w=rng.normal(0, 0.05)))
    return linear_motion(f"traffic_{n_objects}_seed{seed}", objects, n_frames, dt)


def gt_to_instances(gt: np.ndarray, score: float = 0.9) -> np.ndarray:
    """Perfect instances (every object with LiDAR points) - the noiseless input."""
    seen = gt[gt["num_points"] > 0]
    out = np.zeros(len(seen), itf.INSTANCE_DTYPE)
    for name in ("class_id", "x", "y", "z", "length", "width", "height", "yaw", "num_points"):
        out[name] = seen[name]
    out["instance_id"] = np.arange(len(seen))
    out["score"] = score
    return out


# --------------------------------------------------------------------------- noise model
@dataclass(frozen=True)
class LidarNoise:
    position_std: dict[int, float] = field(default_factory=lambda: {1: 0.25, 2: 0.10, 3: 0.15})
    range_std_fraction: float = 0.01
    size_std_fraction: float = 0.10
    yaw_std: float = 0.10
    yaw_flip_p: float = 0.3
    miss_p: float = 0.05
    few_points: int = 15  # below this many points a miss is likelier
    few_points_miss_p: float = 0.3
    class_confusion_p: float = 0.15
    true_score: tuple[float, float] = (0.5, 0.95)
    clutter_objects: int = 3  # static blobs per sequence
    clutter_seen_p: float = 0.7
    random_fp_per_frame: float = 0.5
    fp_score: tuple[float, float] = (0.35, 0.75)
    max_range_m: float = 60.0
    fov_deg: float = 90.0  # SqueezeSeg's front view: no instances outside it


@dataclass(frozen=True)
class CameraNoise:
    pixel_std: float = 3.0
    size_jitter_fraction: float = 0.05
    miss_p: float = 0.08
    small_box_px: float = 25.0
    small_box_miss_p: float = 0.4
    class_confusion_p: float = 0.03
    true_score: tuple[float, float] = (0.6, 0.99)
    fp_per_frame: float = 0.2
    fp_score: tuple[float, float] = (0.3, 0.6)
    max_range_m: float = 50.0


def _other_class(rng: np.random.Generator, cls: int) -> int:
    return int(rng.choice([c for c in (1, 2, 3) if c != cls]))


def noisy_instances(gt: np.ndarray, rng: np.random.Generator, noise: LidarNoise,
                    clutter: np.ndarray) -> np.ndarray:
    rows = []
    for o in gt:
        rng_m = float(np.hypot(o["x"], o["y"]))
        azimuth = np.degrees(abs(np.arctan2(o["y"], o["x"])))
        if o["num_points"] <= 0 or rng_m > noise.max_range_m or azimuth > noise.fov_deg / 2 or o["class_id"] <= 0:
            continue
        p_miss = noise.few_points_miss_p if o["num_points"] < noise.few_points else noise.miss_p
        if rng.random() < p_miss:
            continue
        cls = int(o["class_id"])
        std = noise.position_std.get(cls, 0.2) + noise.range_std_fraction * rng_m
        score = rng.uniform(*noise.true_score)
        if rng.random() < noise.class_confusion_p:
            cls, score = _other_class(rng, cls), score * 0.7
        yaw = float(o["yaw"]) + rng.normal(0, noise.yaw_std) + (np.pi if rng.random() < noise.yaw_flip_p else 0.0)
        size = np.array([o["length"], o["width"], o["height"]]) * (1 + rng.normal(0, noise.size_std_fraction, 3))
        rows.append((len(rows), cls, o["x"] + rng.normal(0, std), o["y"] + rng.normal(0, std),
                     o["z"] + rng.normal(0, 0.05), *np.abs(size), yaw, int(o["num_points"]), score))
    for c in clutter:
        if rng.random() < noise.clutter_seen_p:
            rows.append((len(rows), int(c["class_id"]), c["x"] + rng.normal(0, 0.1), c["y"] + rng.normal(0, 0.1),
                         c["z"], c["length"], c["width"], c["height"], rng.uniform(-np.pi, np.pi), 20,
                         rng.uniform(*noise.fp_score)))
    for _ in range(rng.poisson(noise.random_fp_per_frame)):
        x, y, cls = _random_ground_point(rng)
        length, width, height = CLASS_BOX[cls]
        rows.append((len(rows), cls, x, y, GROUND_Z + height / 2, length, width, height,
                     rng.uniform(-np.pi, np.pi), 10, rng.uniform(*noise.fp_score)))
    return np.array(rows, dtype=itf.INSTANCE_DTYPE) if rows else itf.empty(itf.INSTANCE_DTYPE)


def _random_ground_point(rng: np.random.Generator) -> tuple[float, float, int]:
    r = rng.uniform(5.0, 40.0)
    az = rng.uniform(-np.pi / 4, np.pi / 4)
    return r * np.cos(az), r * np.sin(az), int(rng.choice([1, 2, 2, 3]))


def make_clutter(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.zeros(n, itf.INSTANCE_DTYPE)
    for i in range(n):
        x, y, cls = _random_ground_point(rng)
        length, width, height = CLASS_BOX[cls]
        out[i] = (i, cls, x, y, GROUND_Z + height / 2, length, width, height, 0.0, 20, 0.5)
    return out


def noisy_detections(gt: np.ndarray, rng: np.random.Generator, noise: CameraNoise,
                     velo_to_image: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    boxes, valid, visible = project_boxes(gt, velo_to_image, image_size)
    rows = []
    for o, box, ok, vis in zip(gt, boxes, valid, visible):
        if not ok or vis < 0.5 or np.hypot(o["x"], o["y"]) > noise.max_range_m or o["class_id"] <= 0:
            continue
        h = box[3] - box[1]
        if rng.random() < (noise.small_box_miss_p if h < noise.small_box_px else noise.miss_p):
            continue
        size = box[2:] - box[:2]
        jitter = rng.normal(0, noise.pixel_std, 4) + rng.normal(0, noise.size_jitter_fraction, 4) * np.tile(size, 2)
        b = box + jitter
        cls = int(o["class_id"])
        if rng.random() < noise.class_confusion_p:
            cls = _other_class(rng, cls)
        rows.append((min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]),
                     rng.uniform(*noise.true_score), cls))
    width, height = image_size
    for _ in range(rng.poisson(noise.fp_per_frame)):
        w, h = rng.uniform(20, 150), rng.uniform(20, 100)
        u, v = rng.uniform(0, width - w), rng.uniform(height * 0.3, height - h)
        rows.append((u, v, u + w, v + h, rng.uniform(*noise.fp_score), int(rng.integers(1, 4))))
    return np.array(rows, dtype=itf.DETECTION_DTYPE) if rows else itf.empty(itf.DETECTION_DTYPE)


def simulate_inputs(seq: GroundTruthSequence, seed: int, velo_to_image: np.ndarray | None,
                    image_size: tuple[int, int] | None, lidar: LidarNoise = LidarNoise(),
                    camera: CameraNoise = CameraNoise()) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(instances, detections) per frame; the same seed gives the same inputs."""
    rng = np.random.default_rng(seed)
    clutter = make_clutter(rng, lidar.clutter_objects)
    cam_rng = np.random.default_rng(seed + 1_000_003)  # camera draws independent of LiDAR draws
    out = []
    for gt in seq.frames:
        inst = noisy_instances(gt, rng, lidar, clutter)
        det = None
        if velo_to_image is not None and image_size is not None:
            det = noisy_detections(gt, cam_rng, camera, velo_to_image, image_size)
        out.append((inst, det))
    return out
