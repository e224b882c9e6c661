"""Distill-Net (seed 004): tailor a trained segmentation net to the few classes an application
needs (e.g. cars only) by removing the neurons that stay dormant on those classes, then fine-tune.

Neurons here are the expanded (hidden) channels of the inverted-residual blocks: removing one
drops an output channel of the expanding 1x1 convolution, its depthwise filter and an input
channel of the projecting 1x1 convolution, and changes no shape outside the block, so the
distilled net is a plain SearchedSegNet with narrower blocks (complete neuron removal, eq. 15;
partial, location-wise removal needs a bitmap-aware runtime and is not done). Grouped blocks are
kept whole (their channel shuffle ties the groups' widths together).

Steps (section 7.3): (1) neuroactivity: run the net on the training grids and, per hidden
channel, average its post-ReLU response over the cells of each kept class (eq. 12, a
segmentation net's "samples of a class" are its cells; feature maps narrower than the input use
the labels of the columns they sample); (2) bitmap: a channel is dormant for a class when its mean
response is below `threshold` x the largest mean response of its layer (eq. 13); (3) fusion: a
channel is removed when it is dormant for every kept class (eq. 14); (4) the classifier keeps the
'unknown' row and the kept classes' rows; (5) fine-tune on labels mapped to (unknown, kept...).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..interfaces import CLASS_IDS, CLASS_NAMES
from ..segmentation.searched_net import InvertedResidual, MacroArch, SearchedSegNet, TINY_MACRO
from .common import evaluate, model_device, model_size, train_segmenter
from .data import SegSamples


@torch.no_grad()
def channel_activity(net: SearchedSegNet, samples: SegSamples, classes: tuple[int, ...],
                     batch_size: int = 8) -> dict[int, torch.Tensor]:
    """layer index -> (len(classes), hidden) mean post-ReLU response of every hidden channel over
    the cells of each class (eq. 12)."""
    net.eval()
    sums: dict[int, torch.Tensor] = {}
    captured: dict[int, torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(net.layers):
        if isinstance(layer, InvertedResidual) and layer.cfg.groups == 1:
            hooks.append(layer.bn2.register_forward_hook(
                lambda mod, inp, out, i=i: captured.__setitem__(i, F.relu(out))))
    cell_counts: dict[int, torch.Tensor] = {}
    dev = model_device(net)
    try:
        for start in range(0, len(samples), batch_size):
            x = samples.inputs[start:start + batch_size].to(dev)
            y = samples.labels[start:start + batch_size].to(dev)
            valid = x[:, 4] > 0
            net(x)
            for i, act in captured.items():
                step = y.shape[2] // act.shape[3]
                lab, ok = y[:, :, ::step], valid[:, :, ::step]
                for k, c in enumerate(classes):
                    cells = ((lab == c) & ok).unsqueeze(1).to(act.dtype)  # (N, 1, H, w)
                    sums.setdefault(i, torch.zeros(len(classes), act.shape[1], device=dev))[k] += \
                        (act * cells).sum((0, 2, 3))
                    cell_counts.setdefault(i, torch.zeros(len(classes), device=dev))[k] += cells.sum()
    finally:
        for h in hooks:
            h.remove()
    return {i: (sums[i] / cell_counts[i].clamp(min=1).unsqueeze(1)).cpu() for i in sums}


def dormant_channels(activity: dict[int, torch.Tensor], threshold: float) -> dict[int, torch.Tensor]:
    """layer -> bool mask of channels dormant for every kept class (eqs. 13-15)."""
    out = {}
    for i, heat in activity.items():
        per_class_dormant = heat < threshold * heat.max(1, keepdim=True).values.clamp(min=1e-12)
        dormant = per_class_dormant.all(0)
        if dormant.all():  # a block keeps at least its most active channel
            dormant[int(heat.max(0).values.argmax())] = False
        out[i] = dormant
    return out


def distilled_net(net: SearchedSegNet, dormant: dict[int, torch.Tensor], keep: tuple[int, ...]) -> SearchedSegNet:
    """A narrower copy of `net` without the dormant channels and with classes (unknown, *keep)."""
    macro = MacroArch(**{**net.macro.__dict__, "num_classes": 1 + len(keep)})
    hidden = [int((~dormant[i]).sum()) if i in dormant else h for i, h in enumerate(net.hidden)]
    small = SearchedSegNet(net.choices, macro, hidden)
    src, dst = {k: v.cpu() for k, v in net.state_dict().items()}, small.state_dict()
    rows = torch.tensor([0, *keep])
    for name in dst:
        t = src[name]
        parts = name.split(".")
        if parts[0] == "layers" and int(parts[1]) in dormant and t.dim() > 0:
            alive = (~dormant[int(parts[1])]).nonzero().squeeze(1)
            module = parts[2]
            if module in ("expand", "bn1", "depthwise", "bn2"):
                t = t[alive]
            elif module == "project":
                t = t[:, alive]
        elif parts[:2] == ["decoder", "head"]:
            t = t[rows]
        dst[name] = t.clone()
    small.load_state_dict(dst, strict=True)
    return small


class KeptClassView(nn.Module):
    """The original net read as (unknown, kept...): a non-kept class wins as 'unknown'."""

    def __init__(self, net: nn.Module, keep: tuple[int, ...]):
        super().__init__()
        self.net, self.keep = net, keep

    def forward(self, x):
        logits = self.net(x)
        others = [c for c in range(logits.shape[1]) if c not in self.keep]
        return torch.cat([logits[:, others].max(1, keepdim=True).values, logits[:, list(self.keep)]], 1)


def remap_labels(samples: SegSamples, keep: tuple[int, ...]) -> SegSamples:
    lut = torch.zeros(int(samples.labels.max()) + 1 if len(samples) else 1, dtype=torch.long)
    for k, c in enumerate(keep):
        if c < len(lut):
            lut[c] = k + 1
    return SegSamples(samples.inputs, lut[samples.labels], samples.source + f" (classes unknown+{keep})")


@dataclass
class DistillRun:
    keep: tuple[str, ...] = ("car",)
    weights: str = ""  # a SearchedSegNet saved with a manifest; empty: train one first
    data: str = ""
    samples: int = 400
    height: int = 64
    width: int = 512
    tiny: bool = False
    pretrain_epochs: int = 30
    finetune_epochs: int = 5
    pretrain_minutes: float = 0.0  # > 0: time budgets (a GPU lease is short)
    finetune_minutes: float = 0.0
    threshold: float = 0.1
    batch_size: int = 8
    seed: int = 0
    out: str = "out/offline/distill"
    save_models: bool = True

    def shrink(self) -> "DistillRun":
        return DistillRun(**{**asdict(self), "samples": 16, "height": 16, "width": 64, "pretrain_epochs": 3,
                             "finetune_epochs": 1, "batch_size": 4})


def run_distill(run: DistillRun, show_progress: bool = True, command: str = "") -> dict:
    from .data import load_samples

    keep = tuple(CLASS_IDS[c] for c in run.keep)
    samples = load_samples(run.data, run.samples, run.height, run.width, run.seed)
    train_set, test_set = samples.split((0.8, 0.2), seed=run.seed)
    shape = (5, run.height, run.width)
    if run.weights:
        from .manifest import load_model

        net = load_model(Path(run.weights))
    else:
        torch.manual_seed(run.seed)
        macro = TINY_MACRO if run.tiny else MacroArch()
        net = SearchedSegNet(["k3_e6"] * len(macro.slots()), macro)
        train_segmenter(net, train_set, run.pretrain_epochs, run.batch_size, seed=run.seed,
                        show_progress=show_progress, description="train the all-class net",
                        max_minutes=run.pretrain_minutes)
    test_kept, train_kept = remap_labels(test_set, keep), remap_labels(train_set, keep)
    kept_ids = tuple(range(1, len(keep) + 1))
    original = {**evaluate(KeptClassView(net, keep), test_kept, classes=kept_ids), **model_size(net, shape)}
    activity = channel_activity(net, train_set, keep)
    dormant = dormant_channels(activity, run.threshold)
    small = distilled_net(net, dormant, keep).to(model_device(net))
    before = {**evaluate(small, test_kept, classes=kept_ids), **model_size(small, shape)}
    fit = train_segmenter(small, train_kept, run.finetune_epochs, run.batch_size, lr=5e-4, seed=run.seed,
                          show_progress=show_progress, description="fine-tune the distilled net",
                          max_minutes=run.finetune_minutes)
    small = small.cpu()  # counted and saved on the CPU
    after = {**evaluate(small, test_kept, classes=kept_ids), **model_size(small, shape), "finetune_loss": fit["loss"]}
    removed = {i: int(d.sum()) for i, d in dormant.items()}
    totals = {i: int(d.numel()) for i, d in dormant.items()}
    result = {"config": asdict(run), "data": samples.source, "kept_classes": list(run.keep),
              "removed_channels": removed, "hidden_channels": totals,
              "original": original, "distilled_before_finetune": before, "distilled": after,
              "macs_ratio": original["macs"] / max(after["macs"], 1),
              "params_ratio": original["params"] / max(after["params"], 1)}
    if run.save_models:
        from .manifest import save_model_with_manifest

        name = f"squeezeseg_distilled_{'_'.join(run.keep)}{'_tiny' if run.tiny else ''}"
        result["weights"] = str(save_model_with_manifest(
            small, Path(run.out) / f"{name}.pt", name=name, task="segmentation",
            builder="squeeze_perception.segmentation.searched_net:build_searched_segnet",
            builder_kwargs={"choices": list(small.choices), "macro": small.macro.to_dict(), "hidden": small.hidden},
            input_shape=shape, classes=("unknown", *run.keep),
            metrics={k: v for k, v in after.items() if k not in ("params", "macs")},
            latency_ms={}, command=command, extra={"removed_channels": removed, "original_metrics": original}))
    return result
