"""LATTE's search-based rectangle fitting (thesis ch. 5, after Zhang et al. 2017).

For each candidate heading the cluster's top-view points are projected on the two edge
directions; every point is assigned to its nearer edge and the heading that minimises the
summed variance of those edge distances wins (points hugging two perpendicular edges).
The thesis writes the criterion as the negated variance in an argmin; we minimise the
variance, which is the cited method's criterion. All headings are evaluated at once with numpy.

This numpy version is the definition; `_stages_native.rectangle_fits` computes the same boxes, bit
for bit, for all instances of a frame in one C call (boxes_for_instances uses it when it loads).
The projections on the edge directions are written out as x*cos + y*sin (two roundings) rather
than `xy @ e1`: BLAS rounds that product its own way (OpenBLAS fuses a multiply-add, but not for
every element of the result), which no other implementation can reproduce. On the 634 instances
of the real KITTI scans in `seg bench` (front and full view) the chosen heading is the same
either way; the nearest runner-up heading costs 8e-6 more (relative), far above rounding.
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


def _wrap(angle):
    """Map rectangle headings (array or scalar) to (-pi/2, pi/2] (a box looks the same turned by pi)."""
    a = (angle + np.pi / 2) % np.pi - np.pi / 2
    return np.where(np.isclose(a, -np.pi / 2), np.pi / 2, a)


def _wrap_half_pi(angle: float) -> float:
    return float(_wrap(np.float64(angle)))


def heading_table(step_deg: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidate headings (radians) and their cos and sin, as numpy computes them. A rectangle
    repeats every 90 degrees, so [0, 90) covers every distinct heading."""
    thetas = np.deg2rad(np.arange(0.0, 90.0, step_deg))
    return thetas, np.cos(thetas), np.sin(thetas)


def finish_boxes(theta, cos_t, sin_t, ext1, ext2, m1, m2, z_min, z_max) -> dict[str, np.ndarray]:
    """Box fields from the chosen headings (arrays, one entry per box): the extents along
    e1 = (cos, sin) and e2 = (-sin, cos), the middles of those ranges, the z range. Shared by
    rectangle_fit and the C kernel's path, so both end in the same arithmetic."""
    cx = m1 * cos_t - m2 * sin_t
    cy = m1 * sin_t + m2 * cos_t
    long1 = ext1 >= ext2
    yaw = np.where(long1, theta, theta + np.pi / 2)
    return dict(x=cx, y=cy, z=(z_min + z_max) / 2, length=np.where(long1, ext1, ext2),
                width=np.where(long1, ext2, ext1), height=z_max - z_min, yaw=_wrap(yaw))


def heading_costs(xy: np.ndarray, step_deg: float = 1.0) -> np.ndarray:
    """The search criterion of every heading of heading_table(step_deg) for the (N, 2) points xy."""
    thetas, cos_t, sin_t = heading_table(step_deg)
    x, y = xy[:, :1], xy[:, 1:2]
    c1 = x * cos_t + y * sin_t  # (N, A): on e1 = (cos, sin)
    c2 = x * -sin_t + y * cos_t  # on e2 = (-sin, cos)
    d1 = np.minimum(c1 - c1.min(0), c1.max(0) - c1)
    d2 = np.minimum(c2 - c2.min(0), c2.max(0) - c2)
    on1 = d1 <= d2
    cost = np.zeros(len(thetas))
    for d, sel in ((d1, on1), (d2, ~on1)):
        n = sel.sum(0)
        mean = np.where(n > 0, (d * sel).sum(0) / np.maximum(n, 1), 0.0)
        cost += np.where(n > 0, ((d - mean) ** 2 * sel).sum(0) / np.maximum(n, 1), 0.0)
    return cost


def rectangle_fit(points: np.ndarray, step_deg: float = 1.0, max_search_points: int = 512) -> Box:
    """Fit a top-view rectangle plus z extent to (N, >=3) points of one instance.

    The heading search uses an evenly strided subset of at most max_search_points points
    (the variance criterion is a statistic, a subset estimates it well); the extents use all."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) == 0:
        raise ValueError("cannot fit a box to zero points")
    xy_all = pts[:, :2]
    xy = xy_all[:: int(np.ceil(len(pts) / max_search_points))] if len(pts) > max_search_points else xy_all
    thetas, cos_t, sin_t = heading_table(step_deg)
    best = int(np.argmin(heading_costs(xy, step_deg)))
    ct, st = cos_t[best], sin_t[best]
    a1 = xy_all[:, 0] * ct + xy_all[:, 1] * st
    a2 = xy_all[:, 0] * -st + xy_all[:, 1] * ct
    box = finish_boxes(thetas[best], ct, st, a1.max() - a1.min(), a2.max() - a2.min(), (a1.max() + a1.min()) / 2,
                       (a2.max() + a2.min()) / 2, pts[:, 2].min(), pts[:, 2].max())
    return Box(**{k: float(v) for k, v in box.items()})
