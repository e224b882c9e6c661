"""Compile a fake-quantized DiracDelta model into an integer program for the Synetgy emulator.

`compile_model(model, input_shape)` traces `model.body` with torch.fx (our operators are leaves),
infers every tensor's shape by rule (no forward pass), and turns each node into an `Op`:

- `quant_in`  (host CPU) float input -> signed 8-bit codes, round half to even, as InputQuant;
- `conv`      1x1 convolution: integer weights w_int (DoReFa, odd integers in [-15, 15] at
  4 bits), an integer accumulator, then the ActQuant look-up table: per output channel c and
  level j = 1..L_a a threshold T[c, j] with code = #{j : sign[c] * acc >= T[c, j]}. The thresholds
  are found by bisection over the integers on the torch module's own `post()` (scale, folded
  batch norm, PACT clip, rounding), which is monotone in acc, so the table equals the float
  function at every integer accumulator the layer can produce. The classifier (act=False) keeps
  the float `acc * a + b` dequantization (host CPU);
- `shift`, `pool`, `upsample`, `concat`, `slice`: data movement;
- `shuffle`, `sumpool`: CPU fallbacks (7.5).

Placement: a conv fed by `quant_in` (the first layer, 3 or 6 input channels << the IC tile)
runs on the CPU, every other conv on the accelerator; data movement is free address
generation fused into the neighbouring accelerator call.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from .quant import FP, InputQuant, QConv, accumulator_bound, exact_in_float32, levels
from .shift import ChannelShuffle, GlobalSumPool, MaxPool, Shift, Upsample

LEAVES = (InputQuant, QConv, Shift, ChannelShuffle, MaxPool, Upsample, GlobalSumPool)


class UnsupportedModel(ValueError):
    """The model uses an operator, or a precision, the Synetgy accelerator does not support."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAVES) or super().is_leaf_module(m, qualname)


@dataclass
class Op:
    name: str
    kind: str  # input quant_in conv shift pool upsample concat slice shuffle sumpool flatten output
    inputs: list[str]
    shape: tuple[int, ...]  # per frame (no batch dimension)
    place: str  # "cpu" | "fpga" | "dma" (address generation, free) | "none"
    params: dict[str, Any] = field(default_factory=dict)
    macs: int = 0  # per frame


@dataclass
class Program:
    ops: list[Op]
    input_shape: tuple[int, ...]
    wbits: int
    abits: int
    output: str

    def by_name(self) -> dict[str, Op]:
        return {op.name: op for op in self.ops}

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)

    def convs(self, place: str | None = None) -> list[Op]:
        return [op for op in self.ops if op.kind == "conv" and (place is None or op.place == place)]


def _act_thresholds(m: QConv, in_max: int) -> dict[str, np.ndarray]:
    """ActQuant table of one layer: sign (C,), thresholds T (C, L) int64 (see module doc)."""
    L = levels(m.abits)
    bound = accumulator_bound(m, in_max)
    if not exact_in_float32(bound + 1):
        raise UnsupportedModel(f"accumulator bound {bound} of a {m.cin}->{m.cout} layer is not exact "
                               "in float32 (the reference model's arithmetic)")
    a, b = m.folded()
    sign = np.where(a.numpy() < 0, -1, 1).astype(np.int64)
    C = m.cout
    lo, hi = -bound - 1, bound + 1
    j = torch.arange(1, L + 1, dtype=torch.float32).view(1, L)
    s_t = torch.from_numpy(sign).view(C, 1)

    def ge(acc: np.ndarray) -> np.ndarray:  # g(sign * acc) >= j, acc (C, L) int64
        x = (s_t * torch.from_numpy(acc)).to(torch.float32).view(1, C, L, 1)
        return (m.post(x, a, b).view(C, L) >= j).numpy()

    low = np.full((C, L), lo, np.int64)
    high = np.full((C, L), hi, np.int64)
    ge_lo, ge_hi = ge(low), ge(high)
    while (high - low > 1).any():
        mid = (low + high) // 2
        g = ge(mid)
        high = np.where(g, mid, high)
        low = np.where(g, low, mid)
    T = np.where(ge_lo, lo, np.where(ge_hi, high, hi + 1))
    return {"sign": sign, "T": T, "levels": L}


