"""`squeeze-perception render BAG --out DIR`: what the vehicle sees, without ROS or RViz.

Reads the bag directly (rosbags), runs the ROS-free cores the nodes run (detection.inference.Detector,
segmentation.pipeline.SegmentationPipeline, tracking.pipeline.TrackingPipeline) frame by frame,
and draws one PNG per LiDAR scan: the camera image with SqueezeDet boxes on top, a bird's-eye
view of the labelled points, the LiDAR instance boxes and the confirmed tracks (id, velocity
arrow) below, and the per-stage processing times beside it. The frames are then joined into an
MP4 with the ffmpeg binary that `imageio-ffmpeg` bundles (requirements-pip-only.txt), or an
`ffmpeg` on PATH; without either, into an animated GIF (Pillow), which the command says.
`render.json` holds the per-frame counts and times.

Latencies here are this process's wall times per stage, measured on the machine that renders;
they are not the sensor-to-publish latencies of the ROS graph (docs/performance.md).

`squeeze-perception render --live --out DIR [--frames N | --seconds S]` draws the same frames
from a running stack instead (offline/render_live.py): it subscribes to the nodes' outputs and
shows their own telemetry (per-stage latency and processing time) beside the drawing. One
drawing path (draw_frame, write_video), two sources.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import interfaces as itf
from ..visualization import CLASS_COLOURS

# Colours per class id (unknown, car, pedestrian, cyclist), as the RViz markers use.
# A camera image is paired with the scan whose stamp is nearest, within this (KITTI: same stamp).
PAIR_TOLERANCE_NS = 50_000_000


@dataclass
class SensorFrame:
    stamp_ns: int
    points: np.ndarray  # (N, 4) x y z intensity, velo_link
    image: np.ndarray | None  # (H, W, 3) uint8 RGB, or None without a camera
    camera_p: np.ndarray | None  # (3, 4) from camera_info
    image_size: tuple[int, int] | None


@dataclass
class FrameResult:
    index: int
    stamp_ns: int
    points: np.ndarray
    labels: np.ndarray
    instances: np.ndarray  # INSTANCE_DTYPE
    detections: np.ndarray  # DETECTION_DTYPE
    tracks: np.ndarray  # TRACK_DTYPE
    image: np.ndarray | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    # live runs: the nodes' telemetry, "node: stage" -> {"latency": ms, "processing": ms} (means)
    telemetry: dict[str, dict[str, float]] = field(default_factory=dict)


def _stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def read_sensor_frames(bag: str | Path, max_frames: int | None = None, start: int = 0) -> list[SensorFrame]:
    """One SensorFrame per Velodyne scan, each with the camera image of the nearest stamp."""
    from rosbags.typesys import Stores, get_typestore

    from ..bag.source import BagSource
    from ..msgs_conv import camera_info_to_arrays, cloud_to_array, image_to_array

    store = get_typestore(Stores.ROS2_KILTED)
    clouds: list[tuple[int, np.ndarray]] = []
    images: list[tuple[int, np.ndarray]] = []
    camera: tuple[np.ndarray, tuple[int, int]] | None = None
    wanted = ("/" + itf.TOPIC_POINTS, "/" + itf.TOPIC_IMAGE, "/" + itf.TOPIC_CAMERA_INFO)
    stop_after = None if max_frames is None else start + max_frames
    with BagSource(bag, topics=wanted) as source:
        if "/" + itf.TOPIC_POINTS not in source.topics:
            raise SystemExit(f"render: bag '{bag}' has no /{itf.TOPIC_POINTS}; topics: {sorted(source.topics)}")
        for m in source.messages():
            msg = store.deserialize_cdr(m.data, m.msgtype)
            if stop_after is not None and len(clouds) >= stop_after:
                # enough scans: read on only for the camera image of the last one
                if m.topic != "/" + itf.TOPIC_CAMERA_INFO and _stamp_ns(msg) - clouds[-1][0] > PAIR_TOLERANCE_NS:
                    break
                if m.topic == "/" + itf.TOPIC_POINTS:
                    continue
            if m.topic == "/" + itf.TOPIC_POINTS:
                cloud = cloud_to_array(msg)
                pts = np.stack([cloud[f].astype(np.float32) for f in itf.POINT_FIELDS_REQUIRED], 1) \
                    if len(cloud) else np.zeros((0, 4), np.float32)
                clouds.append((_stamp_ns(msg), pts))
            elif m.topic == "/" + itf.TOPIC_IMAGE:
                img = image_to_array(msg)
                if img.ndim == 2:
                    img = np.repeat(img[..., None], 3, axis=2)
                if img.dtype == np.uint16:
                    img = (img >> 8).astype(np.uint8)
                images.append((_stamp_ns(msg), img))
            elif camera is None:
                camera = camera_info_to_arrays(msg)
    frames = []
    for stamp, pts in clouds[start:stop_after]:
        image = None
        if images:
            nearest_stamp, nearest = min(images, key=lambda s_img: abs(s_img[0] - stamp))
            if abs(nearest_stamp - stamp) <= PAIR_TOLERANCE_NS:
                image = nearest
        frames.append(SensorFrame(stamp, pts, image, camera[0] if camera else None,
                                  camera[1] if camera else None))
    return frames


class Cores:
    """The ROS-free cores the three model/tracker nodes run, with the nodes' default settings."""

    def __init__(self, backend: str = "onnxruntime", det_model: str = "squeezedet",
                 seg_model: str = "squeezesegv2", fov: str = "front", use_camera: bool = True):
        from ..segmentation.pipeline import SegmentationPipeline
        from ..tracking.pipeline import TrackingPipeline

        self.detector = None
        if use_camera:
            from ..detection.inference import Detector

            self.detector = Detector(det_model, backend)
        self.segmentation = SegmentationPipeline(model=seg_model, backend=backend, fov=fov)
        self.tracking = TrackingPipeline()
        self._camera_set = False

    def process(self, index: int, frame: SensorFrame) -> FrameResult:
        from ..tracking.fusion import KITTI_VELO_TO_RECT

        timings: dict[str, float] = {}
        detections = itf.empty(itf.DETECTION_DTYPE)
        if self.detector is not None and frame.image is not None:
            t0 = time.perf_counter()
            detections = self.detector.predict(frame.image).detections
            timings["detect"] = (time.perf_counter() - t0) * 1e3
            if not self._camera_set and frame.camera_p is not None:
                # no tf2 here either: velo -> camera is the tracker_node's default parameter
                self.tracking.set_camera(frame.camera_p, KITTI_VELO_TO_RECT, frame.image_size)
                self._camera_set = True
        t0 = time.perf_counter()
        seg = self.segmentation.process(frame.points)
        timings["segment"] = (time.perf_counter() - t0) * 1e3
        timings.update({f"segment.{k}": float(v) for k, v in seg.timings_ms.items()})
        t0 = time.perf_counter()
        report = self.tracking.process(frame.stamp_ns / 1e9, seg.table,
                                       detections if self.detector is not None and frame.image is not None
                                       else None)
        timings["track"] = (time.perf_counter() - t0) * 1e3
        return FrameResult(index, frame.stamp_ns, frame.points, seg.labels, seg.table, detections,
                           report.tracks, frame.image, timings)


