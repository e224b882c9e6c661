"""Parameters, model size, multiply-accumulates and activation memory of a detection model.

MACs are counted with forward hooks on every Conv2d (output elements x kernel volume x input
channels / groups); pooling, ReLU and concatenation are not multiply-accumulates and are left
out. FLOPs are reported as 2 x MACs, the usual convention.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ...registry import get_model

# Table 3.4 / 3.6 of the thesis: FLOPs x 1e9, model size MB, activation memory MB.
THESIS_TABLE_3_4 = {
    "squeezedet": {"gflops": 9.7, "size_mb": 7.9, "activation_mb": 117.0, "map": 76.7, "fps": 57.2},
    "squeezedet_1.5x": {"gflops": 22.5, "size_mb": 7.9, "activation_mb": 263.3, "map": 72.4, "fps": 31.3},
    "squeezedet_0.75x": {"gflops": 5.3, "size_mb": 7.9, "activation_mb": 65.8, "map": 73.2, "fps": 92.5},
    "squeezedet_plus": {"gflops": 77.2, "size_mb": 26.8, "activation_mb": 252.7, "map": 80.4, "fps": 32.1},
}


@dataclass
class ModelStats:
    name: str
    input_shape: tuple[int, int, int]
    grid: tuple[int, int]
    num_boxes: int
    params: int
    size_mb: float  # float32 parameters, MiB (the thesis's "MB")
    macs: int
    gflops: float  # 2 * MACs / 1e9
    activation_mb: float  # float32 input + outputs of every row of Table 3.5 (squeeze included), MiB

    def as_dict(self) -> dict:
        return asdict(self)


def count_stats(module, input_shape) -> tuple[int, float]:
    """(MACs, activation MiB) of one batch-1 forward pass."""
    import torch
    from torch import nn

    from ...model_cost import conv_macs

    macs = 0
    activation_elems = 0
    hooks = []

    def conv_hook(mod, inp, out):
        nonlocal macs
        macs += conv_macs(mod, inp, out)

    def act_hook(mod, inp, out):
        nonlocal activation_elems
        activation_elems += out.numel()

    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
    top = list(getattr(module, "features", [])) + [getattr(module, "convdet", None)]
    top += [getattr(m, "squeeze", None) for m in getattr(module, "features", [])]  # Table 3.5 counts it
    for m in top:
        if m is not None:
            hooks.append(m.register_forward_hook(act_hook))
    try:
        # On the meta device only shapes are computed: exact counts at no arithmetic cost.
        module = module.to("meta").eval()
        with torch.no_grad():
            x = torch.zeros((1, *input_shape), device="meta")
            activation_elems += x.numel()
            module(x)
    finally:
        for h in hooks:
            h.remove()
    return macs, activation_elems * 4 / 2**20


def model_stats(name: str) -> ModelStats:
    spec = get_model(name, task="detection")
    module = spec.build()
    macs, act_mb = count_stats(module, spec.input_shape)
    params = sum(p.numel() for p in module.parameters())
    g = module.geometry
    return ModelStats(name=name, input_shape=tuple(spec.input_shape), grid=(g.width, g.height),
                      num_boxes=module.num_boxes, params=params, size_mb=params * 4 / 2**20,
                      macs=macs, gflops=2 * macs / 1e9, activation_mb=act_mb)
