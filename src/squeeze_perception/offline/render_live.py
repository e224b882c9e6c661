"""`squeeze-perception render --live --out DIR [--frames N | --seconds S]`: the render of a live run.

Subscribes to the running stack's outputs (docs/interfaces.md) and draws, with the bag mode's own
drawing code (render.draw_frame / save_frame / write_video), one PNG per labelled LiDAR scan:

| topic | type | used for |
|---|---|---|
| `perception/lidar/labelled_points` | `PointCloud2` (`LABELLED_POINT_DTYPE`) | the frame: one per scan, points coloured by label |
| `perception/lidar/instances` | `PointCloud2` table (`INSTANCE_DTYPE`) | dashed instance boxes (same stamp as the scan) |
| `perception/tracks` | `PointCloud2` table (`TRACK_DTYPE`) | tracks with id and velocity arrow (same stamp) |
| `kitti/camera_color_left/image_raw` | `Image` | camera panel (nearest stamp within 50 ms) |
| `perception/camera/detections` | `PointCloud2` table (`DETECTION_DTYPE`) | boxes on the camera panel (the image's stamp) |
| `/diagnostics` | `DiagnosticArray` | per node and stage: mean latency and processing time |

A scan is drawn once its instances, tracks, image and detections are in, or `grace_s` after it
arrived with whatever came (a stage that is off or dropped that frame leaves its part empty).
Frames are drawn in arrival order; when drawing falls behind (about 1 s per frame), at most
`max_pending` scans wait and older ones are skipped (counted in render.json). Subscriptions run in a
background thread; drawing in the main one. Ctrl-C (or SIGTERM) ends the collection; the frames
already received are drawn and the video written, exit 0. Nothing received within `idle_timeout_s`:
exit 1 with the topics it waited on.

The pairing (`LiveFrames`) is ROS-free and takes decoded arrays; `LiveRenderNode` only decodes.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import interfaces as itf
from .render import PAIR_TOLERANCE_NS, FrameResult, save_frame, write_video

LIVE_TOPICS = {
    "scans": itf.TOPIC_LABELLED_POINTS,
    "instances": itf.TOPIC_INSTANCES,
    "tracks": itf.TOPIC_TRACKS,
    "images": itf.TOPIC_IMAGE,
    "detections": itf.TOPIC_DETECTIONS,
    "telemetry": itf.TOPIC_DIAGNOSTICS,
}


@dataclass
class _Scan:
    stamp_ns: int
    arrived_s: float
    points: np.ndarray  # (N, 4) x y z intensity
    labels: np.ndarray  # (N,) class ids


class _Recent(OrderedDict):
    """stamp -> value, keeping the `limit` most recently added."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def put(self, key, value) -> None:
        self.pop(key, None)
        self[key] = value
        while len(self) > self.limit:
            self.popitem(last=False)

    def nearest(self, stamp_ns: int, tolerance_ns: int):
        """(stamp, value) nearest to `stamp_ns` within the tolerance, else (None, None)."""
        if stamp_ns in self:
            return stamp_ns, self[stamp_ns]
        best = min(self, key=lambda s: abs(s - stamp_ns), default=None)
        if best is None or abs(best - stamp_ns) > tolerance_ns:
            return None, None
        return best, self[best]


def telemetry_from_statuses(statuses) -> dict[str, dict[str, float | None]]:
    """DiagnosticStatus-like objects (name "<node fqn>: <stage>", values [KeyValue]) -> "node: stage" ->
    {"latency": mean ms or None, "processing": mean ms or None}; stages without either are left out."""
    out = {}
    for status in statuses:
        fqn, sep, stage = str(status.name).partition(": ")
        if not sep:
            continue
        values = {kv.key: kv.value for kv in status.values}
        row = {}
        for name, key in (("latency", "latency_ms_mean"), ("processing", "processing_ms_mean")):
            try:
                row[name] = float(values[key])
            except (KeyError, ValueError):
                row[name] = None
        if row["latency"] is None and row["processing"] is None:
            continue
        out[f"{fqn.rsplit('/', 1)[-1]}: {stage}"] = row
    return out