def box_corners_bev(x: float, y: float, length: float, width: float, yaw: float) -> np.ndarray:
    """(4, 2) corners (x, y) of a box of `length` along `yaw` and `width` across it."""
    c, s = np.cos(yaw), np.sin(yaw)
    half = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]], np.float64) * [length / 2, width / 2]
    rot = np.array([[c, -s], [s, c]])
    return half @ rot.T + [x, y]


def _bev_xy(x, y):
    """velo_link (x forward, y left) -> plot axes (right, up): forward is up, left is left."""
    return -np.asarray(y), np.asarray(x)


def telemetry_lines(telemetry: dict[str, dict[str, float]], max_rows: int = 18) -> list[str]:
    """The info panel of a live frame: per node, each stage's mean latency (sensor stamp -> output,
    the node's clock) and processing time, as the nodes report them on /diagnostics."""
    lines = ["node telemetry (ms, mean)", f"{'':<14s}{'latency':>9s}{'proc.':>9s}"]
    node = None
    for key in sorted(telemetry, key=lambda k: k.partition(": ")[0]):  # by node; stages in the node's order
        if len(lines) >= max_rows:
            lines.append("  ...")
            break
        name, _, stage = key.partition(": ")
        if name != node:
            node = name
            lines.append(name[:23])
        vals = telemetry[key]
        cells = "".join(f"{vals[k]:9.1f}" if vals.get(k) is not None else f"{'-':>9s}"
                        for k in ("latency", "processing"))
        lines.append(f"  {stage[:12]:<12s}{cells}")
    return lines


