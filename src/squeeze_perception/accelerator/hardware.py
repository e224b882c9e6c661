"""Cycle and energy model of Synetgy on the Ultra96 (thesis 7.5), and its one-time calibration.

Execution (Fig. 7.12): the ARM CPU walks the network layer by layer and, for a batch of B frames,
invokes the accelerator once per 1x1 convolution (with the pooling / shift / split / concat /
up-sampling next to it done by the accelerator's address generation), and does the rest itself:
the first layer (its 3-6 input channels would use a few of the IC = 32 lanes), the channel
shuffles (memory copies keeping the layout), the global pool, input quantization and the final
dequantization.

Accelerator call, per layer and batch:
  compute cycles = ceil(Cin/IC) * ceil(Cout/OC) * H*W * B           (IC x OC 4-bit MACs per cycle)
                   + tiles * ceil(Cout/OC) * fill                    (pipeline fill per pass)
      tiles = ceil(H*W*B / pixels per tile), a tile = what the input buffer holds at ceil(Cin/IC)*IC
  DRAM bytes     = weights (once per batch: they stay in the weight buffer while B frames stream;
                   a layer whose weights exceed the buffer runs in chunks and re-reads its input
                   once per chunk) + B * (input * chunks + output) at 4 bits per activation
  busy = max(compute cycles / f, DRAM bytes / DRAM bandwidth)         (double-buffered overlap)
  time = busy + t_call                                               (driver invocation overhead)
CPU work: MACs / (nominal MAC rate * efficiency) + bytes / (nominal copy bandwidth * efficiency).

Fixed from the thesis / datasheets: 250 MHz, 5.3 W idle and 5.5 W under load, 4-bit weights and
activations; assumed (documented in docs/accelerator.md): IC = OC = 32, 128 KiB weight and 128 KiB
input buffers, 64 fill cycles, DRAM 3.2 GB/s (80 % of one 128-bit AXI HP port at 250 MHz), CPU
nominal 4 x A53 at 1.2 GHz x 8 int MACs/cycle and 4 GB/s copy bandwidth.
Calibrated once (`calibrate`): t_call and the CPU efficiency, by weighted least squares on the
batch latencies of Table 7.14 (latency is linear in both): CALIBRATED below.

Energy of a batch: P_idle * latency + (P_load - P_idle) * accelerator busy time (the 0.2 W the
board draws above idle while the programmable logic works).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from .compiler import Op, Program

# Table 7.14: frame rate (fps) of DiracDeltaNet w4a4 at 224 x 224 on Synetgy, by batch size.
TABLE_7_14 = {1: 58.7, 2: 72.9, 4: 84.1, 8: 94.4, 10: 95.9, 16: 96.5}
PAPER_PEAK_GOPS = 418.0
PAPER_AVERAGE_GOPS = 47.09

# Result of calibrate() on DiracDeltaNet 224 x 224, frozen here (tests check it reproduces).
CALIBRATED = {"t_call_s": 1.8892e-04, "cpu_efficiency": 7.4362e-02}


@dataclass(frozen=True)
class HWConfig:
    clock_hz: float = 250e6
    ic: int = 32
    oc: int = 32
    wbits: int = 4
    abits: int = 4
    weight_buffer_bytes: int = 128 * 1024
    input_buffer_bytes: int = 128 * 1024
    fill_cycles: int = 64
    dram_bytes_per_s: float = 3.2e9
    cpu_macs_per_s: float = 4 * 1.2e9 * 8
    cpu_bytes_per_s: float = 4.0e9
    p_idle_w: float = 5.3
    p_load_w: float = 5.5
    t_call_s: float = CALIBRATED["t_call_s"]
    cpu_efficiency: float = CALIBRATED["cpu_efficiency"]

    @property
    def peak_gops(self) -> float:
        """Compute roofline: 2 ops per MAC, IC x OC MACs per cycle."""
        return 2 * self.ic * self.oc * self.clock_hz / 1e9


@dataclass
class OpCost:
    name: str
    kind: str
    place: str
    ops: float  # 2 x MACs for the batch
    busy_s: float = 0.0  # accelerator busy (compute or DRAM bound)
    call_s: float = 0.0  # invocation overhead
    cpu_s: float = 0.0  # CPU work
    compute_cycles: float = 0.0
    dram_bytes: float = 0.0

    @property
    def time_s(self) -> float:
        return self.busy_s + self.call_s + self.cpu_s


@dataclass
class Timing:
    batch: int
    ops: list[OpCost] = field(default_factory=list)
    hw: HWConfig = field(default_factory=HWConfig)

    @property
    def latency_s(self) -> float:
        return sum(o.time_s for o in self.ops)

    @property
    def fps(self) -> float:
        return self.batch / self.latency_s

    @property
    def total_ops(self) -> float:
        return sum(o.ops for o in self.ops)

    @property
    def average_gops(self) -> float:
        return self.total_ops / self.latency_s / 1e9

    @property
    def peak_gops(self) -> float:
        """Best accelerator layer: its ops over its busy time (invocation overhead excluded)."""
        rates = [o.ops / o.busy_s for o in self.ops if o.place == "fpga" and o.busy_s > 0]
        return max(rates) / 1e9 if rates else 0.0

    @property
    def fpga_busy_s(self) -> float:
        return sum(o.busy_s for o in self.ops)

    @property
    def cpu_s(self) -> float:
        return sum(o.cpu_s for o in self.ops)

    @property
    def call_s(self) -> float:
        return sum(o.call_s for o in self.ops)

    @property
    def utilization(self) -> float:
        return self.fpga_busy_s / self.latency_s

    @property
    def energy_j(self) -> float:
        return self.hw.p_idle_w * self.latency_s + (self.hw.p_load_w - self.hw.p_idle_w) * self.fpga_busy_s

    @property
    def energy_mj_per_frame(self) -> float:
        return self.energy_j * 1e3 / self.batch

    def summary(self) -> dict[str, float]:
        return {"batch": self.batch, "latency_ms": self.latency_s * 1e3, "fps": self.fps,
                "gop_per_frame": self.total_ops / self.batch / 1e9, "average_gops": self.average_gops,
                "peak_gops": self.peak_gops, "utilization": self.utilization,
                "fpga_busy_ms": self.fpga_busy_s * 1e3, "cpu_ms": self.cpu_s * 1e3,
                "call_overhead_ms": self.call_s * 1e3, "energy_mj_per_frame": self.energy_mj_per_frame}


def _conv_fpga(op: Op, batch: int, hw: HWConfig) -> OpCost:
    cin, cout = op.params["cin"], op.params["cout"]
    px = op.shape[1] * op.shape[2]
    ict, oct_ = math.ceil(cin / hw.ic), math.ceil(cout / hw.oc)
    tile_px = max(1, hw.input_buffer_bytes * 8 // (ict * hw.ic * hw.abits))
    tiles = math.ceil(px * batch / tile_px)
    cycles = ict * oct_ * px * batch + tiles * oct_ * hw.fill_cycles
    wbytes = cin * cout * hw.wbits / 8
    chunks = math.ceil(wbytes / hw.weight_buffer_bytes)
    act = hw.abits / 8
    out_bytes = op.params["written"] * (act if op.params["act"] else 4)  # int32 logits out
    dram = wbytes + batch * (op.params["read"] * act * chunks + out_bytes)
    busy = max(cycles / hw.clock_hz, dram / hw.dram_bytes_per_s)
    cost = OpCost(op.name, op.kind, "fpga", 2.0 * op.macs * batch, busy_s=busy, call_s=hw.t_call_s,
                  compute_cycles=cycles, dram_bytes=dram)
    if not op.params["act"]:  # the CPU dequantizes the int32 accumulators to float logits
        cost.cpu_s = batch * op.params["written"] * 8 / (hw.cpu_bytes_per_s * hw.cpu_efficiency)
    return cost


def _cpu_work(op: Op, batch: int, hw: HWConfig) -> float:
    """CPU seconds at nominal rates (divide by the efficiency for the real time)."""
    n = int(np.prod(op.shape))
    act = hw.abits / 8
    if op.kind == "conv":  # first layer: MACs, read int8 input, write 4-bit codes
        return batch * (op.macs / hw.cpu_macs_per_s
                        + (op.params["read"] * 1 + op.params["written"] * act) / hw.cpu_bytes_per_s)
    if op.kind == "quant_in":  # read float32, write int8
        return batch * n * 5 / hw.cpu_bytes_per_s
    if op.kind == "shuffle":  # read + write the feature map
        return batch * 2 * n * act / hw.cpu_bytes_per_s
    if op.kind == "sumpool":
        return batch * n * act / hw.cpu_bytes_per_s  # n = C outputs; reads C*H*W (below)
    return 0.0


def op_costs(program: Program, batch: int, hw: HWConfig | None = None) -> Timing:
    hw = hw or HWConfig()
    timing = Timing(batch, hw=hw)
    by_name = program.by_name()
    for op in program.ops:
        if op.kind == "conv" and op.place == "fpga":
            timing.ops.append(_conv_fpga(op, batch, hw))
        elif op.place == "cpu":
            work = _cpu_work(op, batch, hw)
            if op.kind == "sumpool":
                work = batch * int(np.prod(by_name[op.inputs[0]].shape)) * hw.abits / 8 / hw.cpu_bytes_per_s
            timing.ops.append(OpCost(op.name, op.kind, "cpu", 2.0 * op.macs * batch,
                                     cpu_s=work / hw.cpu_efficiency))
    return timing


def calibrate(program: Program, table: dict[int, float] = TABLE_7_14, hw: HWConfig | None = None
              ) -> dict[str, float]:
    """Fit t_call and cpu_efficiency so the batch latencies match `table` (fps by batch):
    latency(B) = busy(B) + n_calls * t_call + cpu_nominal(B) / efficiency, linear in
    (t_call, 1 / efficiency); weighted least squares on the relative latency error."""
    base = replace(hw or HWConfig(), t_call_s=0.0, cpu_efficiency=1.0)
    rows, rhs = [], []
    for b, fps in table.items():
        t = op_costs(program, b, base)
        target = b / fps
        n_calls = sum(1 for o in t.ops if o.place == "fpga")
        rows.append([n_calls / target, t.cpu_s / target])
        rhs.append(1.0 - t.fpga_busy_s / target)
    (t_call, inv_eff), *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    return {"t_call_s": float(t_call), "cpu_efficiency": float(1.0 / inv_eff)}


def reference_program() -> Program:
    """DiracDeltaNet, 224 x 224, w4a4 (untrained weights: timing does not depend on them)."""
    import torch

    from .models import DiracDeltaNet
    from .quant import set_precision

    torch.manual_seed(0)
    model = DiracDeltaNet()
    set_precision(model, 4, 4)
    from .compiler import compile_model

    return compile_model(model, (3, 224, 224), tables=False)
