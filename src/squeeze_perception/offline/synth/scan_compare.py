"""Synthetic scans against real KITTI scans, distribution by distribution (`synth stats --compare`).

What a segmentation network sees of a scan is its front 64x512 range image, so the comparison is
made there and on the whole cloud:

* per-row return rate: share of the row's cells in the front 64x512 projection holding a point
  (sky, open space, fading far ground and dropout together);
* per-row single-firing loss: lost firings inside continuous surfaces (``kitti.noise_map``);
* range histogram of all points, 2 m bins to 120 m (how much geometry there is 30-80 m out);
* intensity histogram of all points, 0.02 bins;
* intensity as the sensor reports it (``kitti.intensity_map``): the share of zero readings per
  range bin and per ring, and the mean non-zero reading per range bin.

Real scans are read for these statistics only: the full scans of ../shared/data/kitti_real
(object/training velodyne and the raw SFND drive).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...kitti.hdl64e import HDL64E_ROWS
from ...kitti.intensity_map import RANGE_EDGES_M as INTENSITY_RANGE_EDGES_M
from ...kitti.intensity_map import IntensityCounts, measure_intensity, real_full_scan_paths
from ...kitti.noise_map import RingDropout, measure_ring_dropout
from ...kitti.projection import spherical_project

RANGE_BINS = np.arange(0.0, 122.0, 2.0)
INTENSITY_BINS = np.linspace(0.0, 1.0, 51)
UPPER_ROWS = slice(0, 32)
LOWER_ROWS = slice(32, 64)


@dataclass
class ScanProfile:
    """Accumulated per-row and histogram statistics of a set of full scans."""

    scans: int = 0
    points: list[int] = field(default_factory=list)
    row_cells: np.ndarray = field(default_factory=lambda: np.zeros(HDL64E_ROWS, np.int64))
    row_returns: np.ndarray = field(default_factory=lambda: np.zeros(HDL64E_ROWS, np.int64))
    range_hist: np.ndarray = field(default_factory=lambda: np.zeros(len(RANGE_BINS) - 1, np.int64))
    intensity_hist: np.ndarray = field(default_factory=lambda: np.zeros(len(INTENSITY_BINS) - 1, np.int64))
    dropout: RingDropout | None = None
    intensity: IntensityCounts = field(default_factory=IntensityCounts)

    def add(self, points: np.ndarray, rows: np.ndarray | None = None) -> None:
        """One full scan (N, 4) x y z intensity; rows: its rings when known (else from the geometry)."""
        pts = np.asarray(points, np.float32)
        self.scans += 1
        self.points.append(len(pts))
        proj = spherical_project(pts, "front", rows=rows)
        self.row_cells += proj.mask.shape[1]
        self.row_returns += proj.mask.sum(1)
        distance = np.linalg.norm(pts[:, :3], axis=1)
        self.range_hist += np.histogram(np.minimum(distance, RANGE_BINS[-1] - 1e-3), RANGE_BINS)[0]
        self.intensity_hist += np.histogram(np.clip(pts[:, 3], 0.0, 1.0 - 1e-6), INTENSITY_BINS)[0]
        lost = measure_ring_dropout(pts, rows)
        self.intensity = self.intensity + measure_intensity(pts, rows)
        self.dropout = lost if self.dropout is None else self.dropout + lost

    def row_return_rate(self) -> np.ndarray:
        return self.row_returns / np.maximum(self.row_cells, 1)

    def row_loss_rate(self) -> np.ndarray:
        return self.dropout.row_rate() if self.dropout is not None else np.zeros(HDL64E_ROWS)

    def range_density(self) -> np.ndarray:
        return self.range_hist / max(self.range_hist.sum(), 1)

    def intensity_density(self) -> np.ndarray:
        return self.intensity_hist / max(self.intensity_hist.sum(), 1)

    def share_between(self, lo: float, hi: float) -> float:
        centres = (RANGE_BINS[:-1] + RANGE_BINS[1:]) / 2
        return float(self.range_density()[(centres >= lo) & (centres < hi)].sum())

    def intensity_quantile(self, q: float) -> float:
        cdf = np.cumsum(self.intensity_density())
        return float(INTENSITY_BINS[1:][np.searchsorted(cdf, q)])


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance of two normalised histograms: 0 identical, 1 disjoint."""
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())


