"""Per-stage latency of the segmentation pipeline on this CPU, the network's ratio to its
compute bound (2 x MACs / peak FLOP/s measured with a large fp32 matmul), and DBSCAN
scikit-learn vs the fast exact version on identical inputs, side by side in one run."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..model_cost import count_macs  # noqa: F401 - re-exported for callers of this module
from .pipeline import STAGES, SegmentationPipeline


def crf_macs(num_classes: int, height: int, width: int, window: tuple[int, int], iterations: int) -> int:
    """Message passing (2 kernels x C x window per cell) + two CxC compatibility 1x1 per iteration."""
    p = window[0] * window[1]
    per_iter = height * width * (2 * num_classes * p + 2 * num_classes * num_classes)
    return iterations * per_iter + height * width * p * (3 + num_classes)  # + bilateral weights once


def peak_flops(sizes=(1024, 2048), repeats: int = 10) -> float:
    """Best fp32 matmul rate over a few sizes and repeats (the box may be shared: best, not mean)."""
    best_rate = 0.0
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best_rate = max(best_rate, 2.0 * n ** 3 / (time.perf_counter() - t0))
    return best_rate


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"mean": float("nan"), "p99": float("nan"), "std": float("nan")}
    return {"mean": float(a.mean()), "p99": float(np.percentile(a, 99)), "std": float(a.std())}


def bench_scans(kitti_root: Path) -> list[np.ndarray]:
    from ..kitti.labels import read_velodyne_bin

    files = sorted(kitti_root.glob("raw/**/velodyne_points/data/*.bin")) + \
        sorted(kitti_root.glob("object/training/velodyne/*.bin")) + \
        sorted(kitti_root.glob("object_reduced/training/velodyne_reduced/*.bin"))
    return [read_velodyne_bin(f) for f in files]


def run_bench(model: str = "squeezesegv2", weights: str = "", frames: int = 16, fov: str = "front",
              threads: int = 1, kitti_root: Path | None = None, progress: bool = True,
              backend: str = "torch") -> dict:
    from tqdm import tqdm

    from ..paths import kitti_real_dir
    from .clustering import dbscan_fast, dbscan_sklearn

    torch.set_num_threads(max(threads, 1))
    scans = bench_scans(kitti_root or kitti_real_dir())
    if not scans:
        raise FileNotFoundError("no Velodyne scans found for the benchmark")
    pl = SegmentationPipeline(model, backend=backend, weights=weights, fov=fov, crf=True, clustering="fast",
                              num_threads=threads)
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    times["total"] = []
    db = {"sklearn": [], "fast": [], "points": [], "identical": True}
    pl.process(scans[0])  # warm-up (allocations, lazy imports)
    warm = np.random.default_rng(0).normal(size=(200, 3))
    dbscan_sklearn(warm, 0.3, 20)  # import scikit-learn outside the timed calls
    dbscan_fast(warm, 0.3, 20)
    for i in tqdm(range(frames), desc=f"bench {model}", disable=not progress):
        pts = scans[i % len(scans)]
        t0 = time.perf_counter()
        res = pl.process(pts)
        times["total"].append((time.perf_counter() - t0) * 1e3)
        for s in STAGES:
            times[s].append(res.timings_ms.get(s, 0.0))
        # DBSCAN side by side on the exact per-class inputs this frame's clustering saw.
        for c in (1, 2, 3):
            sel = res.labels == c
            if sel.sum() < pl.cluster_min_points:
                continue
            xyz = pts[sel, :3]
            t0 = time.perf_counter()
            ref = dbscan_sklearn(xyz, pl.cluster_eps, pl.cluster_min_points)
            t1 = time.perf_counter()
            fast = dbscan_fast(xyz, pl.cluster_eps, pl.cluster_min_points)
            t2 = time.perf_counter()
            db["sklearn"].append((t1 - t0) * 1e3)
            db["fast"].append((t2 - t1) * 1e3)
            db["points"].append(int(sel.sum()))
            db["identical"] &= bool(np.array_equal(ref, fast))
    sample = torch.zeros((1, *pl.spec.input_shape))
    sample[:, 4] = 10.0
    macs = count_macs(pl.spec.build().eval(), sample)
    crf = crf_macs(4, 64, 512, pl.crf.window, pl.crf.iterations)
    peak = peak_flops()
    tiles = 1 if fov == "front" else 4
    net_ms = float(np.mean(times["network"]))
    crf_ms = float(np.mean(times["crf"]))
    bound_net_ms = 2.0 * macs * tiles / peak * 1e3
    bound_crf_ms = 2.0 * crf * tiles / peak * 1e3
    return {
        "model": model, "backend": backend, "fov": fov, "threads": threads, "frames": frames,
        "points_per_frame": float(np.mean([len(s) for s in scans])),
        "stages_ms": {k: _summary(v) for k, v in times.items()},
        "network_gmacs": macs / 1e9, "crf_gmacs": crf / 1e9, "peak_gflops": peak / 1e9,
        "network_bound_ms": bound_net_ms, "network_ratio_to_bound": net_ms / bound_net_ms,
        "crf_bound_ms": bound_crf_ms, "crf_ratio_to_bound": crf_ms / bound_crf_ms,
        "dbscan": {"sklearn_ms": _summary(db["sklearn"]), "fast_ms": _summary(db["fast"]),
                   "calls": len(db["fast"]), "mean_points": float(np.mean(db["points"])) if db["points"] else 0.0,
                   "speedup_mean": (float(np.mean(db["sklearn"])) / max(float(np.mean(db["fast"])), 1e-9))
                   if db["fast"] else float("nan"),
                   "identical_labels": db["identical"]},
    }


def format_bench(r: dict) -> str:
    lines = [f"SqueezeSeg pipeline benchmark: model {r['model']}, backend {r['backend']}, fov {r['fov']}, {r['threads']} thread(s), "
             f"{r['frames']} frames (real KITTI scans, {r['points_per_frame']:.0f} points on average)",
             f"{'stage':12s} {'mean ms':>9s} {'p99 ms':>9s} {'std ms':>9s}"]
    for k, v in r["stages_ms"].items():
        lines.append(f"{k:12s} {v['mean']:9.2f} {v['p99']:9.2f} {v['std']:9.2f}")
    lines.append(f"network: {r['network_gmacs']:.3f} GMAC/tile, peak {r['peak_gflops']:.1f} GFLOP/s (fp32 matmul) -> "
                 f"bound {r['network_bound_ms']:.2f} ms, measured/bound = {r['network_ratio_to_bound']:.1f}x")
    lines.append(f"crf: {r['crf_gmacs']:.4f} GMAC/tile -> bound {r['crf_bound_ms']:.3f} ms, "
                 f"measured/bound = {r['crf_ratio_to_bound']:.1f}x")
    d = r["dbscan"]
    lines.append(f"DBSCAN over {d['calls']} per-class calls ({d['mean_points']:.0f} points on average): "
                 f"sklearn {d['sklearn_ms']['mean']:.2f} ms (std {d['sklearn_ms']['std']:.2f}), "
                 f"fast {d['fast_ms']['mean']:.2f} ms (std {d['fast_ms']['std']:.2f}), "
                 f"sklearn/fast = {d['speedup_mean']:.2f}x, identical labels: {d['identical_labels']}")
    return "\n".join(lines)
