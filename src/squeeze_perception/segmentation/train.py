"""Training loop for SqueezeSeg / SqueezeSegV2 (and the intensity renderer) on lidar_2d grids.

CPU-friendly: bounded by steps and wall-clock minutes, resumable from a checkpoint in the
work folder, logs one line per `log_every` steps to a file and a tqdm bar. The result is
saved as models/<name>.pt in the project's checkpoint format with a `meta` record.
Optional domain adaptation (section 6.4): `renderer` replaces the intensity channel of every
synthetic grid by learned intensity rendering; `real_grids` + `gca_lambda` add geodesic
correlation alignment between the synthetic and real batches' output logits.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..paths import models_dir, project_root
from . import constants as K
from .data import GridDataset, list_grids, to_input
from .losses import (flatten_valid, focal_loss, geodesic_correlation_loss, intensity_hybrid_loss,
                     render_intensity, weighted_cross_entropy)
from .models import SqueezeSegNet, build_intensity_renderer, build_squeezeseg, build_squeezesegv2


@dataclass
class TrainConfig:
    name: str  # output weights name (models/<name>.pt)
    arch: str = "squeezeseg"  # squeezeseg | squeezesegv2
    data: str = "data/synth/lidar_2d/train"
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd (the release: SGD, lr 0.01, momentum 0.9)
    minutes: float = 60.0
    threads: int = 1
    loss: str = ""  # "" -> ce for squeezeseg, focal for squeezesegv2
    crf: bool = True  # train the recurrent CRF end to end
    init: str = ""  # start from these weights (fine-tuning)
    renderer: str = ""  # learned intensity rendering weights (+LIR)
    real_grids: str = ""  # .npy stack of unlabelled real grids (+GCA)
    gca_lambda: float = K.GCA_LAMBDA
    log_every: int = 10
    ckpt_every: int = 50
    seed: int = 0
    max_files: int = 0
    crop_width: int = 0  # train on random width crops (fully convolutional; cheaper steps on a CPU)
    work_dir: str = "out/seg"
    # Throughput knobs (measured by `squeeze-perception seg train-bench`): bf16 autocast for the
    # network and the channels_last layout use the AVX-512 BF16 units; the CRF and the loss always
    # run in fp32 (the bilateral kernel's exp(-d^2) needs more than bf16's 8 mantissa bits).
    precision: str = "fp32"  # fp32 | bf16
    channels_last: bool = False
    extra: dict = field(default_factory=dict)


def build_arch(arch: str) -> SqueezeSegNet:
    if arch == "squeezeseg":
        return build_squeezeseg()
    if arch == "squeezesegv2":
        return build_squeezesegv2()
    raise ValueError(f"unknown architecture '{arch}' (squeezeseg | squeezesegv2)")


def save_weights(module: torch.nn.Module, name: str, meta: dict, path: Path | None = None) -> Path:
    path = path or models_dir() / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": module.state_dict(), "model": name, "meta": meta}, path)
    return path


def load_renderer(path: str | Path) -> SqueezeSegNet:
    from ..backends import load_state_dict

    net = build_intensity_renderer()
    net.load_state_dict(load_state_dict(Path(path)))
    return net.eval()


@torch.no_grad()
def apply_rendered_intensity(renderer: SqueezeSegNet, inputs: torch.Tensor) -> torch.Tensor:
    """Replace channel 3 (intensity) of raw inputs by the renderer's prediction (0 where empty)."""
    valid = (inputs[:, 4] > 0).to(inputs.dtype)
    rendered = render_intensity(renderer(inputs)) * valid
    out = inputs.clone()
    out[:, 3] = rendered
    return out


def segment_logits(model: SqueezeSegNet, x: torch.Tensor, crf: bool, precision: str = "fp32",
                   channels_last: bool = False) -> torch.Tensor:
    """Training-time `model.segment(x, crf)`: the CNN under the chosen precision / layout, the
    recurrent CRF and everything after it in fp32 on contiguous tensors."""
    xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = model.forward(xin)
    logits = logits.float().contiguous()
    if not crf:
        return logits
    mask = (x[:, 4:5] > 0).to(x.dtype)
    return model.crf(logits, x[:, :3], mask)


