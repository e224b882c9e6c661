"""lidar_2d grids (64 x W x 6: x, y, z, intensity, range, label) and unlabelled real scans.

Grids are float32 numpy; `to_input` builds the network input for a given model input depth
(5: SqueezeSeg, 6: + LiDAR mask for V2). Training augmentation is the release's random
left-right flip (width reversed, y negated) and, when asked for (`intensity_gain_log2`), one
random gain per scan on the intensity channel: 2**u with u uniform in [-a, a], clipped to the
sensor's [0, 1]. HDL-64E units differ in calibration and KITTI's readings depend on the unit and
its firmware's gain; a network that reads class from the absolute intensity level (which our
simulator ties to materials) breaks on another unit. The gain keeps the contrast within a scan
and takes the level away.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import constants as K


class SegDataError(ValueError):
    pass


def load_grid(path: str | Path) -> np.ndarray:
    grid = np.load(path)
    if grid.ndim != 3 or grid.shape[0] != K.GRID_HEIGHT or grid.shape[2] < 5:
        raise SegDataError(f"{path}: expected a (64, W, 6) lidar_2d grid, got {grid.shape}")
    return np.nan_to_num(grid.astype(np.float32, copy=False))


def list_grids(folder: str | Path) -> list[Path]:
    files = sorted(Path(folder).glob("*.npy"))
    if not files:
        raise SegDataError(f"no lidar_2d .npy files in '{folder}'")
    return files


def to_input(grid: np.ndarray, in_channels: int) -> np.ndarray:
    """(H, W, >=5) grid -> (C, H, W) raw network input (normalisation happens in the model)."""
    feats = grid[..., :5].transpose(2, 0, 1)
    if in_channels == 6:
        mask = (grid[..., 4] > 0).astype(np.float32)[None]
        feats = np.concatenate([feats, mask], 0)
    return np.ascontiguousarray(feats, dtype=np.float32)


def flip_grid(grid: np.ndarray) -> np.ndarray:
    out = grid[:, ::-1].copy()
    out[..., 1] *= -1.0
    return out


def scale_intensity(grid: np.ndarray, gain: float) -> np.ndarray:
    """A copy with the intensity channel (index 3 of the last axis: a (H, W, >=4) grid or (N, >=4)
    points) times `gain`, clipped to the sensor's [0, 1] (empty cells stay 0)."""
    out = grid.copy()
    out[..., 3] = np.clip(out[..., 3] * gain, 0.0, 1.0)
    return out


class GridDataset:
    """Random-access lidar_2d grids held in memory (a few thousand fit easily: 0.8 MB each)."""

    def __init__(self, files: list[Path], in_channels: int, augment: bool = False, seed: int = 0,
                 max_files: int | None = None, crop_width: int = 0, intensity_gain_log2: float = 0.0):
        if crop_width and crop_width % 16:
            raise ValueError(f"crop_width must be a multiple of 16 (four width halvings), got {crop_width}")
        self.crop_width = crop_width
        self.files = list(files)[:max_files] if max_files else list(files)
        self.in_channels = in_channels
        self.augment = augment
        if intensity_gain_log2 < 0:
            raise ValueError(f"intensity_gain_log2 must be >= 0, got {intensity_gain_log2}")
        self.intensity_gain_log2 = intensity_gain_log2
        self.rng = np.random.default_rng(seed)
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.files)

    def refresh(self, files: list[Path]) -> None:
        """Add files that appeared since construction (existing indices keep their file)."""
        known = set(self.files)
        self.files += [f for f in files if f not in known]

    def grid(self, i: int) -> np.ndarray:
        if i not in self._cache:
            try:
                self._cache[i] = load_grid(self.files[i])
            except (ValueError, OSError, EOFError):
                # A file still being written by the generator: use a cached one this time.
                if not self._cache:
                    raise
                return next(iter(self._cache.values()))
        return self._cache[i]

    def item(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        g = self.grid(i)
        if self.crop_width and self.crop_width < g.shape[1]:
            start = int(self.rng.integers(0, g.shape[1] - self.crop_width + 1))
            g = g[:, start:start + self.crop_width]
        if self.augment and self.rng.random() < 0.5:
            g = flip_grid(g)
        if self.augment and self.intensity_gain_log2 > 0:
            g = scale_intensity(g, 2.0 ** self.rng.uniform(-self.intensity_gain_log2, self.intensity_gain_log2))
        labels = g[..., 5].astype(np.int64) if g.shape[2] > 5 else np.zeros(g.shape[:2], np.int64)
        return to_input(g, self.in_channels), labels

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self.item(int(i)) for i in indices))
        return np.stack(xs), np.stack(ys)


def rotate_z(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    out = points.copy()
    out[:, 0] = c * points[:, 0] - s * points[:, 1]
    out[:, 1] = s * points[:, 0] + c * points[:, 1]
    return out


def grids_from_scan(points: np.ndarray, quadrants: int = 4) -> list[np.ndarray]:
    """Front-90-degree grids (64x512x6, label 0) of a full scan rotated by 0, 90, 180, 270 deg,
    so one unlabelled 360-degree scan gives four adaptation samples."""
    from ..kitti.projection import spherical_project

    out = []
    for q in range(quadrants):
        proj = spherical_project(rotate_z(points, -q * np.pi / 2), fov="front")
        grid = np.zeros((*proj.grid.shape[:2], 6), np.float32)
        grid[..., :5] = proj.grid
        out.append(grid)
    return out


def real_unlabelled_scans(kitti_root: str | Path) -> list[Path]:
    """Velodyne scans the issue allows for adaptation: raw/ and object/ (never their labels)."""
    root = Path(kitti_root)
    scans = sorted(root.glob("raw/**/velodyne_points/data/*.bin")) + \
        sorted(root.glob("object/training/velodyne/*.bin"))
    if not scans:
        raise SegDataError(f"no unlabelled Velodyne scans under '{root}/raw' or '{root}/object'")
    return scans


def real_adaptation_grids(kitti_root: str | Path) -> np.ndarray:
    from ..kitti.labels import read_velodyne_bin

    grids = []
    for scan in real_unlabelled_scans(kitti_root):
        grids += grids_from_scan(read_velodyne_bin(scan))
    return np.stack(grids)
