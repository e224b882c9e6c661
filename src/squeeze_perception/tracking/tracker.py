"""Multi-object tracker over LiDAR instance boxes (ROS-free).

Per frame: predict every track to the frame's stamp, associate measurements (confirmed
tracks first, then tentative ones, each by the Hungarian solver inside a gate), update
the matched filters, start tentative tracks from unmatched measurements that are confident
enough, confirm a track after `min_hits` updates, and delete it once it has coasted
(no update) longer than `max_coast_s`. A tentative track that misses once is dropped.

Everything lives in the sensor frame it is fed (velo_link on our bags; there is no
odometry), so a parked car seen from a moving ego vehicle has a velocity.

Time: stamps must increase. A stamp more than `reset_jump_back_s` older than the last one
(a bag that loops) or a gap longer than `reset_gap_s` clears every track and restarts ids
at 1; a slightly older stamp (a late frame) is ignored.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Iterable, Mapping

import numpy as np

from .. import interfaces as itf
from .association import CHI2_2DOF, assign, gated_cost
from .kalman import MOTION_MODELS, CentreFilter, MotionNoise

NUM_CLASSES = len(itf.CLASS_NAMES)


@dataclass(frozen=True)
class ClassParams:
    """Tracking parameters of one class (config/tracker.yaml, section per class name)."""

    motion_model: str = "ca"
    process_noise: tuple[float, ...] = (0.1, 0.1, 2.0, 2.0, 10.0, 10.0)  # Q diagonal per second
    measurement_std: tuple[float, float] = (0.25, 0.25)  # R: LiDAR box centre noise, metres
    range_std_fraction: float = 0.01  # ...plus this fraction of the range (returns thin out far away)
    initial_std: tuple[float, ...] = (0.3, 0.3, 5.0, 5.0, 3.0, 3.0)  # sqrt of P0 diagonal
    gate_m: float = 3.0  # Euclidean gate around the predicted centre
    min_hits: int = 3  # updates before a track is confirmed (published)
    max_coast_s: float = 1.0  # a confirmed track without updates for longer is deleted
    output_coast_s: float = 0.3  # ...and is still published while coasting this long
    birth_min_score: float = 0.3  # measurements below this score never start a track
    confirm_min_score: float = 0.4  # a track's averaged score must reach this to be confirmed

    def noise(self) -> MotionNoise:
        return MotionNoise(tuple(self.process_noise), tuple(self.measurement_std), tuple(self.initial_std))

    def validate(self) -> None:
        if self.motion_model not in MOTION_MODELS:
            raise ValueError(f"motion_model '{self.motion_model}' is not one of {MOTION_MODELS}")
        self.noise().q_diag(self.motion_model)
        self.noise().p0_diag(self.motion_model)
        if len(self.measurement_std) != 2 or min(self.measurement_std) <= 0:
            raise ValueError(f"measurement_std needs two positive values, got {list(self.measurement_std)}")
        if self.range_std_fraction < 0:
            raise ValueError("range_std_fraction must be >= 0")
        if self.gate_m <= 0 or self.min_hits < 1 or self.max_coast_s < 0 or self.output_coast_s < 0:
            raise ValueError("gate_m > 0, min_hits >= 1, max_coast_s >= 0 and output_coast_s >= 0 are required")


# Defaults tuned on the built-in random traffic only (seeds 100+, never on the evaluation
# sequences or real data; docs/tracking.md); config/tracker.yaml repeats them.
DEFAULT_CLASS_PARAMS: dict[str, ClassParams] = {
    "unknown": ClassParams(birth_min_score=1.01),  # > 1: background blobs never start tracks
    "car": ClassParams(process_noise=(0.1, 0.1, 1.0, 1.0, 4.0, 4.0), gate_m=4.0, measurement_std=(0.3, 0.3)),
    "pedestrian": ClassParams(motion_model="cv", process_noise=(0.1, 0.1, 1.5, 1.5),
                              measurement_std=(0.15, 0.15), initial_std=(0.2, 0.2, 1.5, 1.5),
                              gate_m=1.5, max_coast_s=0.8),
    "cyclist": ClassParams(process_noise=(0.1, 0.1, 2.0, 2.0, 6.0, 6.0), measurement_std=(0.2, 0.2),
                           initial_std=(0.2, 0.2, 4.0, 4.0, 2.0, 2.0), gate_m=2.5),
}


@dataclass(frozen=True)
class TrackerConfig:
    classes: dict[str, ClassParams] = field(default_factory=lambda: dict(DEFAULT_CLASS_PARAMS))
    chi2_gate: float = CHI2_2DOF[0.999]
    class_mismatch_cost: float = 4.0
    class_vote_decay: float = 0.9  # per update: older class evidence fades
    box_smoothing: float = 0.4  # weight of a new measurement in z / size / yaw averages
    heading_min_speed: float = 1.5  # m/s: above it the box yaw is flipped to face the motion
    reset_jump_back_s: float = 0.5
    reset_gap_s: float = 5.0
    trail_length: int = 10

    def for_class(self, class_id: int) -> ClassParams:
        name = itf.CLASS_NAMES[class_id] if 0 <= class_id < NUM_CLASSES else "unknown"
        return self.classes.get(name, self.classes.get("unknown", ClassParams()))

    def validate(self) -> None:
        for name, params in self.classes.items():
            if name not in itf.CLASS_NAMES:
                raise ValueError(f"unknown class section '{name}'; classes are {itf.CLASS_NAMES}")
            try:
                params.validate()
            except ValueError as exc:
                raise ValueError(f"class '{name}': {exc}") from exc
        if not 0 < self.box_smoothing <= 1 or not 0 < self.class_vote_decay <= 1:
            raise ValueError("box_smoothing and class_vote_decay must be in (0, 1]")

    # ------------------------------------------------------------------ flat (ROS) form
    def to_params(self) -> dict[str, Any]:
        """Flat name -> value mapping, the form ROS parameters take ("car.gate_m")."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name != "classes":
                out[f.name] = getattr(self, f.name)
        for name, params in self.classes.items():
            for key, value in asdict(params).items():
                out[f"{name}.{key}"] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_params(cls, params: Mapping[str, Any], base: "TrackerConfig | None" = None) -> "TrackerConfig":
        """Build from flat or nested (YAML) parameters; unknown keys are ignored, missing keep base."""
        flat = dict(_flatten(params))
        base = base or cls()
        top = {f.name: flat[f.name] for f in fields(cls) if f.name != "classes" and f.name in flat}
        classes = dict(base.classes)
        for name in itf.CLASS_NAMES:
            current = classes.get(name, ClassParams())
            updates = {}
            for f in fields(ClassParams):
                key = f"{name}.{f.name}"
                if key in flat:
                    value = flat[key]
                    updates[f.name] = tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else value
            classes[name] = replace(current, **updates) if updates else current
        cfg = replace(base, classes=classes, **top)
        cfg.validate()
        return cfg


