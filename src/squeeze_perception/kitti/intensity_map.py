"""How the KITTI HDL-64E reports intensity, measured on real full scans (no labels read).

Why: synthetic scans made intensity a clean function of the surface, while real KITTI scans
report 0 for a fifth of their returns near the car and for most returns beyond 50 m, and some
lasers report 0 several times as often as their neighbours (per-laser gain). A network trained on
the clean version learned "near-zero intensity = car" (glossy paint), which is also what far real
background looks like (docs/synthetic.md, "Intensity as the sensor reports it").

Measured per ring (at 5-30 m, where range matters least) and per range bin (all rings):

* the share of returns reported as exactly 0 (KITTI's 0.01 quantisation: below 0.005);
* the mean of the non-zero returns, as a gain relative to all rings / to the 5-30 m reference.

``python -m squeeze_perception.kitti.intensity_map --out src/squeeze_perception/kitti/hdl64e_intensity.py``
writes the table module the LiDAR simulator reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .hdl64e import HDL64E_ROWS

ZERO_BELOW = 0.005  # KITTI intensities come in 0.01 steps; anything under half a step is a reported 0
REFERENCE_RANGE_M = (5.0, 30.0)
RANGE_EDGES_M = np.array([0.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 80.0])
RING_GAIN_RANGE = (0.5, 1.5)  # a ring with few non-zero returns must not get an absurd gain
# The lowest rings meet the ground inside 5 m and hold a handful of returns in the reference band:
# below this many, a ring takes the all-ring share and gain 1 instead of its own noisy ones.
MIN_RING_RETURNS = 200


@dataclass
class IntensityCounts:
    """Summed counts; every rate and gain is derived from them, so scans add up exactly."""

    ring_returns: np.ndarray = field(default_factory=lambda: np.zeros(HDL64E_ROWS, np.int64))
    ring_zeros: np.ndarray = field(default_factory=lambda: np.zeros(HDL64E_ROWS, np.int64))
    ring_nonzero_sum: np.ndarray = field(default_factory=lambda: np.zeros(HDL64E_ROWS))
    range_returns: np.ndarray = field(default_factory=lambda: np.zeros(len(RANGE_EDGES_M) - 1, np.int64))
    range_zeros: np.ndarray = field(default_factory=lambda: np.zeros(len(RANGE_EDGES_M) - 1, np.int64))
    range_nonzero_sum: np.ndarray = field(default_factory=lambda: np.zeros(len(RANGE_EDGES_M) - 1))
    scans: int = 0

    def __add__(self, other: "IntensityCounts") -> "IntensityCounts":
        return IntensityCounts(*(getattr(self, f) + getattr(other, f) for f in self.__dataclass_fields__))

    def ring_zero_share(self) -> np.ndarray:
        own = self.ring_zeros / np.maximum(self.ring_returns, 1)
        return np.where(self.ring_returns >= MIN_RING_RETURNS, own, self.reference_zero_share())

    def ring_gain(self) -> np.ndarray:
        """Mean non-zero intensity of each ring over that of all rings (1 where a ring has no returns)."""
        nonzero = self.ring_returns - self.ring_zeros
        mean_all = self.ring_nonzero_sum.sum() / max(nonzero.sum(), 1)
        gain = np.where(self.ring_returns >= MIN_RING_RETURNS,
                        self.ring_nonzero_sum / np.maximum(nonzero, 1) / max(mean_all, 1e-9), 1.0)
        return np.clip(gain, *RING_GAIN_RANGE)

    def range_zero_share(self) -> np.ndarray:
        return self.range_zeros / np.maximum(self.range_returns, 1)

    def range_nonzero_mean(self) -> np.ndarray:
        """Mean non-zero intensity per range bin (0 where a bin has none)."""
        return self.range_nonzero_sum / np.maximum(self.range_returns - self.range_zeros, 1)

    def range_gain(self) -> np.ndarray:
        """Mean non-zero intensity per range bin over that of the 5-30 m reference bins."""
        nonzero = self.range_returns - self.range_zeros
        mean = self.range_nonzero_mean()
        centres = (RANGE_EDGES_M[:-1] + RANGE_EDGES_M[1:]) / 2
        ref = (centres >= REFERENCE_RANGE_M[0]) & (centres < REFERENCE_RANGE_M[1])
        reference = self.range_nonzero_sum[ref].sum() / max(nonzero[ref].sum(), 1)
        return np.where(nonzero > 0, mean / max(reference, 1e-9), 1.0)

    def reference_zero_share(self) -> float:
        """Zero share of all rings together at 5-30 m (what the ring table already holds)."""
        return float(self.ring_zeros.sum() / max(self.ring_returns.sum(), 1))


def real_full_scan_paths(real_root) -> list:
    """The full 360-degree real scans of a kitti_real folder: object/training velodyne and the raw drives'."""
    from pathlib import Path

    root = Path(real_root)
    paths = sorted((root / "object" / "training" / "velodyne").glob("*.bin"))
    return paths + sorted((root / "raw").glob("*/*_sync/velodyne_points/data/*.bin"))


