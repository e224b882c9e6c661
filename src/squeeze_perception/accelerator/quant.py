"""Fake-quantized 1x1 convolutions for DiracDeltaNet: DoReFa weights, PACT activations with one
network-wide scale (thesis 7.4, eqs. 7.10-7.12), and the progressive precision schedule.

Representation. With a shared scale s (eq. 7.12) every activation of the quantized network is
`code * s / L_a` with an integer code in [0, L_a], L_a = 2**abits - 1. The modules here therefore
pass the *codes* between layers (float tensors holding integers; gradients by the straight-through
estimator), and every layer knows the value of one input unit (`in_unit`). Concatenating, pooling,
shifting and shuffling codes is exact, as on the accelerator. A DoReFa weight is `w_int / L_w`
with w_int = 2 i - L_w an odd integer in [-L_w, L_w] (i the k-bit index the hardware stores), so a
convolution of codes with w_int is an exact integer accumulator in float32 as long as
|acc| < 2**24 (Cin * L_w * L_a; 230k for Cin = 1024 at w4a4). Everything after the accumulator
(scale, batch norm, PACT clip, rounding) is one element-wise function `post(acc)` per output
channel, monotone in acc: the accelerator's ActQuant look-up table (compiler.py derives its 15
thresholds per channel by evaluating exactly this function).

Q_k follows DoReFa: round to the nearest of {i / (2**k - 1)}; eq. 7.10 divides by 2 max|tanh w|
(the thesis prints `2^{max(...)}`, a typesetting slip of DoReFa's formula).
Precisions: `wbits`/`abits` of 32 mean float (the fp32 stage, PACT clip without rounding).
They live in a buffer, so a checkpoint restores its own precision.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

FP = 32  # "bits" of an unquantized tensor


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() forward (half to even), identity backward."""
    return x + (torch.round(x) - x).detach()


def levels(bits: int) -> int:
    return 2 ** bits - 1


