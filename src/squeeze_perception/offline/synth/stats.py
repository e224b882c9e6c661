"""`squeeze-perception synth stats`: scan and label statistics of a dataset next to the real KITTI samples.

  squeeze-perception synth stats --root data/synth [--limit 100] [--real ../shared/data/kitti_real]
  squeeze-perception synth stats --generate 20 --seed 0 --figure docs/img/synth_vs_real_lidar.png

The second table (always printed) sets the synthetic scans beside the real full scans: per-row
return rate and lost firings, range and intensity histograms (``offline/synth/scan_compare.py``);
``--figure`` draws them side by side. ``--generate N`` renders N object-frame scans in memory
(LiDAR only, the scans `synth --seed S` would write) instead of reading ``--root``.
"""
from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...interfaces import CLASS_NAMES
from ...kitti.datasets import KittiObjectDataset
from ...kitti.lidar_2d import read_lidar_2d
from ...kitti.pointwise import pointwise_labels
from ...kitti.projection import spherical_project
from ...paths import kitti_real_dir


@dataclass
class ScanStats:
    points: list[int] = field(default_factory=list)
    front_empty: list[float] = field(default_factory=list)
    intensity_median: list[float] = field(default_factory=list)
    intensity_zero: list[float] = field(default_factory=list)
    class_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(CLASS_NAMES), np.int64))
    front_class_counts: np.ndarray = field(default_factory=lambda: np.zeros(len(CLASS_NAMES), np.int64))
    label_types: Counter = field(default_factory=Counter)
    occlusion: Counter = field(default_factory=Counter)
    difficulty: Counter = field(default_factory=Counter)
    frames: int = 0

    def add_scan(self, points: np.ndarray, classes: np.ndarray) -> None:
        self.frames += 1
        self.points.append(len(points))
        proj = spherical_project(points, "front")
        self.front_empty.append(1.0 - float(proj.mask.mean()))
        self.intensity_median.append(float(np.median(points[:, 3])))
        self.intensity_zero.append(float(np.mean(points[:, 3] == 0)))
        self.class_counts += np.bincount(classes, minlength=len(CLASS_NAMES))[:len(CLASS_NAMES)]
        cells = classes[proj.point_index[proj.mask]]
        self.front_class_counts += np.bincount(cells, minlength=len(CLASS_NAMES))[:len(CLASS_NAMES)]

    def summary(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {"frames": self.frames}
        if self.points:
            out["points per scan (mean)"] = float(np.mean(self.points))
            out["points per scan (min..max)"] = f"{min(self.points)}..{max(self.points)}"
            out["front 64x512 empty cells"] = float(np.mean(self.front_empty))
            out["intensity median"] = float(np.mean(self.intensity_median))
            out["intensity == 0"] = float(np.mean(self.intensity_zero))
            fr = self.front_class_counts / max(self.front_class_counts.sum(), 1)
            for i, name in enumerate(CLASS_NAMES[1:], 1):
                out[f"front cells {name}"] = float(fr[i])
        if self.label_types:
            n = max(self.frames, 1)
            for t in ("Car", "Pedestrian", "Cyclist", "Van", "Truck", "DontCare"):
                out[f"labels/frame {t}"] = self.label_types.get(t, 0) / n
            total = sum(self.occlusion.values())
            for level in (0, 1, 2):
                out[f"occluded={level} share"] = self.occlusion.get(level, 0) / max(total, 1)
            for level, name in ((0, "easy"), (1, "moderate"), (2, "hard"), (-1, "ignored")):
                out[f"difficulty {name} share"] = self.difficulty.get(level, 0) / max(total, 1)
        return out


def object_split_stats(root: Path, split: str = "training", limit: int | None = None) -> ScanStats:
    stats = ScanStats()
    ds = KittiObjectDataset(root, split)
    for i in range(min(len(ds), limit or len(ds))):
        f = ds[i]
        classes = f.point_labels[:, 0] if f.point_labels is not None else \
            pointwise_labels(f.points, f.labels, f.calib)[0]
        stats.add_scan(f.points, classes.astype(np.int64))
        for lab in f.labels:
            stats.label_types[lab.type] += 1
            if lab.type != "DontCare":
                stats.occlusion[lab.occluded] += 1
                stats.difficulty[lab.difficulty()] += 1
    return stats


def lidar_2d_stats(files: list[Path]) -> dict[str, float]:
    empties, counts = [], np.zeros(len(CLASS_NAMES), np.int64)
    for f in files:
        t = read_lidar_2d(f)
        occupied = t[..., 4] > 0
        empties.append(1.0 - occupied.mean())
        counts += np.bincount(t[..., 5][occupied].astype(np.int64), minlength=len(CLASS_NAMES))[:len(CLASS_NAMES)]
    out = {"lidar_2d frames": float(len(files)), "lidar_2d empty cells": float(np.mean(empties)) if empties else float("nan")}
    for i, name in enumerate(CLASS_NAMES[1:], 1):
        out[f"lidar_2d cells {name}"] = float(counts[i] / max(counts.sum(), 1))
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="squeeze-perception synth stats", description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="data/synth")
    ap.add_argument("--split", default="training")
    ap.add_argument("--limit", type=int, default=100, help="object frames to read (0 = all)")
    ap.add_argument("--real", default=str(kitti_real_dir()))
    ap.add_argument("--generate", type=int, default=0,
                    help="render this many object-frame scans in memory instead of reading --root")
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated scans")
    ap.add_argument("--no-ring-dropout", action="store_true",
                    help="generated scans without the measured per-ring loss (what the physics alone loses)")
    ap.add_argument("--plain-intensity", action="store_true",
                    help="generated scans with the surface physics' intensity as it is (no measured ring gains "
                         "or zero readings: the generator before 2026-12-05)")
    ap.add_argument("--figure", help="PNG of the per-row / histogram comparison (e.g. docs/img/synth_vs_real_lidar.png)")
    args = ap.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    root, real = Path(args.root), Path(args.real)
    if args.generate:
        return _compare_scans(args, real, required=True)
    synth = object_split_stats(root, args.split, args.limit or None).summary()
    synth.update(lidar_2d_stats(sorted((root / "lidar_2d" / ("train" if args.split == "training" else "test"))
                                       .glob("*.npy"))[: args.limit or None]))
    real_stats: dict = {}
    if (real / "object").exists():
        real_stats = object_split_stats(real, "training").summary()
        real_stats.update(lidar_2d_stats(sorted((real / "lidar_2d").glob("*.npy"))))
    table = Table(title=f"synthetic ({root}) vs real KITTI samples")
    table.add_column("statistic")
    table.add_column("synthetic", justify="right")
    table.add_column("real", justify="right")
    for key in synth:
        fmt = (lambda v: f"{v:.4g}" if isinstance(v, float) else str(v))  # noqa: E731
        table.add_row(key, fmt(synth[key]), fmt(real_stats[key]) if key in real_stats else "-")
    Console().print(table)
    return _compare_scans(args, real, required=False)


