"""`squeeze-perception kitti2bag`: KITTI raw (sync) or object layout -> rosbag2 (mcap or sqlite3).

Topics follow the widely used ROS 1 `kitti2bag` naming so existing RViz configs and our
nodes' defaults match: Image + CameraInfo of the left colour camera, the Velodyne
PointCloud2 and the static transforms base_link -> imu_link -> velo_link -> camera_color_left.
Messages are built and serialised with rosbags' typestore (tf2_msgs is in it even though no
tf2_msgs Python wheel exists here). The bag is written to a temporary directory beside the
output and renamed at the end, so an error never leaves a half-written bag behind.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import interfaces as itf
from ..kitti.calib import CalibrationError, KittiCalibration, load_object_calib, load_raw_calib
from ..kitti.labels import KittiFormatError, read_velodyne_bin

TOPIC_IMAGE = "/" + itf.TOPIC_IMAGE
TOPIC_CAMERA_INFO = "/" + itf.TOPIC_CAMERA_INFO
TOPIC_POINTS = "/" + itf.TOPIC_POINTS
TOPIC_TF_STATIC = "/tf_static"

FRAME_PERIOD_NS = 100_000_000  # KITTI sync data is 10 Hz
# Start time used when a layout has no timestamps (object benchmark, the SFND raw extract).
DEFAULT_START_NS = int(dt.datetime(2011, 9, 26, 13, 0, 0, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000_000


class Kitti2BagError(RuntimeError):
    """Conversion failed; the message names the offending file."""


@dataclass
class FrameFiles:
    index: int
    image: Path
    velodyne: Path
    image_stamp_ns: int
    velodyne_stamp_ns: int
    calib: KittiCalibration


@dataclass
class Source:
    layout: str  # "raw" | "object"
    frames: list[FrameFiles]
    timing_note: str
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- timestamps
def parse_kitti_timestamp(text: str) -> int:
    """'2011-09-26 13:02:25.951199337' (UTC) -> nanoseconds since the epoch, exact to 1 ns."""
    text = text.strip()
    date_part, _, frac = text.partition(".")
    base = dt.datetime.strptime(date_part, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc)
    frac_ns = int((frac + "000000000")[:9]) if frac else 0
    return int(base.timestamp()) * 1_000_000_000 + frac_ns


def read_timestamps(path: Path, frame_numbers: list[int]) -> list[int] | None:
    """Timestamps of the given frames (line N+1 is frame N), or None when the file is absent."""
    if not path.exists():
        return None
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if frame_numbers and max(frame_numbers) >= len(lines):
        raise Kitti2BagError(f"{path}: has {len(lines)} timestamps but frame {max(frame_numbers)} needs line "
                             f"{max(frame_numbers) + 1}")
    try:
        return [parse_kitti_timestamp(lines[k]) for k in frame_numbers]
    except ValueError as exc:
        raise Kitti2BagError(f"{path}: malformed timestamp ({exc})") from exc


def _start_from_date_dir(name: str) -> int:
    try:
        day = dt.datetime.strptime(name, "%Y_%m_%d").replace(hour=12, tzinfo=dt.timezone.utc)
        return int(day.timestamp()) * 1_000_000_000
    except ValueError:
        return DEFAULT_START_NS


# ----------------------------------------------------------------------------- layouts
def _frame_ids(folder: Path, suffix: str) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.glob(f"*{suffix}"))}


def scan_raw_drive(drive_dir: Path, limit: int | None = None) -> Source:
    """KITTI raw: <date>/<date>_drive_XXXX_sync/{image_02,velodyne_points} + <date>/calib_*.txt."""
    image_dir, velo_dir = drive_dir / "image_02" / "data", drive_dir / "velodyne_points" / "data"
    for d in (image_dir, velo_dir):
        if not d.is_dir():
            raise Kitti2BagError(f"{d}: folder not found (expected the KITTI raw sync layout)")
    images, scans = _frame_ids(image_dir, ".png"), _frame_ids(velo_dir, ".bin")
    ids = sorted(set(images) & set(scans))
    notes = []
    if set(images) ^ set(scans):
        notes.append(f"{len(set(images) ^ set(scans))} frame(s) have only an image or only a scan; skipped")
    if not ids:
        raise Kitti2BagError(f"{drive_dir}: no frame has both image_02/data/*.png and velodyne_points/data/*.bin")
    if limit:
        ids = ids[:limit]
    try:
        calib = load_raw_calib(drive_dir.parent)
    except CalibrationError as exc:
        raise Kitti2BagError(str(exc)) from exc
    numbers = [int(i) if i.isdigit() else n for n, i in enumerate(ids)]
    cam_ts = read_timestamps(drive_dir / "image_02" / "timestamps.txt", numbers)
    velo_ts = read_timestamps(drive_dir / "velodyne_points" / "timestamps.txt", numbers)
    if cam_ts is not None and velo_ts is not None:
        note = "recorded timestamps (image_02/timestamps.txt, velodyne_points/timestamps.txt)"
    elif cam_ts is not None or velo_ts is not None:
        # One sensor's times are known: the synced frames share them (KITTI sync data is matched to ~5 ms).
        known = "image_02" if cam_ts is not None else "velodyne_points"
        cam_ts = velo_ts = cam_ts if cam_ts is not None else velo_ts
        note = f"only {known}/timestamps.txt in {drive_dir.name}: both sensors stamped with it"
    else:
        start = _start_from_date_dir(drive_dir.parent.name)
        cam_ts = velo_ts = [start + i * FRAME_PERIOD_NS for i in range(len(ids))]
        note = (f"no timestamps.txt in {drive_dir.name}: stamped at 10 Hz from "
                f"{dt.datetime.fromtimestamp(start / 1e9, dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC")
    frames = [FrameFiles(numbers[n], images[i], scans[i], cam_ts[n], velo_ts[n], calib) for n, i in enumerate(ids)]
    return Source("raw", frames, note, notes)


def scan_object_split(split_dir: Path, limit: int | None = None) -> Source:
    """KITTI object: <split>/{image_2,velodyne,calib}/NNNNNN.*; synthetic 10 Hz timing."""
    image_dir, velo_dir, calib_dir = split_dir / "image_2", split_dir / "velodyne", split_dir / "calib"
    if not velo_dir.is_dir() and (split_dir / "velodyne_reduced").is_dir():
        velo_dir = split_dir / "velodyne_reduced"
    for d in (image_dir, velo_dir, calib_dir):
        if not d.is_dir():
            raise Kitti2BagError(f"{d}: folder not found (expected the KITTI object layout)")
    images, scans = _frame_ids(image_dir, ".png"), _frame_ids(velo_dir, ".bin")
    ids = sorted(set(images) & set(scans))
    if not ids:
        raise Kitti2BagError(f"{split_dir}: no frame has both image_2/*.png and {velo_dir.name}/*.bin")
    if limit:
        ids = ids[:limit]
    frames = []
    for n, i in enumerate(ids):
        try:
            calib = load_object_calib(calib_dir / f"{i}.txt")
        except CalibrationError as exc:
            raise Kitti2BagError(str(exc)) from exc
        stamp = DEFAULT_START_NS + n * FRAME_PERIOD_NS
        frames.append(FrameFiles(int(i) if i.isdigit() else n, images[i], scans[i], stamp, stamp, calib))
    return Source("object", frames, "object layout has no timestamps: stamped at 10 Hz (synthetic)")


def detect_layout(path: Path) -> str:
    if (path / "image_02").is_dir() or (path / "velodyne_points").is_dir():
        return "raw"
    if (path / "image_2").is_dir() or (path / "calib").is_dir():
        return "object"
    raise Kitti2BagError(f"{path}: neither a KITTI raw drive (image_02/, velodyne_points/) "
                         "nor an object split (image_2/, velodyne/, calib/)")


# ----------------------------------------------------------------------------- messages
def _stamp(ts, ns: int):
    return ts.types["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(ts, ns: int, frame_id: str):
    return ts.types["std_msgs/msg/Header"](stamp=_stamp(ts, ns), frame_id=frame_id)


def load_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; palette or grey PNGs are converted. Errors name the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as exc:
        raise Kitti2BagError(f"{path}: image file not found") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise Kitti2BagError(f"{path}: corrupt or unreadable image ({exc})") from exc


def load_scan(path: Path) -> np.ndarray:
    try:
        points = read_velodyne_bin(path)
    except KittiFormatError as exc:
        raise Kitti2BagError(str(exc)) from exc
    if points.size and not np.isfinite(points).all():
        raise Kitti2BagError(f"{path}: corrupt Velodyne scan (contains NaN/Inf values)")
    return points


def image_msg(ts, rgb: np.ndarray, stamp_ns: int):
    h, w = rgb.shape[:2]
    return ts.types["sensor_msgs/msg/Image"](
        header=_header(ts, stamp_ns, itf.FRAME_CAMERA), height=h, width=w, encoding="rgb8",
        is_bigendian=0, step=w * 3, data=np.ascontiguousarray(rgb).reshape(-1))


def camera_info_msg(ts, calib: KittiCalibration, width: int, height: int, stamp_ns: int):
    """Rectified camera: no distortion, R = I, K from P2 and P = P2 (baseline in P[0,3])."""
    return ts.types["sensor_msgs/msg/CameraInfo"](
        header=_header(ts, stamp_ns, itf.FRAME_CAMERA), height=height, width=width,
        distortion_model="plumb_bob", d=np.zeros(5), k=calib.P2[:3, :3].reshape(-1).astype(np.float64),
        r=np.eye(3).reshape(-1), p=calib.P2.reshape(-1).astype(np.float64), binning_x=0, binning_y=0,
        roi=ts.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                         do_rectify=False))


def pointcloud_msg(ts, points: np.ndarray, stamp_ns: int):
    pf = ts.types["sensor_msgs/msg/PointField"]
    data = np.ascontiguousarray(points[:, :4], dtype="<f4")
    return ts.types["sensor_msgs/msg/PointCloud2"](
        header=_header(ts, stamp_ns, itf.FRAME_VELODYNE), height=1, width=len(data),
        fields=[pf(name=n, offset=4 * i, datatype=pf.FLOAT32, count=1)
                for i, n in enumerate(itf.POINT_FIELDS_REQUIRED)],
        is_bigendian=False, point_step=16, row_step=16 * len(data), data=data.view(np.uint8).reshape(-1),
        is_dense=True)


def static_transforms(calib: KittiCalibration) -> list[tuple[str, str, np.ndarray]]:
    """(parent, child, 4x4 pose of child in parent) following kitti2bag's frame tree."""
    if calib.Tr_imu_to_velo is not None:
        tree = [(itf.FRAME_BASE, itf.FRAME_IMU, np.eye(4)),
                # Tr_imu_to_velo maps IMU points into the Velodyne frame; TF wants the pose of
                # velo_link in imu_link, which maps Velodyne points into the IMU frame.
                (itf.FRAME_IMU, itf.FRAME_VELODYNE, np.linalg.inv(calib.Tr_imu_to_velo))]
    else:
        tree = [(itf.FRAME_BASE, itf.FRAME_VELODYNE, np.eye(4))]
    tree.append((itf.FRAME_VELODYNE, itf.FRAME_CAMERA, calib.cam2_to_velo))
    return tree


