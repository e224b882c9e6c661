"""Write synthetic frames in the KITTI object layout, the KITTI raw-sync layout and as lidar_2d tensors."""
from __future__ import annotations

import datetime as dt
import struct
import zlib
from pathlib import Path

import numpy as np

from ...kitti.calib import write_object_calib
from ...kitti.default_calib import write_raw_calib
from ...kitti.labels import write_labels, write_velodyne_bin
from ...kitti.lidar_2d import scan_to_lidar_2d, write_lidar_2d
from ...kitti.tracking import TrackingLabel, write_tracking_labels, write_tracks_velo
from .frame import SynthFrame

SYNTH_DATE = "2026_01_01"
SEQUENCE_START = dt.datetime(2026, 1, 1, 12, 0, 0)
EARTH_RADIUS_M = 6378137.0
ORIGIN_LAT_LON = (49.011, 8.4165)  # Karlsruhe, where KITTI drove; only used for the OXTS packets
PNG_COMPRESS_LEVEL = 1  # zlib level; with the Sub filter ~880 KB per image, 27 ms (PIL level 3: 860 KB, 72 ms)

OXTS_FIELDS = ("lat lon alt roll pitch yaw vn ve vf vl vu ax ay az af al au wx wy wz wf wl wu "
               "pos_accuracy vel_accuracy navstat numsats posmode velmode orimode").split()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray, level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """An 8-bit RGB (H, W, 3) or grey (H, W) PNG: every row with the Sub filter, zlib at `level`.

    PIL tries all five filters on every row; one fixed filter computed in numpy is 2-3x quicker
    and, on these noisy renders, about as small.
    """
    image = np.ascontiguousarray(image, np.uint8)
    h, w = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    rows = image.reshape(h, w * channels)
    raw = np.empty((h, w * channels + 1), np.uint8)
    raw[:, 0] = 1  # filter type Sub: each byte minus the same channel of the pixel to its left
    raw[:, 1:channels + 1] = rows[:, :channels]
    np.subtract(rows[:, channels:], rows[:, :-channels], out=raw[:, channels + 1:])
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), level))
            + _png_chunk(b"IEND", b""))


def _save_png(path: Path, image: np.ndarray) -> None:
    Path(path).write_bytes(encode_png(image))


def point_labels(frame: SynthFrame) -> np.ndarray:
    """(N, 2) int32 [class id, instance id] per Velodyne point."""
    return np.column_stack([frame.scan.class_id, frame.scan.instance_id]).astype(np.int32)


def write_object_frame(root: str | Path, split: str, index: int, frame: SynthFrame,
                       lidar_2d_split: str | None = None) -> None:
    """object/<split>/{image_2,velodyne,calib,label_2,velodyne_labels}/NNNNNN.* and lidar_2d/<split>/NNNNNN.npy.

    velodyne_labels/NNNNNN.npy holds the exact per-point [class, instance] from the simulator.
    A camera-only frame (frame.has_lidar False) writes image_2, calib and label_2 only.
    """
    root = Path(root)
    base = root / "object" / split
    name = f"{index:06d}"
    subs = ("image_2", "velodyne", "calib", "label_2", "velodyne_labels") if frame.has_lidar else \
        ("image_2", "calib", "label_2")
    for sub in subs:
        (base / sub).mkdir(parents=True, exist_ok=True)
    _save_png(base / "image_2" / f"{name}.png", frame.image)
    if frame.has_lidar:
        write_velodyne_bin(base / "velodyne" / f"{name}.bin", frame.scan.points)
    write_object_calib(base / "calib" / f"{name}.txt", frame.calib)
    write_labels(base / "label_2" / f"{name}.txt", frame.labels)
    if frame.has_lidar:
        np.save(base / "velodyne_labels" / f"{name}.npy", point_labels(frame))
    if lidar_2d_split and frame.has_lidar:
        tensor = scan_to_lidar_2d(frame.scan.points, frame.scan.class_id, frame.scan.rows)
        write_lidar_2d(root / "lidar_2d" / lidar_2d_split / f"{name}.npy", tensor)


def write_lidar_2d_scan(root: str | Path, split: str, index: int, scan) -> None:
    """lidar_2d/<split>/NNNNNN.npy of one scan alone (`synth --lidar-2d-only`)."""
    tensor = scan_to_lidar_2d(scan.points, scan.class_id, scan.rows)
    write_lidar_2d(Path(root) / "lidar_2d" / split / f"{index:06d}.npy", tensor)


def _stamp(seconds: float) -> str:
    t = SEQUENCE_START + dt.timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond * 1000:09d}"