def draw_frame(result: FrameResult, title: str, bev_range_m: float = 50.0, dpi: int = 80):
    """A matplotlib figure of one frame: camera with boxes, bird's-eye view, stage times."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon, Rectangle

    fig = plt.figure(figsize=(12.4, 10.4), dpi=dpi, facecolor="white")
    grid = fig.add_gridspec(2, 2, height_ratios=(3.75, 6.6), width_ratios=(7.0, 5.4),
                            left=0.02, right=0.98, top=0.95, bottom=0.03, hspace=0.08, wspace=0.05)
    fig.suptitle(title, fontsize=11)

    cam = fig.add_subplot(grid[0, :])
    cam.set_axis_off()
    if result.image is not None:
        cam.imshow(result.image)
        for d in result.detections:
            cid = int(d["class_id"])
            colour = CLASS_COLOURS[cid % len(CLASS_COLOURS)]
            cam.add_patch(Rectangle((d["u_min"], d["v_min"]), d["u_max"] - d["u_min"], d["v_max"] - d["v_min"],
                                    fill=False, edgecolor=colour, linewidth=2))
            cam.text(d["u_min"], d["v_min"] - 3, f"{itf.CLASS_NAMES[cid % 4]} {d['score']:.2f}", color=colour,
                     fontsize=8, va="bottom", bbox=dict(facecolor="black", alpha=0.5, pad=1, edgecolor="none"))
    else:
        cam.text(0.5, 0.5, "no camera image for this scan", ha="center", va="center", transform=cam.transAxes)

    bev = fig.add_subplot(grid[1, 0])
    bev.set_facecolor((0.08, 0.08, 0.1))
    near = (np.abs(result.points[:, 0]) < bev_range_m) & (np.abs(result.points[:, 1]) < bev_range_m) \
        if len(result.points) else np.zeros(0, bool)
    pts, labels = result.points[near], result.labels[near]
    for cid in range(len(itf.CLASS_NAMES)):
        sel = labels == cid
        if sel.any():
            u, v = _bev_xy(pts[sel, 0], pts[sel, 1])
            bev.scatter(u, v, s=0.3 if cid == 0 else 1.5, c=[CLASS_COLOURS[cid]], linewidths=0,
                        alpha=0.5 if cid == 0 else 1.0, label=f"{itf.CLASS_NAMES[cid]} points", rasterized=True)
    for row in result.instances:
        corners = box_corners_bev(row["x"], row["y"], row["length"], row["width"], row["yaw"])
        u, v = _bev_xy(corners[:, 0], corners[:, 1])
        bev.add_patch(Polygon(np.c_[u, v], closed=True, fill=False, linestyle="--", linewidth=1,
                              edgecolor=CLASS_COLOURS[int(row["class_id"]) % 4]))
    for row in result.tracks:
        colour = CLASS_COLOURS[int(row["class_id"]) % 4]
        corners = box_corners_bev(row["x"], row["y"], row["length"], row["width"], row["yaw"])
        u, v = _bev_xy(corners[:, 0], corners[:, 1])
        bev.add_patch(Polygon(np.c_[u, v], closed=True, fill=False, linewidth=2, edgecolor="white"))
        cu, cv = _bev_xy(row["x"], row["y"])
        du, dv = _bev_xy(row["vx"], row["vy"])  # velocity x 1 s, as the RViz arrow
        if np.hypot(du, dv) > 0.05:
            bev.annotate("", xy=(cu + du, cv + dv), xytext=(cu, cv),
                         arrowprops=dict(arrowstyle="->", color=colour, linewidth=2))
        bev.text(cu + 1.0, cv + 1.0, f"#{int(row['track_id'])} {float(np.hypot(row['vx'], row['vy'])):.1f} m/s",
                 color="white", fontsize=8)
    bev.plot([0], [0], marker="^", color="yellow", markersize=8)  # the sensor
    bev.set_xlim(-bev_range_m * 0.6, bev_range_m * 0.6)
    bev.set_ylim(-bev_range_m * 0.2, bev_range_m)
    bev.set_aspect("equal")
    bev.set_xlabel("m (left of the car <-  -> right)", fontsize=8)
    bev.set_ylabel("m ahead", fontsize=8)
    bev.tick_params(labelsize=7)
    bev.legend(loc="lower right", fontsize=7, markerscale=6, framealpha=0.6)

    info = fig.add_subplot(grid[1, 1])
    info.set_axis_off()
    lines = telemetry_lines(result.telemetry) if result.telemetry else ["stage times (ms, this process)"]
    for stage, ms in result.timings_ms.items():
        indent = "    " if "." in stage else ""
        lines.append(f"{indent}{stage.split('.')[-1]:<12s} {ms:8.1f}")
    lines += ["", f"points         {len(result.points):8d}",
              f"labelled obj.  {int(np.count_nonzero(result.labels > 0)):8d}",
              f"instances      {len(result.instances):8d}",
              f"detections     {len(result.detections):8d}",
              f"tracks         {len(result.tracks):8d}",
              "", "dashed: LiDAR instances", "white: confirmed tracks,", "  arrow = velocity x 1 s"]
    info.text(0.02, 0.98, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=10,
              transform=info.transAxes)
    return fig


def ffmpeg_binary() -> str | None:
    """The ffmpeg that imageio-ffmpeg bundles (a pip requirement), else one on PATH, else None."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):  # not installed / no binary for this platform
        return shutil.which("ffmpeg")


