"""Missing-point statistics of a LiDAR (thesis section 4.3) and their use as augmentation.

The thesis estimated, for every cell of the 64x512 front view, how often real KITTI scans leave
it empty, and blanked synthetic cells with that probability. ``estimate_noise_map`` computes the
map from any set of lidar_2d tensors; ``apply_noise_map`` blanks cells of another tensor. The
standard synthetic dataset does not bake a map in (its gaps come from the sensor model), so a
user with unlabelled real scans can add this on top at training time.
"""
from __future__ import annotations

from dataclasses import dataclass

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


# ------------------------------------------------------------------------------ ring dropout
# A beam that sweeps over a continuous surface and still leaves a firing without a return has
# dropped it: that is the sensor's own loss, apart from sky and open space (long gaps, or a range
# jump between the two neighbours). Measured per ring (row) and azimuth sector of the sensor, on
# full scans, this is the per-cell drop probability that a ray-cast scan lacks (thesis 4.3 / 6.4).
DROPOUT_SECTORS = 8
DROPOUT_MAX_MISSING = 3  # longer gaps are open space, glass or a dark object, not single lost firings
DROPOUT_RANGE_TOLERANCE = 0.1  # neighbours of a hole within 10 % of each other's range: one surface
# Sector factors are estimated from every ring together; bound them so a sector with few firings
# cannot multiply a ring's rate by an outlier.
DROPOUT_SECTOR_FACTOR_RANGE = (0.5, 2.0)


@dataclass
class RingDropout:
    """Counts of single lost firings per (ring, azimuth sector) over one or more full scans."""

    holes: np.ndarray  # (64, S) int64: firings lost inside a continuous surface
    firings: np.ndarray  # (64, S) int64: returns plus those lost firings

    @property
    def sectors(self) -> int:
        return self.holes.shape[1]

    def __add__(self, other: "RingDropout") -> "RingDropout":
        return RingDropout(self.holes + other.holes, self.firings + other.firings)

    def row_rate(self) -> np.ndarray:
        """(64,) share of a ring's firings on a surface that came back empty."""
        return self.holes.sum(1) / np.maximum(self.firings.sum(1), 1)

    def probability(self) -> np.ndarray:
        """(64, S) drop probability: each ring's rate times the sector's factor (shared by all rings).

        A handful of scans gives tens of holes per cell, too few for a cell-wise map; the
        separable form keeps the ring-to-ring and the azimuth pattern at a fraction of the noise.
        """
        sector_rate = self.holes.sum(0) / np.maximum(self.firings.sum(0), 1)
        mean_rate = self.holes.sum() / max(self.firings.sum(), 1)
        factor = np.where(self.firings.sum(0) > 0, sector_rate / max(mean_rate, 1e-12), 1.0)
        factor = np.clip(factor, *DROPOUT_SECTOR_FACTOR_RANGE)
        return np.clip(self.row_rate()[:, None] * factor[None, :], 0.0, 1.0)


def sector_of_azimuth(azimuth_rad: np.ndarray, sectors: int = DROPOUT_SECTORS) -> np.ndarray:
    """Sector index (0 = straight ahead, counter-clockwise) of azimuths in the sensor frame."""
    turn = np.mod(np.asarray(azimuth_rad, np.float64), 2 * np.pi) / (2 * np.pi)
    return np.minimum((turn * sectors).astype(np.int64), sectors - 1)


def measure_ring_dropout(points: np.ndarray, rows: np.ndarray | None = None,
                         firings_per_rev: int | None = None, sectors: int = DROPOUT_SECTORS,
                         max_missing: int = DROPOUT_MAX_MISSING,
                         range_tolerance: float = DROPOUT_RANGE_TOLERANCE) -> RingDropout:
    """Lost firings of one full 360-degree scan, from the azimuth gaps along each ring.

    rows: ring of every point when known (a simulator); otherwise recovered with ``beam_rows``.
    A gap of k firing steps between azimuth neighbours whose ranges agree within
    ``range_tolerance`` counts k - 1 lost firings when k - 1 <= max_missing.
    """
    from .hdl64e import HDL64E_FIRINGS_PER_REV, HDL64E_ROWS
    from .projection import beam_rows

    pts = np.asarray(points, np.float64)
    firings_per_rev = int(firings_per_rev or HDL64E_FIRINGS_PER_REV)
    ring = beam_rows(pts) if rows is None else np.asarray(rows, np.int64)
    step = 2 * np.pi / firings_per_rev
    azimuth = np.mod(np.arctan2(pts[:, 1], pts[:, 0]), 2 * np.pi)
    distance = np.linalg.norm(pts[:, :3], axis=1)
    holes = np.zeros((HDL64E_ROWS, sectors), np.int64)
    firings = np.zeros((HDL64E_ROWS, sectors), np.int64)
    valid = (ring >= 0) & (ring < HDL64E_ROWS) & (distance > 0)
    for r in np.unique(ring[valid]):
        sel = np.flatnonzero(valid & (ring == r))
        order = sel[np.argsort(azimuth[sel], kind="stable")]
        az, rng_m = azimuth[order], distance[order]
        firings[r] += np.bincount(sector_of_azimuth(az, sectors), minlength=sectors)
        if len(order) < 2:
            continue
        # Wrap around: the last point's right neighbour is the first point, one turn later.
        gap = np.diff(np.append(az, az[0] + 2 * np.pi)) / step
        right = np.append(rng_m[1:], rng_m[0])
        missing = np.rint(gap).astype(np.int64) - 1
        same_surface = np.abs(right - rng_m) <= range_tolerance * np.minimum(right, rng_m)
        lost = (missing >= 1) & (missing <= max_missing) & same_surface
        if lost.any():
            where = sector_of_azimuth(az[lost] + gap[lost] * step / 2, sectors)
            np.add.at(holes[r], where, missing[lost])
            np.add.at(firings[r], where, missing[lost])
    return RingDropout(holes, firings)


