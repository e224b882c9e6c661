"""Latency lookup tables (thesis eqs. 8.19/8.20): the latency of every candidate block of every
searchable layer, at that layer's input shape, on one target; an architecture's latency is the sum
over its layers plus the fixed stem/decoder/head.

Targets:
  onnxruntime          measured: the block alone exported to ONNX, run by ONNX Runtime's CPU
                       provider with its default threads (fp32, batch 1), median of repeats.
  onnxruntime-1thread  the same with one intra-op thread (a small single-core device).
  onnxruntime-int8     the block's ONNX graph statically quantized as the onnxruntime-int8
                       backend does it (offline/quantize.py: QDQ, per-channel int8 weights, uint8
                       activations; calibrated on random inputs of the block's shape, which set
                       the scales but not the speed), timed like onnxruntime.
  synetgy              modelled: the Synetgy cycle model of accelerator/hardware.py (thesis 7.5):
                       1x1 convolutions on the FPGA (IC x OC lanes, DRAM traffic, one driver call
                       per convolution and group), everything else (depthwise convolutions, channel
                       shuffles, residual additions, the first layer, the 3x3 classifier) on the
                       ARM cores at the calibrated efficiency. Synetgy has no depthwise engine
                       (DiracDeltaNet uses shifts instead), which is exactly the kind of difference
                       the Table 8.9 experiment is about.
"""
from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..segmentation.searched_net import BLOCKS, Decoder, LayerSlot, MacroArch, SearchedSegNet, Stem, make_block

TARGETS = ("onnxruntime", "onnxruntime-1thread", "onnxruntime-int8", "synetgy")


def slot_input_shapes(macro: MacroArch, height: int, width: int) -> list[tuple[int, int, int]]:
    """(C, H, W) at the input of every searchable layer."""
    w = width // 2  # the stem halves the width
    shapes = []
    for s in macro.slots():
        shapes.append((s.cin, height, w))
        w //= s.stride
    return shapes


# ------------------------------------------------------------------------------ measured (ORT)
def _quantized(fp32_graph: bytes, names: list[str], inputs: tuple[torch.Tensor, ...], whole_net: bool) -> bytes:
    """The graph quantized the way the onnxruntime-int8 backend's models are: its QuantOptions
    defaults for a whole net (classifier kept in fp32); every convolution in int8 for a block or
    the fixed parts alone."""
    import tempfile

    from .quantize import QuantOptions, quantize_onnx

    rng = np.random.default_rng(0)
    batches = [{n: (t.numpy() * rng.uniform(0.5, 1.5)).astype(np.float32) for n, t in zip(names, inputs)}
               for _ in range(4)]
    with tempfile.TemporaryDirectory(prefix="lut_int8.") as tmp:
        fp32, out = Path(tmp) / "block.onnx", Path(tmp) / "block.int8.onnx"
        fp32.write_bytes(fp32_graph)
        quantize_onnx(fp32, out, batches, QuantOptions(head_conv_fp32=whole_net))
        return out.read_bytes()


def onnxruntime_us(module: nn.Module, inputs: tuple[torch.Tensor, ...], threads: int = 0,
                   repeats: int = 20, warmup: int = 3, int8: bool = False, whole_net: bool = False) -> float:
    """Median wall time in microseconds of `module(*inputs)` exported to ONNX (fp32, or with
    `int8` statically quantized as the onnxruntime-int8 backend runs it)."""
    from ..backends import ort_session

    import onnxruntime as ort

    module = module.eval()
    buf = io.BytesIO()
    names = [f"in{i}" for i in range(len(inputs))]
    torch.onnx.export(module, inputs, buf, dynamo=False, opset_version=17, input_names=names)
    graph = _quantized(buf.getvalue(), names, inputs, whole_net) if int8 else buf.getvalue()
    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    session = ort_session(graph, opts)
    feed = {n: t.numpy() for n, t in zip(names, inputs)}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e6)