class LiveFrames:
    """Pairs the stack's outputs by header stamp into FrameResults, one per labelled scan.

    Thread-safe: the subscription callbacks add, the drawing loop takes. `now` is monotonic seconds.
    """

    def __init__(self, grace_s: float = 2.0, tolerance_ns: int = PAIR_TOLERANCE_NS, max_pending: int = 50):
        self.grace_s = grace_s
        self.tolerance_ns = tolerance_ns
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._scans: OrderedDict[int, _Scan] = OrderedDict()  # arrival order (a bag loop jumps back)
        self._instances = _Recent(100)
        self._tracks = _Recent(100)
        self._detections = _Recent(100)
        self._images = _Recent(20)  # 1.4 MB each for KITTI
        self._telemetry: dict[str, dict[str, float | None]] = {}
        self.received = {k: 0 for k in LIVE_TOPICS}
        self.skipped = 0  # scans dropped because drawing fell behind
        self.emitted = 0
        self.last_scan_s: float | None = None

    # -- input (any thread)
    def add_scan(self, stamp_ns: int, points: np.ndarray, labels: np.ndarray, now: float) -> None:
        with self._lock:
            self.received["scans"] += 1
            self.last_scan_s = now
            self._scans.pop(stamp_ns, None)
            self._scans[stamp_ns] = _Scan(stamp_ns, now, points, labels)
            while len(self._scans) > self.max_pending:
                self._scans.popitem(last=False)
                self.skipped += 1

    def add_table(self, kind: str, stamp_ns: int, table: np.ndarray) -> None:
        with self._lock:
            self.received[kind] += 1
            {"instances": self._instances, "tracks": self._tracks, "detections": self._detections}[kind].put(
                stamp_ns, table)

    def add_image(self, stamp_ns: int, image: np.ndarray) -> None:
        with self._lock:
            self.received["images"] += 1
            self._images.put(stamp_ns, image)

    def add_telemetry(self, rows: dict[str, dict[str, float | None]]) -> None:
        with self._lock:
            self.received["telemetry"] += 1
            self._telemetry.update(rows)

    # -- output (the drawing thread)
    def _complete(self, scan: _Scan) -> bool:
        if scan.stamp_ns not in self._instances or scan.stamp_ns not in self._tracks:
            return False
        image_stamp, _ = self._images.nearest(scan.stamp_ns, self.tolerance_ns)
        return image_stamp is not None and image_stamp in self._detections

    def _result(self, scan: _Scan) -> FrameResult:
        image_stamp, image = self._images.nearest(scan.stamp_ns, self.tolerance_ns)
        detections = None
        if image_stamp is not None:
            detections = self._detections.get(image_stamp)
        if detections is None:
            detections = self._detections.nearest(scan.stamp_ns, self.tolerance_ns)[1]
        result = FrameResult(
            index=self.emitted, stamp_ns=scan.stamp_ns, points=scan.points, labels=scan.labels,
            instances=self._instances.get(scan.stamp_ns, itf.empty(itf.INSTANCE_DTYPE)),
            detections=detections if detections is not None else itf.empty(itf.DETECTION_DTYPE),
            tracks=self._tracks.get(scan.stamp_ns, itf.empty(itf.TRACK_DTYPE)),
            image=image, telemetry={k: dict(v) for k, v in self._telemetry.items()})
        self.emitted += 1
        return result

    def take_ready(self, now: float, limit: int | None = None) -> list[FrameResult]:
        """Scans, oldest first, that are complete or waited `grace_s`; stops at the first that is not."""
        out = []
        with self._lock:
            while self._scans and (limit is None or len(out) < limit):
                scan = next(iter(self._scans.values()))
                if not self._complete(scan) and now - scan.arrived_s < self.grace_s:
                    break
                del self._scans[scan.stamp_ns]
                out.append(self._result(scan))
        return out

    def take_all(self, limit: int | None = None) -> list[FrameResult]:
        """Every waiting scan with what arrived for it (end of the collection)."""
        return self.take_ready(float("inf"), limit)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._scans)


