"""Ground removal as in LATTE (thesis ch. 5): the ground is "a segment of planes", each plane
fitted by LATTE's iteration -- seed with the lowest points, take the normal as the smallest
singular vector of their covariance, re-select the points within `threshold` of the plane,
repeat until the selection stops changing (or a fixed number of times).

`fit_ground_plane` is the single-plane version (one plane for the whole cloud).
`fit_segmented_ground` is the segmented version used by the pipeline: the top view is cut
into range rings x azimuth sectors (the segmentation along the driving direction of Zermas et
al. 2017, "Fast segmentation of 3D point clouds", which LATTE's description follows, extended
to concentric rings so that sloped and far ground gets its own plane), every segment gets a
LATTE plane, all segments fitted at once with bincount covariances and one batched
eigendecomposition. A segment's plane is kept only when it is a plausible piece of ground:
enough inliers, a normal within `max_slope_deg` of vertical, and no height step larger than
`max_step` against the accepted plane of the ring inside it (same sector) at the boundary;
otherwise the segment inherits that inner plane. The innermost ring falls back to the
single-plane fit. A segment covered by a wall or a car therefore keeps the road's plane
instead of fitting the object.

A point is ground when its signed height above its segment's plane is below `threshold`
(points below the plane, e.g. multipath returns under the road, are ground too).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Segment layout (metres / degrees). Rings are narrow near the sensor, where the point
# density and the road's curvature matter most, and wider far away, where returns are sparse.
RING_EDGES_M = (0.0, 8.0, 16.0, 24.0, 34.0, 46.0, 60.0, 80.0, np.inf)
SECTOR_DEG = 30.0
MAX_STEP_M = 0.4  # largest height step allowed between a segment's plane and the inner ring's
MIN_SEGMENT_POINTS = 20  # fewer inliers than this: the segment inherits the inner plane
NEAR_RINGS = 2  # the reference plane of the first ring is fitted to the points within these rings


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


@dataclass
class SegmentedGround:
    """One plane per (ring, sector) segment; `normals[s] . p = offsets[s]` is segment s's ground."""

    normals: np.ndarray  # (S, 3) unit, n_z > 0
    offsets: np.ndarray  # (S,)
    fitted: np.ndarray  # (S,) bool: the segment's own plane was accepted (else inherited)
    threshold: float
    ring_edges: tuple = RING_EDGES_M
    sector_deg: float = SECTOR_DEG

    @property
    def n_sectors(self) -> int:
        return int(round(360.0 / self.sector_deg))

    def segment_of(self, points: np.ndarray) -> np.ndarray:
        return segment_index(np.asarray(points)[:, :2], self.ring_edges, self.sector_deg)

    def height(self, points: np.ndarray) -> np.ndarray:
        """Signed distance of each point above its segment's ground plane (m)."""
        pts = np.asarray(points, dtype=np.float64)[:, :3]
        seg = self.segment_of(pts)
        return np.einsum("ij,ij->i", pts, self.normals[seg]) - self.offsets[seg]

    def is_ground(self, points: np.ndarray) -> np.ndarray:
        if len(points) == 0:
            return np.zeros(0, dtype=bool)
        return self.height(points) < self.threshold


def segment_index(xy: np.ndarray, ring_edges=RING_EDGES_M, sector_deg: float = SECTOR_DEG) -> np.ndarray:
    n_sec = int(round(360.0 / sector_deg))
    r = np.hypot(xy[:, 0], xy[:, 1]).astype(np.float64)
    ring = np.clip(np.searchsorted(np.asarray(ring_edges, dtype=np.float64), r, side="right") - 1, 0,
                   len(ring_edges) - 2)
    az = np.degrees(np.arctan2(xy[:, 1], xy[:, 0])) + 180.0
    sector = np.minimum((az // sector_deg).astype(np.int64), n_sec - 1)
    return ring * n_sec + sector


def _moments(pts: np.ndarray) -> np.ndarray:
    """(M, 10) per-point [1, x, y, z, xx, xy, xz, yy, yz, zz]: summed over a segment's inliers
    they give its count, mean and covariance."""
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    return np.stack([np.ones_like(x), x, y, z, x * x, x * y, x * z, y * y, y * z, z * z], 1)


_COV_IDX = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))


