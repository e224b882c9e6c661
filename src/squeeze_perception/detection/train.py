"""Training loop for SqueezeDet: the thesis recipe (SGD, momentum 0.9, lr 0.01 halved every
10k steps, batch 20, random crop and flip, eq. 3.2 loss) with knobs for a CPU budget.

Resumable: a checkpoint (model, optimiser, step, RNG) is written every `checkpoint_every`
steps beside the output weights; `resume=True` continues from it. Each checkpoint also
writes the weights file itself, so an interrupted run still leaves usable weights. Progress
goes to a JSON-lines log (one line per `log_every` steps) and to a tqdm bar.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..registry import get_model
from .anchors import kmeans_anchors
from .data import augment, letterbox, list_samples, load_rgb, normalise, training_boxes
from .loss import build_targets
from .models import LAYOUTS, grid_geometry


@dataclass
class TrainConfig:
    model: str = "squeezedet"
    train_dir: str = "data/synth/object/training"
    out: str = "models/squeezedet.pt"
    steps: int = 1000
    batch_size: int = 20
    lr: float = 0.01
    lr_decay_steps: int = 10000
    lr_decay: float = 0.5
    momentum: float = 0.9
    optimizer: str = "sgd"  # "sgd" (thesis) | "adam" (faster start from random init on a CPU budget)
    weight_decay: float = 0.0
    clip_grad_norm: float = 1.0
    warmup_steps: int = 0
    crop_width: int = 0  # 0: the full model input width
    crop_height: int = 0
    max_shift: tuple[int, int] = (150, 50)
    threads: int = 2
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 5
    log_file: str = ""
    resume: bool = False
    max_minutes: float = 0.0  # stop (after a checkpoint) when the wall-clock budget is spent
    anchors: list = field(default_factory=list)  # explicit (9,2) shapes; empty -> k-means
    init_weights: str = ""  # start from these weights (and their anchors) with a fresh optimiser


def input_anchors(module, width: int, height: int) -> np.ndarray:
    """(A,4) cx,cy,w,h anchors for an input of width x height (same layout as forward_raw)."""
    geo = grid_geometry(LAYOUTS[module.variant], width, height)
    centres = geo.centres()
    shapes = module.anchor_shapes.detach().cpu().numpy()
    k = len(shapes)
    return np.concatenate([np.repeat(centres, k, 0), np.tile(shapes, (len(centres), 1))], 1).astype(np.float32)


def dataset_anchor_shapes(samples, input_width: int, input_height: int, k: int = 9,
                          seed: int = 0) -> tuple[np.ndarray, float, int]:
    """k-means shapes of every trained box after letterboxing to the model input."""
    from PIL import Image

    shapes = []
    for s in samples:
        boxes, _ = training_boxes(s.labels())
        if not len(boxes):
            continue
        with Image.open(s.image_path) as im:
            w, h = im.size
        scale = min(input_width / w, input_height / h)
        shapes.append(np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1) * scale)
    shapes = np.concatenate(shapes) if shapes else np.zeros((0, 2))
    centroids, mean_iou = kmeans_anchors(shapes, k=k, seed=seed)
    return centroids, mean_iou, len(shapes)


def load_batch(samples, indices, module, crop_w: int, crop_h: int, rng, max_shift):
    images, targets = [], []
    anchors = input_anchors(module, crop_w, crop_h)
    for i in indices:
        for _ in range(10):  # a frame still being written by the generator is skipped
            s = samples[i]
            try:
                rgb, lb = letterbox(load_rgb(s.image_path), module.input_width, module.input_height)
                boxes, classes = training_boxes(s.labels())
                break
            except (OSError, ValueError):
                i = int(rng.integers(len(samples)))
        else:
            raise RuntimeError(f"cannot read training frames in {samples[0].image_path.parent}")
        img, boxes, kept = augment(rgb, boxes * lb.scale, rng, crop_w, crop_h, max_shift=max_shift)
        images.append(normalise(img))
        targets.append(build_targets(anchors, boxes, classes[kept] - 1))
    return np.stack(images), targets, anchors


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    import torch
    from tqdm import tqdm

    from .loss import squeezedet_loss

    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    spec = get_model(cfg.model, task="detection")
    module = spec.build()
    samples = list_samples(cfg.train_dir, require_labels=True)
    crop_w = cfg.crop_width or module.input_width
    crop_h = cfg.crop_height or module.input_height
    out = Path(cfg.out)
    ckpt_path = out.with_suffix(".ckpt")
    log_path = Path(cfg.log_file) if cfg.log_file else out.with_suffix(".log.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)

    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer '{cfg.optimizer}' (sgd | adam)")
    step, rng, meta_anchor = 0, np.random.default_rng(cfg.seed), {}
    if cfg.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        module.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        step, meta_anchor = ck["step"], ck.get("anchor_info", {})
        rng.bit_generator.state = ck["rng"]
    elif cfg.init_weights:
        from ..backends import load_state_dict

        module.load_state_dict(load_state_dict(Path(cfg.init_weights)))
        init_meta = torch.load(cfg.init_weights, map_location="cpu", weights_only=True).get("meta", {})
        meta_anchor = {**init_meta.get("anchors", {}), "init_weights": cfg.init_weights,
                       "init_steps": init_meta.get("steps")}
        log_path.write_text("")
    else:
        if cfg.anchors:
            shapes, mean_iou, n_boxes = np.asarray(cfg.anchors, np.float32), float("nan"), 0
        else:
            shapes, mean_iou, n_boxes = dataset_anchor_shapes(samples, module.input_width, module.input_height,
                                                              k=module.num_anchors, seed=cfg.seed)
        module.set_anchor_shapes(shapes)
        meta_anchor = {"shapes": shapes.round(1).tolist(), "kmeans_mean_iou": mean_iou, "n_boxes": n_boxes}
        log_path.write_text("")

    def lr_at(s: int) -> float:
        lr = cfg.lr * cfg.lr_decay ** (s // cfg.lr_decay_steps)
        if cfg.warmup_steps and s < cfg.warmup_steps:
            lr *= (s + 1) / cfg.warmup_steps
        return lr

    def save(final: bool = False):
        state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        torch.save({"state_dict": state, "optimizer": opt.state_dict(), "step": step,
                    "rng": rng.bit_generator.state, "anchor_info": meta_anchor, "config": asdict(cfg)}, ckpt_path)
        meta = {"steps": step, "config": asdict(cfg), "anchors": meta_anchor, "train_images": len(samples),
                "images_seen": step * cfg.batch_size,
                "crop": [crop_w, crop_h], "finished": final,
                "saved_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        torch.save({"state_dict": state, "model": cfg.model, "meta": meta}, out)

    module.train()
    t_start = time.time()
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc=f"train {cfg.model}")
    history = []
    with log_path.open("a") as log:
        while step < cfg.steps:
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            idx = rng.integers(len(samples), size=cfg.batch_size)
            images, targets, anchors = load_batch(samples, idx, module, crop_w, crop_h, rng, cfg.max_shift)
            deltas, conf, cls = module.forward_raw(torch.from_numpy(images))
            loss, parts = squeezedet_loss(deltas, conf, cls, torch.from_numpy(anchors), targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {float(loss)} at step {step}; lower lr or raise clip")
            if cfg.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.clip_grad_norm)
            opt.step()
            step += 1
            bar.update(1)
            rec = {"step": step, "loss": float(loss.detach()), **parts, "lr": lr_at(step - 1),
                   "objects": int(sum(len(t.labels) for t in targets)), "elapsed_s": round(time.time() - t_start, 1)}
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}")
            if step % cfg.log_every == 0 or step == cfg.steps:
                log.write(json.dumps(rec) + "\n")
                log.flush()
            out_of_time = cfg.max_minutes > 0 and (time.time() - t_start) > cfg.max_minutes * 60
            if step % cfg.checkpoint_every == 0 or step == cfg.steps or out_of_time:
                save(final=step >= cfg.steps)
                # A dataset still being generated grows between checkpoints: pick up new frames.
                samples = list_samples(cfg.train_dir, require_labels=True)
            if out_of_time:
                break
    bar.close()
    return {"steps": step, "final_loss": history[-1]["loss"] if history else None, "weights": str(out),
            "checkpoint": str(ckpt_path), "log": str(log_path), "anchors": meta_anchor}


def plot_training_log(log_path: str | Path, png_path: str | Path, window: int = 5) -> None:
    """Loss curves (total and the three parts of eq. 3.2, running mean) from a training log."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    if not recs:
        raise ValueError(f"no records in {log_path}")
    steps = np.array([r["step"] for r in recs])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("loss", "bbox", "conf", "class"):
        vals = np.array([r[key] for r in recs], dtype=float)
        kernel = np.ones(min(window, len(vals))) / min(window, len(vals))
        smooth = np.convolve(vals, kernel, mode="valid")
        ax.plot(steps[len(steps) - len(smooth):], smooth, label="total" if key == "loss" else key)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"eq. 3.2 loss (running mean of {window} log points)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