def measure_intensity(points: np.ndarray, rows: np.ndarray | None = None) -> IntensityCounts:
    """Counts of one scan (N, 4) x y z intensity; rows: ring of every point when known, else from
    the geometry (``beam_rows``; points on no beam line are left out of the ring counts)."""
    from .projection import beam_rows

    pts = np.asarray(points, np.float64)
    ring = beam_rows(pts) if rows is None else np.asarray(rows, np.int64)
    distance = np.linalg.norm(pts[:, :3], axis=1)
    zero = pts[:, 3] < ZERO_BELOW
    nonzero_value = np.where(zero, 0.0, pts[:, 3])
    c = IntensityCounts(scans=1)
    in_ref = (distance >= REFERENCE_RANGE_M[0]) & (distance < REFERENCE_RANGE_M[1]) & (ring >= 0) & (ring < HDL64E_ROWS)
    c.ring_returns += np.bincount(ring[in_ref], minlength=HDL64E_ROWS)
    c.ring_zeros += np.bincount(ring[in_ref & zero], minlength=HDL64E_ROWS)
    c.ring_nonzero_sum += np.bincount(ring[in_ref], weights=nonzero_value[in_ref], minlength=HDL64E_ROWS)
    bins = np.searchsorted(RANGE_EDGES_M, distance, side="right") - 1
    ok = (bins >= 0) & (bins < len(RANGE_EDGES_M) - 1) & (distance > 0)
    n_bins = len(RANGE_EDGES_M) - 1
    c.range_returns += np.bincount(bins[ok], minlength=n_bins)
    c.range_zeros += np.bincount(bins[ok & zero], minlength=n_bins)
    c.range_nonzero_sum += np.bincount(bins[ok], weights=nonzero_value[ok], minlength=n_bins)
    return c


def intensity_of_files(paths: list) -> IntensityCounts:
    total = IntensityCounts()
    for path in paths:
        total = total + measure_intensity(np.fromfile(path, np.float32).reshape(-1, 4))
    if not total.scans:
        raise ValueError("no scans given")
    return total


def intensity_module_text(counts: IntensityCounts, source: str) -> str:
    """Python source of ``kitti/hdl64e_intensity.py``."""
    from .noise_map import array_listing as listing

    return f'''"""How the KITTI HDL-64E reports intensity, measured on real scans (written by kitti/intensity_map.py).

Source: {source} ({int(counts.range_returns.sum())} returns; no labels read).
``HDL64E_RING_ZERO_SHARE[row]``: share of the ring's returns at {REFERENCE_RANGE_M[0]:.0f}-{REFERENCE_RANGE_M[1]:.0f} m reported as 0
(all rings together: {counts.reference_zero_share():.4f}); ``HDL64E_RING_INTENSITY_GAIN[row]``: the ring's
mean non-zero intensity over all rings' (clipped to {RING_GAIN_RANGE}); rings with fewer than
{MIN_RING_RETURNS} returns there take the all-ring share and gain 1. Per range bin
(``INTENSITY_RANGE_EDGES_M``), all rings: ``INTENSITY_RANGE_ZERO_SHARE`` and
``INTENSITY_RANGE_GAIN`` (mean non-zero intensity over the {REFERENCE_RANGE_M[0]:.0f}-{REFERENCE_RANGE_M[1]:.0f} m mean). Rebuild with
``python -m squeeze_perception.kitti.intensity_map --out src/squeeze_perception/kitti/hdl64e_intensity.py``.
"""
import numpy as np

HDL64E_RING_ZERO_SHARE = np.array([
{listing(counts.ring_zero_share(), 10)}
])

HDL64E_RING_INTENSITY_GAIN = np.array([
{listing(counts.ring_gain(), 10)}
])

INTENSITY_REFERENCE_ZERO_SHARE = {counts.reference_zero_share():.4f}
INTENSITY_RANGE_EDGES_M = np.array([{", ".join(f"{v:.1f}" for v in RANGE_EDGES_M)}])
INTENSITY_RANGE_ZERO_SHARE = np.array([{", ".join(f"{v:.4f}" for v in counts.range_zero_share())}])
INTENSITY_RANGE_GAIN = np.array([{", ".join(f"{v:.4f}" for v in counts.range_gain())}])
'''


def _real_full_scans():
    from ..paths import kitti_real_dir

    paths = real_full_scan_paths(kitti_real_dir())
    return paths, (f"the {len(paths)} full scans of ../shared/data/kitti_real (object/training/velodyne and the "
                   "raw SFND drive)")


def main(argv: list[str] | None = None) -> int:
    from .noise_map import table_module_main

    return table_module_main(argv, "python -m squeeze_perception.kitti.intensity_map",
                             "Measure how the HDL-64E reports intensity on real full scans.", _real_full_scans,
                             "the 7 full real scans that `synth stats` compares against",
                             lambda paths, source: intensity_module_text(intensity_of_files(paths), source),
                             "hdl64e_intensity")


if __name__ == "__main__":
    raise SystemExit(main())
