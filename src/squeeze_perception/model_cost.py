"""Multiply-accumulate counting shared by the detection and segmentation tools (one forward
pass with hooks; compute bounds in the benchmarks are 2 x these MACs / peak FLOP/s)."""
from __future__ import annotations

import torch
from torch import nn


def conv_macs(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """MACs of one Conv2d / ConvTranspose2d call, from its forward-hook arguments."""
    kh, kw = module.kernel_size
    if isinstance(module, nn.ConvTranspose2d):  # every input pixel scatters a full kernel
        x = inputs[0]
        return x.shape[0] * x.shape[2] * x.shape[3] * module.in_channels * module.out_channels * kh * kw // module.groups
    return output.numel() * (module.in_channels // module.groups) * kh * kw


def count_macs(model: nn.Module, sample: torch.Tensor) -> int:
    """Multiply-accumulates of every convolution / transposed convolution in one forward."""
    return count_workload(model, sample)[0]


def count_workload(model: nn.Module, sample: torch.Tensor) -> tuple[int, int, int]:
    """(MACs, values moved, parameters) of one forward: the MACs of count_macs; values = the input
    plus every convolution output counted twice (written, then read by the next layer); the
    parameter count. The energy model (energy.py) turns these into DRAM bytes."""
    macs = 0
    values = int(sample.numel())

    def hook(mod, inp, out):
        nonlocal macs, values
        macs += conv_macs(mod, inp, out)
        values += 2 * int(out.numel())

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in hooks:
            h.remove()
    return int(macs), int(values), int(sum(p.numel() for p in model.parameters()))
