"""Shared pieces of the offline experiments: the segmentation loss and metric, one training loop
(DDP-aware), model size counts and a rich progress bar."""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..model_cost import count_macs
from ..segmentation import constants as K
from .segmentation.evaluation import SegCounts
from .segmentation.losses import weighted_cross_entropy
from . import ddp
from .data import SegSamples

# Where the offline experiments train: "cpu" by default, "cuda" from the CLI's --device. One
# module-level choice instead of a parameter threaded through every loop: the data, every model
# and every loss follow it (set_device), and whatever is saved or counted is moved back to the CPU.
_DEVICE = torch.device("cpu")


def set_device(name: str) -> torch.device:
    global _DEVICE
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device visible to torch")
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    _DEVICE = dev
    return dev


def device() -> torch.device:
    return _DEVICE


def epochs_for_budget(planned: int, warmup: int, epoch_s: float, budget_s: float) -> tuple[int, int]:
    """(epochs, warm-up epochs) that fit a time budget, given the measured seconds of one epoch:
    a search shortened this way still runs its whole temperature schedule (eq. 8.9) and keeps the
    planned warm-up fraction, instead of being cut off while P_theta is still nearly uniform."""
    if budget_s <= 0 or epoch_s <= 0:
        return planned, warmup
    epochs = max(2, min(planned, int(budget_s / epoch_s)))
    return epochs, min(epochs - 1, max(1, round(warmup * epochs / max(planned, 1)))) if warmup else 0


def schedule_after_first_epoch(planned: int, warmup: int, first_epoch_s: float, n_w: int, n_theta: int,
                               budget_minutes: float) -> tuple[int, int]:
    """(epochs including the one already run, warm-up epochs) for a search whose first epoch,
    a warm-up one (weights only), took `first_epoch_s`: a full epoch adds the architecture
    phase in proportion to its samples, and the rest of the budget sets the count
    (epochs_for_budget)."""
    epoch_s = first_epoch_s * (n_w + n_theta) / n_w
    epochs, warmup = epochs_for_budget(planned, warmup, epoch_s, 60 * budget_minutes - epoch_s)
    return epochs + 1, warmup


def model_device(model: nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.zeros(())).device


def segmentation_loss(logits: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor,
                      class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """SqueezeSeg's class-weighted cross-entropy over cells with a return."""
    valid = (inputs[:, 4] > 0).to(torch.float32)
    if class_weights is None:
        class_weights = torch.tensor(K.CLASS_LOSS_WEIGHTS[: logits.shape[1]])
    return weighted_cross_entropy(logits, labels, valid, class_weights.to(logits.device))


@torch.no_grad()
def evaluate(model: nn.Module, samples: SegSamples, batch_size: int = 8,
             classes: tuple[int, ...] = (1, 2, 3)) -> dict[str, float]:
    """Class-level IoU (SqueezeSeg's metric) on cells with a return; `mIoU` over `classes`."""
    was_training = model.training
    model.eval()
    dev = model_device(model)
    counts = SegCounts(n=max(int(samples.labels.max()) + 1, max(classes) + 1, K.NUM_CLASSES))
    for i in range(0, len(samples), batch_size):
        x, y = samples.inputs[i:i + batch_size].to(dev), samples.labels[i:i + batch_size].to(dev)
        pred = model(x).argmax(1)
        valid = x[:, 4] > 0
        counts.add_class_level(pred[valid].cpu().numpy(), y[valid].cpu().numpy())
    model.train(was_training)
    iou = counts.class_level()["IoU"]
    out = {f"iou_{K_name}": float(iou[c]) for c, K_name in _class_names(classes)}
    out["mIoU"] = counts.mean_iou(classes)
    return out


def _class_names(classes: tuple[int, ...]) -> list[tuple[int, str]]:
    from ..interfaces import CLASS_NAMES

    return [(c, CLASS_NAMES[c] if c < len(CLASS_NAMES) else str(c)) for c in classes]


def model_size(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """Parameters and multiply-accumulates of one frame of `input_shape` (C, H, W)."""
    was_training = model.training
    model.eval()
    macs = count_macs(model, torch.zeros((1, *input_shape), device=model_device(model)))
    model.train(was_training)
    return {"params": int(sum(p.numel() for p in model.parameters())), "macs": int(macs)}


@contextlib.contextmanager
def progress(description: str, total: int, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A rich progress bar on rank 0; yields advance(n=1, **fields shown after the bar)."""
    if not enabled or not ddp.is_main():
        yield lambda n=1, **fields: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[info]}"), transient=False) as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields) -> None:
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            bar.update(task, advance=n, info=info)

        yield advance


def train_segmenter(model: nn.Module, samples: SegSamples, epochs: int, batch_size: int = 4, lr: float = 2e-3,
                    seed: int = 0, show_progress: bool = True, description: str = "train",
                    loss_fn: Callable[..., torch.Tensor] | None = None, max_minutes: float = 0.0) -> dict[str, float]:
    """Adam on the weighted cross-entropy for `epochs` passes over `samples` (or until `max_minutes`
    have passed, when > 0); DDP-aware (each rank takes its slice of every global batch). Returns the
    last loss, the wall time and the steps taken."""
    torch.manual_seed(seed)
    model.to(device())
    net = ddp.wrap(model)
    net.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=K.WEIGHT_DECAY)
    rng = np.random.default_rng(seed)
    loss_fn = loss_fn or segmentation_loss
    steps = epochs * -(-len(samples) // batch_size)
    last, t0, done = float("nan"), time.perf_counter(), 0
    deadline = t0 + 60 * max_minutes if max_minutes > 0 else float("inf")
    with progress(description, steps, show_progress) as advance:
        for _ in range(epochs):
            if time.perf_counter() > deadline:
                break
            for x, y in samples.batches(batch_size, rng):
                if time.perf_counter() > deadline:
                    break
                x, y = ddp.shard(x.to(device()), y.to(device()))
                loss = loss_fn(net(x), x, y)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), K.MAX_GRAD_NORM)
                opt.step()
                last = float(loss.detach())
                done += 1
                advance(loss=last)
    return {"loss": last, "train_s": time.perf_counter() - t0, "steps": done, "planned_steps": steps}