class RawSequenceWriter:
    """Writes one drive: raw/<date>/<date>_drive_XXXX_sync/... plus the date's calibration files."""

    def __init__(self, root: str | Path, drive: int, date: str = SYNTH_DATE):
        self.date_dir = Path(root) / "raw" / date
        self.dir = self.date_dir / f"{date}_drive_{drive:04d}_sync"
        self.image_dir = self.dir / "image_02" / "data"
        self.velo_dir = self.dir / "velodyne_points" / "data"
        self.labels_dir = self.dir / "velodyne_points" / "labels"
        self.oxts_dir = self.dir / "oxts" / "data"
        for d in (self.image_dir, self.velo_dir, self.labels_dir, self.oxts_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.times: list[float] = []
        self.tracking: list[TrackingLabel] = []
        self.tracks: list[tuple] = []
        self.poses: list[tuple] = []
        self._calib_written = False

    def add(self, frame: SynthFrame, track_radius: float = 100.0) -> None:
        i = len(self.times)
        if not self._calib_written:
            write_raw_calib(self.date_dir, frame.calib)
            self._calib_written = True
        _save_png(self.image_dir / f"{i:010d}.png", frame.image)
        if frame.has_lidar:
            write_velodyne_bin(self.velo_dir / f"{i:010d}.bin", frame.scan.points)
            np.save(self.labels_dir / f"{i:010d}.npy", point_labels(frame))
        self.times.append(frame.time)
        for truth in frame.truths:
            if truth.label is not None:
                self.tracking.append(TrackingLabel(i, truth.agent.instance_id, truth.label))
            if truth.agent.class_id > 0 and np.hypot(*truth.centre[:2]) <= track_radius:
                self.tracks.append((i, truth.agent.instance_id, truth.agent.class_id, *truth.centre, *truth.size,
                                    truth.yaw, *truth.velocity, truth.num_points))
        for lab in frame.labels:
            if lab.type == "DontCare":
                self.tracking.append(TrackingLabel(i, -1, lab))
        pose = frame.ego_pose
        yaw = float(np.arctan2(pose[1, 0], pose[0, 0]))
        self.poses.append((i, *pose[:3, 3], yaw, *frame.ego_velocity))
        self._write_oxts(i, pose, yaw)

    def _write_oxts(self, i: int, pose: np.ndarray, yaw: float) -> None:
        """An OXTS packet for the ego pose (flat-earth lat/lon around Karlsruhe; velocities by differencing)."""
        lat0, lon0 = ORIGIN_LAT_LON
        x, y, z = pose[:3, 3]
        lat = lat0 + np.degrees(y / EARTH_RADIUS_M)
        lon = lon0 + np.degrees(x / (EARTH_RADIUS_M * np.cos(np.radians(lat0))))
        if i > 0:
            _, px, py = self.poses[i - 1][:3]
            step = self.times[i] - self.times[i - 1]
            ve, vn = (x - px) / step, (y - py) / step
        else:
            ve = vn = 0.0
        vf = ve * np.cos(yaw) + vn * np.sin(yaw)
        vl = -ve * np.sin(yaw) + vn * np.cos(yaw)
        values = [lat, lon, 110.0 + z, 0.0, 0.0, yaw, vn, ve, vf, vl, 0.0] + [0.0] * 12 + [0.05, 0.02, 4, 10, 5, 5, 6]
        (self.oxts_dir / f"{i:010d}.txt").write_text(" ".join(f"{v:.12g}" for v in values) + "\n")

    def close(self) -> None:
        stamps = "".join(_stamp(t) + "\n" for t in self.times)
        (self.dir / "image_02" / "timestamps.txt").write_text(stamps)
        for name in ("timestamps.txt", "timestamps_start.txt", "timestamps_end.txt"):
            offset = {"timestamps.txt": 0.0, "timestamps_start.txt": -0.05, "timestamps_end.txt": 0.05}[name]
            (self.dir / "velodyne_points" / name).write_text("".join(_stamp(t + offset) + "\n" for t in self.times))
        (self.dir / "oxts" / "timestamps.txt").write_text(stamps)
        (self.dir / "oxts" / "dataformat.txt").write_text("".join(f"{f}\n" for f in OXTS_FIELDS))
        write_tracking_labels(self.dir / "label_02.txt", self.tracking)
        write_tracks_velo(self.dir / "tracks_velo.csv", self.tracks)
        with (self.dir / "ego_poses.csv").open("w") as fh:
            fh.write("frame,x,y,z,yaw,vx,vy\n")
            fh.writelines(f"{i},{x:.4f},{y:.4f},{z:.4f},{yaw:.6f},{vx:.4f},{vy:.4f}\n"
                          for i, x, y, z, yaw, vx, vy in self.poses)