def _resolve(p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else project_root() / path


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(cfg.threads, 1))
    work = _resolve(cfg.work_dir) / cfg.name
    work.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = work / "checkpoint.pt", work / "train.log"
    if cfg.precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got '{cfg.precision}'")
    model = build_arch(cfg.arch)
    if cfg.init:
        from ..backends import load_state_dict

        model.load_state_dict(load_state_dict(_resolve(cfg.init)))
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    loss_name = cfg.loss or ("focal" if cfg.arch == "squeezesegv2" else "ce")
    if cfg.optimizer == "adam":  # converges in far fewer steps than the release's SGD on a CPU budget
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=K.WEIGHT_DECAY)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=K.MOMENTUM, weight_decay=K.WEIGHT_DECAY)
    # Step decay as in the release (halve the rate), scaled to our much shorter schedules.
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(cfg.steps // 3, 1), gamma=0.5)
    step = 0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step = int(state["step"])
    files = list_grids(_resolve(cfg.data))
    data = GridDataset(files, model.in_channels, augment=True, seed=cfg.seed + step,
                       max_files=cfg.max_files or None, crop_width=cfg.crop_width)
    renderer = load_renderer(_resolve(cfg.renderer)) if cfg.renderer else None
    real = None
    if cfg.real_grids:
        real_np = np.load(_resolve(cfg.real_grids))
        # Real scans keep their measured intensity; only synthetic ones are rendered.
        real = torch.from_numpy(np.stack([to_input(g, model.in_channels) for g in real_np]))
    weights = torch.tensor(K.CLASS_LOSS_WEIGHTS)
    rng = np.random.default_rng(cfg.seed + 1000 + step)
    t_start = time.perf_counter()
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.name}", disable=not progress)
    last = {}
    with open(log_path, "a") as log:
        while step < cfg.steps and (time.perf_counter() - t_start) < cfg.minutes * 60:
            if step % 50 == 0 and not cfg.max_files:  # pick up frames a running generator adds
                data.refresh(list_grids(_resolve(cfg.data)))
            idx = rng.integers(0, len(data), cfg.batch_size)
            x_np, y_np = data.batch(idx)
            x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
            if renderer is not None:
                x = apply_rendered_intensity(renderer, x)
            valid = (x[:, 4] > 0).to(torch.float32)
            logits = segment_logits(model, x, cfg.crf, cfg.precision, cfg.channels_last)
            if loss_name == "focal":
                loss = focal_loss(logits, y, valid, class_weights=weights)
            else:
                loss = weighted_cross_entropy(logits, y, valid, class_weights=weights)
            gca = torch.zeros(())
            if real is not None and cfg.gca_lambda > 0:
                xr = real[torch.from_numpy(rng.integers(0, len(real), max(cfg.batch_size // 2, 1)))]
                if cfg.crop_width and cfg.crop_width < xr.shape[3]:
                    start = int(rng.integers(0, xr.shape[3] - cfg.crop_width + 1))
                    xr = xr[..., start:start + cfg.crop_width]
                real_logits = segment_logits(model, xr, cfg.crf, cfg.precision, cfg.channels_last)
                gca = geodesic_correlation_loss(flatten_valid(logits, x), flatten_valid(real_logits, xr))
            total = loss + cfg.gca_lambda * gca if real is not None else loss
            opt.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), K.MAX_GRAD_NORM)
            opt.step()
            sched.step()
            step += 1
            bar.update(1)
            last = {"step": step, "loss": loss.item(), "gca": gca.item(), "lr": sched.get_last_lr()[0],
                    "elapsed_s": round(time.perf_counter() - t_start, 1)}
            if step % cfg.log_every == 0:
                log.write(json.dumps(last) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{last['loss']:.4f}")
            if step % cfg.ckpt_every == 0 or step >= cfg.steps:
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                            "sched": sched.state_dict(), "step": step}, ckpt_path)
    bar.close()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "step": step}, ckpt_path)
    meta = {"arch": cfg.arch, "loss": loss_name, "steps": step, "batch_size": cfg.batch_size,
            "train_files": len(data), "data": cfg.data, "config": asdict(cfg), "last": last}
    model = model.to(memory_format=torch.contiguous_format)
    out = save_weights(model.eval(), cfg.name, meta)
    print(f"saved {out} after {step} steps (last loss {last.get('loss', float('nan')):.4f})")
    return out


