"""Domain adaptation steps of section 6.4 that are not plain training runs.

- Unlabelled real grids: every allowed real Velodyne scan (kitti_real raw/ and object/,
  never their labels) projected as four rotated front views (data.real_adaptation_grids).
- Learned intensity rendering (+LIR): train.train_renderer, then train with `renderer=`.
- Geodesic correlation alignment (+GCA): train with `real_grids=` and lambda 10.
- Progressive domain calibration (+PDC, Algorithm 2): below. Batch-norm layers are visited in
  forward order; each one's input statistics are measured on the real data with every earlier
  layer already calibrated, and become its running mean / variance, so its output on real
  data is re-normalised to zero mean and unit variance before the next layer is measured.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...segmentation.data import to_input


class _StopForward(Exception):
    """Raised by a hook once the layer being calibrated has seen its input."""


def batchnorm_forward_order(model: nn.Module, sample: torch.Tensor) -> list[nn.BatchNorm2d]:
    order: list[nn.BatchNorm2d] = []
    hooks = [m.register_forward_pre_hook(lambda mod, _inp: order.append(mod))
             for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in hooks:
            h.remove()
    seen: set[int] = set()
    return [m for m in order if not (id(m) in seen or seen.add(id(m)))]


@torch.no_grad()
def progressive_domain_calibration(model: nn.Module, real_inputs: torch.Tensor, batch_size: int = 4,
                                   progress: bool = True) -> int:
    """Calibrate every BatchNorm2d of `model` on unlabelled real inputs (N, C, H, W); returns
    the number of layers calibrated. The model is left in eval mode."""
    from tqdm import tqdm

    model.eval()
    layers = batchnorm_forward_order(model, real_inputs[:1])
    for layer in tqdm(layers, desc="PDC", disable=not progress):
        total, total_sq, count = None, None, 0

        def grab(mod, inp):
            nonlocal total, total_sq, count
            x = inp[0].double()
            s, sq = x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))
            total = s if total is None else total + s
            total_sq = sq if total_sq is None else total_sq + sq
            count += x.shape[0] * x.shape[2] * x.shape[3]
            raise _StopForward

        hook = layer.register_forward_pre_hook(grab)
        try:
            for i in range(0, len(real_inputs), batch_size):
                try:
                    model(real_inputs[i:i + batch_size])
                except _StopForward:
                    pass
        finally:
            hook.remove()
        mean = total / count
        var = (total_sq / count - mean * mean).clamp(min=0.0)
        layer.running_mean.copy_(mean.float())
        layer.running_var.copy_(var.float())
    return len(layers)


def calibrate_weights(source: str | Path, out_name: str, real_grids: np.ndarray, arch: str = "squeezesegv2",
                      progress: bool = True) -> Path:
    from ...backends import load_state_dict
    from .train import build_arch, save_weights

    model = build_arch(arch)
    model.load_state_dict(load_state_dict(Path(source)))
    inputs = torch.from_numpy(np.stack([to_input(g, model.in_channels) for g in real_grids]))
    n_layers = progressive_domain_calibration(model, inputs, progress=progress)
    meta = {"arch": arch, "calibrated_from": str(Path(source).name), "pdc_layers": n_layers,
            "real_grids": int(len(real_grids))}
    src_meta = torch.load(Path(source), map_location="cpu", weights_only=False).get("meta", {})
    meta["source_meta"] = {k: v for k, v in src_meta.items() if k != "config"}
    out = save_weights(model, out_name, meta)
    print(f"saved {out}: {n_layers} batch-norm layers calibrated on {len(real_grids)} real grids")
    return out
