"""Missing-point statistics of a LiDAR (thesis section 4.3) and their use as augmentation.

The thesis estimated, for every cell of the 64x512 front view, how often real KITTI scans leave
it empty, and blanked synthetic cells with that probability. ``estimate_noise_map`` computes the
map from any set of lidar_2d tensors; ``apply_noise_map`` blanks cells of another tensor. The
standard synthetic dataset does not bake a map in (its gaps come from the sensor model), so a
user with unlabelled real scans can add this on top at training time.
"""
from __future__ import annotations

import numpy as np


def estimate_noise_map(tensors: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """(H, W) float32: the fraction of the given (H, W, C) tensors whose cell is empty (all channels 0)."""
    stack = np.asarray(tensors)
    if stack.ndim != 4:
        raise ValueError(f"expected a list of (H, W, C) tensors, got shape {stack.shape}")
    return np.mean(np.all(stack == 0, axis=-1), axis=0).astype(np.float32)


def apply_noise_map(tensor: np.ndarray, noise_map: np.ndarray, rng: np.random.Generator,
                    extra_only: bool = True) -> np.ndarray:
    """Copy of an (H, W, C) tensor with cells set to 0 with probability noise_map[cell].

    extra_only: a cell the tensor already leaves empty counts towards the map (the thesis's
    synthetic scans had no gaps of their own); the blanking probability becomes
    (eps - already_empty_rate) / (1 - already_empty_rate) per row, so rows end near the map's rate.
    """
    out = np.array(tensor, copy=True)
    if noise_map.shape != out.shape[:2]:
        raise ValueError(f"noise map {noise_map.shape} does not match tensor {out.shape[:2]}")
    prob = noise_map.astype(np.float64)
    if extra_only:
        empty = np.all(out == 0, axis=-1)
        have = empty.mean(axis=1, keepdims=True)
        prob = np.clip((prob - have) / np.maximum(1 - have, 1e-6), 0, 1)
    drop = rng.random(prob.shape) < prob
    out[drop] = 0
    return out