def write_video(pngs: list[Path], out_dir: Path, fps: float) -> tuple[Path, str]:
    """MP4 (H.264) of `pngs` (frame_0000.png, frame_0001.png, ... in `out_dir`) when an ffmpeg
    binary exists, else an animated GIF; returns (file, how it was made)."""
    mp4 = out_dir / "render.mp4"
    ffmpeg = ffmpeg_binary()
    if ffmpeg:
        cmd = [ffmpeg, "-y", "-loglevel", "error", "-framerate", str(fps), "-i", str(out_dir / "frame_%04d.png"),
               "-frames:v", str(len(pngs)), "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-pix_fmt", "yuv420p",
               "-c:v", "libx264", str(mp4)]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if done.returncode == 0:
            return mp4, f"mp4 ({Path(ffmpeg).name})"
        print(f"render: ffmpeg failed ({done.stderr.strip()[-300:]}); writing a GIF instead", file=sys.stderr)
    from PIL import Image

    gif = out_dir / "render.gif"
    images = [Image.open(p).convert("RGB").quantize(colors=255) for p in pngs]
    images[0].save(gif, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0)
    return gif, "animated GIF (no ffmpeg here: pip install imageio-ffmpeg, or install an ffmpeg binary, for MP4)"


def save_frame(result: FrameResult, title: str, png: Path, bev_range_m: float = 50.0,
               dpi: int = 80) -> tuple[Path, dict]:
    """Draw `result`, save it as `png`; returns the file and its render.json record."""
    import matplotlib.pyplot as plt

    fig = draw_frame(result, title, bev_range_m, dpi)
    fig.savefig(png, dpi=dpi)
    plt.close(fig)
    record = {"frame": result.index, "stamp_ns": int(result.stamp_ns), "points": int(len(result.points)),
              "object_points": int(np.count_nonzero(result.labels > 0)),
              "instances": int(len(result.instances)), "detections": int(len(result.detections)),
              "tracks": [int(t) for t in result.tracks["track_id"]],
              "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()}}
    if result.telemetry:
        record["telemetry_ms"] = {k: {n: (None if v is None else round(v, 3)) for n, v in vals.items()}
                                  for k, vals in result.telemetry.items()}
    return png, record


def render(bag: str | Path, out_dir: str | Path, max_frames: int | None = None, start: int = 0,
           backend: str = "onnxruntime", det_model: str = "squeezedet", seg_model: str = "squeezesegv2",
           fov: str = "front", use_camera: bool = True, fps: float = 10.0, bev_range_m: float = 50.0,
           dpi: int = 80, log=print) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = read_sensor_frames(bag, max_frames, start)
    if not frames:
        raise SystemExit(f"render: no Velodyne scans to render in '{bag}' (start {start})")
    cores = Cores(backend, det_model, seg_model, fov, use_camera=use_camera)
    pngs, per_frame = [], []
    for i, frame in enumerate(frames):
        result = cores.process(start + i, frame)
        png, record = save_frame(result, f"{Path(bag).name}  frame {start + i}  stamp {frame.stamp_ns / 1e9:.2f} s  "
                                         f"({backend}, {seg_model} {fov}, {det_model})",
                                 out / f"frame_{i:04d}.png", bev_range_m, dpi)
        pngs.append(png)
        per_frame.append(record)
        log(f"frame {start + i}: {len(result.detections)} detections, {len(result.instances)} instances, "
            f"{len(result.tracks)} tracks -> {png}")
    video, how = write_video(pngs, out, fps)
    log(f"{how}: {video}")
    summary = {"bag": str(bag), "backend": backend, "det_model": det_model, "seg_model": seg_model, "fov": fov,
               "frames": per_frame, "pngs": [p.name for p in pngs], "video": video.name, "video_writer": how}
    (out / "render.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="squeeze-perception render",
        description="PNG frames and an MP4 (GIF without ffmpeg) of a bag, or of a live run with --live: camera "
                    "with SqueezeDet boxes, bird's-eye view of labelled points, instances and tracks, per-stage "
                    "times. A bag needs no ROS; --live subscribes to the running stack's topics.")
    parser.add_argument("bag", nargs="?", help="rosbag2 folder or ROS 1 .bag (kitti2bag topics); omit with --live")
    parser.add_argument("--out", required=True, help="output folder (frame_NNNN.png, render.mp4/.gif, render.json)")
    parser.add_argument("--frames", type=int, default=None, help="render at most this many scans")
    parser.add_argument("--start", type=int, default=0, help="bag: skip this many scans first")
    parser.add_argument("--backend", default="onnxruntime", help="bag: inference backend (as the nodes: onnxruntime)")
    parser.add_argument("--det-model", default="squeezedet")
    parser.add_argument("--seg-model", default="squeezesegv2")
    parser.add_argument("--fov", default="front", choices=("front", "full"))
    parser.add_argument("--no-camera", action="store_true", help="LiDAR only (no detector, no camera panel boxes)")
    parser.add_argument("--fps", type=float, default=10.0, help="video frame rate (KITTI scans: 10 Hz)")
    parser.add_argument("--range", type=float, default=50.0, dest="bev_range_m", help="bird's-eye range (m)")
    parser.add_argument("--dpi", type=int, default=80, help="80: 992x832 px frames")
    live = parser.add_argument_group("live run (--live)")
    live.add_argument("--live", action="store_true",
                      help="render the running stack's outputs (one frame per labelled scan) instead of a bag")
    live.add_argument("--seconds", type=float, default=None,
                      help="stop collecting after this many seconds (else at --frames, or Ctrl-C)")
    live.add_argument("--namespace", default="", help="the stack's namespace (vehicle.launch.py namespace:=)")
    live.add_argument("--idle-timeout", type=float, default=60.0,
                      help="give up (exit 1) after this many seconds without a labelled scan (0 = wait forever)")
    live.add_argument("--grace", type=float, default=2.0,
                      help="seconds a scan waits for its instances, tracks, image and detections before it is "
                           "drawn with what arrived")
    args = parser.parse_args(argv)
    if args.frames is not None and args.frames < 1:
        parser.error("--frames must be at least 1")
    if args.live:
        if args.bag:
            parser.error("give a bag or --live, not both")
        if args.seconds is not None and args.seconds <= 0:
            parser.error("--seconds must be positive")
        from .render_live import render_live

        return render_live(args.out, frames=args.frames, seconds=args.seconds, namespace=args.namespace,
                           idle_timeout_s=args.idle_timeout, grace_s=args.grace, fps=args.fps,
                           bev_range_m=args.bev_range_m, dpi=args.dpi)
    if not args.bag:
        parser.error("a bag is required (or --live)")
    from ..bag.source import BagError

    try:
        render(args.bag, args.out, args.frames, args.start, args.backend, args.det_model, args.seg_model,
               args.fov, not args.no_camera, args.fps, args.bev_range_m, args.dpi)
    except BagError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