def _make_node(frames: LiveFrames, namespace: str):
    """The subscriber node (rclpy imported here: the module itself stays ROS-free)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.node import Node
    from sensor_msgs.msg import Image, PointCloud2

    from ..msgs_conv import MessageFormatError, cloud_to_table, image_to_array, stamp_to_ns
    from ..node_base import RESULT_QOS, SENSOR_QOS

    class LiveRenderNode(Node):
        def __init__(self):
            super().__init__("_render_live", namespace=namespace or None)  # hidden: the player does not wait for it
            self.errors: dict[str, str] = {}
            self.create_subscription(PointCloud2, LIVE_TOPICS["scans"], self.on_scan, RESULT_QOS)
            for kind, dtype in (("instances", itf.INSTANCE_DTYPE), ("tracks", itf.TRACK_DTYPE),
                                ("detections", itf.DETECTION_DTYPE)):
                self.create_subscription(PointCloud2, LIVE_TOPICS[kind],
                                         lambda msg, k=kind, d=dtype: self.on_table(k, d, msg), RESULT_QOS)
            # sensor topic: best effort, as the nodes subscribe (a live driver may publish best effort)
            self.create_subscription(Image, LIVE_TOPICS["images"], self.on_image, SENSOR_QOS)
            self.create_subscription(DiagnosticArray, LIVE_TOPICS["telemetry"], self.on_diagnostics, RESULT_QOS)

        def _bad(self, kind: str, exc: Exception) -> None:
            if kind not in self.errors:  # once per topic, not per frame
                self.get_logger().warning(f"{LIVE_TOPICS[kind]}: {exc}; those messages are not drawn")
            self.errors[kind] = str(exc)

        def on_scan(self, msg) -> None:
            try:
                table = cloud_to_table(msg, itf.LABELLED_POINT_DTYPE)
            except MessageFormatError as exc:
                return self._bad("scans", exc)
            points = np.stack([table[f] for f in itf.POINT_FIELDS_REQUIRED], 1).astype(np.float32) \
                if len(table) else np.zeros((0, 4), np.float32)
            frames.add_scan(stamp_to_ns(msg.header.stamp), points, table["label"].astype(np.int64),
                            time.monotonic())

        def on_table(self, kind: str, dtype: np.dtype, msg) -> None:
            try:
                frames.add_table(kind, stamp_to_ns(msg.header.stamp), cloud_to_table(msg, dtype))
            except MessageFormatError as exc:
                self._bad(kind, exc)

        def on_image(self, msg) -> None:
            try:
                img = image_to_array(msg)
            except MessageFormatError as exc:
                return self._bad("images", exc)
            if img.ndim == 2:
                img = np.repeat(img[..., None], 3, axis=2)
            if img.dtype == np.uint16:
                img = (img >> 8).astype(np.uint8)
            frames.add_image(stamp_to_ns(msg.header.stamp), img)

        def on_diagnostics(self, msg) -> None:
            rows = telemetry_from_statuses(msg.status)
            if rows:
                frames.add_telemetry(rows)

    return LiveRenderNode()


def render_live(out_dir: str | Path, frames: int | None = None, seconds: float | None = None,
                namespace: str = "", idle_timeout_s: float = 60.0, grace_s: float = 2.0, fps: float = 10.0,
                bev_range_m: float = 50.0, dpi: int = 80, max_pending: int = 50, log=print) -> int:
    """Collect and draw until `frames` are drawn, `seconds` passed or Ctrl-C; returns the exit code."""
    from .. import shutdown
    from ..launch_runner.dds import profile_path_for

    if os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps"):
        # the same large shared-memory profile as the launch (clouds are ~2 MB); discovery range as the user set it
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile_path_for()))
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stop = shutdown.install()
    stop.starting_up = False
    collector = LiveFrames(grace_s=grace_s, max_pending=max_pending)
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO if stop.installed else None)
    node = _make_node(collector, namespace)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinning = threading.Event()
    spinning.set()

    def spin():
        try:
            while spinning.is_set() and rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
        except (ExternalShutdownException, KeyboardInterrupt):
            pass

    thread = threading.Thread(target=spin, name="render_live_spin", daemon=True)
    thread.start()
    topics = ", ".join(node.resolve_topic_name(t) for t in LIVE_TOPICS.values())
    log(f"render --live: waiting for the stack on {topics} (ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')})")

    start = time.monotonic()
    pngs: list[Path] = []
    records: list[dict] = []
    why = "done"
    code = 0

    def draw(results: list[FrameResult]) -> None:
        for result in results:
            title = (f"live {namespace or '/'}  scan {result.index}  stamp {result.stamp_ns / 1e9:.2f} s  "
                     f"({collector.received['scans']} scans received)")
            png, record = save_frame(result, title, out / f"frame_{len(pngs):04d}.png", bev_range_m, dpi)
            pngs.append(png)
            records.append(record)
            log(f"frame {result.index}: {len(result.detections)} detections, {len(result.instances)} instances, "
                f"{len(result.tracks)} tracks -> {png}")

    def left() -> int | None:
        return None if frames is None else frames - len(pngs)

    try:
        while True:
            now = time.monotonic()
            if stop.requested:
                why = f"stopped ({stop.signal})"
                break
            if left() is not None and left() <= 0:
                why = f"{frames} frames"
                break
            if seconds is not None and now - start >= seconds:
                why = f"{seconds:g} s"
                break
            last = collector.last_scan_s if collector.last_scan_s is not None else start
            if idle_timeout_s and now - last > idle_timeout_s:
                why = f"no scan for {idle_timeout_s:g} s"
                break
            ready = collector.take_ready(now, left())
            if ready:
                draw(ready)
            else:
                time.sleep(0.05)
    finally:
        spinning.clear()
        thread.join(timeout=2.0)
        try:
            executor.shutdown(timeout_sec=1.0)
            node.destroy_node()
        except Exception as exc:  # noqa: BLE001 - clean-up trouble is reported, not a traceback
            print(f"render --live: clean-up: {exc!r}", file=sys.stderr)
        rclpy.try_shutdown()
    # what was received before the end is drawn too (Ctrl-C, --seconds), up to --frames
    draw(collector.take_all(left()))
    stop.ignore_from_now_on()
    summary = {"live": True, "namespace": namespace, "ended": why, "received": collector.received,
               "skipped_scans": collector.skipped, "frames": records, "pngs": [p.name for p in pngs]}
    if pngs:
        video, how = write_video(pngs, out, fps)
        log(f"{how}: {video}")
        summary.update(video=video.name, video_writer=how)
    (out / "render.json").write_text(json.dumps(summary, indent=1))
    if not pngs:
        print(f"render --live: no frame drawn ({why}); received {collector.received}. Is the stack running "
              f"with the same ROS_DOMAIN_ID and discovery range, and is squeezeseg_node on?", file=sys.stderr)
        code = 1
    else:
        log(f"render --live: {len(pngs)} frames ({why}), {collector.skipped} scans skipped -> {out}")
    return code