def tf_message(ts, transforms: list[tuple[str, str, np.ndarray]], stamp_ns: int):
    from scipy.spatial.transform import Rotation

    t = ts.types
    out = []
    for parent, child, pose in transforms:
        qx, qy, qz, qw = Rotation.from_matrix(pose[:3, :3]).as_quat()
        out.append(t["geometry_msgs/msg/TransformStamped"](
            header=_header(ts, stamp_ns, parent), child_frame_id=child,
            transform=t["geometry_msgs/msg/Transform"](
                translation=t["geometry_msgs/msg/Vector3"](x=float(pose[0, 3]), y=float(pose[1, 3]),
                                                           z=float(pose[2, 3])),
                rotation=t["geometry_msgs/msg/Quaternion"](x=float(qx), y=float(qy), z=float(qz), w=float(qw)))))
    return t["tf2_msgs/msg/TFMessage"](transforms=out)


# ----------------------------------------------------------------------------- writing
def _latched_qos():
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    forever = QosTime(2147483647, 4294967295)
    return [Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                forever, forever, QosLiveliness.AUTOMATIC, forever, False)]


@dataclass
class ConversionSummary:
    output: Path
    layout: str
    frames: int
    counts: dict[str, int]
    start_ns: int
    end_ns: int
    size_bytes: int
    timing_note: str

    def text(self) -> str:
        lines = [f"wrote {self.output} ({self.layout} layout, {self.frames} frames, "
                 f"{self.size_bytes / 1e6:.1f} MB, {(self.end_ns - self.start_ns) / 1e9:.2f} s)",
                 f"  timing: {self.timing_note}"]
        lines += [f"  {topic:42s} {n:6d} messages" for topic, n in self.counts.items()]
        return "\n".join(lines)