def _planes(sums: np.ndarray):
    """(normals (S,3), offsets (S,), counts (S,)) of the LATTE plane from summed moments (S, 10):
    normal = eigenvector of the covariance's smallest eigenvalue, pointing up."""
    cnt = sums[:, 0]
    inv = 1.0 / np.maximum(cnt, 1.0)
    mean = sums[:, 1:4] * inv[:, None]
    second = sums[:, 4:] * inv[:, None]  # xx xy xz yy yz zz
    cov = np.empty((len(sums), 3, 3))
    for k, (a, b) in enumerate(_COV_IDX):
        cov[:, a, b] = cov[:, b, a] = second[:, k] - mean[:, a] * mean[:, b]
    cov[cnt < 3] = _EYE3  # too few points: any normal, rejected by the count
    normals = np.linalg.eigh(cov)[1][:, :, 0]  # eigh sorts eigenvalues ascending
    normals *= np.sign(normals[:, 2:3] + 1e-12)  # pointing up
    return normals, (normals * mean).sum(1), cnt


_EYE3 = np.eye(3)


def _latte_plane(pts: np.ndarray, mom: np.ndarray, inl: np.ndarray, threshold: float, iterations: int):
    """One LATTE plane (normal (3,), offset) from a seed selection, `iterations` re-selections."""
    n, d, _ = _planes((mom.T @ inl)[None])
    for _ in range(iterations):
        inl = (np.abs(pts @ n[0] - d[0]) < threshold).astype(np.float64)
        if inl.sum() < 3:
            break
        n, d, _ = _planes((mom.T @ inl)[None])
    return n[0], float(d[0])


