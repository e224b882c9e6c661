"""LATTE's search-based rectangle fitting (thesis ch. 5, after Zhang et al. 2017).

For each candidate heading the cluster's top-view points are projected on the two edge
directions; every point is assigned to its nearer edge and the heading that minimises the
summed variance of those edge distances wins (points hugging two perpendicular edges).
The thesis writes the criterion as the negated variance in an argmin; we minimise the
variance, which is the cited method's criterion. All headings are evaluated at once with numpy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Box:
    x: float
    y: float
    z: float
    length: float  # along yaw
    width: float
    height: float
    yaw: float  # radians, heading of the long side in the cloud frame, in (-pi/2, pi/2]

    def corners_xy(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * [self.length / 2, self.width / 2]
        return local @ np.array([[c, s], [-s, c]]) + [self.x, self.y]


def _wrap_half_pi(angle: float) -> float:
    """Map a rectangle heading to (-pi/2, pi/2] (a box looks the same turned by pi)."""
    a = (angle + np.pi / 2) % np.pi - np.pi / 2
    return float(np.pi / 2 if np.isclose(a, -np.pi / 2) else a)


def rectangle_fit(points: np.ndarray, step_deg: float = 1.0, max_search_points: int = 512) -> Box:
    """Fit a top-view rectangle plus z extent to (N, >=3) points of one instance.

    The heading search uses an evenly strided subset of at most max_search_points points
    (the variance criterion is a statistic, a subset estimates it well); the extents use all."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) == 0:
        raise ValueError("cannot fit a box to zero points")
    xy_all = pts[:, :2]
    xy = xy_all[:: int(np.ceil(len(pts) / max_search_points))] if len(pts) > max_search_points else xy_all
    z_min, z_max = float(pts[:, 2].min()), float(pts[:, 2].max())
    # A rectangle repeats every 90 degrees, so [0, 90) covers every distinct heading.
    thetas = np.deg2rad(np.arange(0.0, 90.0, step_deg))
    e1 = np.stack([np.cos(thetas), np.sin(thetas)])  # (2, A)
    e2 = np.stack([-np.sin(thetas), np.cos(thetas)])
    c1, c2 = xy @ e1, xy @ e2  # (N, A)
    d1 = np.minimum(c1 - c1.min(0), c1.max(0) - c1)
    d2 = np.minimum(c2 - c2.min(0), c2.max(0) - c2)
    on1 = d1 <= d2
    cost = np.zeros(len(thetas))
    for d, sel in ((d1, on1), (d2, ~on1)):
        n = sel.sum(0)
        mean = np.where(n > 0, (d * sel).sum(0) / np.maximum(n, 1), 0.0)
        cost += np.where(n > 0, ((d - mean) ** 2 * sel).sum(0) / np.maximum(n, 1), 0.0)
    best = int(np.argmin(cost))
    theta = thetas[best]
    a1 = xy_all @ np.array([np.cos(theta), np.sin(theta)])
    a2 = xy_all @ np.array([-np.sin(theta), np.cos(theta)])
    ext1, ext2 = a1.max() - a1.min(), a2.max() - a2.min()
    m1, m2 = (a1.max() + a1.min()) / 2, (a2.max() + a2.min()) / 2
    cx = m1 * np.cos(theta) - m2 * np.sin(theta)
    cy = m1 * np.sin(theta) + m2 * np.cos(theta)
    if ext1 >= ext2:
        length, width, yaw = ext1, ext2, theta
    else:
        length, width, yaw = ext2, ext1, theta + np.pi / 2
    return Box(float(cx), float(cy), (z_min + z_max) / 2, float(length), float(width), z_max - z_min,
               _wrap_half_pi(yaw))
