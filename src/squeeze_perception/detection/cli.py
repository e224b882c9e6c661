"""`squeeze-perception det anchors|train|eval|bench|stats`."""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from ..paths import kitti_real_dir, models_dir, project_root

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
    from .data import list_samples
    from .models import BASE_HEIGHT, BASE_WIDTH
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
    from .train import TrainConfig, train

    cfg = TrainConfig(model=args.model, train_dir=args.train_dir,
                      out=args.out or str(models_dir() / f"{args.model}.pt"), steps=args.steps,
                      batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, lr_decay_steps=args.lr_decay_steps,
                      weight_decay=args.weight_decay, clip_grad_norm=args.clip_grad_norm,
                      warmup_steps=args.warmup_steps, crop_width=args.crop[0], crop_height=args.crop[1],
                      threads=args.threads, seed=args.seed, checkpoint_every=args.checkpoint_every,
                      log_file=args.log_file, resume=args.resume, init_weights=args.init_weights, max_minutes=args.max_minutes)
    t0 = time.time()
    result = train(cfg)
    print(f"trained {result['steps']} steps in {(time.time() - t0) / 60:.1f} min, final loss "
          f"{result['final_loss']}; weights {result['weights']} (checkpoint {result['checkpoint']}, log {result['log']})")
    return 0


def _cmd_plot_train(args) -> int:
    from .train import plot_training_log

    plot_training_log(args.log, args.png)
    print(f"wrote {args.png}")
    return 0


def _cmd_demo(args) -> int:
    from PIL import Image

    from ..nodes.squeezedet_node import draw_detections
    from .data import load_rgb
    from .decode import DecodeConfig
    from .inference import Detector

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
             top_k: int = 64, nms_iou: float = 0.4, limit: int = 0, progress: bool = True) -> dict:
    """Evaluate a model on KITTI object split folders; returns AP tables and recall curve."""
    from tqdm import tqdm

    from .data import list_samples, load_rgb
    from .decode import DecodeConfig
    from .evaluation import evaluate, first_match_rank, recall_vs_nbox
    from .inference import Detector

    det = Detector(model, backend, weights, DecodeConfig(top_k=top_k, nms_iou=nms_iou))
    samples = [s for d in split_dirs for s in list_samples(d)]
    if limit:
        samples = samples[:limit]
    dets, labels, ranks, latencies = [], [], [], []
    for s in tqdm(samples, desc=f"eval {model}", disable=not progress):
        pred = det.predict(load_rgb(s.image_path))
        labs = s.labels()
        dets.append(pred.detections)
        labels.append(labs)
        ranks.append(first_match_rank(pred.raw, labs)[0])
        if pred.latency_ms is not None:
            latencies.append(pred.latency_ms)
    result = evaluate(dets, labels)
    n_max = len(pred.raw) if samples else 0
    n_values = sorted({n for n in (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, n_max) if n <= n_max})
    result["recall_vs_nbox"] = {"n_box": n_values, "recall": recall_vs_nbox(ranks, n_values).tolist()}
    result["images"] = len(samples)
    result["model"], result["backend"], result["splits"] = model, backend, split_dirs
    result["weights"] = str(det.backend.weights_path) if hasattr(det.backend, "weights_path") else weights
    result["median_latency_ms"] = float(np.median(latencies)) if latencies else None
    result["decode"] = {"top_k": top_k, "nms_iou": nms_iou}
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
        vals = [result["per_class"][c][d]["ap40"] for c in classes]
        ax.bar(x + (i - 1) * 0.27, np.nan_to_num(vals), width=0.27, label=d)
    ax.set_xticks(x, classes)
    ax.set_ylabel("AP (40-point, %)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cmd_eval(args) -> int:
    from .evaluation import format_table

    splits = args.split or [str(SYNTH / "testing")]
    result = run_eval(args.model, args.weights, splits, args.backend, args.top_k, args.nms_iou, args.limit)
    print(f"{result['images']} images from {', '.join(splits)} ({args.model}, {args.backend}); AP 11-point/40-point (%)")
    print(format_table(result))
    rv = result["recall_vs_nbox"]
    print("recall vs N_box: " + ", ".join(f"{n}:{r:.3f}" for n, r in zip(rv["n_box"], rv["recall"])))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v))
        print(f"wrote {args.json}")
    if args.plot_prefix:
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
                      progress=lambda msg, n=name: status.update(f"{n}: {msg}"))
        rows.append(r.as_dict())
        ort = "-" if r.onnxruntime_ms is None else f"{r.onnxruntime_ms:9.1f} ms  x{r.onnxruntime_ratio:5.2f}"
        print(f"{name:18s} threads {r.threads}  GMACs {r.macs / 1e9:6.2f}  peak {r.peak_gflops:6.1f} GFLOP/s  "
              f"bound {r.bound_ms:7.1f} ms | torch {r.torch_ms:9.1f} ms  x{r.torch_ratio:5.2f} | onnxruntime {ort}")
    print(f"batch 1, median of {args.repeats} interleaved rounds; ratio = latency / (2 x MACs / peak), peak = best "
          f"1024^3 fp32 matmul (torch or ORT) with the same threads; 1-min load average {rows[-1]['load_average']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
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
    t.add_argument("--model", default="squeezedet")
    t.add_argument("--train-dir", default=str(SYNTH / "training"))
    t.add_argument("--out", default="", help="weights file (default models/<model>.pt)")
    t.add_argument("--steps", type=int, default=20000)
    t.add_argument("--batch-size", type=int, default=20)
    t.add_argument("--lr", type=float, default=0.01)
    t.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    t.add_argument("--lr-decay-steps", type=int, default=10000)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--clip-grad-norm", type=float, default=1.0)
    t.add_argument("--warmup-steps", type=int, default=0)
    t.add_argument("--crop", type=int, nargs=2, default=(0, 0), metavar=("W", "H"),
                   help="train on random W x H crops of the model-size image (0 0 = full size)")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=50)
    t.add_argument("--log-file", default="")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--init-weights", default="", help="start from these weights with a fresh optimiser")
    t.add_argument("--max-minutes", type=float, default=0.0)
    t.set_defaults(func=_cmd_train)

    pt = sub.add_parser("plot-train", help="plot the loss curves of a training log (JSON lines)")
    pt.add_argument("log")
    pt.add_argument("png")
    pt.set_defaults(func=_cmd_plot_train)

    e = sub.add_parser("eval", help="KITTI 2D AP (11/40-point) and recall vs N_box")
    e.add_argument("--model", default="squeezedet")
    e.add_argument("--weights", default=None)
    e.add_argument("--backend", default="torch")
    e.add_argument("--split", action="append", help="KITTI object split folder(s) (repeatable); "
                   f"'real' = {kitti_real_dir()}/object*/training")
    e.add_argument("--top-k", type=int, default=64)
    e.add_argument("--nms-iou", type=float, default=0.4)
    e.add_argument("--limit", type=int, default=0)
    e.add_argument("--json", default="")
    e.add_argument("--plot-prefix", default="")
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

    b = sub.add_parser("bench", help="batch-1 latency (torch, onnxruntime) vs the compute bound")
    b.add_argument("--models", nargs="+", default=["squeezedet"])
    b.add_argument("--repeats", type=int, default=10)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--no-onnx", action="store_true")
    b.add_argument("--json", default="")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if getattr(args, "split", None):
        expanded = []
        for s in args.split:
            if s == "real":
                expanded += [str(p) for p in sorted(kitti_real_dir().glob("object*/training"))]
            else:
                expanded.append(s)
        args.split = expanded
    return int(args.func(args) or 0)