def fit_segmented_ground(points: np.ndarray, threshold: float = 0.15, max_slope_deg: float = 15.0,
                         lowest_fraction: float = 0.1, iterations: int = 3, max_fit_points: int = 4000,
                         max_step: float = MAX_STEP_M, ring_edges=RING_EDGES_M,
                         sector_deg: float = SECTOR_DEG) -> SegmentedGround:
    """Fit the segmented ground to (N, >=3) points (the sensor at the origin, z up).

    1. Reference: one LATTE plane over the points within the first NEAR_RINGS rings (seeded by
       their lowest `lowest_fraction`).
    2. Ring by ring from the sensor outwards, every sector of the ring at once: the candidates
       are the segment's points not more than `max_step` above the reference plane (the inner
       ring's accepted plane of the same sector; the global plane for the first ring), the seed
       is the lowest `lowest_fraction` of the candidates, then LATTE's fit / re-select
       (`threshold`) `iterations` times.
    3. A segment's plane is accepted with at least MIN_SEGMENT_POINTS inliers, a normal within
       `max_slope_deg` of vertical and a height step of at most `max_step` against the
       reference at the inner boundary (mid-sector); otherwise the segment inherits the
       reference plane.

    At most `max_fit_points` evenly strided points are used for the fit (the planes are
    statistics of thousands of ground points; a stride keeps every ring and sector).
    Per-segment sums: one sort by segment and `np.add.reduceat` over per-point moments."""
    pts = np.asarray(points)
    if len(pts) < 3:
        raise ValueError(f"need at least 3 points to fit the ground, got {len(pts)}")
    if len(pts) > max_fit_points:
        pts = pts[:: int(np.ceil(len(pts) / max_fit_points))]
    pts = pts[:, :3].astype(np.float64)
    n_sec = int(round(360.0 / sector_deg))
    n_ring = len(ring_edges) - 1
    n_seg = n_ring * n_sec
    seg = segment_index(pts[:, :2], ring_edges, sector_deg)
    # By segment, then height (one float key: segment * 1e4 + height, heights within +-5 km).
    order = np.argsort(seg * 1e4 + np.clip(pts[:, 2], -4999.0, 4999.0))
    pts, seg = pts[order], seg[order]
    mom = _moments(pts)
    counts = np.bincount(seg, minlength=n_seg)
    seg_start = np.cumsum(counts) - counts
    # 1. Reference plane: LATTE over the points of the first NEAR_RINGS rings (the road around
    # the car; all points when those are too few). Not over the whole cloud: on a road going
    # down ahead, the lowest points of the cloud are far away and miss the near ground.
    n_near = int(counts[: NEAR_RINGS * n_sec].sum())  # sorted by segment: the first n_near points
    n_ref = n_near if n_near >= 3 * MIN_SEGMENT_POINTS else len(pts)
    z = pts[:n_ref, 2]
    k = max(3, int(np.ceil(lowest_fraction * n_ref)))
    seed = (z <= np.partition(z, k - 1)[k - 1]).astype(np.float64)
    g_n, g_d = _latte_plane(pts[:n_ref], mom[:n_ref], seed, threshold, iterations)
    normals = np.tile(g_n, (n_seg, 1))
    offsets = np.full(n_seg, g_d)
    fitted = np.zeros(n_seg, dtype=bool)
    cos_max = np.cos(np.radians(max_slope_deg))
    sec_mid = np.radians((np.arange(n_sec) + 0.5) * sector_deg - 180.0)
    sectors = np.arange(n_sec)
    for ring in range(n_ring):
        idx = ring * n_sec + sectors
        ref_n, ref_d = (normals[idx - n_sec], offsets[idx - n_sec]) if ring else (normals[idx], offsets[idx])
        normals[idx], offsets[idx] = ref_n, ref_d  # inherited unless accepted below
        ring_counts = counts[idx]
        present = np.flatnonzero(ring_counts >= MIN_SEGMENT_POINTS)
        if len(present) == 0:
            continue
        a = seg_start[idx[0]]
        b = a + int(ring_counts.sum())
        P, M, S = pts[a:b], mom[a:b], seg[a:b] - ring * n_sec
        cand = (P * ref_n[S]).sum(1) - ref_d[S] < max_step
        # Rank of each candidate among its segment's candidates (points are sorted by height).
        c = np.cumsum(cand)
        local_start = seg_start[idx] - a
        before = np.r_[0, c][local_start]
        n_cand = np.r_[0, c][local_start + ring_counts] - before
        inl = cand & (c - before[S] <= np.maximum(3, np.ceil(lowest_fraction * n_cand))[S])
        inl &= (ring_counts >= MIN_SEGMENT_POINTS)[S]
        starts = local_start[present]
        loc = np.cumsum(ring_counts >= MIN_SEGMENT_POINTS)[S] - 1  # row in the present list
        loc = np.maximum(loc, 0)
        for it in range(iterations + 1):
            p_n, p_d, p_cnt = _planes(np.add.reduceat(M * inl[:, None], starts, axis=0))
            if it == iterations:
                break
            inl = np.abs((P * p_n[loc]).sum(1) - p_d[loc]) < threshold
            inl &= (ring_counts >= MIN_SEGMENT_POINTS)[S]
        # Acceptance against the reference at the inner boundary, mid-sector.
        r0 = ring_edges[ring]
        probe = r0 * np.stack([np.cos(sec_mid[present]), np.sin(sec_mid[present])], 1)
        z_own = (p_d - (p_n[:, :2] * probe).sum(1)) / np.maximum(p_n[:, 2], 1e-6)
        z_ref = (ref_d[present] - (ref_n[present, :2] * probe).sum(1)) / ref_n[present, 2]
        good = (p_cnt >= MIN_SEGMENT_POINTS) & (p_n[:, 2] >= cos_max) & (np.abs(z_own - z_ref) <= max_step)
        acc = idx[present[good]]
        normals[acc], offsets[acc] = p_n[good], p_d[good]
        fitted[acc] = True
    return SegmentedGround(normals, offsets, fitted, float(threshold), tuple(ring_edges), float(sector_deg))