def _flatten(params: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value


def wrap_angle(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


@dataclass
class Track:
    track_id: int
    filter: CentreFilter
    class_votes: np.ndarray
    z: float
    size: np.ndarray  # length, width, height
    yaw: float
    score: float
    born_s: float
    last_update_s: float
    hits: int = 1
    age: int = 1  # tracker steps since birth, coasting included
    confirmed: bool = False
    trail: deque = field(default_factory=deque)

    @property
    def class_id(self) -> int:
        if not np.any(self.class_votes[1:] > 0):
            return 0
        return int(np.argmax(self.class_votes[1:]) + 1)

    @property
    def position(self) -> np.ndarray:
        return self.filter.position

    @property
    def velocity(self) -> np.ndarray:
        return self.filter.velocity


class MultiObjectTracker:
    """Kalman tracks of instance boxes; `step()` once per LiDAR frame."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self.config.validate()
        self.tracks: list[Track] = []
        self.last_stamp_s: float | None = None
        self.next_id = 1
        self.resets = 0
        self.late_frames = 0

    def reset(self) -> None:
        """Drop every track and restart ids at 1 (the bag looped or time jumped)."""
        self.tracks = []
        self.last_stamp_s = None
        self.next_id = 1
        self.resets += 1

    # ------------------------------------------------------------------ main step
    def step(self, measurements: np.ndarray, stamp_s: float,
             measurement_std: np.ndarray | None = None, allow_birth: np.ndarray | None = None) -> np.ndarray:
        """Advance to `stamp_s` with INSTANCE_DTYPE `measurements`; return TRACK_DTYPE rows.

        measurement_std: optional (N,) or (N, 2) per-measurement position noise in metres
        (e.g. larger for camera-only estimates); rows left NaN (or no array) use the class's
        measurement_std + range_std_fraction * range.
        allow_birth: optional (N,) bool; False rows may update tracks but never start one.
        Returns the published tracks: confirmed and updated within `output_coast_s`.
        """
        if self.last_stamp_s is not None:
            dt = stamp_s - self.last_stamp_s
            if dt < -self.config.reset_jump_back_s or dt > self.config.reset_gap_s:
                self.reset()
            elif dt < 0:
                self.late_frames += 1
                return self.published(self.last_stamp_s)
        dt = 0.0 if self.last_stamp_s is None else stamp_s - self.last_stamp_s
        self.last_stamp_s = stamp_s
        for track in self.tracks:
            track.filter.predict(dt)
            track.age += 1

        meas, std, births = self._clean(measurements, measurement_std, allow_birth)
        remaining = np.arange(len(meas))
        for confirmed in (True, False):
            group = [i for i, t in enumerate(self.tracks) if t.confirmed == confirmed]
            if not group or remaining.size == 0:
                continue
            result = self._associate([self.tracks[i] for i in group], meas[remaining], std[remaining])
            for ti, mi in result.matches:
                self._update(self.tracks[group[ti]], meas[remaining[mi]], std[remaining[mi]], stamp_s)
            remaining = remaining[result.unmatched_measurements]

        self._prune(stamp_s)
        for mi in remaining:
            if births[mi]:
                self._birth(meas[mi], std[mi], stamp_s)
        return self.published(stamp_s)

    def published(self, stamp_s: float) -> np.ndarray:
        rows = [t for t in self.tracks if t.confirmed
                and stamp_s - t.last_update_s <= self.config.for_class(t.class_id).output_coast_s + 1e-6]
        out = np.zeros(len(rows), itf.TRACK_DTYPE)
        for k, t in enumerate(rows):
            params = self.config.for_class(t.class_id)
            coast = stamp_s - t.last_update_s
            fade = 1.0 if params.max_coast_s <= 0 else max(0.0, 1.0 - coast / params.max_coast_s)
            (x, y), (vx, vy) = t.position, t.velocity
            out[k] = (t.track_id, t.class_id, x, y, t.z, *t.size, t.yaw, vx, vy, t.score * fade, t.age)
        return out

    # ------------------------------------------------------------------ internals
    def _clean(self, measurements: np.ndarray, measurement_std: np.ndarray | None,
               allow_birth: np.ndarray | None):
        meas = np.asarray(measurements)
        if meas.dtype.names is None or any(n not in meas.dtype.names for n in ("x", "y", "class_id")):
            raise ValueError("measurements must be an INSTANCE_DTYPE table with x, y and class_id")
        if measurement_std is None:
            std = np.full((len(meas), 2), np.nan)
        else:
            std = np.array(measurement_std, dtype=float)  # a copy: NaN rows are filled in below
            std = np.repeat(std[:, None], 2, axis=1) if std.ndim == 1 else std.reshape(len(meas), 2)
        ok = np.isfinite(meas["x"]) & np.isfinite(meas["y"]) & np.isfinite(meas["z"])
        for i in np.flatnonzero(np.isnan(std[:, 0]) & ok):
            params = self.config.for_class(int(meas["class_id"][i]))
            rng = float(np.hypot(meas["x"][i], meas["y"][i]))
            std[i] = np.asarray(params.measurement_std) + params.range_std_fraction * rng
        births = np.ones(len(meas), bool) if allow_birth is None else np.asarray(allow_birth, bool)
        return meas[ok], std[ok], births[ok]

    def _associate(self, tracks: list[Track], meas: np.ndarray, std: np.ndarray):
        cfg = self.config
        track_pos = np.array([t.position for t in tracks])
        track_cov = np.array([t.filter.kf.P[:2, :2] for t in tracks])
        track_cls = np.array([t.class_id for t in tracks])
        gates = np.array([cfg.for_class(t.class_id).gate_m for t in tracks])
        meas_pos = np.stack([meas["x"], meas["y"]], axis=1).astype(float)
        meas_cov = np.zeros((len(meas), 2, 2))
        meas_cov[:, 0, 0], meas_cov[:, 1, 1] = std[:, 0] ** 2, std[:, 1] ** 2
        cost, allowed = gated_cost(track_pos, track_cov, track_cls, gates, meas_pos, meas_cov,
                                   meas["class_id"].astype(int), cfg.chi2_gate, cfg.class_mismatch_cost)
        return assign(cost, allowed)

    def _update(self, track: Track, m: np.void, std: np.ndarray, stamp_s: float) -> None:
        cfg = self.config
        track.filter.update((float(m["x"]), float(m["y"])), std)
        a = cfg.box_smoothing
        track.z += a * (float(m["z"]) - track.z)
        size = np.array([m["length"], m["width"], m["height"]], dtype=float)
        if np.all(np.isfinite(size)) and np.all(size > 0):
            track.size += a * (size - track.size)
        track.yaw = self._blend_yaw(track, float(m["yaw"]), a)
        score = float(m["score"]) if np.isfinite(m["score"]) else 0.0
        track.score += a * (score - track.score)
        cls = int(m["class_id"])
        track.class_votes *= cfg.class_vote_decay
        if 0 <= cls < NUM_CLASSES:
            track.class_votes[cls] += max(score, 1e-3)
        track.hits += 1
        track.last_update_s = stamp_s
        params = cfg.for_class(track.class_id)
        if track.hits >= params.min_hits and track.score >= params.confirm_min_score:
            track.confirmed = True
        track.trail.append(track.position)

    def _blend_yaw(self, track: Track, measured: float, weight: float) -> float:
        yaw = track.yaw
        if np.isfinite(measured):
            # A box fitted to a cluster cannot tell front from back: fold to the nearer side.
            d = wrap_angle(measured - yaw)
            if abs(d) > math.pi / 2:
                d -= math.copysign(math.pi, d)
            yaw = wrap_angle(yaw + weight * d)
        v = track.velocity
        if np.hypot(*v) > self.config.heading_min_speed and math.cos(yaw - math.atan2(v[1], v[0])) < 0:
            yaw = wrap_angle(yaw + math.pi)
        return yaw

    def _prune(self, stamp_s: float) -> None:
        keep = []
        for t in self.tracks:
            coast = stamp_s - t.last_update_s
            if not t.confirmed and coast > 0:
                continue  # tentative tracks must be seen in every frame
            if coast > self.config.for_class(t.class_id).max_coast_s + 1e-6:
                continue
            keep.append(t)
        self.tracks = keep

    def _birth(self, m: np.void, std: np.ndarray, stamp_s: float) -> None:
        cls = int(m["class_id"])
        params = self.config.for_class(cls)
        score = float(m["score"]) if np.isfinite(m["score"]) else 0.0
        if score < params.birth_min_score:
            return
        noise = params.noise()
        noise = MotionNoise(noise.process, (float(std[0]), float(std[1])), noise.initial_std)
        votes = np.zeros(NUM_CLASSES)
        votes[cls if 0 <= cls < NUM_CLASSES else 0] = max(score, 1e-3)
        size = np.array([m["length"], m["width"], m["height"]], dtype=float)
        track = Track(track_id=self.next_id,
                      filter=CentreFilter(params.motion_model, (m["x"], m["y"]), noise, float(m["yaw"])),
                      class_votes=votes, z=float(m["z"]), size=np.nan_to_num(size, nan=0.0),
                      yaw=float(m["yaw"]) if np.isfinite(m["yaw"]) else 0.0, score=score,
                      born_s=stamp_s, last_update_s=stamp_s,
                      trail=deque([np.array([m["x"], m["y"]], float)], maxlen=self.config.trail_length))
        track.filter.kf.R = noise.r_matrix()
        track.confirmed = params.min_hits <= 1 and score >= params.confirm_min_score
        self.next_id += 1
        self.tracks.append(track)
