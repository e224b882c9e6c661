"""The FBNet block family (thesis Table 8.6, Fig. 8.6) and a SqueezeSeg-like segmentation net
built from one block choice per searchable layer: what a DNAS result runs at inference.

This module is runtime code (a node can run a searched net); the search itself, which builds a
super net out of the same blocks, lives in `squeeze_perception.offline.dnas`. A mixed-precision
net is this net with its weights saved at their quantized values and, given `act_quant`, the
input of each named convolution quantized with PACT at its searched bit-width (forward pre-hooks).

Macro-architecture (the analogue of Table 8.5 for a 64 x W LiDAR grid): like SqueezeSeg the
encoder halves the width only (the 64 rows are few already). A fixed 3x3 stem (stride 1x2), then
stages of searchable layers (the first layer of a stage carries the stride and channel change),
then a fixed decoder that doubles the width per stage (nearest up-sampling + 1x1 conv) and adds the
encoder feature of the same width, as SqueezeSeg's fireDeconv path does, and a 3x3 classifier.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import constants as K


@dataclass(frozen=True)
class BlockConfig:
    """One row of Table 8.6: expansion e, depthwise kernel k, groups of the two 1x1 convs."""

    name: str
    expansion: int = 0
    kernel: int = 0
    groups: int = 1

    @property
    def is_skip(self) -> bool:
        return self.expansion == 0


BLOCKS: dict[str, BlockConfig] = {b.name: b for b in (
    BlockConfig("k3_e1", 1, 3, 1), BlockConfig("k3_e1_g2", 1, 3, 2), BlockConfig("k3_e3", 3, 3, 1),
    BlockConfig("k3_e6", 6, 3, 1), BlockConfig("k5_e1", 1, 5, 1), BlockConfig("k5_e1_g2", 1, 5, 2),
    BlockConfig("k5_e3", 3, 5, 1), BlockConfig("k5_e6", 6, 5, 1), BlockConfig("skip"))}


class ChannelShuffle(nn.Module):
    """Mixes channels between the groups of a grouped 1x1 conv (ShuffleNet), as FBNet does."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class InvertedResidual(nn.Module):
    """1x1 (groups g) -> BN -> ReLU [-> shuffle] -> kxk depthwise (stride 1 x s) -> BN -> ReLU ->
    1x1 (groups g) -> BN, plus the input when the shapes match (no ReLU after the last 1x1)."""

    def __init__(self, cin: int, cout: int, stride: int, cfg: BlockConfig, hidden: int | None = None):
        super().__init__()
        hidden = hidden or cin * cfg.expansion  # fewer after Distill-Net removed dormant channels
        g = cfg.groups
        self.cfg, self.cin, self.cout, self.stride = cfg, cin, cout, stride
        self.expand = nn.Conv2d(cin, hidden, 1, groups=g, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.shuffle = ChannelShuffle(g) if g > 1 else nn.Identity()
        pad = cfg.kernel // 2
        self.depthwise = nn.Conv2d(hidden, hidden, cfg.kernel, stride=(1, stride), padding=pad, groups=hidden,
                                   bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, cout, 1, groups=g, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        h = self.shuffle(F.relu(self.bn1(self.expand(x))))
        h = F.relu(self.bn2(self.depthwise(h)))
        return self.bn3(self.project(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        return out + x if self.residual else out


def make_block(cin: int, cout: int, stride: int, name: str, hidden: int | None = None) -> nn.Module:
    cfg = BLOCKS[name]
    if cfg.is_skip:
        if cin != cout or stride != 1:
            raise ValueError(f"'skip' needs equal input/output shapes, got {cin}->{cout} stride {stride}")
        return nn.Identity()
    if cfg.groups > 1 and (cin % cfg.groups or cout % cfg.groups):
        raise ValueError(f"block {name}: channels {cin}->{cout} not divisible by {cfg.groups} groups")
    return InvertedResidual(cin, cout, stride, cfg, hidden)


@dataclass(frozen=True)
class LayerSlot:
    """One searchable layer: its input/output channels, width stride and which blocks fit."""

    index: int
    stage: int
    cin: int
    cout: int
    stride: int

    @property
    def candidates(self) -> tuple[str, ...]:
        # 'skip' only where input and output shapes agree (a stage's first layer changes them).
        fits_skip = self.cin == self.cout and self.stride == 1
        return tuple(n for n, b in BLOCKS.items() if fits_skip or not b.is_skip)


@dataclass(frozen=True)
class MacroArch:
    """stem channels, then per stage (filters f, layers n, width stride s of the first layer)."""

    stem: int = 16
    stages: tuple[tuple[int, int, int], ...] = ((16, 1, 1), (24, 3, 2), (32, 3, 2), (48, 3, 2))
    in_channels: int = 5
    num_classes: int = K.NUM_CLASSES

    def slots(self) -> list[LayerSlot]:
        out, cin = [], self.stem
        for s, (f, n, stride) in enumerate(self.stages):
            for i in range(n):
                out.append(LayerSlot(len(out), s, cin, f, stride if i == 0 else 1))
                cin = f
        return out

    @property
    def width_divisor(self) -> int:
        """Input widths must be multiples of this (the stem and every strided stage halve it)."""
        return 2 * 2 ** sum(1 for _, _, s in self.stages if s == 2)

    def to_dict(self) -> dict:
        return {"stem": self.stem, "stages": [list(s) for s in self.stages], "in_channels": self.in_channels,
                "num_classes": self.num_classes}

    @staticmethod
    def from_dict(d: dict) -> "MacroArch":
        return MacroArch(int(d["stem"]), tuple(tuple(int(v) for v in s) for s in d["stages"]),
                         int(d.get("in_channels", 5)), int(d.get("num_classes", K.NUM_CLASSES)))


TINY_MACRO = MacroArch(stem=8, stages=((8, 1, 1), (12, 2, 2), (16, 2, 2)))


class Normalise(nn.Module):
    """Raw (x, y, z, intensity, range) -> standardised features, empty cells 0 (as SqueezeSeg)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(K.INPUT_MEAN).view(1, 5, 1, 1))
        self.register_buffer("std", torch.tensor(K.INPUT_STD).view(1, 5, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x[:, 4:5] > 0).to(x.dtype)
        return (x[:, :5] - self.mean) / self.std * mask


class Stem(nn.Module):
    def __init__(self, macro: MacroArch):
        super().__init__()
        self.normalise = Normalise()
        self.conv = nn.Conv2d(macro.in_channels, macro.stem, 3, stride=(1, 2), padding=1, bias=False)
        self.bn = nn.BatchNorm2d(macro.stem)
        self.skip = nn.Conv2d(macro.in_channels, macro.stem, 1)  # full-resolution skip (conv1_skip)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.normalise(x)
        return F.relu(self.bn(self.conv(x))), self.skip(x)


class Decoder(nn.Module):
    """Stage outputs from the narrowest up: x2 width, 1x1 conv to the next feature's channels, add."""

    def __init__(self, macro: MacroArch):
        super().__init__()
        widths = [macro.stem] + [f for f, _, _ in macro.stages]
        strides = [2] + [s for _, _, s in macro.stages]
        # One up-sampling step per width halving, back to the input width.
        self.ups = nn.ModuleList()
        self.plan: list[int] = []  # per stage (deepest first): how many x2 steps after it
        for i in range(len(widths) - 1, 0, -1):
            self.ups.append(nn.Sequential(nn.Conv2d(widths[i], widths[i - 1], 1, bias=False),
                                          nn.BatchNorm2d(widths[i - 1]), nn.ReLU()))
            self.plan.append(strides[i])
        self.final = nn.Sequential(nn.Conv2d(widths[0], widths[0], 1, bias=False), nn.BatchNorm2d(widths[0]),
                                   nn.ReLU())
        self.head = nn.Conv2d(widths[0], macro.num_classes, 3, padding=1)

    def forward(self, feats: list[torch.Tensor], full_skip: torch.Tensor) -> torch.Tensor:
        """feats: [stem output, stage 1 output, ..., last stage output]."""
        x = feats[-1]
        for step, (up, stride) in enumerate(zip(self.ups, self.plan)):
            if stride == 2:
                x = F.interpolate(x, scale_factor=(1, 2), mode="nearest")
            x = up(x) + feats[-2 - step]
        x = F.interpolate(x, scale_factor=(1, 2), mode="nearest")
        return self.head(self.final(x) + full_skip)


def stage_ends(slots: list[LayerSlot]) -> list[int]:
    """Index of the last layer of every stage."""
    return [s.index for i, s in enumerate(slots) if i + 1 == len(slots) or slots[i + 1].stage != s.stage]


class SearchedSegNet(nn.Module):
    """A fixed architecture: one block name per searchable layer of `macro`; `hidden` optionally
    overrides a block's expanded width (a distilled net); the classes come from `macro.num_classes`."""

    def __init__(self, choices: list[str] | tuple[str, ...], macro: MacroArch | dict | None = None,
                 hidden: list[int | None] | None = None):
        super().__init__()
        macro = MacroArch.from_dict(macro) if isinstance(macro, dict) else (macro or MacroArch())
        slots = macro.slots()
        if len(choices) != len(slots):
            raise ValueError(f"{len(choices)} block choices for {len(slots)} searchable layers")
        self.macro, self.choices = macro, tuple(choices)
        self.in_channels = macro.in_channels
        self.stem = Stem(macro)
        hidden = list(hidden) if hidden else [None] * len(slots)
        self.hidden = hidden
        self.layers = nn.ModuleList(make_block(s.cin, s.cout, s.stride, c, h) for s, c, h in zip(slots, choices, hidden))
        self.ends = stage_ends(slots)
        self.decoder = Decoder(macro)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, full_skip = self.stem(x)
        feats = [h]
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i in self.ends:
                feats.append(h)
        return self.decoder(feats, full_skip)


class ActivationQuantizer:
    """A forward pre-hook that quantizes a convolution's input with PACT (accelerator/quant.py
    `quantize_activation`): how a mixed-precision net runs with its searched activation
    bit-widths. A hook adds no parameters, so the state_dict keys stay those of the plain net
    and weights saved from it load unchanged."""

    def __init__(self, bits: int, alpha: float, signed: bool):
        if not (isinstance(bits, int) and bits >= 1):
            raise ValueError(f"activation bits must be a positive integer, got {bits!r}")
        if not float(alpha) > 0:
            raise ValueError(f"PACT clip alpha must be > 0, got {alpha!r}")
        self.bits, self.alpha, self.signed = bits, float(alpha), bool(signed)

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        from ..accelerator.quant import quantize_activation

        return (quantize_activation(args[0], self.bits, self.alpha, self.signed), *args[1:])


def apply_act_quant(net: nn.Module, act_quant: dict[str, list | tuple]) -> dict[str, ActivationQuantizer]:
    """Quantize the input of each named convolution: {'layers.3.expand': [bits, alpha, signed], ...}
    (names as in the plain SearchedSegNet); 32 bits or more leaves that input float."""
    hooks = {}
    for name, spec in act_quant.items():
        try:
            conv = net.get_submodule(name)
        except AttributeError as exc:
            raise ValueError(f"act_quant names '{name}', which is not a module of this net") from exc
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"act_quant names '{name}', a {type(conv).__name__}, not a convolution")
        bits, alpha, signed = spec
        if int(bits) >= 32:
            continue
        hooks[name] = ActivationQuantizer(int(bits), alpha, signed)
        conv.register_forward_pre_hook(hooks[name])
    return hooks


def build_searched_segnet(choices: list[str], macro: dict | None = None, hidden: list[int | None] | None = None,
                          act_quant: dict[str, list | tuple] | None = None) -> SearchedSegNet:
    """Registry builder: `builder_kwargs` carry the choices, macro dict (and hidden widths) of a
    manifest, and for a mixed-precision net `act_quant` ({conv name: [bits, alpha, signed]})."""
    net = SearchedSegNet(choices, macro, hidden)
    net.act_quant = apply_act_quant(net, act_quant) if act_quant else {}
    return net