def _compare_scans(args, real: Path, required: bool) -> int:
    """Print (and optionally draw) the per-row and histogram comparison with the real full scans.
    Without scans on either side this fails only when the comparison is all that was asked for
    (`--generate`); after the frame table it is skipped with the reason."""
    import time

    from rich.console import Console
    from rich.table import Table

    from .scan_compare import comparison_rows, draw_comparison, profile_of_files, real_scan_paths, ScanProfile

    t0 = time.perf_counter()
    if args.generate:
        from .generate import _renderer, object_scan

        lidar = _renderer(True, 0, True).lidar
        lidar.ring_dropout = not args.no_ring_dropout
        lidar.sensor_intensity = not args.plain_intensity
        synth = ScanProfile()
        for i in range(args.generate):
            scan = object_scan(args.seed, args.split, i)
            synth.add(scan.points, scan.rows)
        name = f"synthetic (seed {args.seed}, {args.generate} generated scans)"
    else:
        root = Path(args.root)
        scans = sorted((root / "object" / args.split / "velodyne").glob("*.bin"))[: args.limit or None]
        synth = profile_of_files(scans)
        name = f"synthetic ({root}, {len(scans)} scans)"
    real_paths = real_scan_paths(real)
    if not real_paths or not synth.scans:
        print(f"no scans to compare ({synth.scans} synthetic, {len(real_paths)} real in {real})"
              + ("" if required else "; scan comparison skipped"))
        return 1 if required else 0
    real_profile = profile_of_files(real_paths)
    table = Table(title=f"{name} vs real KITTI full scans ({len(real_paths)} in {real})")
    for column, justify in (("statistic", "left"), ("synthetic", "right"), ("real", "right")):
        table.add_column(column, justify=justify)
    for row in comparison_rows(synth, real_profile):
        table.add_row(*row)
    Console().print(table)
    if args.figure:
        path = draw_comparison(synth, real_profile, Path(args.figure), "synthetic",
                               f"real KITTI ({len(real_paths)} scans)")
        print(f"figure: {path}")
    print(f"compared in {time.perf_counter() - t0:.1f} s")
    return 0
