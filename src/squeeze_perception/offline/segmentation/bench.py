"""Per-stage latency of the segmentation pipeline on this CPU, the network's ratio to its
compute bound (2 x MACs / peak FLOP/s measured with a large fp32 matmul), DBSCAN
scikit-learn vs the fast exact version on identical inputs (per call and per frame, all classes),
and the recurrent CRF against the previous unfold implementation (frozen in
tests/test_segmentation_crf.py) on 64 x 512 and 64 x 2048 views, interleaved in one run.

Every timing is reported as wall time and as this process's CPU time (time.process_time):
on a shared machine the CPU time is the better measure of the work, the wall time of what a
node sees; the load average is printed beside them."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

from ...model_cost import count_macs  # noqa: F401 - re-exported for callers of this module
from ...segmentation.pipeline import STAGES, SegmentationPipeline


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


def load_reference_crf():
    """The unfold-based CRF as it was before the rewrite, from the test file that freezes it;
    None when the tests are not beside the package (installed without the source tree)."""
    import importlib.util

    from ...paths import project_root

    path = project_root() / "tests" / "test_segmentation_crf.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("_crf_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.ReferenceCRF


def crf_side_by_side(crf, logits: np.ndarray, batch: np.ndarray, repeats: int = 10) -> dict:
    """New CRF vs the reference on the same (B, C, H, W) input, interleaved; ms per call."""
    ref_cls = load_reference_crf()
    x = torch.from_numpy(np.ascontiguousarray(batch[:, :5], dtype=np.float32))
    lg = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    mask = (x[:, 4:5] > 0).float()
    impls = {"new": crf}
    if ref_cls is not None:
        ref = ref_cls(crf.num_classes)
        ref.load_state_dict(crf.state_dict())
        impls["reference"] = ref.eval()
    res: dict = {"shape": list(lg.shape)}
    wall: dict[str, list[float]] = {k: [] for k in impls}
    cpu: dict[str, list[float]] = {k: [] for k in impls}
    outs = {}
    with torch.inference_mode():
        for k, m in impls.items():
            outs[k] = m(lg, x[:, :3], mask)  # warm-up
        for _ in range(repeats):
            for k, m in impls.items():
                t0, c0 = time.perf_counter(), time.process_time()
                m(lg, x[:, :3], mask)
                wall[k].append((time.perf_counter() - t0) * 1e3)
                cpu[k].append((time.process_time() - c0) * 1e3)
    for k in impls:
        res[k] = {"wall_ms": _summary(wall[k]), "cpu_ms": _summary(cpu[k]),
                  "wall_median_ms": float(np.median(wall[k])), "cpu_median_ms": float(np.median(cpu[k]))}
    if "reference" in impls:
        res["max_abs_diff"] = float((outs["new"] - outs["reference"]).abs().max())
        res["same_labels"] = bool(torch.equal(outs["new"].argmax(1), outs["reference"].argmax(1)))
        res["speedup_cpu_median"] = res["reference"]["cpu_median_ms"] / max(res["new"]["cpu_median_ms"], 1e-9)
        res["speedup_wall_median"] = res["reference"]["wall_median_ms"] / max(res["new"]["wall_median_ms"], 1e-9)
    return res


def _summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"mean": float("nan"), "p99": float("nan"), "std": float("nan")}
    return {"mean": float(a.mean()), "p99": float(np.percentile(a, 99)), "std": float(a.std())}


def bench_scans(kitti_root: Path) -> list[np.ndarray]:
    from ...kitti.labels import read_velodyne_bin

    files = sorted(kitti_root.glob("raw/**/velodyne_points/data/*.bin")) + \
        sorted(kitti_root.glob("object/training/velodyne/*.bin")) + \
        sorted(kitti_root.glob("object_reduced/training/velodyne_reduced/*.bin"))
    return [read_velodyne_bin(f) for f in files]


def run_bench(model: str = "squeezesegv2", weights: str = "", frames: int = 16, fov: str = "front",
              threads: int = 1, kitti_root: Path | None = None, progress: bool = True,
              backend: str = "torch") -> dict:
    from tqdm import tqdm

    from ...paths import kitti_real_dir
    from ...segmentation.clustering import dbscan_fast, dbscan_sklearn

    torch.set_num_threads(max(threads, 1))
    scans = bench_scans(kitti_root or kitti_real_dir())
    if not scans:
        raise FileNotFoundError("no Velodyne scans found for the benchmark")
    pl = SegmentationPipeline(model, backend=backend, weights=weights, fov=fov, crf=True, clustering="fast",
                              num_threads=threads)
    times: dict[str, list[float]] = {s: [] for s in STAGES}
    times["total"] = []
    db = {"sklearn": [], "fast": [], "points": [], "identical": True, "frame_sklearn": [], "frame_fast": [],
          "frame_sklearn_cpu": [], "frame_fast_cpu": []}
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
        fr = {"sklearn": 0.0, "fast": 0.0, "sklearn_cpu": 0.0, "fast_cpu": 0.0}
        for c in (1, 2, 3):
            sel = res.labels == c
            if sel.sum() < pl.cluster_min_points:
                continue
            xyz = pts[sel, :3]
            t0, c0 = time.perf_counter(), time.process_time()
            ref = dbscan_sklearn(xyz, pl.cluster_eps, pl.cluster_min_points)
            t1, c1 = time.perf_counter(), time.process_time()
            fast = dbscan_fast(xyz, pl.cluster_eps, pl.cluster_min_points)
            t2, c2 = time.perf_counter(), time.process_time()
            db["sklearn"].append((t1 - t0) * 1e3)
            db["fast"].append((t2 - t1) * 1e3)
            fr["sklearn"] += (t1 - t0) * 1e3
            fr["fast"] += (t2 - t1) * 1e3
            fr["sklearn_cpu"] += (c1 - c0) * 1e3
            fr["fast_cpu"] += (c2 - c1) * 1e3
            db["points"].append(int(sel.sum()))
            db["identical"] &= bool(np.array_equal(ref, fast))
        for k, v in fr.items():
            db[f"frame_{k}"].append(v)
    # CRF, new vs reference: the front view (64 x 512) and the full view (64 x 2048, the four
    # rotated tiles of the first scan side by side), logits from the network.
    from ...segmentation.pipeline import project_tiles

    crf_cmp = {}
    projs, _ = project_tiles(scans[0][:, :4].astype(np.float32), "full")
    tiles = pl.network_input(projs)
    tile_logits = pl.run_network(tiles)
    crf_cmp["64x512"] = crf_side_by_side(pl.crf, tile_logits[:1], tiles[:1], repeats=10)
    wide = np.concatenate(list(tiles), axis=-1)[None]
    wide_logits = np.concatenate(list(tile_logits), axis=-1)[None]
    crf_cmp["64x2048"] = crf_side_by_side(pl.crf, wide_logits, wide, repeats=5)
    sample = torch.zeros((1, *pl.spec.input_shape))
    sample[:, 4] = 10.0
    macs = count_macs(pl.spec.build().eval(), sample)
    crf = crf_macs(4, 64, 512, pl.crf.window, pl.crf.iterations)
    peak = peak_flops()
    int8 = {}
    if backend == "onnxruntime-int8":  # the int8 network against the int8 bound (u8 x s8 GEMM peak)
        from ..detection.bench import PEAK_N, ort_int8_matmul_runner

        run = ort_int8_matmul_runner(PEAK_N, threads)
        run()
        best = min(_timed(run) for _ in range(10))
        int8_peak = 2.0 * PEAK_N ** 3 / best
        bound = 2.0 * macs * (1 if fov == "front" else 4) / int8_peak * 1e3
        net = float(np.mean(times["network"]))
        int8 = {"int8_peak_gops": int8_peak / 1e9, "network_int8_bound_ms": bound,
                "network_ratio_to_int8_bound": net / bound}
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
        "crf_bound_ms": bound_crf_ms, "crf_ratio_to_bound": crf_ms / bound_crf_ms, **int8,
        "load_average": list(os.getloadavg()),
        "crf_compare": crf_cmp,
        "dbscan": {"sklearn_ms": _summary(db["sklearn"]), "fast_ms": _summary(db["fast"]),
                   "frame_sklearn_ms": _summary(db["frame_sklearn"]), "frame_fast_ms": _summary(db["frame_fast"]),
                   "frame_sklearn_cpu_ms": _summary(db["frame_sklearn_cpu"]),
                   "frame_fast_cpu_ms": _summary(db["frame_fast_cpu"]),
                   "calls": len(db["fast"]), "mean_points": float(np.mean(db["points"])) if db["points"] else 0.0,
                   "speedup_mean": (float(np.mean(db["sklearn"])) / max(float(np.mean(db["fast"])), 1e-9))
                   if db["fast"] else float("nan"),
                   "identical_labels": db["identical"]},
    }


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def format_bench(r: dict) -> str:
    lines = [f"SqueezeSeg pipeline benchmark: model {r['model']}, backend {r['backend']}, fov {r['fov']}, {r['threads']} thread(s), "
             f"{r['frames']} frames (real KITTI scans, {r['points_per_frame']:.0f} points on average)",
             f"{'stage':12s} {'mean ms':>9s} {'p99 ms':>9s} {'std ms':>9s}"]
    for k, v in r["stages_ms"].items():
        lines.append(f"{k:12s} {v['mean']:9.2f} {v['p99']:9.2f} {v['std']:9.2f}")
    lines.append(f"network: {r['network_gmacs']:.3f} GMAC/tile, peak {r['peak_gflops']:.1f} GFLOP/s (fp32 matmul) -> "
                 f"bound {r['network_bound_ms']:.2f} ms, measured/bound = {r['network_ratio_to_bound']:.1f}x")
    if "network_int8_bound_ms" in r:
        lines.append(f"network int8: peak {r['int8_peak_gops']:.1f} GOP/s (u8 x s8 MatMulInteger) -> int8 bound "
                     f"{r['network_int8_bound_ms']:.2f} ms, measured/bound = {r['network_ratio_to_int8_bound']:.1f}x")
    lines.append(f"crf: {r['crf_gmacs']:.4f} GMAC/tile -> bound {r['crf_bound_ms']:.3f} ms, "
                 f"measured/bound = {r['crf_ratio_to_bound']:.1f}x")
    d = r["dbscan"]
    lines.append(f"DBSCAN over {d['calls']} per-class calls ({d['mean_points']:.0f} points on average): "
                 f"sklearn {d['sklearn_ms']['mean']:.2f} ms (std {d['sklearn_ms']['std']:.2f}), "
                 f"fast {d['fast_ms']['mean']:.2f} ms (std {d['fast_ms']['std']:.2f}), "
                 f"sklearn/fast = {d['speedup_mean']:.2f}x, identical labels: {d['identical_labels']}")
    lines.append(f"DBSCAN per frame (all classes), wall mean/p99: sklearn {d['frame_sklearn_ms']['mean']:.2f}/"
                 f"{d['frame_sklearn_ms']['p99']:.2f} ms, fast {d['frame_fast_ms']['mean']:.2f}/{d['frame_fast_ms']['p99']:.2f} ms; "
                 f"CPU mean/p99: sklearn {d['frame_sklearn_cpu_ms']['mean']:.2f}/{d['frame_sklearn_cpu_ms']['p99']:.2f} ms, "
                 f"fast {d['frame_fast_cpu_ms']['mean']:.2f}/{d['frame_fast_cpu_ms']['p99']:.2f} ms")
    for view, c in r.get("crf_compare", {}).items():
        line = (f"CRF {view} {c['shape']}: new median {c['new']['wall_median_ms']:.2f} ms wall, "
                f"{c['new']['cpu_median_ms']:.2f} ms CPU")
        if "reference" in c:
            line += (f"; unfold reference {c['reference']['wall_median_ms']:.2f} ms wall, "
                     f"{c['reference']['cpu_median_ms']:.2f} ms CPU; reference/new = {c['speedup_wall_median']:.2f}x wall, "
                     f"{c['speedup_cpu_median']:.2f}x CPU; max |diff| {c['max_abs_diff']:.1e}, same labels {c['same_labels']}")
        lines.append(line)
    la = r.get("load_average")
    if la:
        lines.append(f"load average at the end: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    return "\n".join(lines)


def quick_bench(frames: int = 4, model: str = "squeezesegv2", backend: str = "onnxruntime") -> str:
    """The CRF and DBSCAN comparisons alone (< 1 min on a quiet core; the full `seg bench` also
    times the network and box fit): `python -m squeeze_perception.offline.segmentation.bench`."""
    from ...paths import kitti_real_dir
    from ...segmentation.clustering import dbscan_fast, dbscan_sklearn
    from ...segmentation.pipeline import project_tiles

    torch.set_num_threads(1)
    scans = bench_scans(kitti_real_dir())[:frames]
    pl = SegmentationPipeline(model, backend=backend, fov="front", crf=True, num_threads=1)
    lines = []
    projs, _ = project_tiles(scans[0][:, :4].astype(np.float32), "full")
    tiles = pl.network_input(projs)
    logits = pl.run_network(tiles)
    views = {"64x512": (logits[:1], tiles[:1]),
             "64x2048": (np.concatenate(list(logits), -1)[None], np.concatenate(list(tiles), -1)[None])}
    for view, (lg, x) in views.items():
        c = crf_side_by_side(pl.crf, lg, x, repeats=10 if view == "64x512" else 5)
        lines.append(f"CRF {view}: new {c['new']['wall_median_ms']:.2f} ms wall / {c['new']['cpu_median_ms']:.2f} ms CPU"
                     + (f"; unfold reference {c['reference']['wall_median_ms']:.2f} / {c['reference']['cpu_median_ms']:.2f}"
                        f" ms; reference/new {c['speedup_wall_median']:.2f}x wall, {c['speedup_cpu_median']:.2f}x CPU;"
                        f" max |diff| {c['max_abs_diff']:.1e}, same labels {c['same_labels']}" if "reference" in c else ""))
    per_frame = {"sklearn": [], "fast": []}
    identical = True
    for pts in scans:
        res = pl.process(pts)
        cpu = {"sklearn": 0.0, "fast": 0.0}
        for c in (1, 2, 3):
            sel = res.labels == c
            if sel.sum() < pl.cluster_min_points:
                continue
            xyz = pts[sel, :3]
            out = {}
            for name, fn in (("sklearn", dbscan_sklearn), ("fast", dbscan_fast)):
                c0 = time.process_time()
                out[name] = fn(xyz, pl.cluster_eps, pl.cluster_min_points)
                cpu[name] += (time.process_time() - c0) * 1e3
            identical &= bool(np.array_equal(out["sklearn"], out["fast"]))
        for k in cpu:
            per_frame[k].append(cpu[k])
    s, f = _summary(per_frame["sklearn"]), _summary(per_frame["fast"])
    lines.append(f"DBSCAN per frame (all classes, {len(scans)} real scans), CPU ms mean/p99/max: sklearn {s['mean']:.1f}/"
                 f"{s['p99']:.1f}/{max(per_frame['sklearn']):.1f}, fast {f['mean']:.1f}/{f['p99']:.1f}/"
                 f"{max(per_frame['fast']):.1f}; sklearn/fast {s['mean'] / max(f['mean'], 1e-9):.2f}x; "
                 f"identical labels {identical}")
    la = os.getloadavg()
    lines.append(f"load average: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(quick_bench(frames=int(sys.argv[1]) if len(sys.argv) > 1 else 4))


# ---------------------------------------------------------------------------------------------
# Training throughput (issue 10): forward + backward + optimiser step per scan, per variant.

SEG_TRAIN_VARIANTS = ("fp32", "channels_last", "bf16", "bf16+channels_last")


def train_throughput(arch: str = "squeezesegv2", batch_size: int = 8, width: int = 512, repeats: int = 3,
                     threads: int = 2, variants=SEG_TRAIN_VARIANTS, crf: bool = True, progress=None) -> dict:
    """Milliseconds per scan of one `seg train` step (the same `segment_logits` + focal loss +
    backward + Adam step) for each precision / layout variant, interleaved round by round so a
    drifting machine load hits every variant alike; plus each variant's loss on the same batch
    in fp32, so a variant that changes the numbers shows it (``loss_vs_fp32``)."""
    from ...segmentation import constants as K
    from .losses import focal_loss
    from .train import build_arch, segment_logits

    torch.set_num_threads(threads)
    say = progress or (lambda msg: None)
    rng = np.random.default_rng(0)
    grid = np.zeros((batch_size, 6, K.GRID_HEIGHT, width), np.float32)
    grid[:, :3] = rng.normal(0.0, 10.0, (batch_size, 3, K.GRID_HEIGHT, width))
    grid[:, 3] = rng.uniform(0.0, 1.0, (batch_size, K.GRID_HEIGHT, width))
    grid[:, 4] = np.linalg.norm(grid[:, :3], axis=1)
    grid[:, 5] = 1.0
    x = torch.from_numpy(grid)
    y = torch.from_numpy(rng.integers(0, 4, (batch_size, K.GRID_HEIGHT, width)))
    valid = torch.ones(batch_size, K.GRID_HEIGHT, width)
    weights = torch.tensor(K.CLASS_LOSS_WEIGHTS)
    runners, first_loss = {}, {}
    for variant in variants:
        torch.manual_seed(0)
        model = build_arch(arch).train()
        channels_last, precision = "channels_last" in variant, "bf16" if variant.startswith("bf16") else "fp32"
        if channels_last:
            model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def run(model=model, opt=opt, cl=channels_last, prec=precision):
            logits = segment_logits(model, x, crf, prec, cl)
            loss = focal_loss(logits, y, valid, class_weights=weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return float(loss)

        say(f"warming up {variant}")
        first_loss[variant] = run()  # same seed, same batch: the variants' first losses are comparable
        runners[variant] = run
    times = {k: [] for k in runners}
    for r in range(repeats):
        say(f"round {r + 1}/{repeats}")
        for k, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3 / batch_size)
    rows = []
    for k, ts in times.items():
        ms = float(np.median(ts))
        rows.append({"variant": k, "ms_per_scan": ms, "scans_per_hour": 3.6e6 / ms,
                     "speedup_vs_fp32": (float(np.median(times["fp32"])) / ms) if "fp32" in times else None,
                     "loss_vs_fp32": first_loss[k] - first_loss.get("fp32", first_loss[k])})
    return {"arch": arch, "input": [K.GRID_HEIGHT, width], "batch_size": batch_size, "threads": threads,
            "crf": crf, "repeats": repeats, "rows": rows, "load_average": os.getloadavg()[0]}


def format_train_throughput(r: dict) -> str:
    lines = [f"{r['arch']} training step, input {r['input'][0]}x{r['input'][1]}, batch {r['batch_size']}, "
             f"{r['threads']} threads, CRF {'on' if r['crf'] else 'off'}, median of {r['repeats']} rounds, "
             f"load average {r['load_average']:.1f}",
             "| variant | ms / scan | scans / hour | speed-up vs fp32 | first-step loss - fp32's |",
             "|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['variant']} | {row['ms_per_scan']:.0f} | {row['scans_per_hour']:,.0f} | "
                     f"{row['speedup_vs_fp32'] or float('nan'):.2f}x | {row['loss_vs_fp32']:+.2e} |")
    return "\n".join(lines)
