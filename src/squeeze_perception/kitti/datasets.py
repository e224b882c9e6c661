"""Readers for the KITTI object layout and raw-sync drives (real or synthetic: the same code reads both)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .calib import KittiCalibration, load_object_calib, load_raw_calib
from .labels import KittiFormatError, ObjectLabel, read_labels, read_velodyne_bin


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB (palette and grey PNGs are converted)."""
    p = Path(path)
    if not p.exists():
        raise KittiFormatError(f"image '{p}' not found")
    with Image.open(p) as im:
        return np.asarray(im.convert("RGB"))


def read_timestamps(path: str | Path) -> np.ndarray:
    """KITTI raw timestamps.txt -> (N,) float64 seconds since the epoch (nanosecond text kept to microseconds)."""
    p = Path(path)
    if not p.exists():
        raise KittiFormatError(f"timestamps file '{p}' not found")
    out = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        date, _, frac = line.partition(".")
        base = dt.datetime.strptime(date, "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc)
        out.append(base.timestamp() + float("0." + frac) if frac else base.timestamp())
    return np.array(out, dtype=np.float64)


@dataclass
class ObjectFrame:
    name: str
    image: np.ndarray
    points: np.ndarray  # (N, 4) float32
    calib: KittiCalibration
    labels: list[ObjectLabel]
    point_labels: np.ndarray | None  # (N, 2) int32 [class, instance] when the simulator wrote them


class KittiObjectDataset:
    """object/<split>/{image_2,velodyne|velodyne_reduced,calib,label_2}: one frame per name."""

    def __init__(self, root: str | Path, split: str = "training"):
        self.dir = Path(root) / "object" / split if (Path(root) / "object").exists() else Path(root) / split
        if not self.dir.exists():
            raise KittiFormatError(f"no KITTI object split at '{self.dir}'")
        velo = self.dir / "velodyne"
        self.velodyne_dir = velo if velo.exists() else self.dir / "velodyne_reduced"
        self.names = sorted(p.stem for p in self.velodyne_dir.glob("*.bin"))

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> ObjectFrame:
        name = self.names[i]
        label_path = self.dir / "label_2" / f"{name}.txt"
        labels_npy = self.dir / "velodyne_labels" / f"{name}.npy"
        return ObjectFrame(name, read_image(self.dir / "image_2" / f"{name}.png"),
                           read_velodyne_bin(self.velodyne_dir / f"{name}.bin"),
                           load_object_calib(self.dir / "calib" / f"{name}.txt"),
                           read_labels(label_path) if label_path.exists() else [],
                           np.load(labels_npy) if labels_npy.exists() else None)


class RawDrive:
    """raw/<date>/<date>_drive_XXXX_sync/ with image_02 and velodyne_points; calibration in the date folder."""

    def __init__(self, drive_dir: str | Path):
        self.dir = Path(drive_dir)
        if not self.dir.exists():
            raise KittiFormatError(f"no raw drive at '{self.dir}'")
        self.image_paths = sorted((self.dir / "image_02" / "data").glob("*.png"))
        self.velodyne_paths = sorted((self.dir / "velodyne_points" / "data").glob("*.bin"))

    @property
    def calib(self) -> KittiCalibration:
        return load_raw_calib(self.dir.parent)

    def __len__(self) -> int:
        return min(len(self.image_paths), len(self.velodyne_paths))

    def image(self, i: int) -> np.ndarray:
        return read_image(self.image_paths[i])

    def points(self, i: int) -> np.ndarray:
        return read_velodyne_bin(self.velodyne_paths[i])

    def point_labels(self, i: int) -> np.ndarray | None:
        p = self.dir / "velodyne_points" / "labels" / (self.velodyne_paths[i].stem + ".npy")
        return np.load(p) if p.exists() else None

    def timestamps(self, sensor: str = "velodyne_points") -> np.ndarray:
        return read_timestamps(self.dir / sensor / "timestamps.txt")


def find_raw_drives(root: str | Path) -> list[Path]:
    """Every <date>_drive_XXXX_sync folder under root/raw (or root itself)."""
    base = Path(root) / "raw" if (Path(root) / "raw").exists() else Path(root)
    return sorted(p for p in base.glob("*/*_drive_*_sync") if p.is_dir())