def train_renderer(name: str, real_grids: np.ndarray, steps: int = 300, batch_size: int = 4,
                   minutes: float = 10.0, lr: float = 1e-3, threads: int = 1, progress: bool = True,
                   seed: int = 0, init: str = "", crop_width: int = 0) -> Path:
    """Self-supervised intensity rendering on unlabelled real grids (x, y, z, range -> intensity).
    `init` continues from earlier renderer weights; `crop_width` trains on random width crops."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    torch.set_num_threads(max(threads, 1))
    net = build_intensity_renderer()
    prior_steps = 0
    if init:
        from ..backends import load_state_dict

        net.load_state_dict(load_state_dict(_resolve(init)))
        prior_steps = int(torch.load(_resolve(init), map_location="cpu", weights_only=False)
                          .get("meta", {}).get("steps", 0))
    net.train()
    inputs = torch.from_numpy(np.stack([to_input(g, 5) for g in real_grids]))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=K.WEIGHT_DECAY)
    rng = np.random.default_rng(seed + prior_steps)
    t0 = time.perf_counter()
    losses = []
    step = 0
    for step in tqdm(range(1, steps + 1), desc=f"train {name}", disable=not progress):
        x = inputs[torch.from_numpy(rng.integers(0, len(inputs), batch_size))]
        if crop_width and crop_width < x.shape[3]:
            start = int(rng.integers(0, x.shape[3] - crop_width + 1))
            x = x[..., start:start + crop_width]
        if rng.random() < 0.5:
            x = torch.flip(x, dims=[3])
            x[:, 1] *= -1
        valid = (x[:, 4] > 0).to(torch.float32)
        loss = intensity_hybrid_loss(net(x), x[:, 3], valid)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), K.MAX_GRAD_NORM)
        opt.step()
        losses.append(loss.item())
        if time.perf_counter() - t0 > minutes * 60:
            break
    net.eval()
    with torch.no_grad():
        valid = inputs[:, 4] > 0
        raw = torch.cat([net(inputs[i:i + 4]) for i in range(0, len(inputs), 4)])
        mse = float(((render_intensity(raw) - inputs[:, 3])[valid] ** 2).mean())
        mse_argmax = float(((render_intensity(raw, mode="argmax") - inputs[:, 3])[valid] ** 2).mean())
        mse_mean = float(((inputs[:, 3][valid] - inputs[:, 3][valid].mean()) ** 2).mean())
    history = []
    if init:
        prev = torch.load(_resolve(init), map_location="cpu", weights_only=False).get("meta", {})
        history = prev.get("history") or [f"{prev.get('steps', '?')} steps SGD lr 0.01, batch 4, full width"]
    history.append(f"{step} steps Adam lr {lr:g}, batch {batch_size}, width {crop_width or 512}")
    meta = {"arch": "intensity_renderer", "steps": prior_steps + step, "crop_width": crop_width, "history": history, "real_grids": int(len(real_grids)),
            "train_mse": mse, "train_mse_argmax": mse_argmax, "predict_mean_mse": mse_mean, "last_loss": losses[-1] if losses else None}
    out = save_weights(net, name, meta)
    print(f"saved {out}: rendering MSE {mse:.4f} on its own real grids (constant-mean MSE {mse_mean:.4f})")
    return out