def comparison_rows(synth: ScanProfile, real: ScanProfile) -> list[tuple[str, str, str]]:
    """(statistic, synthetic, real) rows for the printed table."""
    def pct(v: float) -> str:
        return f"{100 * v:.2f} %"

    rs, rr = synth.row_return_rate(), real.row_return_rate()
    ls, lr = synth.row_loss_rate(), real.row_loss_rate()
    out = [("scans", str(synth.scans), str(real.scans)),
           ("points per scan (mean)", f"{np.mean(synth.points):,.0f}", f"{np.mean(real.points):,.0f}"),
           ("front 64x512 return rate, rows 0-31", pct(rs[UPPER_ROWS].mean()), pct(rr[UPPER_ROWS].mean())),
           ("front 64x512 return rate, rows 32-63", pct(rs[LOWER_ROWS].mean()), pct(rr[LOWER_ROWS].mean())),
           ("per-row return rate, mean |synthetic - real|", pct(float(np.abs(rs - rr).mean())), "-"),
           ("single lost firings, rows 0-31", pct(_block_rate(synth.dropout, UPPER_ROWS)),
            pct(_block_rate(real.dropout, UPPER_ROWS))),
           ("single lost firings, rows 32-63", pct(_block_rate(synth.dropout, LOWER_ROWS)),
            pct(_block_rate(real.dropout, LOWER_ROWS))),
           ("per-row lost firings, mean |synthetic - real|", pct(float(np.abs(ls - lr).mean())), "-")]
    for lo, hi in ((0, 10), (10, 30), (30, 80), (80, 120)):
        out.append((f"points at {lo}-{hi} m", pct(synth.share_between(lo, hi)), pct(real.share_between(lo, hi))))
    range_tv = total_variation(synth.range_density(), real.range_density())
    out.append(("range histogram, total variation", f"{range_tv:.3f}", "-"))
    for q in (0.1, 0.5, 0.9):
        out.append((f"intensity {int(q * 100)}th percentile", f"{synth.intensity_quantile(q):.2f}",
                    f"{real.intensity_quantile(q):.2f}"))
    out.append(("intensity below 0.02", pct(synth.intensity_density()[0]), pct(real.intensity_density()[0])))
    out.append(("intensity histogram, total variation",
                f"{total_variation(synth.intensity_density(), real.intensity_density()):.3f}", "-"))
    zs, zr = synth.intensity.range_zero_share(), real.intensity.range_zero_share()
    ms, mr = synth.intensity.range_nonzero_mean(), real.intensity.range_nonzero_mean()
    for k, (lo, hi) in enumerate(zip(INTENSITY_RANGE_EDGES_M[:-1], INTENSITY_RANGE_EDGES_M[1:])):
        out.append((f"intensity 0 / mean non-zero at {lo:.0f}-{hi:.0f} m", f"{100 * zs[k]:.1f} % / {ms[k]:.2f}",
                    f"{100 * zr[k]:.1f} % / {mr[k]:.2f}"))
    ring_gap = np.abs(synth.intensity.ring_zero_share() - real.intensity.ring_zero_share()).mean()
    out.append(("per-ring intensity-0 share (5-30 m), mean |synthetic - real|", pct(float(ring_gap)), "-"))
    return out


def _block_rate(dropout: RingDropout | None, rows: slice) -> float:
    if dropout is None:
        return float("nan")
    return float(dropout.holes[rows].sum() / max(dropout.firings[rows].sum(), 1))


def real_scan_paths(real_root: Path) -> list[Path]:
    """The full real scans to compare against: object/training velodyne and the raw drives' scans
    (the same ones the intensity table is measured on)."""
    return real_full_scan_paths(real_root)


def profile_of_files(paths: list[Path]) -> ScanProfile:
    profile = ScanProfile()
    for path in paths:
        profile.add(np.fromfile(path, np.float32).reshape(-1, 4))
    return profile


def draw_comparison(synth: ScanProfile, real: ScanProfile, out: Path, synth_name: str, real_name: str) -> Path:
    """2 x 2 figure: per-row return rate, per-row lost firings, range and intensity histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    rows = np.arange(HDL64E_ROWS)
    styles = ((synth, synth_name, "tab:orange"), (real, real_name, "tab:blue"))
    ax = axes[0, 0]
    for prof, name, colour in styles:
        ax.plot(rows, 100 * prof.row_return_rate(), color=colour, label=name)
    ax.set(xlabel="row (0 = top beam)", ylabel="% of front 64x512 cells with a return",
           title="per-row return rate (front 90 deg)")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    for prof, name, colour in styles:
        ax.plot(rows, 100 * prof.row_loss_rate(), color=colour, label=name)
    ax.set(xlabel="row (0 = top beam)", ylabel="% of firings on a surface lost",
           title="per-row single lost firings (360 deg)")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    centres = (RANGE_BINS[:-1] + RANGE_BINS[1:]) / 2
    for prof, name, colour in styles:
        ax.step(centres, 100 * prof.range_density(), where="mid", color=colour, label=name)
    ax.set_yscale("log")
    ax.axvspan(30, 80, color="grey", alpha=0.1)
    ax.set(xlabel="range (m)", ylabel="% of points per 2 m", title="range histogram (30-80 m shaded)")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    centres = (INTENSITY_BINS[:-1] + INTENSITY_BINS[1:]) / 2
    for prof, name, colour in styles:
        ax.step(centres, 100 * prof.intensity_density(), where="mid", color=colour, label=name)
    ax.set(xlabel="intensity", ylabel="% of points per 0.02", title="intensity histogram")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