class _FixedParts(nn.Module):
    """Stem + decoder + classifier of a macro-architecture, fed stage outputs of the right shape:
    the part of every architecture's latency that the search cannot change."""

    def __init__(self, macro: MacroArch):
        super().__init__()
        self.stem, self.decoder = Stem(macro), Decoder(macro)

    def forward(self, x, *stage_feats):
        h, skip = self.stem(x)
        return self.decoder([h] + list(stage_feats), skip)


def _fixed_inputs(macro: MacroArch, height: int, width: int) -> tuple[torch.Tensor, ...]:
    feats, w = [], width // 2
    for f, _, s in macro.stages:
        w //= s
        feats.append(torch.rand(1, f, height, w))
    return (torch.rand(1, macro.in_channels, height, width) * 20,) + tuple(feats)


# ------------------------------------------------------------------------------ Synetgy model
def _synetgy_conv1x1_s(cin: int, cout: int, groups: int, pixels: int, hw) -> float:
    """One 1x1 convolution on the FPGA: one accelerator call per group (the engine has no group
    mode); compute and DRAM overlap (double buffering), plus the driver's call overhead."""
    cg_in, cg_out = cin // groups, cout // groups
    ict, oct_ = math.ceil(cg_in / hw.ic), math.ceil(cg_out / hw.oc)
    tile_px = max(1, hw.input_buffer_bytes * 8 // (ict * hw.ic * hw.abits))
    cycles = ict * oct_ * pixels + math.ceil(pixels / tile_px) * oct_ * hw.fill_cycles
    dram = cg_in * cg_out * hw.wbits / 8 + pixels * (cg_in + cg_out) * hw.abits / 8
    return groups * (max(cycles / hw.clock_hz, dram / hw.dram_bytes_per_s) + hw.t_call_s)


def _synetgy_cpu_s(macs: float, nbytes: float, hw) -> float:
    return (macs / hw.cpu_macs_per_s + nbytes / hw.cpu_bytes_per_s) / hw.cpu_efficiency


def synetgy_block_us(slot: LayerSlot, name: str, height: int, width: int, hw=None) -> float:
    from ..accelerator.hardware import HWConfig

    hw = hw or HWConfig()
    cfg = BLOCKS[name]
    if cfg.is_skip:
        return 0.0
    hidden = slot.cin * cfg.expansion
    px_in, px_out = height * width, height * (width // slot.stride)
    act = hw.abits / 8
    t = _synetgy_conv1x1_s(slot.cin, hidden, cfg.groups, px_in, hw)
    if cfg.groups > 1:
        t += _synetgy_cpu_s(0, 2 * hidden * px_in * act, hw)
    t += _synetgy_cpu_s(hidden * px_out * cfg.kernel ** 2, hidden * (px_in + px_out) * act, hw)
    t += _synetgy_conv1x1_s(hidden, slot.cout, cfg.groups, px_out, hw)
    if slot.cin == slot.cout and slot.stride == 1:
        t += _synetgy_cpu_s(0, 3 * slot.cout * px_out * act, hw)
    return t * 1e6


def synetgy_fixed_us(macro: MacroArch, height: int, width: int, hw=None) -> float:
    from ..accelerator.hardware import HWConfig

    hw = hw or HWConfig()
    act = hw.abits / 8
    half = height * width // 2
    # Stem (3x3 stride 1x2 and the 1x1 full-resolution skip) on the CPU, like Synetgy's first layer.
    t = _synetgy_cpu_s(half * macro.stem * macro.in_channels * 9 + height * width * macro.stem * macro.in_channels,
                       height * width * (macro.in_channels * 1 + macro.stem * act), hw)
    widths = [macro.stem] + [f for f, _, _ in macro.stages]
    w = width // 2
    sizes = [w]
    for _, _, s in macro.stages:
        w //= s
        sizes.append(w)
    for i in range(len(widths) - 1, 0, -1):  # decoder: 1x1 on the FPGA, the addition on the CPU
        px = height * sizes[i - 1]
        t += _synetgy_conv1x1_s(widths[i], widths[i - 1], 1, px, hw)
        t += _synetgy_cpu_s(0, 3 * widths[i - 1] * px * act, hw)
    t += _synetgy_conv1x1_s(macro.stem, macro.stem, 1, height * width, hw)
    t += _synetgy_cpu_s(height * width * macro.stem * macro.num_classes * 9,
                        height * width * (macro.stem * act + macro.num_classes * 4), hw)
    return t * 1e6


# ------------------------------------------------------------------------------ the table
@dataclass
class LatencyTable:
    target: str
    height: int
    width: int
    macro: dict
    fixed_us: float
    blocks: dict[str, float] = field(default_factory=dict)  # "<layer>:<block>" -> microseconds

    def layer(self, slot: LayerSlot) -> torch.Tensor:
        """Latencies of slot's candidates, in `slot.candidates` order (eq. 8.20's LAT(b_l,i))."""
        return torch.tensor([self.blocks[f"{slot.index}:{n}"] for n in slot.candidates], dtype=torch.float32)

    def architecture_us(self, choices) -> float:
        """Eq. 8.19: the lookup-table latency of one architecture."""
        return self.fixed_us + sum(self.blocks[f"{i}:{c}"] for i, c in enumerate(choices))

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.__dict__, indent=1))
        return path

    @staticmethod
    def load(path: Path) -> "LatencyTable":
        return LatencyTable(**json.loads(Path(path).read_text()))


