"""SqueezeSeg lidar_2d tensors: (64, 512, 6) float32 x, y, z, intensity, range, label."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .labels import KittiFormatError
from .projection import point_labels_to_cells, spherical_project, to_lidar_2d

LIDAR_2D_SHAPE = (64, 512, 6)
LIDAR_2D_CHANNELS = ("x", "y", "z", "intensity", "range", "label")


def read_lidar_2d(path: str | Path) -> np.ndarray:
    p = Path(path)
    if not p.exists():
        raise KittiFormatError(f"lidar_2d file '{p}' not found")
    try:
        arr = np.load(p)
    except (ValueError, OSError) as exc:
        raise KittiFormatError(f"lidar_2d file '{p}' is corrupt: {exc}") from exc
    if arr.ndim != 3 or arr.shape[0] != 64 or arr.shape[2] != 6:
        raise KittiFormatError(f"lidar_2d file '{p}' has shape {arr.shape}, expected (64, W, 6)")
    return arr.astype(np.float32, copy=False)


def write_lidar_2d(path: str | Path, tensor: np.ndarray) -> None:
    arr = np.asarray(tensor, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[0] != 64 or arr.shape[2] != 6:
        raise ValueError(f"lidar_2d tensor must be (64, W, 6), got {arr.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)


def scan_to_lidar_2d(points: np.ndarray, point_labels: np.ndarray | None = None,
                     rows: np.ndarray | None = None) -> np.ndarray:
    """Front-view (64, 512, 6) tensor of a scan; the label channel is 0 where there is no label."""
    proj = spherical_project(points, fov="front", rows=rows)
    cells = point_labels_to_cells(proj, point_labels) if point_labels is not None else None
    return to_lidar_2d(proj, cells)
