"""KITTI object labels (label_2) and Velodyne .bin scans."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class KittiFormatError(ValueError):
    pass


@dataclass
class ObjectLabel:
    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: np.ndarray  # (4,) left, top, right, bottom in pixels
    dimensions: np.ndarray  # (3,) h, w, l in metres
    location: np.ndarray  # (3,) bottom centre in rectified camera coordinates
    rotation_y: float
    score: float = 1.0

    def difficulty(self) -> int:
        """0 easy, 1 moderate, 2 hard, -1 ignored (KITTI 2D benchmark thresholds).

        As the object devkit: a box is ignored at a level when its occlusion or truncation
        exceeds the level's maximum or its height is <= the minimum (40 / 25 / 25 px).
        """
        height = self.bbox[3] - self.bbox[1]
        if height > 40 and self.occluded <= 0 and self.truncated <= 0.15:
            return 0
        if height > 25 and self.occluded <= 1 and self.truncated <= 0.30:
            return 1
        if height > 25 and self.occluded <= 2 and self.truncated <= 0.50:
            return 2
        return -1

    def to_line(self) -> str:
        vals = [self.type, f"{self.truncated:.2f}", str(int(self.occluded)), f"{self.alpha:.2f}",
                *(f"{v:.2f}" for v in self.bbox), *(f"{v:.2f}" for v in self.dimensions),
                *(f"{v:.2f}" for v in self.location), f"{self.rotation_y:.2f}"]
        return " ".join(vals)

    def corners_rect(self) -> np.ndarray:
        """(8,3) corners of the 3D box in rectified camera coordinates."""
        h, w, length = self.dimensions
        x = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * length / 2
        y = np.array([0, 0, 0, 0, -1, -1, -1, -1]) * h
        z = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * w / 2
        c, s = np.cos(self.rotation_y), np.sin(self.rotation_y)
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        return (rot @ np.vstack([x, y, z])).T + self.location


def read_labels(path: str | Path) -> list[ObjectLabel]:
    p = Path(path)
    if not p.exists():
        raise KittiFormatError(f"label file '{p}' not found")
    out = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (15, 16):
            raise KittiFormatError(f"{p}:{n}: expected 15 or 16 columns, got {len(parts)}")
        v = [float(x) for x in parts[1:]]
        out.append(ObjectLabel(parts[0], v[0], int(v[1]), v[2], np.array(v[3:7]), np.array(v[7:10]),
                               np.array(v[10:13]), v[13], v[14] if len(v) > 14 else 1.0))
    return out


def write_labels(path: str | Path, labels: list[ObjectLabel]) -> None:
    Path(path).write_text("".join(lab.to_line() + "\n" for lab in labels))


def read_velodyne_bin(path: str | Path) -> np.ndarray:
    """(N, 4) float32 x, y, z, reflectance."""
    p = Path(path)
    if not p.exists():
        raise KittiFormatError(f"Velodyne file '{p}' not found")
    raw = np.fromfile(p, dtype="<f4")
    if raw.size % 4:
        raise KittiFormatError(f"Velodyne file '{p}' is corrupt: {raw.size * 4} bytes is not a multiple of 16")
    return raw.reshape(-1, 4)


def write_velodyne_bin(path: str | Path, points: np.ndarray) -> None:
    np.ascontiguousarray(points[:, :4], dtype="<f4").tofile(path)
