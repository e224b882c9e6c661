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


def segmentation_loss(logits: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor,
                      class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """SqueezeSeg's class-weighted cross-entropy over cells with a return."""
    valid = (inputs[:, 4] > 0).to(torch.float32)
    if class_weights is None:
        class_weights = torch.tensor(K.CLASS_LOSS_WEIGHTS[: logits.shape[1]])
    return weighted_cross_entropy(logits, labels, valid, class_weights)


@torch.no_grad()
def evaluate(model: nn.Module, samples: SegSamples, batch_size: int = 8,
             classes: tuple[int, ...] = (1, 2, 3)) -> dict[str, float]:
    """Class-level IoU (SqueezeSeg's metric) on cells with a return; `mIoU` over `classes`."""
    was_training = model.training
    model.eval()
    counts = SegCounts(n=max(int(samples.labels.max()) + 1, max(classes) + 1, K.NUM_CLASSES))
    for i in range(0, len(samples), batch_size):
        x, y = samples.inputs[i:i + batch_size], samples.labels[i:i + batch_size]
        pred = model(x).argmax(1)
        valid = x[:, 4] > 0
        counts.add_class_level(pred[valid].numpy(), y[valid].numpy())
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
    macs = count_macs(model, torch.zeros((1, *input_shape)))
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
                    loss_fn: Callable[..., torch.Tensor] | None = None) -> dict[str, float]:
    """Adam on the weighted cross-entropy for `epochs` passes over `samples`; DDP-aware (each rank
    takes its slice of every global batch). Returns the last loss and the wall time."""
    torch.manual_seed(seed)
    net = ddp.wrap(model)
    net.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=K.WEIGHT_DECAY)
    rng = np.random.default_rng(seed)
    loss_fn = loss_fn or segmentation_loss
    steps = epochs * -(-len(samples) // batch_size)
    last, t0 = float("nan"), time.perf_counter()
    with progress(description, steps, show_progress) as advance:
        for _ in range(epochs):
            for x, y in samples.batches(batch_size, rng):
                x, y = ddp.shard(x, y)
                loss = loss_fn(net(x), x, y)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), K.MAX_GRAD_NORM)
                opt.step()
                last = float(loss.detach())
                advance(loss=last)
    return {"loss": last, "train_s": time.perf_counter() - t0, "steps": steps}