def convert(source_dir: str | Path, output: str | Path, storage: str = "mcap", compress: str = "zstd",
            layout: str = "auto", limit: int | None = None, progress: bool = True) -> ConversionSummary:
    """Convert one KITTI raw drive or object split into a rosbag2 at `output` (a new folder)."""
    from rosbags.rosbag2 import Writer
    from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
    from rosbags.typesys import Stores, get_typestore
    from tqdm import tqdm

    source_dir, output = Path(source_dir), Path(output)
    if not source_dir.exists():
        raise Kitti2BagError(f"{source_dir}: input folder not found")
    if output.exists():
        raise Kitti2BagError(f"{output}: output exists already; remove it or choose another path")
    if storage not in ("mcap", "sqlite3"):
        raise Kitti2BagError(f"unknown storage '{storage}' (mcap or sqlite3)")
    layout = detect_layout(source_dir) if layout == "auto" else layout
    src = scan_raw_drive(source_dir, limit) if layout == "raw" else scan_object_split(source_dir, limit)

    ts = get_typestore(Stores.ROS2_KILTED)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    tmp_bag = tmp_root / output.name
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    try:
        writer = Writer(tmp_bag, version=9, storage_plugin=plugin)
        if compress == "zstd":
            # mcap: zstd chunk compression (read by ros2 bag and Foxglove); sqlite3: per message.
            writer.set_compression(CompressionMode.STORAGE if storage == "mcap" else CompressionMode.MESSAGE,
                                   CompressionFormat.ZSTD)
        elif compress != "none":
            raise Kitti2BagError(f"unknown compression '{compress}' (zstd or none)")
        counts: dict[str, int] = {}
        with writer:
            conns = {
                TOPIC_TF_STATIC: writer.add_connection(TOPIC_TF_STATIC, "tf2_msgs/msg/TFMessage", typestore=ts,
                                                       offered_qos_profiles=_latched_qos()),
                TOPIC_CAMERA_INFO: writer.add_connection(TOPIC_CAMERA_INFO, "sensor_msgs/msg/CameraInfo", typestore=ts,
                                                         offered_qos_profiles=_latched_qos()),
                TOPIC_IMAGE: writer.add_connection(TOPIC_IMAGE, "sensor_msgs/msg/Image", typestore=ts),
                TOPIC_POINTS: writer.add_connection(TOPIC_POINTS, "sensor_msgs/msg/PointCloud2", typestore=ts),
            }

            def put(topic: str, msg, msgtype: str, stamp_ns: int) -> None:
                writer.write(conns[topic], stamp_ns, ts.serialize_cdr(msg, msgtype))
                counts[topic] = counts.get(topic, 0) + 1

            last_tf = None
            for frame in tqdm(src.frames, desc=f"kitti2bag {source_dir.name}", unit="frame", disable=not progress):
                rgb = load_image(frame.image)
                points = load_scan(frame.velodyne)
                tree = static_transforms(frame.calib)
                poses = np.stack([p for _, _, p in tree])
                stamp0 = min(frame.image_stamp_ns, frame.velodyne_stamp_ns)
                if last_tf is None or last_tf.shape != poses.shape or not np.allclose(last_tf, poses):
                    # Object frames come from different drives: re-send the tree when it changes.
                    put(TOPIC_TF_STATIC, tf_message(ts, tree, stamp0), "tf2_msgs/msg/TFMessage", stamp0)
                    last_tf = poses
                info = camera_info_msg(ts, frame.calib, rgb.shape[1], rgb.shape[0], frame.image_stamp_ns)
                put(TOPIC_CAMERA_INFO, info, "sensor_msgs/msg/CameraInfo", frame.image_stamp_ns)
                put(TOPIC_IMAGE, image_msg(ts, rgb, frame.image_stamp_ns), "sensor_msgs/msg/Image",
                    frame.image_stamp_ns)
                put(TOPIC_POINTS, pointcloud_msg(ts, points, frame.velodyne_stamp_ns),
                    "sensor_msgs/msg/PointCloud2", frame.velodyne_stamp_ns)
        tmp_bag.rename(output)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    stamps = [t for f in src.frames for t in (f.image_stamp_ns, f.velodyne_stamp_ns)]
    size = sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
    return ConversionSummary(output, src.layout, len(src.frames), counts, min(stamps), max(stamps), size,
                             src.timing_note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="squeeze-perception kitti2bag",
        description="Convert a KITTI raw drive (<date>/<date>_drive_XXXX_sync) or an object split "
                    "(object/training) into a rosbag2 with Image, CameraInfo, PointCloud2 and /tf_static.")
    parser.add_argument("source", help="raw drive folder (calib_*.txt in its parent) or object split folder")
    parser.add_argument("-o", "--output", required=True, help="bag folder to create (must not exist)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--compress", choices=("zstd", "none"), default="zstd",
                        help="mcap: zstd chunk compression; sqlite3: zstd per message (default zstd)")
    parser.add_argument("--layout", choices=("auto", "raw", "object"), default="auto")
    parser.add_argument("--limit", type=int, default=None, help="convert only the first N frames")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        summary = convert(args.source, args.output, args.storage, args.compress, args.layout, args.limit,
                          progress=not args.quiet)
    except Kitti2BagError as exc:
        print(f"kitti2bag: error: {exc}", file=sys.stderr)
        return 1
    print(summary.text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
