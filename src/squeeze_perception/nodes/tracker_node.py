"""Tracker node: LiDAR instance tables (+ optional camera detections) in; track table and
track markers out. The work is tracking.sync (pairing by stamp), tracking.pipeline (LATTE
fusion + Kalman tracker); this node converts messages, holds parameters, and publishes.

* Outputs are stamped with the instance table's header (frame velo_link); in camera-only
  mode (no instance table for `lidar_timeout_s`) with the detection table's stamp.
* A time jump backwards of more than `reset_jump_back_s` (a looping bag) clears every track;
  ids restart at 1 and an empty track table plus a DELETEALL marker go out at once.
* No camera info and no detections: LiDAR-only. No weights are involved, so the node has
  nothing to fail to load; a malformed table is reported (log + diagnostic) and skipped.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
from geometry_msgs.msg import Point
from sensor_msgs.msg import CameraInfo, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from .. import interfaces as itf
from ..msgs_conv import camera_info_to_arrays, cloud_to_table, stamp_to_ns, table_to_cloud
from ..node_base import LATCHED_QOS, ParamSpec, PerceptionNode, run_node
from ..plausibility import check_detections, check_instances
from .limits import TABLE_LIMIT_PARAMS, table_limits
from ..tracking.fusion import KITTI_IMAGE_SIZE, KITTI_P_RECT_02, KITTI_VELO_TO_RECT, FusionParams
from ..tracking.kalman import MOTION_MODELS
from ..tracking.pipeline import TrackingPipeline
from ..tracking.sync import StampSync
from ..tracking.tracker import TrackerConfig
from ..visualization import class_colour
from ..vision_msgs_conv import load_vision_msgs, tracks_detection3d_array



def _numbers(n: int):
    def check(value: list) -> str | None:
        if len(value) != n:
            return f"needs {n} numbers, got {len(value)}"
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in value):
            return "every entry must be a finite number"
        return None
    return check


def _non_negative_numbers(value: list) -> str | None:
    if not value or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value):
        return "needs a list of numbers >= 0"
    return None


def _tracker_param_specs() -> list[ParamSpec]:
    """One ParamSpec per TrackerConfig field (per-class ones as '<class>.<field>')."""
    specs = []
    for name, default in TrackerConfig().to_params().items():
        if isinstance(default, list):
            check = _numbers(2) if name.endswith("measurement_std") else _non_negative_numbers
            specs.append(ParamSpec(name, [float(v) for v in default], f"tracker: {name}", check=check))
        elif name.endswith("motion_model"):
            specs.append(ParamSpec(name, default, f"tracker: {name} (ca = LATTE constant acceleration, "
                                                  "cv = constant velocity, ctrv = constant turn rate "
                                                  "and velocity)", choices=MOTION_MODELS))
        elif isinstance(default, int) and not isinstance(default, bool):
            specs.append(ParamSpec(name, default, f"tracker: {name}", min=0, max=1000))
        else:
            specs.append(ParamSpec(name, float(default), f"tracker: {name}", min=0.0, max=1e6))
    return specs


PARAMS = [
    ParamSpec("use_camera", True, "Fuse SqueezeDet boxes (class/score confirmation and correction)"),
    ParamSpec("camera_updates", True, "Camera boxes no instance explains update tracks as ground-plane estimates"),
    ParamSpec("use_camera_info", True, "Take P and the image size from camera_info when it arrives"),
    ParamSpec("camera_p", KITTI_P_RECT_02.reshape(-1).tolist(),
              "3x4 projection matrix, row-major, used until camera_info arrives", check=_numbers(12)),
    ParamSpec("image_width", KITTI_IMAGE_SIZE[0], "Image width until camera_info arrives", min=1, max=100000),
    ParamSpec("image_height", KITTI_IMAGE_SIZE[1], "Image height until camera_info arrives", min=1, max=100000),
    ParamSpec("velo_to_cam", KITTI_VELO_TO_RECT.reshape(-1).tolist(),
              "4x4 velo_link -> rectified camera transform, row-major (no tf2 wheel: given here)",
              check=_numbers(16)),
    ParamSpec("fusion_iou_threshold", 0.3, "Minimum IoU of projected instance box and camera box", min=0.0, max=1.0),
    ParamSpec("unconfirmed_factor", 0.5, "Score factor for in-view instances without a camera box",
              min=0.0, max=1.0),
    ParamSpec("ground_z", -1.73, "Ground plane height in velo_link (camera-only estimates)", min=-10.0, max=10.0),
    ParamSpec("sync_tolerance_s", 0.05, "Max stamp difference to pair instances with detections", min=0.0, max=1.0),
    ParamSpec("max_wait_s", 0.15, "Wall time an instance table waits for its camera partner", min=0.0, max=5.0),
    ParamSpec("camera_timeout_s", 1.0, "No detections for this long: LiDAR-only", min=0.0, max=60.0),
    ParamSpec("lidar_timeout_s", 0.5, "No instances for this long: track on camera boxes alone",
              min=0.05, max=60.0),
    ParamSpec("markers", True, "Publish the MarkerArray (boxes, ids, velocity arrows, trails)"),
    *TABLE_LIMIT_PARAMS,
    *_tracker_param_specs(),
]
TRACKER_KEYS = set(TrackerConfig().to_params())
FUSION_KEYS = {"fusion_iou_threshold", "unconfirmed_factor", "ground_z"}
CAMERA_KEYS = {"camera_p", "image_width", "image_height", "velo_to_cam"}
SYNC_KEYS = {"sync_tolerance_s", "max_wait_s", "camera_timeout_s", "reset_jump_back_s"}


class TrackerNode(PerceptionNode):
    def __init__(self, **kwargs):
        super().__init__("tracker_node", PARAMS, stages=("instances", "detections", "camera_info", "tracking"),
                         **kwargs)
        self.pipeline = TrackingPipeline(self._tracker_config(self.p), self._fusion_params(self.p),
                                         use_camera=self.p["use_camera"], camera_updates=self.p["camera_updates"])
        self.camera_info_p: np.ndarray | None = None
        self.camera_info_size: tuple[int, int] | None = None
        self._apply_camera()
        self.sync = self._make_sync(self.p)
        self.frame_id = itf.FRAME_VELODYNE
        self.last_instances_s: float | None = None
        self.tracks_pub = self.advertise(PointCloud2, itf.TOPIC_TRACKS)
        self.markers_pub = self.advertise(MarkerArray, itf.TOPIC_TRACK_MARKERS)
        # vision_msgs only exists on apt ROS 2 installs; without it the table is the only output
        self.vision_msgs = load_vision_msgs()
        self.tracks3d_pub = (self.advertise(self.vision_msgs.Detection3DArray, itf.TOPIC_TRACKS_3D)
                             if self.vision_msgs is not None else None)
        self.subscribe(PointCloud2, itf.TOPIC_INSTANCES, self.on_instances, stage="instances")
        self.subscribe(PointCloud2, itf.TOPIC_DETECTIONS, self.on_detections, stage="detections")
        self.subscribe(CameraInfo, itf.TOPIC_CAMERA_INFO, self.on_camera_info, qos=LATCHED_QOS)
        # Wall clock: the sync's waits are wall time, and a paused /clock must not stall it.
        self.create_timer(0.05, self.on_timer, clock=self.steady_clock)

    # ------------------------------------------------------------------ parameters
    @staticmethod
    def _tracker_config(p: dict[str, Any]) -> TrackerConfig:
        return TrackerConfig.from_params({k: v for k, v in p.items() if k in TRACKER_KEYS})

    @staticmethod
    def _fusion_params(p: dict[str, Any]) -> FusionParams:
        return FusionParams(iou_threshold=p["fusion_iou_threshold"], unconfirmed_factor=p["unconfirmed_factor"],
                            ground_z_m=p["ground_z"])

    @staticmethod
    def _make_sync(p: dict[str, Any]) -> StampSync:
        return StampSync(tolerance_s=p["sync_tolerance_s"], max_wait_s=p["max_wait_s"],
                         camera_timeout_s=p["camera_timeout_s"], jump_back_s=p["reset_jump_back_s"])

    def on_parameters_changing(self, changes: dict[str, Any]) -> str | None:
        merged = {**self.p, **changes}
        if TRACKER_KEYS & changes.keys():
            try:
                self._tracker_config(merged)
            except (ValueError, TypeError) as exc:
                return f"tracker configuration refused: {exc}"
        if CAMERA_KEYS & changes.keys():
            if abs(np.linalg.det(np.asarray(merged["velo_to_cam"], float).reshape(4, 4))) < 1e-9:
                return "velo_to_cam is singular (not a rigid transform)"
        return None

    def on_parameters_changed(self, changes: dict[str, Any]) -> None:
        if TRACKER_KEYS & changes.keys():
            # Live tracks keep their filters; gates, lifetimes and new tracks use the new values.
            self.pipeline.tracker.config = self._tracker_config(self.p)
        if FUSION_KEYS & changes.keys():
            self.pipeline.fusion = self._fusion_params(self.p)
        if SYNC_KEYS & changes.keys():
            self.sync = self._make_sync(self.p)
        self.pipeline.use_camera = self.p["use_camera"]
        self.pipeline.camera_updates = self.p["camera_updates"]
        if CAMERA_KEYS & changes.keys() or "use_camera_info" in changes:
            self._apply_camera()

    def _apply_camera(self) -> None:
        p = np.asarray(self.p["camera_p"], float).reshape(3, 4)
        size = (self.p["image_width"], self.p["image_height"])
        if self.p["use_camera_info"] and self.camera_info_p is not None:
            p, size = self.camera_info_p, self.camera_info_size
        self.pipeline.set_camera(p, np.asarray(self.p["velo_to_cam"], float).reshape(4, 4), size)

    # ------------------------------------------------------------------ inputs
    def on_camera_info(self, msg: CameraInfo) -> None:
        with self.frame("camera_info") as ctx:
            p, size = camera_info_to_arrays(msg)  # raises with the reason: camera_p parameter kept
            self.camera_info_p, self.camera_info_size = p, size
            self._apply_camera()
            ctx.published += 1

    def on_instances(self, msg: PointCloud2) -> None:
        with self.frame("instances", msg.header) as ctx:
            table = self._plausible("instances", cloud_to_table(msg, itf.INSTANCE_DTYPE), check_instances)
            self.frame_id = msg.header.frame_id or itf.FRAME_VELODYNE
            self.last_instances_s = time.monotonic()
            late, overflow = self.sync.stats.late_dropped, self.sync.stats.overflow_dropped
            stamp_ns = stamp_to_ns(msg.header.stamp)
            ctx.published += self._run(self.sync.push_instances(stamp_ns, table, time.monotonic()))
            self._report_sync_drops(stamp_ns, late, overflow)

    def on_detections(self, msg: PointCloud2) -> None:
        with self.frame("detections", msg.header) as ctx:
            table = self._plausible("detections", cloud_to_table(msg, itf.DETECTION_DTYPE), check_detections)
            now = time.monotonic()
            if not self.p["use_camera"]:
                return  # decoded (bad tables still reported) but never waited for
            if self._lidar_silent(now):
                ctx.published += self._camera_only(msg.header, table)
                return
            ctx.published += self._run(self.sync.push_detections(stamp_to_ns(msg.header.stamp), table, now))

    def _report_sync_drops(self, stamp_ns: int, late_before: int, overflow_before: int) -> None:
        """The sync drops an instance frame that comes after a newer one was tracked (late) or
        when too many wait for their camera table (overflow): each is counted as a dropped
        instances frame with one log line per cause, never silently."""
        for _ in range(self.sync.stats.late_dropped - late_before):
            self.report_error("instances", f"instance frame at stamp {stamp_ns / 1e9:.3f} s is older than the last "
                              "tracked frame (but less than reset_jump_back_s older: not a bag loop)",
                              cause="sync:late")
        for _ in range(self.sync.stats.overflow_dropped - overflow_before):
            self.report_error("instances", f"more than {self.sync.max_pending} instance frames waiting for their "
                              "camera table: the oldest dropped", cause="sync:overflow")

    def _plausible(self, stage: str, table: np.ndarray, check) -> np.ndarray:
        kept, dropped = check(table, table_limits(self.p))
        self.report_dropped_points(stage, dropped, len(table), what="rows")
        return kept

    # ------------------------------------------------------------------ degraded modes
    def input_expected(self, stage: str) -> bool:
        return self.p["use_camera"] if stage == "detections" else True

    def silent_inputs(self, stage: str, now_s: float | None = None) -> list[tuple[str, float]]:
        """The tracking stage is WARN whenever one of its inputs is: it runs degraded then."""
        if stage == "tracking":
            base = super().silent_inputs
            return base("instances", now_s) + base("detections", now_s)
        return super().silent_inputs(stage, now_s)

    def tracking_mode(self, now_s: float | None = None) -> str:
        """fusion | lidar-only | camera-only | no input (from which inputs are silent)."""
        lidar = not super().silent_inputs("instances", now_s)
        camera = self.p["use_camera"] and not super().silent_inputs("detections", now_s)
        return {(True, True): "fusion", (True, False): "lidar-only", (False, True): "camera-only",
                (False, False): "no input"}[(lidar, camera)]

    def diagnostic_status(self, stage: str):
        status = super().diagnostic_status(stage)
        if stage == "tracking":
            from diagnostic_msgs.msg import KeyValue

            mode = self.tracking_mode()
            status.values.append(KeyValue(key="mode", value=mode))
            if status.level == status.WARN and self.silent_inputs(stage):
                status.message = f"tracking {mode}: {status.message}"
        return status

    def on_timer(self) -> None:
        frames = self.sync.poll(time.monotonic())
        if frames:
            self._run(frames)

    def _lidar_silent(self, now: float) -> bool:
        return self.last_instances_s is None or now - self.last_instances_s > self.p["lidar_timeout_s"]

    # ------------------------------------------------------------------ tracking
    def _run(self, frames) -> int:
        published = 0
        for f in frames:
            header = Header(frame_id=self.frame_id)
            header.stamp.sec, header.stamp.nanosec = divmod(int(f.stamp_ns), 1_000_000_000)
            with self.frame("tracking", header) as ctx:
                if f.reset:
                    self.pipeline.reset()
                    self.get_logger().warning("time jumped backwards (bag loop?): tracks cleared, ids restart at 1")
                report = self.pipeline.process(f.stamp_ns / 1e9, f.instances, f.detections)
                ctx.extra.update(fused=report.fused, corrected=report.corrected)
                self._publish(header, report.tracks)
                ctx.published += 1
                published += 1
        return published

    def _camera_only(self, header, detections: np.ndarray) -> int:
        with self.frame("tracking", header) as ctx:
            report = self.pipeline.process_camera_only(stamp_to_ns(header.stamp) / 1e9, detections)
            out = Header(stamp=header.stamp, frame_id=self.frame_id)
            self._publish(out, report.tracks)
            ctx.published += 1
        return 1

    def _publish(self, header: Header, tracks: np.ndarray) -> None:
        self.tracks_pub.publish(table_to_cloud(tracks, header))
        if self.tracks3d_pub is not None:
            self.tracks3d_pub.publish(tracks_detection3d_array(tracks, header, self.vision_msgs))
        if self.p["markers"]:
            trails = {t.track_id: list(t.trail) for t in self.pipeline.tracker.tracks}
            self.markers_pub.publish(track_markers(tracks, header, trails))


def track_markers(tracks: np.ndarray, header: Header, trails: dict[int, list] | None = None) -> MarkerArray:
    """DELETEALL, then per track: box, label (id class speed), velocity arrow (1 s ahead), trail."""
    arr = MarkerArray()
    clear = Marker(header=header, action=Marker.DELETEALL)
    arr.markers.append(clear)
    trails = trails or {}
    for row in tracks:
        tid = int(row["track_id"])
        r, g, b = class_colour(row["class_id"])
        centre = Point(x=float(row["x"]), y=float(row["y"]), z=float(row["z"]))
        box = Marker(header=header, ns="track_boxes", id=tid, type=Marker.CUBE, action=Marker.ADD)
        box.pose.position = centre
        box.pose.orientation.z, box.pose.orientation.w = float(np.sin(row["yaw"] / 2)), float(np.cos(row["yaw"] / 2))
        box.scale.x, box.scale.y, box.scale.z = (max(float(row[k]), 0.05) for k in ("length", "width", "height"))
        box.color.r, box.color.g, box.color.b, box.color.a = r, g, b, 0.5
        text = Marker(header=header, ns="track_ids", id=tid, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.pose.position = Point(x=centre.x, y=centre.y, z=centre.z + float(row["height"]) / 2 + 0.5)
        text.pose.orientation.w = 1.0
        text.scale.z = 0.7
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        speed = float(np.hypot(row["vx"], row["vy"]))
        text.text = f"#{tid} {itf.CLASS_NAMES[int(row['class_id']) % 4]} {speed:.1f} m/s"
        arrow = Marker(header=header, ns="track_velocity", id=tid, type=Marker.ARROW, action=Marker.ADD)
        arrow.points = [centre, Point(x=centre.x + float(row["vx"]), y=centre.y + float(row["vy"]), z=centre.z)]
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.15, 0.3, 0.3
        arrow.color.r, arrow.color.g, arrow.color.b, arrow.color.a = r, g, b, 1.0
        arr.markers += [box, text, arrow]
        trail = trails.get(tid, [])
        if len(trail) >= 2:
            line = Marker(header=header, ns="track_trails", id=tid, type=Marker.LINE_STRIP, action=Marker.ADD)
            line.points = [Point(x=float(p[0]), y=float(p[1]), z=centre.z) for p in trail]
            line.pose.orientation.w = 1.0
            line.scale.x = 0.1
            line.color.r, line.color.g, line.color.b, line.color.a = r, g, b, 0.8
            arr.markers.append(line)
    return arr


def main(args=None) -> int:
    return run_node(TrackerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