def ring_dropout_of_files(paths: list) -> RingDropout:
    """Summed ``measure_ring_dropout`` of KITTI .bin scans (N x 4 float32)."""
    total: RingDropout | None = None
    for path in paths:
        points = np.fromfile(path, np.float32).reshape(-1, 4)
        counts = measure_ring_dropout(points)
        total = counts if total is None else total + counts
    if total is None:
        raise ValueError("no scans given")
    return total


def array_listing(values: np.ndarray, per_line: int) -> str:
    """The body of a generated ``np.array([...])``: 4 decimals, `per_line` values a line, indented."""
    lines = [", ".join(f"{v:.4f}" for v in values[i:i + per_line]) for i in range(0, len(values), per_line)]
    return "    " + ",\n    ".join(lines) + ","


def dropout_module_text(counts: RingDropout, source: str) -> str:
    """Python source of ``kitti/hdl64e_dropout.py`` holding a measured ring rate and sector factors."""
    sector_rate = counts.holes.sum(0) / np.maximum(counts.firings.sum(0), 1)
    mean_rate = counts.holes.sum() / max(counts.firings.sum(), 1)
    factor = np.clip(sector_rate / max(mean_rate, 1e-12), *DROPOUT_SECTOR_FACTOR_RANGE)
    rate = counts.row_rate()
    listing = array_listing

    return f'''"""Single lost firings of the KITTI HDL-64E, measured on real scans (written by kitti/noise_map.py).

Source: {source}
({int(counts.holes.sum())} lost firings among {int(counts.firings.sum())} that met a continuous surface).
``HDL64E_RING_DROPOUT[row]`` is each ring's rate (the upper block, rows 0-31, loses several times
as many as the lower one); ``HDL64E_SECTOR_DROPOUT_FACTOR[s]`` scales it per azimuth
sector of the sensor (sector 0 straight ahead, counter-clockwise, {counts.sectors} sectors), clipped to
{DROPOUT_SECTOR_FACTOR_RANGE}. Rebuild with
``python -m squeeze_perception.kitti.noise_map --out src/squeeze_perception/kitti/hdl64e_dropout.py``.
"""
import numpy as np

HDL64E_RING_DROPOUT = np.array([
{listing(rate, 10)}
])

HDL64E_SECTOR_DROPOUT_FACTOR = np.array([
{listing(factor, 8)}
])
'''


def table_module_main(argv, prog: str, description: str, default_scans, default_help: str, module_text,
                      table: str) -> int:
    """The command line of a measured-table module (this one and ``kitti.intensity_map``): measure
    `--scans` (default: `default_scans()` -> (paths, source text), described by `default_help`) with
    `module_text(paths, source)` and write the module to `--out` or print it."""
    import argparse
    from pathlib import Path

    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--scans", nargs="*", help=f"KITTI .bin scans (default: {default_help})")
    ap.add_argument("--out", help=f"write the {table} module here (default: print it)")
    args = ap.parse_args(argv)
    if args.scans:
        paths = [Path(p) for p in args.scans]
        source = ", ".join(p.name for p in paths)
    else:
        paths, source = default_scans()
    text = module_text(paths, source)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    return 0


def _sfnd_drive_scans():
    from ..paths import kitti_real_dir

    drive = "raw/2011_09_26/2011_09_26_drive_unknown_sfnd_sync"
    paths = sorted((kitti_real_dir() / drive / "velodyne_points" / "data").glob("*.bin"))
    return paths, f"the {len(paths)} full scans of ../shared/data/kitti_real/{drive}"


def main(argv: list[str] | None = None) -> int:
    return table_module_main(argv, "python -m squeeze_perception.kitti.noise_map",
                             "Measure the HDL-64E's single lost firings on real full scans.", _sfnd_drive_scans,
                             "the real SFND raw drive, which no evaluation uses",
                             lambda paths, source: dropout_module_text(ring_dropout_of_files(paths), source),
                             "hdl64e_dropout")


if __name__ == "__main__":
    raise SystemExit(main())