def dorefa_int(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa k-bit weights as odd integers w_int = 2 Q - L in [-L, L]; the weight is w_int / L."""
    L = levels(bits)
    t = torch.tanh(weight)
    t = t / (2 * t.abs().max().clamp_min(1e-12)) + 0.5
    return 2 * round_ste(t * L) - L


def pact(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Eq. 7.11: clip to [0, alpha], written so that alpha gets PACT's gradient."""
    return (x.abs() - (x - alpha).abs() + alpha) / 2


def quantize_activation(x: torch.Tensor, bits: int, alpha: torch.Tensor | float, signed: bool) -> torch.Tensor:
    """PACT (thesis eq. 8.11) in value units, the mixed-precision search's activation quantizer:
    clip to [0, alpha] (signed: [-alpha, alpha]) and round to 2**bits - 1 steps, so at most
    2**bits distinct values reach the next convolution. Runtime code, because a mixed-precision
    net emulates its activation bit-widths at inference too (searched_net act_quant)."""
    if bits >= FP:
        return x
    if not signed:
        return round_ste(pact(x, alpha) / alpha * levels(bits)) * alpha / levels(bits)
    clipped = pact(x + alpha, 2 * alpha) - alpha  # [-alpha, alpha], PACT's gradient for alpha
    return round_ste((clipped + alpha) / (2 * alpha) * levels(bits)) * (2 * alpha) / levels(bits) - alpha


class InputQuant(nn.Module):
    """Host-side quantization of the (normalised) network input to signed `bits`-bit codes
    of `unit` each; identity while the network is at float precision."""

    def __init__(self, unit: float = 1 / 16, bits: int = 8):
        super().__init__()
        self.register_buffer("unit", torch.tensor(float(unit), dtype=torch.float32))
        self.register_buffer("bits", torch.tensor([bits, 1], dtype=torch.int64))  # [bits, active]
        self.qmax = 2 ** (bits - 1) - 1

    @property
    def active(self) -> bool:
        return bool(self.bits[1].item())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return torch.clamp(round_ste(x / self.unit), -self.qmax, self.qmax)


class QConv(nn.Module):
    """1x1 convolution (no bias) + batch norm + PACT ActQuant, or, with act=False, the float
    classifier (bias, no activation). `first`: fed by InputQuant; `in_div`: the input is a sum
    over `in_div` pixels (global average pool folded into the scale)."""

    def __init__(self, cin: int, cout: int, act: bool = True, first: bool = False, in_div: int = 1,
                 alpha_init: float = 4.0, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.cin, self.cout, self.act, self.first, self.in_div = cin, cout, act, first, in_div
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.empty(cout, cin))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")
        if act:
            self.gamma = nn.Parameter(torch.ones(cout))
            self.beta = nn.Parameter(torch.zeros(cout))
            self.register_buffer("running_mean", torch.zeros(cout))
            self.register_buffer("running_var", torch.ones(cout))
            self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
        else:
            self.bias = nn.Parameter(torch.zeros(cout))
        self.register_buffer("bits", torch.tensor([FP, FP], dtype=torch.int64))  # [wbits, abits]
        self.register_buffer("in_unit", torch.tensor(1.0))  # value of one input code
        self.register_buffer("s", torch.tensor(0.0))  # network-wide activation scale (0: unset)

    @property
    def wbits(self) -> int:
        return int(self.bits[0].item())

    @property
    def abits(self) -> int:
        return int(self.bits[1].item())

    def int_weight(self) -> torch.Tensor:
        """Weights in accumulator units (odd integers when quantized) and their unit."""
        if self.wbits >= FP:
            return self.weight
        return dorefa_int(self.weight, self.wbits)

    def weight_unit(self) -> float:
        return 1.0 if self.wbits >= FP else 1.0 / levels(self.wbits)

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.int_weight()[:, :, None, None])

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (a, b) with y = acc * a + b for inference (scale and BN folded)."""
        with torch.no_grad():
            k = self.in_unit * self.weight_unit()
            if not self.act:
                return (k * torch.ones_like(self.bias)), self.bias.detach().clone()
            g = self.gamma / torch.sqrt(self.running_var + self.eps)
            return k * g, self.beta - self.running_mean * g

    def post(self, acc: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None
             ) -> torch.Tensor:
        """Inference-time map accumulator -> output code (or logit): element-wise, per channel."""
        if a is None:
            a, b = self.folded()
        y = acc * a.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)
        if not self.act:
            return y
        alpha = self.alpha.detach()
        y = torch.clamp(y, min=torch.zeros_like(alpha), max=alpha)
        if self.abits >= FP:
            return y
        return torch.round(y / alpha * levels(self.abits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = self.accumulate(x)
        if not self.training:
            return self.post(acc)
        y = acc * (self.in_unit * self.weight_unit())
        if not self.act:
            return y + self.bias.view(1, -1, 1, 1)
        y = F.batch_norm(y, self.running_mean, self.running_var, self.gamma, self.beta, True,
                         self.momentum, self.eps)
        y = pact(y, self.alpha)
        if self.abits >= FP:
            return y
        return round_ste(y / self.alpha * levels(self.abits))


# ---------------------------------------------------------------------------- network-wide
def qconvs(model: nn.Module) -> list[QConv]:
    return [m for m in model.modules() if isinstance(m, QConv)]


def precision(model: nn.Module) -> tuple[int, int]:
    convs = qconvs(model)
    return (convs[0].wbits, convs[0].abits) if convs else (FP, FP)


def shared_scale(model: nn.Module) -> float | None:
    """The network-wide s of eq. 7.12 (None before the first quantized step)."""
    for m in qconvs(model):
        if float(m.s) > 0:
            return float(m.s)
    return None


def set_precision(model: nn.Module, wbits: int, abits: int, s: float | None = None) -> float | None:
    """Set every QConv / InputQuant of `model` to w`wbits`a`abits`; returns the shared scale s.

    s (eq. 7.12) defaults to the one already in use, else the mean of the layers' PACT alphas
    (the thesis: s should be close to the alpha^l so s/alpha^l neither vanishes nor explodes).
    """
    convs = qconvs(model)
    quant_in = [m for m in model.modules() if isinstance(m, InputQuant)]
    if abits < FP and s is None:
        s = shared_scale(model)
        if s is None:
            alphas = [float(m.alpha.detach()) for m in convs if m.act]
            s = sum(alphas) / max(len(alphas), 1)
    if s is not None:
        s = float(torch.tensor(s, dtype=torch.float32))  # as stored in the buffers
    for q in quant_in:
        q.bits[1] = int(abits < FP)
    in_unit_first = float(quant_in[0].unit) if quant_in and abits < FP else 1.0
    for m in convs:
        m.bits[0], m.bits[1] = wbits, abits
        if s is not None:
            m.s.fill_(s)
        base = in_unit_first if m.first else (s / levels(abits) if abits < FP else 1.0)
        m.in_unit.fill_(base / m.in_div)
    return s if abits < FP else None


# Thesis 7.4 walks the precision grid diagonally from C_32,32 down to C_4,4; ours by default:
PROGRESSIVE_SCHEDULE: tuple[tuple[int, int], ...] = ((FP, FP), (8, 8), (4, 4))


def progressive_quantize(model: nn.Module, fine_tune: Callable[[nn.Module, tuple[int, int]], dict | None],
                         schedule: Iterable[tuple[int, int]] = PROGRESSIVE_SCHEDULE) -> list[dict]:
    """Progressive quantization (7.4, Fig. 7.11): for each (wbits, abits) in `schedule`, the
    network of the previous step initialises this one, which `fine_tune(model, (w, a))` then
    trains (to convergence at fp32, a few epochs per step after). Returns one record per step:
    {'wbits', 'abits', 's', **whatever fine_tune returned}."""
    history = []
    for wbits, abits in schedule:
        s = set_precision(model, wbits, abits)
        metrics = fine_tune(model, (wbits, abits)) or {}
        history.append({"wbits": wbits, "abits": abits, "s": s, **metrics})
    return history


def accumulator_bound(m: QConv, in_max: int) -> int:
    """Largest |acc| a layer can produce from inputs with |code| <= in_max."""
    return m.cin * (levels(m.wbits) if m.wbits < FP else 0) * in_max


def exact_in_float32(bound: int) -> bool:
    return bound < 2 ** 24


__all__ = ["FP", "InputQuant", "QConv", "dorefa_int", "pact", "quantize_activation", "round_ste", "levels",
           "set_precision", "precision", "shared_scale", "progressive_quantize", "PROGRESSIVE_SCHEDULE",
           "accumulator_bound", "exact_in_float32"]
