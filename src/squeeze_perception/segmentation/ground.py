"""LATTE's iterative ground-plane fit (thesis ch. 5): seed with the lowest points, take the
plane normal as the smallest singular vector of their covariance, re-select points within a
distance threshold of the plane, repeat until the selection stops changing."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GroundPlane:
    normal: np.ndarray  # (3,) unit, pointing up (n_z > 0)
    offset: float  # plane: normal . p = offset
    inliers: np.ndarray  # (N,) bool, ground points
    iterations: int

    def distance(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points)[:, :3] @ self.normal - self.offset


def fit_ground_plane(points: np.ndarray, lowest_fraction: float = 0.1, threshold: float = 0.2,
                     max_iterations: int = 10) -> GroundPlane:
    pts = np.asarray(points, dtype=np.float64)[:, :3]
    n = len(pts)
    if n < 3:
        raise ValueError(f"need at least 3 points to fit a ground plane, got {n}")
    k = max(3, int(np.ceil(lowest_fraction * n)))
    inliers = np.zeros(n, dtype=bool)
    inliers[np.argpartition(pts[:, 2], k - 1)[:k]] = True
    normal, offset, it = np.array([0.0, 0.0, 1.0]), 0.0, 0
    for it in range(1, max_iterations + 1):
        sel = pts[inliers]
        centre = sel.mean(0)
        _, _, vt = np.linalg.svd(sel - centre, full_matrices=False)
        normal = vt[-1] if vt[-1, 2] >= 0 else -vt[-1]
        offset = float(normal @ centre)
        new = np.abs(pts @ normal - offset) < threshold
        if new.sum() < 3 or np.array_equal(new, inliers):
            inliers = new if new.sum() >= 3 else inliers
            break
        inliers = new
    return GroundPlane(normal, offset, inliers, it)