def _int8(target: str) -> bool:
    return target == "onnxruntime-int8"


def _threads(target: str) -> int:
    return 1 if target == "onnxruntime-1thread" else 0


def build_table(macro: MacroArch, height: int, width: int, target: str, repeats: int = 20,
                show_progress: bool = True) -> LatencyTable:
    """Measure (or model) every candidate block of every layer; layers with the same shape share
    their measurements."""
    if target not in TARGETS:
        raise ValueError(f"unknown latency target '{target}' ({', '.join(TARGETS)})")
    from .common import progress

    slots = macro.slots()
    shapes = slot_input_shapes(macro, height, width)
    measured: dict[tuple, float] = {}
    table = LatencyTable(target, height, width, macro.to_dict(), 0.0)
    todo = sum(len(s.candidates) for s in slots) + 1
    torch.manual_seed(0)
    with progress(f"latency table {target}", todo, show_progress) as advance:
        for slot, (c, h, w) in zip(slots, shapes):
            for name in slot.candidates:
                key = (slot.cin, slot.cout, slot.stride, h, w, name)
                if key not in measured:
                    if target == "synetgy":
                        measured[key] = synetgy_block_us(slot, name, h, w)
                    elif BLOCKS[name].is_skip:
                        measured[key] = 0.0  # an identity costs no operator at all
                    else:
                        block = make_block(slot.cin, slot.cout, slot.stride, name)
                        measured[key] = onnxruntime_us(block, (torch.rand(1, c, h, w),), _threads(target), repeats,
                                                       int8=_int8(target))
                table.blocks[f"{slot.index}:{name}"] = measured[key]
                advance()
        if target == "synetgy":
            table.fixed_us = synetgy_fixed_us(macro, height, width)
        else:
            table.fixed_us = onnxruntime_us(_FixedParts(macro), _fixed_inputs(macro, height, width),
                                            _threads(target), repeats, int8=_int8(target))
        advance()
    return table


def measure_architecture_us(net: SearchedSegNet, height: int, width: int, target: str, repeats: int = 20) -> float:
    """The whole network on a target: measured end to end for ONNX Runtime (so the table's
    additivity assumption is checked), the lookup-table sum for the modelled Synetgy."""
    if target == "synetgy":
        slots = net.macro.slots()
        shapes = slot_input_shapes(net.macro, height, width)
        return synetgy_fixed_us(net.macro, height, width) + sum(
            synetgy_block_us(s, c, h, w) for s, c, (_, h, w) in zip(slots, net.choices, shapes))
    x = torch.rand(1, net.in_channels, height, width) * 20
    return onnxruntime_us(net, (x,), _threads(target), repeats, int8=_int8(target), whole_net=True)
