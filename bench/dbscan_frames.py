"""DBSCAN per segmented frame, all classes: scikit-learn vs the numpy grid version vs the C
kernel (`dbscan_fast`'s default), CPU time of this process, interleaved on the same inputs.

    nice -n 19 .venv/bin/python bench/dbscan_frames.py [--frames 8] [--repeats 3]

The inputs are the per-class point sets that squeezesegv2 + onnxruntime (CRF, ground removal:
the node's defaults) produce on the real KITTI scans of `seg bench`; that pass runs once and is
cached (--cache), the timing itself takes a few seconds. Prints mean / p99 / max per frame,
whether every label array equals scikit-learn's, and the load average."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from squeeze_perception.segmentation.clustering import dbscan_fast, dbscan_sklearn


def class_sets(frames: int, cache: Path) -> list[list[np.ndarray]]:
    if cache.exists():
        d = np.load(cache)
        n = int(d["frames"])
        if n >= frames:
            return [[d[f"f{i}_c{c}"] for c in (1, 2, 3)] for i in range(frames)]
    import torch

    from squeeze_perception.offline.segmentation.bench import bench_scans
    from squeeze_perception.paths import kitti_real_dir
    from squeeze_perception.segmentation.pipeline import SegmentationPipeline

    torch.set_num_threads(1)
    scans = bench_scans(kitti_real_dir())[:frames]
    pl = SegmentationPipeline("squeezesegv2", backend="onnxruntime", fov="front", crf=True, num_threads=1)
    out = {"frames": np.array(len(scans))}
    for i, pts in enumerate(scans):
        labels = pl.process(pts).labels
        for c in (1, 2, 3):
            out[f"f{i}_c{c}"] = pts[labels == c, :3].astype(np.float64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return [[out[f"f{i}_c{c}"] for c in (1, 2, 3)] for i in range(len(scans))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over all frames (sklearn: once)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "squeeze_perception" / "dbscan_frames.npz"))
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--min-samples", type=int, default=20)
    a = ap.parse_args()
    sets = class_sets(a.frames, Path(a.cache))
    dbscan_sklearn(np.zeros((30, 3)), a.eps, a.min_samples)  # imports outside the timed calls
    dbscan_fast(np.zeros((30, 3)), a.eps, a.min_samples)
    methods = {"sklearn": dbscan_sklearn, "numpy grid": lambda x, e, m: dbscan_fast(x, e, m, native=False),
               "native (default)": dbscan_fast}
    per_frame = {k: [] for k in methods}
    identical = True
    la0 = os.getloadavg()
    for rep in range(a.repeats):
        for classes in sets:
            ref = None
            for name, fn in methods.items():
                if name == "sklearn" and rep:
                    continue
                cpu = 0.0
                labs = []
                for x in classes:
                    if len(x) < a.min_samples:
                        labs.append(None)
                        continue
                    t0 = time.process_time()
                    labs.append(fn(x, a.eps, a.min_samples))
                    cpu += time.process_time() - t0
                per_frame[name].append(cpu * 1e3)
                if name == "sklearn":
                    ref = labs
                elif ref is not None:
                    identical &= all((r is None and g is None) or np.array_equal(r, g) for r, g in zip(ref, labs))
    print(f"{len(sets)} frames, points per frame (classes 1-3): "
          + ", ".join(str(sum(len(x) for x in cl)) for cl in sets))
    for name, v in per_frame.items():
        v = np.array(v)
        print(f"{name:18s} CPU ms per frame: mean {v.mean():7.2f}  p99 {np.percentile(v, 99):7.2f}  max {v.max():7.2f}"
              f"  ({len(v)} frame calls)")
    print(f"labels identical to scikit-learn: {identical}")
    la1 = os.getloadavg()
    print(f"load average before {la0[0]:.2f} {la0[1]:.2f} {la0[2]:.2f}, after {la1[0]:.2f} {la1[1]:.2f} {la1[2]:.2f}"
          f" ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
