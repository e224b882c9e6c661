"""Segmentation samples for the offline experiments: lidar_2d grids from a folder (the
synthetic set of `squeeze-perception synth`, full size) or a procedural toy scene (small runs and
tests, generated in memory in milliseconds).

The toy scene is a 64-beam-like spherical grid over the front 90 degrees: flat ground, a wall
far away, and cars / pedestrians / cyclists as upright boxes at random distances and azimuths,
projected exactly as the sensor would see them (x, y, z, intensity, range, label). It is not
meant to be realistic, only to give a segmentation task whose accuracy moves with capacity.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SENSOR_HEIGHT_M = 1.73  # KITTI Velodyne above the road
# Class id -> (half width m, height m, mean intensity, probability of being drawn).
TOY_OBJECTS = {1: (1.0, 1.5, 0.45, 0.6), 2: (0.3, 1.75, 0.2, 0.2), 3: (0.5, 1.7, 0.55, 0.2)}


def toy_scene_grids(n: int, height: int = 64, width: int = 512, seed: int = 0,
                    objects_per_scene: tuple[int, int] = (2, 6)) -> np.ndarray:
    """(n, height, width, 6) float32 grids: x, y, z, intensity, range, label."""
    rng = np.random.default_rng(seed)
    elev = np.deg2rad(np.linspace(2.0, -24.9, height))[:, None] * np.ones((1, width))
    azim = np.deg2rad(np.linspace(45.0, -45.0, width))[None, :] * np.ones((height, 1))
    out = np.zeros((n, height, width, 6), np.float32)
    for f in range(n):
        # Background: ground where the beam meets it within 60 m, else a wall at 35 m up to 3 m.
        horiz = np.full((height, width), np.inf)
        down = elev < 0
        horiz[down] = SENSOR_HEIGHT_M / np.tan(-elev[down])
        horiz[horiz > 60] = np.inf
        wall_z = 35.0 * np.tan(elev)
        wall = np.isinf(horiz) & (wall_z < 3.0 - SENSOR_HEIGHT_M)
        horiz[wall] = 35.0
        label = np.zeros((height, width), np.int64)
        inten = np.where(wall, 0.35, 0.15) + rng.normal(0, 0.03, (height, width))
        for _ in range(int(rng.integers(*objects_per_scene, endpoint=True))):
            cls = int(rng.choice(list(TOY_OBJECTS), p=[v[3] for v in TOY_OBJECTS.values()]))
            half_w, obj_h, obj_i, _ = TOY_OBJECTS[cls]
            dist = rng.uniform(5.0, 30.0)
            centre = rng.uniform(np.deg2rad(-40), np.deg2rad(40))
            u = np.tan(azim - centre) * dist / half_w  # -1..1 across the object
            z_at = np.tan(elev) * dist - SENSOR_HEIGHT_M
            # Rounded front face (closer in the middle), so a car is not a flat plate.
            d = dist - 0.4 * half_w * (1 - np.clip(u, -1, 1) ** 2)
            hit = (np.abs(u) <= 1) & (z_at >= -SENSOR_HEIGHT_M) & (z_at <= obj_h - SENSOR_HEIGHT_M) & (d < horiz)
            horiz[hit] = d[hit]
            label[hit] = cls
            inten[hit] = obj_i + rng.normal(0, 0.05, int(hit.sum()))
        valid = np.isfinite(horiz)
        horiz = np.where(valid, horiz + rng.normal(0, 0.02, horiz.shape), 0.0)
        rng_m = horiz / np.cos(elev)
        g = out[f]
        g[..., 0] = horiz * np.cos(azim)
        g[..., 1] = horiz * np.sin(azim)
        g[..., 2] = np.where(valid, rng_m * np.sin(elev), 0.0)
        g[..., 3] = np.where(valid, np.clip(inten, 0, 1), 0.0)
        g[..., 4] = np.where(valid, rng_m, 0.0)
        g[..., 5] = np.where(valid, label, 0)
    return out


@dataclass
class SegSamples:
    """Network inputs (N, 5, H, W) raw x, y, z, intensity, range and labels (N, H, W)."""

    inputs: torch.Tensor
    labels: torch.Tensor
    source: str = ""

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def subset(self, idx) -> "SegSamples":
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return SegSamples(self.inputs[idx], self.labels[idx], self.source)

    def split(self, fractions: tuple[float, ...], seed: int = 0) -> list["SegSamples"]:
        """Disjoint random parts (e.g. X_w / X_theta / X_test), sizes by fraction, at least 1 each."""
        order = np.random.default_rng(seed).permutation(len(self))
        sizes = [max(1, int(round(f * len(self)))) for f in fractions[:-1]]
        bounds = np.cumsum([0] + sizes + [len(self) - sum(sizes)])
        if bounds[-2] >= len(self):
            raise ValueError(f"{len(self)} samples cannot be split into {fractions}")
        return [self.subset(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    def batches(self, batch_size: int, rng: np.random.Generator):
        """One epoch of shuffled mini-batches."""
        order = rng.permutation(len(self))
        for i in range(0, len(order), batch_size):
            sel = torch.from_numpy(order[i:i + batch_size])
            yield self.inputs[sel], self.labels[sel]


def grids_to_samples(grids: np.ndarray, source: str) -> SegSamples:
    inputs = torch.from_numpy(np.ascontiguousarray(grids[..., :5].transpose(0, 3, 1, 2)))
    return SegSamples(inputs, torch.from_numpy(grids[..., 5].astype(np.int64)), source)


def load_samples(data: str = "", n: int = 64, height: int = 64, width: int = 512, seed: int = 0) -> SegSamples:
    """`data` a folder of lidar_2d .npy grids (the first n, centre-cropped to `width`), or empty for
    n toy scenes of height x width."""
    if not data:
        return grids_to_samples(toy_scene_grids(n, height, width, seed), f"toy scenes {n} x {height}x{width}")
    from ..segmentation.data import list_grids, load_grid

    files = list_grids(Path(data))[:n]
    grids = []
    for f in files:
        g = load_grid(f)
        if g.shape[2] < 6:
            raise ValueError(f"{f}: no label channel; the offline experiments need labelled grids")
        start = max((g.shape[1] - width) // 2, 0)
        grids.append(g[:, start:start + width, :6])
    return grids_to_samples(np.stack(grids), f"{len(files)} grids from {data}")
