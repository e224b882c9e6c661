"""Spherical projection of a Velodyne scan onto the 64-row range image (thesis eq. 4.1).

Rows are the HDL-64E beams (row 0 = top beam, about +2 degrees; row 63 = bottom beam, about
-25 degrees); a point is given the beam whose line ``z = h + d tan(elevation)`` it lies on
(see ``hdl64e``), which reproduces the ring index of the real KITTI lidar_2d frames.
Columns split the azimuth evenly:

* ``fov="front"``: azimuth +45 (left) .. -45 degrees (right), width 512 by default, column 0 at
  the left edge - the layout of SqueezeSeg's lidar_2d files.
* ``fov="full"``: all 360 degrees, width 2048 by default, column 0 looking backwards
  (azimuth +180), sweeping through the left (W/4), straight ahead (W/2) and the right (3W/4).

When several points fall into one cell the nearest one wins.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hdl64e import HDL64E_BEAM_HEIGHT_M, HDL64E_ELEVATION_DEG, HDL64E_ROWS, LOWER_BLOCK_ROWS, UPPER_BLOCK_ROWS

FOV_DEFAULT_WIDTH = {"front": 512, "full": 2048}
FRONT_HALF_ANGLE_DEG = 45.0
# A point further than this from every beam line (degrees) is not an HDL-64E return of these rows.
ROW_TOLERANCE_DEG = 1.0

GRID_CHANNELS = ("x", "y", "z", "intensity", "range")


@dataclass
class SphericalProjection:
    grid: np.ndarray  # (H, W, 5) float32: x, y, z, intensity, range; 0 where empty
    mask: np.ndarray  # (H, W) bool: cell holds a point
    point_index: np.ndarray  # (H, W) int64: index into the projected points, -1 where empty
    rows: np.ndarray  # (N,) int64: row of every input point, -1 outside the field of view
    cols: np.ndarray  # (N,) int64: column of every input point, -1 outside the field of view
    fov: str = "front"

    @property
    def height(self) -> int:
        return self.grid.shape[0]

    @property
    def width(self) -> int:
        return self.grid.shape[1]

    @property
    def in_fov(self) -> np.ndarray:
        """(N,) bool: the point lies in a cell (it may have lost the cell to a nearer point)."""
        return self.rows >= 0


def beam_rows(points: np.ndarray, tolerance_deg: float = ROW_TOLERANCE_DEG) -> np.ndarray:
    """(N,) HDL-64E row (0..63) of each point, -1 where no beam line passes within tolerance."""
    pts = np.asarray(points, dtype=np.float64)
    # sqrt(x*x + y*y), not np.hypot: the same value up to the last bit, and hypot (libm's, one
    # point at a time) took 0.35 of the projection's 1.6 ms per scan; squares of float32
    # coordinates cannot overflow float64, hypot's reason to exist.
    horizontal = np.sqrt(pts[:, 0] * pts[:, 0] + pts[:, 1] * pts[:, 1])
    best_row = np.full(len(pts), -1, dtype=np.int64)
    best_err = np.full(len(pts), np.inf)
    # The beam heights differ by only a few millimetres inside a block, so one height per block
    # gives each point's candidate row by a sorted search instead of a 64-way comparison.
    for block in (UPPER_BLOCK_ROWS, LOWER_BLOCK_ROWS):
        elevations = HDL64E_ELEVATION_DEG[block]
        height = float(np.mean(HDL64E_BEAM_HEIGHT_M[block]))
        angle = np.degrees(np.arctan2(pts[:, 2] - height, horizontal))
        ascending = elevations[::-1]
        pos = np.clip(np.searchsorted(ascending, angle), 1, len(ascending) - 1)
        lower, upper = ascending[pos - 1], ascending[pos]
        pick_upper = np.abs(upper - angle) < np.abs(angle - lower)
        idx_ascending = np.where(pick_upper, pos, pos - 1)
        err = np.abs(ascending[idx_ascending] - angle)
        rows = block.start + (len(ascending) - 1 - idx_ascending)
        better = err < best_err
        best_err[better] = err[better]
        best_row[better] = rows[better]
    best_row[~(best_err <= tolerance_deg)] = -1
    best_row[~np.isfinite(horizontal) | (np.linalg.norm(pts[:, :3], axis=1) <= 0)] = -1
    return best_row


def azimuth_cols(points: np.ndarray, fov: str = "front", width: int | None = None) -> np.ndarray:
    """(N,) column of each point for the given field of view, -1 outside it."""
    if fov not in FOV_DEFAULT_WIDTH:
        raise ValueError(f"fov must be one of {sorted(FOV_DEFAULT_WIDTH)}, got '{fov}'")
    width = int(width or FOV_DEFAULT_WIDTH[fov])
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    pts = np.asarray(points, dtype=np.float64)
    azimuth = np.degrees(np.arctan2(pts[:, 1], pts[:, 0]))
    if fov == "front":
        cols = np.floor((FRONT_HALF_ANGLE_DEG - azimuth) / (2 * FRONT_HALF_ANGLE_DEG / width))
        cols[(cols < 0) | (cols >= width)] = -1
    else:
        cols = np.floor((180.0 - azimuth) / (360.0 / width)) % width
    cols[~np.isfinite(cols)] = -1
    return cols.astype(np.int64)


def spherical_project(points: np.ndarray, fov: str = "front", height: int = 64,
                      width: int | None = None, rows: np.ndarray | None = None,
                      cols: np.ndarray | None = None) -> SphericalProjection:
    """Project (N, >=4) [x, y, z, intensity, ...] points onto an (height, width) range image.

    ``rows`` may give the beam of each point when it is known (a simulator or a ring field);
    otherwise it is recovered from the geometry with ``beam_rows``. ``cols`` may give the
    columns already computed by ``azimuth_cols`` for this fov and width.
    """
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] < 4:
        raise ValueError(f"points must be (N, >=4) [x, y, z, intensity], got shape {pts.shape}")
    if height != HDL64E_ROWS:
        raise ValueError(f"only the HDL-64E's {HDL64E_ROWS} rows are supported, got height={height}")
    width = int(width or FOV_DEFAULT_WIDTH.get(fov, 0))
    cols = azimuth_cols(pts, fov, width) if cols is None else np.asarray(cols, dtype=np.int64).copy()
    point_rows = beam_rows(pts) if rows is None else np.asarray(rows, dtype=np.int64).copy()
    if len(point_rows) != len(pts):
        raise ValueError(f"rows has {len(point_rows)} entries for {len(pts)} points")
    point_rows[(point_rows < 0) | (point_rows >= height)] = -1
    inside = (cols >= 0) & (point_rows >= 0)
    cols[~inside] = -1
    point_rows[~inside] = -1

    idx = np.flatnonzero(inside)
    # Ranges of the points that take part only (a front view is about a quarter of a scan).
    ranges = np.linalg.norm(pts[idx, :3].astype(np.float64), axis=1)
    cell = point_rows[idx] * width + cols[idx]
    # Sort by cell, then by range, so the first entry of each cell is its nearest point.
    order = np.lexsort((ranges, cell))
    sorted_cells = cell[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_cells[1:] != sorted_cells[:-1]
    winners = idx[order][first]
    winner_cells = sorted_cells[first]
    winner_ranges = ranges[order][first]

    point_index = np.full(height * width, -1, dtype=np.int64)
    point_index[winner_cells] = winners
    grid = np.zeros((height * width, 5), dtype=np.float32)
    grid[winner_cells, :4] = pts[winners, :4]
    grid[winner_cells, 4] = winner_ranges
    mask = point_index >= 0
    return SphericalProjection(grid=grid.reshape(height, width, 5), mask=mask.reshape(height, width),
                               point_index=point_index.reshape(height, width), rows=point_rows, cols=cols,
                               fov=fov)


def unproject_labels(proj: SphericalProjection, cell_labels: np.ndarray, outside: int = -1) -> np.ndarray:
    """(N,) label of every projected point: the label of its cell; ``outside`` for points out of view.

    Points that lost their cell to a nearer point still take that cell's label, so a label map
    predicted on the range image reaches the whole cloud.
    """
    labels = np.asarray(cell_labels)
    if labels.shape != proj.mask.shape:  # one label per cell: (H, W), not (H, W, K) scores
        raise ValueError(f"cell_labels shape {labels.shape} does not match the projection {proj.mask.shape}")
    out = np.full(len(proj.rows), outside, dtype=labels.dtype if labels.dtype.kind in "iu" else np.int64)
    inside = proj.in_fov
    out[inside] = labels[proj.rows[inside], proj.cols[inside]]
    return out


def to_lidar_2d(proj: SphericalProjection, cell_labels: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 6) float32 SqueezeSeg lidar_2d tensor: x, y, z, intensity, range, label."""
    out = np.zeros(proj.grid.shape[:2] + (6,), dtype=np.float32)
    out[..., :5] = proj.grid
    if cell_labels is not None:
        out[..., 5] = np.where(proj.mask, cell_labels, 0)
    return out


def point_labels_to_cells(proj: SphericalProjection, point_labels: np.ndarray, empty: int = 0) -> np.ndarray:
    """(H, W) label of each cell's winning point; ``empty`` where the cell holds no point."""
    labels = np.asarray(point_labels)
    cells = np.full(proj.mask.shape, empty, dtype=np.int64)
    cells[proj.mask] = labels[proj.point_index[proj.mask]]
    return cells
