"""`squeeze-perception det anchors|train|eval|bench|stats`."""
from __future__ import annotations

import argparse
import os
import json
import sys
import time
from pathlib import Path

import numpy as np

from ...paths import kitti_real_dir, models_dir, project_root
from ..jsonsafe import json_safe  # noqa: F401 - also imported from here by callers
from ..training import PRECISIONS
from .style import METHODS as STYLE_METHODS

SYNTH = project_root() / "data" / "synth" / "object"


def _cmd_stats(args) -> int:
    from .stats import THESIS_TABLE_3_4, model_stats

    rows = []
    print(f"{'model':18s} {'input':>10s} {'grid':>7s} {'boxes':>6s} {'params':>9s} {'MB':>6s} {'(thesis)':>8s} "
          f"{'GMACs':>6s} {'GFLOPs':>7s} {'(thesis)':>8s} {'act MB':>7s} {'(thesis)':>8s}")
    for name in args.models:
        s = model_stats(name)
        t = THESIS_TABLE_3_4.get(name, {})
        rows.append({**s.as_dict(), "thesis": t})
        print(f"{name:18s} {s.input_shape[2]:>5d}x{s.input_shape[1]:<4d} {s.grid[0]:>3d}x{s.grid[1]:<3d} "
              f"{s.num_boxes:>6d} {s.params:>9d} {s.size_mb:6.2f} {t.get('size_mb', float('nan')):8.1f} "
              f"{s.macs / 1e9:6.2f} {s.gflops:7.2f} {t.get('gflops', float('nan')):8.1f} "
              f"{s.activation_mb:7.1f} {t.get('activation_mb', float('nan')):8.1f}")
    print("MB = float32 parameters in MiB; FLOPs = 2 x MACs of all convolutions, batch 1.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def _cmd_anchors(args) -> int:
    from ...detection.data import list_samples
    from ...detection.models import BASE_HEIGHT, BASE_WIDTH
    from .train import dataset_anchor_shapes

    samples = list_samples(args.train_dir)
    w, h = int(round(BASE_WIDTH * args.scale)), int(round(BASE_HEIGHT * args.scale))
    shapes, mean_iou, n = dataset_anchor_shapes(samples, w, h, k=args.k, seed=args.seed)
    print(f"{n} boxes from {len(samples)} images, input {w}x{h}, k={args.k}: mean best-anchor IoU {mean_iou:.3f}")
    for sw, sh in shapes:
        print(f"  w {sw:7.1f}  h {sh:7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"shapes": shapes.tolist(), "mean_iou": mean_iou, "n_boxes": n}))
    return 0


def _cmd_train(args) -> int:
    from ..training import config_from_args
    from .train import DetTrainConfig, train

    crop = args.crop or (args.crop_width, args.crop_height)  # --crop W H: the older spelling of both
    cfg = config_from_args(DetTrainConfig, args, crop_width=crop[0], crop_height=crop[1],
                           flip=not args.no_flip, batchnorm=not args.no_batchnorm, max_shift=tuple(args.max_shift))
    train(cfg)
    return 0


def _cmd_plot_train(args) -> int:
    from .train import plot_training_log

    plot_training_log(args.log, args.png)
    print(f"wrote {args.png}")
    return 0


def _cmd_plot_compare(args) -> int:
    from .train import plot_training_comparison

    logs = {}
    for item in args.logs:
        label, sep, path = item.partition("=")
        if not sep:
            label, path = Path(item).stem, item
        logs[label] = path
    plot_training_comparison(logs, args.out)
    print(f"wrote {args.out}")
    return 0


def _cmd_demo(args) -> int:
    from PIL import Image

    from ...detection.data import load_rgb
    from ...detection.decode import DecodeConfig
    from ...detection.inference import Detector
    from ...nodes.squeezedet_node import draw_detections

    det = Detector(args.model, args.backend, args.weights,
                   DecodeConfig(top_k=args.top_k, nms_iou=args.nms_iou, score_threshold=args.score_threshold))
    rows = []
    for path in args.images:
        rgb = load_rgb(path)
        pred = det.predict(rgb)
        rows.append(draw_detections(rgb, pred.detections))
        print(f"{path}: {len(pred.detections)} detections "
              + ", ".join(f"{d['class_id']}:{d['score']:.2f}" for d in pred.detections[:8]))
    width = max(r.shape[1] for r in rows)
    canvas = np.zeros((sum(r.shape[0] for r in rows), width, 3), np.uint8)
    y = 0
    for r in rows:
        canvas[y:y + r.shape[0], :r.shape[1]] = r
        y += r.shape[0]
    Image.fromarray(canvas).save(args.out)
    print(f"wrote {args.out}")
    return 0


def run_eval(model: str, weights: str | None, split_dirs: list[str], backend: str = "torch",
             top_k: int = 64, nms_iou: float = 0.4, limit: int = 0, progress: bool = True,
             protocol: str = "kitti-2019", write_results: str = "", align_lut: np.ndarray | None = None,
             per_object: bool = False) -> dict:
    """Evaluate a model on KITTI object split folders; returns AP tables and recall curve.
    write_results: also write each frame's detections as a KITTI result file DIR/<frame>.txt
    (score them again, or with the official devkit, through `det eval --results DIR`).
    align_lut: every image goes through this style.py table first (test-time style alignment).
    per_object: also result["per_object"] = {frame: evaluation.object_matches rows}."""
    from tqdm import tqdm

    from ...detection.data import list_samples, load_rgb
    from ...detection.decode import DecodeConfig
    from ...detection.inference import Detector
    from .evaluation import evaluate, first_match_rank, object_matches, recall_vs_nbox, write_result_file
    from .style import apply_lut

    det = Detector(model, backend, weights, DecodeConfig(top_k=top_k, nms_iou=nms_iou))
    samples = [s for d in split_dirs for s in list_samples(d)]
    if limit:
        samples = samples[:limit]
    if write_results:
        Path(write_results).mkdir(parents=True, exist_ok=True)
    dets, labels, ranks, latencies, matches = [], [], [], [], {}
    for s in tqdm(samples, desc=f"eval {model}", disable=not progress):
        rgb = load_rgb(s.image_path)
        pred = det.predict(rgb if align_lut is None else apply_lut(rgb, align_lut))
        labs = s.labels()
        dets.append(pred.detections)
        labels.append(labs)
        ranks.append(first_match_rank(pred.raw, labs)[0])
        if per_object:
            matches[s.name] = object_matches(pred.detections, pred.raw, labs)
        if write_results:
            write_result_file(Path(write_results) / f"{s.name}.txt", pred.detections)
        if pred.latency_ms is not None:
            latencies.append(pred.latency_ms)
    result = evaluate(dets, labels, protocol)
    n_max = len(pred.raw) if samples else 0
    n_values = sorted({n for n in (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, n_max) if n <= n_max})
    result["recall_vs_nbox"] = {"n_box": n_values, "recall": recall_vs_nbox(ranks, n_values).tolist()}
    result["images"] = len(samples)
    result["model"], result["backend"], result["splits"] = model, backend, split_dirs
    result["weights"] = str(det.backend.weights_path) if hasattr(det.backend, "weights_path") else weights
    result["median_latency_ms"] = float(np.median(latencies)) if latencies else None
    result["decode"] = {"top_k": top_k, "nms_iou": nms_iou}
    result["align_lut"] = None if align_lut is None else np.asarray(align_lut).tolist()
    if per_object:
        result["per_object"] = matches
    return result


def test_time_alignment(align_images: list[str], train_dir: str, method: str, limit: int = 400) -> np.ndarray:
    """The style.py table that maps images like `align_images` (unlabelled target-camera PNGs)
    onto the statistics of the first `limit` training images."""
    from ...detection.data import load_rgb
    from .adapt import list_images
    from .style import fit_lut, histograms

    target = histograms((load_rgb(p) for p in list_images([train_dir])[:limit]), method)
    source = histograms((load_rgb(p) for p in list_images(align_images)), method)
    return fit_lut(source, target, method)


def score_results(results_dir: str, split_dirs: list[str], protocol: str = "kitti-2019", limit: int = 0) -> dict:
    """Score KITTI result files (results_dir/<frame>.txt, label_2 lines + score) against the
    label_2 files of the splits, without running a model. Every labelled frame needs a result
    file (an empty file means no detections), as the devkit requires."""
    from ...kitti.labels import read_labels
    from .evaluation import evaluate, read_result_file

    frames = [lp for d in split_dirs for lp in sorted((Path(d) / "label_2").glob("*.txt"))]
    if not frames:
        raise FileNotFoundError(f"no label_2/*.txt in {', '.join(split_dirs)}")
    if limit:
        frames = frames[:limit]
    missing = [lp.stem for lp in frames if not (Path(results_dir) / lp.name).exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(frames)} frames have no result file in {results_dir} "
                                f"(first: {', '.join(missing[:5])}); write an empty file for a frame without detections")
    dets = [read_result_file(Path(results_dir) / lp.name) for lp in frames]
    result = evaluate(dets, [read_labels(lp) for lp in frames], protocol)
    result["images"] = len(frames)
    result["results"], result["splits"] = str(results_dir), split_dirs
    return result


def _plot_recall(results: dict[str, dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, r in results.items():
        rv = r["recall_vs_nbox"]
        ax.plot(rv["n_box"], rv["recall"], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("N_box kept per image (by confidence)")
    ax.set_ylabel("overall recall (all classes, easy..hard)")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.axvline(64, color="grey", ls="--", lw=0.8)
    ax.legend(fontsize=8)
    ax.set_title("Recall vs N_box (cf. thesis Fig. 3.5)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_ap(result: dict, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .evaluation import DIFFICULTIES

    classes = list(result["per_class"])
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, d in enumerate(DIFFICULTIES):
        vals = [result["per_class"][c][d]["ap"] for c in classes]
        ax.bar(x + (i - 1) * 0.27, [0.0 if v is None else v for v in vals], width=0.27, label=d)
    ax.set_xticks(x, classes)
    ax.set_ylabel(f"AP ({result['protocol']}, %)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cmd_eval(args) -> int:
    from .evaluation import format_table

    splits = args.split or [str(SYNTH / "testing")]
    if args.results:
        result = score_results(args.results, splits, args.protocol, args.limit)
        print(f"{result['images']} frames: result files {args.results} against {', '.join(splits)}")
    else:
        lut = (test_time_alignment(args.align_images, str(Path(args.align_train_dir) / "image_2"), args.align_method)
               if args.align_images else None)
        result = run_eval(args.model, args.weights, splits, args.backend, args.top_k, args.nms_iou, args.limit,
                          protocol=args.protocol, write_results=args.write_results, align_lut=lut,
                          per_object=args.per_object)
        if lut is not None:
            print(f"test-time {args.align_method} alignment: {', '.join(args.align_images)} -> {args.align_train_dir}")
        print(f"{result['images']} images from {', '.join(splits)} ({args.model}, {args.backend})")
    print(format_table(result))
    if result.get("per_object"):
        from .evaluation import format_object_matches
        print(format_object_matches(result["per_object"]))
    if "recall_vs_nbox" in result:
        rv = result["recall_vs_nbox"]
        print("recall vs N_box: " + ", ".join(f"{n}:{r:.3f}" for n, r in zip(rv["n_box"], rv["recall"])))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(json_safe(result), indent=2, allow_nan=False))
        print(f"wrote {args.json}")
    if args.plot_prefix and not args.results:
        prefix = Path(args.plot_prefix)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        _plot_recall({args.model: result}, prefix.with_name(prefix.name + "_recall_nbox.png"))
        _plot_ap(result, prefix.with_name(prefix.name + "_ap.png"), f"{args.model}: {result['images']} images")
        print(f"wrote {prefix}_recall_nbox.png, {prefix}_ap.png")
    return 0


def _cmd_bench(args) -> int:
    from rich.console import Console

    from .bench import bench

    console = Console(stderr=True)
    rows = []
    for name in args.models:
        with console.status(f"{name}") as status:  # progress on stderr
            r = bench(name, repeats=args.repeats, threads=args.threads, onnx=not args.no_onnx,
                      progress=lambda msg, n=name: status.update(f"{n}: {msg}"), int8=not args.no_int8,
                      int8_variants=_int8_variants(args))
        rows.append(r.as_dict())
        ort = "-" if r.onnxruntime_ms is None else f"{r.onnxruntime_ms:9.1f} ms  x{r.onnxruntime_ratio:5.2f}"
        print(f"{name:18s} threads {r.threads}  GMACs {r.macs / 1e9:6.2f}  peak {r.peak_gflops:6.1f} GFLOP/s  "
              f"bound {r.bound_ms:7.1f} ms | torch {r.torch_ms:9.1f} ms  x{r.torch_ratio:5.2f} | onnxruntime {ort}")
        if r.int8_ms is not None:
            print(f"{'':18s} onnxruntime-int8 {r.int8_ms:9.1f} ms  x{r.int8_ratio:5.2f} of the int8 bound "
                  f"{r.int8_bound_ms:7.1f} ms (peak {r.int8_peak_gops:6.1f} GOP/s, u8 x s8 MatMulInteger); "
                  f"int8 / fp32 onnxruntime latency "
                  + ("-" if r.onnxruntime_ms is None else f"{r.int8_ms / r.onnxruntime_ms:.2f}"))
        elif not args.no_int8:
            print(f"{'':18s} onnxruntime-int8 not measured: {r.int8_skipped}")
        for label, ms in (r.int8_variants_ms or {}).items():
            print(f"{'':18s} int8 {label:34s} {ms:9.1f} ms  x{ms / r.int8_bound_ms:5.2f} of the int8 bound"
                  + ("" if r.onnxruntime_ms is None else f"; / fp32 {ms / r.onnxruntime_ms:.2f}"))
    print(f"batch 1, median of {args.repeats} interleaved rounds; ratio = latency / (2 x MACs / peak), peak = best "
          f"1024^3 fp32 matmul (torch or ORT) with the same threads; 1-min load average {rows[-1]['load_average']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def _int8_variants(args) -> dict[str, tuple]:
    """--int8-file / --int8-config of det bench and det profile: label -> (file, session config)."""
    variants: dict[str, tuple] = {}
    for path in args.int8_file or ():
        variants[Path(path).stem] = (path, None)
    for entry in args.int8_config or ():
        key, _, value = entry.partition("=")
        variants[entry] = (None, {key: value})
    return variants


def _cmd_profile(args) -> int:
    from ...backends import OnnxRuntimeInt8Backend, int8_path_for
    from ...registry import get_model
    from ..quantize import ensure_fp32_onnx
    from .bench import op_profile

    spec = get_model(args.model, task="detection")
    graphs = {"fp32": (ensure_fp32_onnx(spec, spec.weights_path()), {})}
    if not args.no_int8:
        graphs["int8"] = (int8_path_for(spec.weights_path()), {})
    for label, (path, config) in _int8_variants(args).items():
        graphs[label] = (path or int8_path_for(spec.weights_path()), config or {})
    results = {}
    for label, (path, config) in graphs.items():
        # int8 graphs run as the backend runs them: its session config, then the variant's
        full = config if label == "fp32" else {**OnnxRuntimeInt8Backend.session_config, **config}
        results[label] = {"file": str(path), "config": full,
                          **op_profile(path, threads=args.threads, runs=args.runs, config=full,
                                       input_shape=spec.input_shape)}
    ops = sorted({op for r in results.values() for op in r["ops"]},
                 key=lambda op: -max(r["ops"].get(op, 0.0) for r in results.values()))
    labels = list(results)
    print(f"{args.model}: ms per run by operator type (ORT profiler, {args.threads} thread(s), "
          f"{args.runs} runs after 2 warm-up; nodes after ORT's optimisation)")
    print(f"{'op type':24s}" + "".join(f"{label[:22]:>24s}" for label in labels))
    for op in ops:
        print(f"{op:24s}" + "".join(
            f"{results[label]['ops'].get(op, 0.0):15.2f} ({results[label]['nodes'].get(op, 0):3d} n)"
            if op in results[label]["ops"] else f"{'-':>24s}" for label in labels))
    print(f"{'sum of kernels':24s}" + "".join(f"{results[label]['kernel_ms']:24.2f}" for label in labels))
    print(f"{'model_run (median)':24s}" + "".join(f"{results[label]['run_ms']:24.2f}" for label in labels))
    print(f"1-min load average {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}")
    return 0


def _cmd_train_bench(args) -> int:
    from rich.console import Console

    from .bench import TRAIN_VARIANTS, train_throughput

    console = Console(stderr=True)
    variants = args.variants or list(TRAIN_VARIANTS)
    with console.status(args.model) as status:
        r = train_throughput(args.model, batch_size=args.batch_size, width=args.input[0], height=args.input[1],
                             repeats=args.repeats, threads=args.threads, variants=variants,
                             progress=lambda msg: status.update(f"{args.model}: {msg}"))
    print(f"{r['model']} {r['input'][0]}x{r['input'][1]}, batch {r['batch_size']}, {r['threads']} threads: "
          f"forward {r['forward_gflops_per_image']:.2f} GFLOP/image; peak fp32 {r['peak_gflops']['fp32']:.0f}, "
          f"bf16 {r['peak_gflops']['bf16']:.0f} GFLOP/s")
    print(f"{'variant':28s} {'ms/image':>9s} {'images/s':>9s} {'bound ms':>9s} {'of bound':>9s}")
    for row in r["rows"]:
        print(f"{row['variant']:28s} {row['ms_per_image']:9.1f} {row['images_per_s']:9.2f} {row['bound_ms']:9.1f} "
              f"{row['ratio_to_bound']:9.2f}")
    print(f"forward + backward + SGD step per image, median of {r['repeats']} interleaved rounds; bound = "
          f"3 x forward FLOPs / peak of the variant's precision; 1-min load average {r['load_average']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0


def _cmd_adapt(args) -> int:
    import torch
    from tqdm import tqdm

    from ...detection.models import fold_batchnorm
    from .adapt import adapt_batchnorm, list_images, load_training_checkpoint

    module, spec, ck = load_training_checkpoint(args.checkpoint)
    images = list_images(args.images)
    bar = tqdm(total=args.passes * -(-len(images) // args.batch_size), desc="AdaBN")
    info = adapt_batchnorm(module, images, passes=args.passes, batch_size=args.batch_size, mix=args.mix,
                           progress=lambda n: bar.update(1))
    bar.close()
    meta = {"steps": ck.get("step"), "config": ck.get("config"), "anchors": ck.get("anchor_info", {}),
            "adaptation": {**info, "image_folders": args.images, "source_checkpoint": str(args.checkpoint)},
            "saved_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": fold_batchnorm(module), "model": spec.name, "meta": meta}, args.out)
    print(f"adapted {info['bn_layers']} batch-norm layers on {len(images)} unlabelled images "
          f"({info['batches']} batches, {info['seconds']} s); weights {args.out}")
    return 0


def _cmd_overfit(args) -> int:
    """Prove the learning path: memorise N frames, then score them with the KITTI evaluation."""
    import shutil

    from .train import DetTrainConfig, evaluate_module, moderate_count, perfect_detector_ap, select_overfit_frames, train

    frames = select_overfit_frames(args.split, args.frames)
    work = Path(args.out_dir)
    for sub in ("image_2", "label_2"):
        (work / "frames" / sub).mkdir(parents=True, exist_ok=True)
    for s in frames:
        shutil.copy(s.image_path, work / "frames" / "image_2" / s.image_path.name)
        shutil.copy(s.label_path, work / "frames" / "label_2" / s.label_path.name)
    n_cars = sum(moderate_count(s.labels()) for s in frames)
    print(f"{len(frames)} frames ({', '.join(s.name for s in frames)}) with {n_cars} moderate cars")
    ceiling = perfect_detector_ap(frames)
    print(f"ceiling on these frames: the true boxes themselves, through the decoder's NMS (0.4), score car "
          f"AP(moderate) {ceiling['per_class']['car']['moderate']['ap']:.1f} ({ceiling['suppressed']} true boxes "
          "suppressed by a taller overlapping one)")
    cfg = DetTrainConfig(arch=args.model, data=str(work / "frames"), out=str(work / "overfit.pt"), steps=args.steps,
                         batch_size=args.batch_size, optimizer="adam", lr=args.lr, lr_decay_steps=args.lr_decay_steps,
                         max_shift=(0, 0), flip=False,
                         photometric=0.0, dropout=0.0, threads=args.threads, device=args.device,
                         loader_workers=args.loader_workers, precision=args.precision,
                         channels_last=args.channels_last, checkpoint_every=100, resume=args.resume,
                         eval_dir=str(work / "frames"), eval_every=args.eval_every, eval_limit=len(frames),
                         eval_precision="fp32", stop_at_car_ap=args.target if args.until_target else 0.0)
    run = train(cfg)
    from .adapt import load_training_checkpoint

    module, _, _ = load_training_checkpoint(work / "overfit.ckpt", args.model)
    ev = evaluate_module(module, frames, precision="fp32")
    ok = ev["car_moderate_ap40"] is not None and ev["car_moderate_ap40"] >= args.target
    print(f"car AP(moderate, kitti-2019 40-point) on the training frames: {ev['car_moderate_ap40']:.1f} "
          f"(target {args.target:.0f}) after {run['steps']} steps (stopped by {run['stopped_by']}); "
          f"recall@64 {ev['recall_at_64']:.2f} -> {'PASS' if ok else 'FAIL'}")
    (work / "overfit_result.json").write_text(json.dumps({**ev, "frames": [s.name for s in frames],
                                                          "moderate_cars": n_cars, "steps": run["steps"],
                                                          "stopped_by": run["stopped_by"], "passed": ok}, indent=2))
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    from ..training import add_train_arguments
    from .train import DetTrainConfig  # the training defaults live in one place

    p = argparse.ArgumentParser(prog="squeeze-perception det", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    all_models = ["squeezedet", "squeezedet_0.75x", "squeezedet_1.5x", "squeezedet_plus"]

    s = sub.add_parser("stats", help="parameters, size, MACs/FLOPs, activations vs thesis Table 3.4")
    s.add_argument("--models", nargs="+", default=all_models)
    s.add_argument("--json", default="")
    s.set_defaults(func=_cmd_stats)

    a = sub.add_parser("anchors", help="k-means anchor shapes from training boxes")
    a.add_argument("--train-dir", default=str(SYNTH / "training"))
    a.add_argument("--k", type=int, default=9)
    a.add_argument("--scale", type=float, default=1.0)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--json", default="")
    a.set_defaults(func=_cmd_anchors)

    t = sub.add_parser("train", help="train on a KITTI-object folder (resumable)")
    # The shared training flags (offline/training.py); --model and --train-dir are their older names here.
    add_train_arguments(t, DetTrainConfig(steps=20000), aliases={"--arch": ("--model",), "--data": ("--train-dir",)},
                        help_={"--arch": "registered detection model",
                               "--data": "KITTI object folder (image_2, label_2)"})
    t.set_defaults(data=str(SYNTH / "training"))
    t.add_argument("--lr-decay-steps", type=int, default=DetTrainConfig.lr_decay_steps)
    t.add_argument("--weight-decay", type=float, default=DetTrainConfig.weight_decay)
    t.add_argument("--clip-grad-norm", type=float, default=DetTrainConfig.clip_grad_norm)
    t.add_argument("--warmup-steps", type=int, default=DetTrainConfig.warmup_steps)
    t.add_argument("--crop-height", type=int, default=DetTrainConfig.crop_height,
                   help="with --crop-width: random crops of the model-size image (0: full height)")
    t.add_argument("--crop", type=int, nargs=2, default=None, metavar=("W", "H"),
                   help="train on random W x H crops of the model-size image (0 0 = full size)")
    t.add_argument("--compile", action="store_true", help="torch.compile the forward pass")
    t.add_argument("--no-flip", action="store_true", help="no horizontal flip (overfit checks)")
    t.add_argument("--no-batchnorm", action="store_true",
                   help="train without batch norm (by default BN is used while training and folded on save)")
    t.add_argument("--positive-iou", type=float, default=DetTrainConfig.positive_iou,
                   help="anchors overlapping an object by this IoU are positives too (0: the thesis's single "
                        "responsible anchor; see detection/loss.py build_targets)")
    t.add_argument("--photometric", type=float, default=DetTrainConfig.photometric,
                   help="strength of the random exposure/colour/blur/noise augmentation (0: off)")
    t.add_argument("--max-shift", type=int, nargs=2, default=DetTrainConfig.max_shift, metavar=("DX", "DY"),
                   help="random crop shift in pixels (0 0: no shift)")
    t.add_argument("--eval-dir", default="", help="labelled split for the held-out AP curve")
    t.add_argument("--eval-every", type=int, default=0, help="steps between held-out evaluations (0: never)")
    t.add_argument("--eval-limit", type=int, default=50, help="frames of --eval-dir evaluated")
    t.add_argument("--style-images", nargs="+", default=[], metavar="DIR",
                   help="folders of unlabelled target-camera PNGs: training crops take on their luminance "
                        "histograms (style alignment, unsupervised adaptation; labels never read)")
    t.add_argument("--style-probability", type=float, default=DetTrainConfig.style_probability,
                   help="share of training crops matched to a --style-images histogram")
    t.add_argument("--random-conv", type=float, default=DetTrainConfig.random_conv, metavar="P",
                   help="share of training images passed through a random 3->3 convolution mixed with the "
                        "original (RandConv, Xu et al. 2021; offline/detection/randconv.py); 0 = off")
    t.add_argument("--real-bn-mix", type=int, default=DetTrainConfig.real_bn_mix, metavar="N",
                   help="append N unlabelled --real-bn-images crops to every batch: batch norm normalises both "
                        "domains together, the loss sees only the synthetic images (for `det adapt` after); 0 = off")
    t.add_argument("--real-bn-images", nargs="+", default=[], metavar="DIR",
                   help="folders of unlabelled target-camera PNGs for --real-bn-mix (labels never read)")
    t.set_defaults(func=_cmd_train)

    pt = sub.add_parser("plot-train", help="plot the loss curves of a training log (JSON lines)")
    pt.add_argument("log")
    pt.add_argument("png")
    pt.set_defaults(func=_cmd_plot_train)

    pc = sub.add_parser("plot-compare", help="several training logs on one figure (loss, held-out AP)")
    pc.add_argument("logs", nargs="+", metavar="LABEL=LOG", help="training logs (JSON lines), each optionally labelled")
    pc.add_argument("--out", required=True, help="PNG to write")
    pc.set_defaults(func=_cmd_plot_compare)

    e = sub.add_parser("eval", help="KITTI 2D AP as the KITTI object devkit computes it, and recall vs N_box")
    e.add_argument("--model", default="squeezedet")
    e.add_argument("--weights", default=None, help="checkpoint (default: the model's), or with --backend "
                   "onnxruntime-int8 an int8 .onnx file to run instead of models/<model>.int8.onnx")
    e.add_argument("--backend", default="torch")
    e.add_argument("--split", action="append", help="KITTI object split folder(s) (repeatable); "
                   f"'real' = {kitti_real_dir()}/object*/training")
    e.add_argument("--protocol", choices=("kitti-2012", "kitti-2019"), default="kitti-2019",
                   help="kitti-2019: the devkit since 2019 (40-point AP, detections under the level's minimum "
                        "height ignored); kitti-2012: the devkit of the thesis's tables (11-point AP, small "
                        "unmatched detections are false positives)")
    e.add_argument("--results", default="", metavar="DIR",
                   help="score KITTI result files DIR/<frame>.txt (label_2 lines + score) instead of running a model")
    e.add_argument("--write-results", default="", metavar="DIR",
                   help="also write the model's detections as KITTI result files DIR/<frame>.txt")
    e.add_argument("--top-k", type=int, default=64)
    e.add_argument("--nms-iou", type=float, default=0.4)
    e.add_argument("--limit", type=int, default=0)
    e.add_argument("--json", default="", help="write the result as JSON (null where a value is undefined)")
    e.add_argument("--align-images", nargs="+", default=[], metavar="DIR",
                   help="test-time style alignment: map every image from the statistics of these unlabelled "
                        "target-camera PNGs onto those of --align-train-dir (labels never read)")
    e.add_argument("--align-train-dir", default=str(SYNTH / "training"), help="training split the images are mapped onto")
    e.add_argument("--align-method", choices=STYLE_METHODS, default=STYLE_METHODS[0])
    e.add_argument("--plot-prefix", default="")
    e.add_argument("--per-object", action="store_true",
                   help="one line per true box: best IoU among the kept detections (rank, score) and among all raw "
                        "boxes, i.e. whether a miss is the regression's or NMS/top-k's")
    e.set_defaults(func=_cmd_eval)

    dm = sub.add_parser("demo", help="draw detections on images (stacked into one PNG)")
    dm.add_argument("images", nargs="+")
    dm.add_argument("--out", required=True)
    dm.add_argument("--model", default="squeezedet")
    dm.add_argument("--weights", default=None)
    dm.add_argument("--backend", default="torch")
    dm.add_argument("--top-k", type=int, default=64)
    dm.add_argument("--nms-iou", type=float, default=0.4)
    dm.add_argument("--score-threshold", type=float, default=0.3)
    dm.set_defaults(func=_cmd_demo)

    b = sub.add_parser("bench", help="batch-1 latency (torch, onnxruntime, onnxruntime-int8) vs the compute bound")
    b.add_argument("--models", nargs="+", default=["squeezedet"])
    b.add_argument("--repeats", type=int, default=10)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--no-onnx", action="store_true")
    b.add_argument("--no-int8", action="store_true", help="skip onnxruntime-int8 (models/<model>.int8.onnx, made "
                   "by `squeeze-perception offline quantize-int8`) and its int8 bound")
    b.add_argument("--int8-file", action="append", metavar="PATH",
                   help="another int8 graph (e.g. a quantization variant) timed in the same rounds (repeatable)")
    b.add_argument("--int8-config", action="append", metavar="KEY=VALUE",
                   help="the committed int8 graph with this ORT session config entry added, timed in the same "
                        "rounds (repeatable, one variant each)")
    b.add_argument("--json", default="")
    b.set_defaults(func=_cmd_bench)

    pr = sub.add_parser("profile", help="ms per operator type of the fp32 and int8 graphs (ONNX Runtime profiler)")
    pr.add_argument("--model", default="squeezedet")
    pr.add_argument("--threads", type=int, default=1)
    pr.add_argument("--runs", type=int, default=10)
    pr.add_argument("--no-int8", action="store_true", help="not the committed int8 graph")
    pr.add_argument("--int8-file", action="append", metavar="PATH", help="another int8 graph (repeatable)")
    pr.add_argument("--int8-config", action="append", metavar="KEY=VALUE",
                    help="the committed int8 graph with this session config entry added (repeatable)")
    pr.add_argument("--json", default="")
    pr.set_defaults(func=_cmd_profile)

    of = sub.add_parser("overfit", help="learning-path check: memorise N frames, AP on them must reach --target")
    of.add_argument("--split", default=str(SYNTH / "training"), help="labelled split to take the frames from")
    of.add_argument("--frames", type=int, default=8)
    of.add_argument("--model", default="squeezedet")
    of.add_argument("--out-dir", default="out/det/overfit")
    of.add_argument("--steps", type=int, default=2000, help="at most this many steps (see --until-target)")
    of.add_argument("--batch-size", type=int, default=8)
    of.add_argument("--lr", type=float, default=0.002)
    of.add_argument("--lr-decay-steps", type=int, default=500,
                    help="halve the learning rate every this many steps (without decay Adam at 2e-3 oscillates "
                         "around the target: docs/detection.md)")
    of.add_argument("--threads", type=int, default=2)
    of.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda, ...)")
    of.add_argument("--loader-workers", type=int, default=0, help="data-loading processes (0: one thread)")
    of.add_argument("--eval-every", type=int, default=50)
    of.add_argument("--target", type=float, default=90.0)
    of.add_argument("--until-target", action=argparse.BooleanOptionalAction, default=True,
                    help="stop at the first evaluation (every --eval-every steps, fp32) whose car AP(moderate) "
                         "reaches --target: the check is 'train until AP >= target'; --no-until-target runs "
                         "all --steps")
    of.add_argument("--resume", action="store_true")
    of.add_argument("--precision", choices=PRECISIONS, default=DetTrainConfig.precision,
                    help="training arithmetic (compare the two: docs/detection.md, training speed)")
    of.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=DetTrainConfig.channels_last)
    of.set_defaults(func=_cmd_overfit)

    ad = sub.add_parser("adapt", help="unsupervised adaptation to real images: AdaBN on unlabelled images")
    ad.add_argument("--checkpoint", required=True, help="training checkpoint <out>.ckpt (trained with batch norm)")
    ad.add_argument("--images", nargs="+", required=True, help="folders of unlabelled target-domain PNGs")
    ad.add_argument("--out", required=True, help="adapted weights (batch norm folded)")
    ad.add_argument("--passes", type=int, default=8, help="random crops/flips of each image")
    ad.add_argument("--batch-size", type=int, default=4)
    ad.add_argument("--mix", type=float, default=1.0, help="1: target statistics only; <1 blends with source")
    ad.set_defaults(func=_cmd_adapt)

    tb = sub.add_parser("train-bench", help="training throughput (forward + backward per image) per "
                                            "precision / layout variant vs the compute bound")
    tb.add_argument("--model", default="squeezedet")
    tb.add_argument("--batch-size", type=int, default=2)
    tb.add_argument("--input", type=int, nargs=2, default=(0, 0), metavar=("W", "H"),
                    help="training input (default: the model input)")
    tb.add_argument("--variants", nargs="+", default=None, help="subset of the variants")
    tb.add_argument("--repeats", type=int, default=5)
    tb.add_argument("--threads", type=int, default=2)
    tb.add_argument("--json", default="")
    tb.set_defaults(func=_cmd_train_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if isinstance(getattr(args, "split", None), list):  # `det eval --split` (repeatable; "real")
        expanded = []
        for s in args.split:
            if s == "real":
                expanded += [str(p) for p in sorted(kitti_real_dir().glob("object*/training"))]
            else:
                expanded.append(s)
        args.split = expanded
    return int(args.func(args) or 0)