def _shape_of(node: fx.Node, shapes: dict[str, tuple], modules: dict[str, nn.Module]) -> tuple:
    arg_shapes = [shapes[a.name] for a in node.all_input_nodes]
    if node.op == "call_module":
        m = modules[node.target]
        (c, h, w) = arg_shapes[0]
        if isinstance(m, QConv):
            return (m.cout, h, w)
        if isinstance(m, MaxPool):
            return (c, h // m.kernel[0], w // m.kernel[1])
        if isinstance(m, Upsample):
            return (c, h * m.factor[0], w * m.factor[1])
        if isinstance(m, GlobalSumPool):
            return (c, 1, 1)
        return (c, h, w)
    if node.target is torch.cat:
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if dim != 1:
            raise UnsupportedModel("concatenation is supported along channels only")
        return (sum(s[0] for s in arg_shapes), *arg_shapes[0][1:])
    if node.target is operator.getitem:
        view = np.broadcast_to(np.empty((), np.int8), (1, *arg_shapes[0]))
        return view[node.args[1]].shape[1:]
    if node.op == "call_method" and node.target == "flatten":
        return (int(np.prod(arg_shapes[0])),)
    raise UnsupportedModel(f"operator {node.op} {node.target} is not supported by the accelerator")


def compile_model(model: nn.Module, input_shape: tuple[int, ...], tables: bool = True) -> Program:
    """model: an nn.Module with `body` (traced) at a quantized precision; input_shape: (C, H, W)
    of the body's input (after the host-side `preprocess`). tables=False skips the weights and
    ActQuant tables (enough for the cost model, not for running)."""
    body = model.body if hasattr(model, "body") else model
    convs = [m for m in body.modules() if isinstance(m, QConv)]
    if not convs:
        raise UnsupportedModel(f"{type(model).__name__} has no QConv layers (the accelerator runs "
                               "only 1x1 convolutions: use a DiracDelta model)")
    for m in body.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            raise UnsupportedModel(f"{type(model).__name__} contains {type(m).__name__} "
                                   f"{getattr(m, 'kernel_size', '')}: the accelerator supports 1x1 QConv only")
    wbits, abits = convs[0].wbits, convs[0].abits
    if wbits >= FP or abits >= FP:
        raise UnsupportedModel(f"{type(model).__name__} is at float precision (w{wbits}a{abits}); "
                               "quantize it first (set_precision / progressive_quantize)")
    was_training = body.training
    body.eval()
    graph = _Tracer().trace(body)
    modules = dict(body.named_modules())
    shapes: dict[str, tuple] = {}
    code_max: dict[str, int] = {}  # largest |integer| a tensor can hold
    ops: list[Op] = []
    producer: dict[str, Op] = {}
    output = ""
    for node in graph.nodes:
        ins = [a.name for a in node.all_input_nodes]
        if node.op == "placeholder":
            shapes[node.name] = tuple(input_shape)
            op = Op(node.name, "input", [], tuple(input_shape), "none")
        elif node.op == "output":
            output = node.all_input_nodes[0].name
            continue
        else:
            shape = _shape_of(node, shapes, modules)
            shapes[node.name] = shape
            m = modules.get(node.target) if node.op == "call_module" else None
            in_max = max((code_max.get(i, 0) for i in ins), default=0)
            if isinstance(m, InputQuant):
                op = Op(node.name, "quant_in", ins, shape, "cpu",
                        {"unit": np.float32(m.unit.item()), "qmax": m.qmax})
                code_max[node.name] = m.qmax
            elif isinstance(m, QConv):
                first = producer[ins[0]].kind == "quant_in"
                params: dict[str, Any] = {"cin": m.cin, "cout": m.cout, "act": m.act, "in_max": in_max,
                                          "bound": accumulator_bound(m, in_max)}
                if tables:
                    params["w"] = m.int_weight().detach().numpy().astype(np.int64)
                if m.act:
                    if tables:
                        params.update(_act_thresholds(m, in_max))
                    code_max[node.name] = levels(m.abits)
                elif tables:
                    a, b = m.folded()
                    params.update(a=a.numpy().astype(np.float32), b=b.numpy().astype(np.float32))
                op = Op(node.name, "conv", ins, shape, "cpu" if first else "fpga", params,
                        macs=m.cin * m.cout * shape[1] * shape[2])
            elif isinstance(m, Shift):
                op = Op(node.name, "shift", ins, shape, "dma", {"dilation": m.dilation})
            elif isinstance(m, MaxPool):
                op = Op(node.name, "pool", ins, shape, "dma", {"kernel": m.kernel})
            elif isinstance(m, Upsample):
                op = Op(node.name, "upsample", ins, shape, "dma", {"factor": m.factor})
            elif isinstance(m, ChannelShuffle):
                op = Op(node.name, "shuffle", ins, shape, "cpu")
            elif isinstance(m, GlobalSumPool):
                op = Op(node.name, "sumpool", ins, shape, "cpu")
                code_max[node.name] = in_max * int(np.prod(shapes[ins[0]][1:]))
            elif node.target is torch.cat:
                op = Op(node.name, "concat", ins, shape, "dma")
            elif node.target is operator.getitem:
                op = Op(node.name, "slice", ins, shape, "dma", {"index": node.args[1]})
            elif node.op == "call_method" and node.target == "flatten":
                op = Op(node.name, "flatten", ins, shape, "dma")
            else:
                raise UnsupportedModel(f"operator {node.op} {node.target} is not supported by the accelerator")
            code_max.setdefault(node.name, in_max)
        ops.append(op)
        producer[op.name] = op
    # consumers, for the cost model (a conv whose only consumer is a max-pool writes the pooled map)
    users: dict[str, list[str]] = {op.name: [] for op in ops}
    for op in ops:
        for i in op.inputs:
            users[i].append(op.name)
    by_name = {op.name: op for op in ops}
    for op in ops:
        op.params["users"] = users[op.name]
        if op.kind == "conv":
            u = [by_name[n] for n in users[op.name]]
            op.params["written"] = (int(np.prod(u[0].shape)) if len(u) == 1 and u[0].kind == "pool"
                                    else int(np.prod(op.shape)))
            op.params["read"] = int(np.prod(shapes[op.inputs[0]]))
    body.train(was_training)
    return Program(ops, tuple(input_shape), wbits, abits, output)
