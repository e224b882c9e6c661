"""Print the emulator's calibration against Table 7.14, GOP/s, energy, and the cost of the
registered DiracDelta segmentation model:  python -m squeeze_perception.offline.accelerator_report"""
from __future__ import annotations

import argparse

from ..accelerator.hardware import (CALIBRATED, PAPER_AVERAGE_GOPS, PAPER_PEAK_GOPS, TABLE_7_14, HWConfig, calibrate,
                                    op_costs, reference_program)


def calibration_rows(program=None) -> list[dict]:
    program = program or reference_program()
    rows = []
    for b, paper in TABLE_7_14.items():
        t = op_costs(program, b)
        s = t.summary()
        rows.append({"batch": b, "paper_fps": paper, "fps": s["fps"], "error": s["fps"] / paper - 1,
                     "latency_ms": s["latency_ms"], "avg_gops": s["average_gops"], "peak_gops": s["peak_gops"],
                     "mj_per_frame": s["energy_mj_per_frame"], "fpga_ms": s["fpga_busy_ms"],
                     "cpu_ms": s["cpu_ms"], "call_ms": s["call_overhead_ms"]})
    return rows


def seg_program(widths=None):
    import torch

    from ..accelerator.compiler import compile_model
    from ..accelerator.models import DiracDeltaSeg
    from ..accelerator.quant import set_precision

    torch.manual_seed(0)
    model = DiracDeltaSeg(**({"widths": widths} if widths else {}))
    set_precision(model, 4, 4)
    return compile_model(model, (6, 64, 512), tables=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--per-layer", action="store_true", help="per-op costs at batch 1")
    args = ap.parse_args(argv)
    program = reference_program()
    fitted = calibrate(program)
    print(f"calibration (fitted now / frozen): t_call {fitted['t_call_s'] * 1e6:.1f} / "
          f"{CALIBRATED['t_call_s'] * 1e6:.1f} us, cpu efficiency {fitted['cpu_efficiency']:.4f} / "
          f"{CALIBRATED['cpu_efficiency']:.4f}")
    print(f"DiracDeltaNet 224x224 w4a4: {program.macs / 1e6:.1f} M MACs, roofline {HWConfig().peak_gops:.0f} GOP/s")
    print("| batch | Table 7.14 fps | emulated fps | error | latency ms | avg GOP/s | peak GOP/s | mJ/frame "
          "| FPGA busy ms | CPU ms | call ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in calibration_rows(program):
        print(f"| {r['batch']} | {r['paper_fps']} | {r['fps']:.1f} | {r['error']:+.1%} | {r['latency_ms']:.2f} | "
              f"{r['avg_gops']:.1f} | {r['peak_gops']:.0f} | {r['mj_per_frame']:.1f} | {r['fpga_ms']:.2f} | "
              f"{r['cpu_ms']:.2f} | {r['call_ms']:.2f} |")
    print(f"thesis: peak {PAPER_PEAK_GOPS} GOP/s, average {PAPER_AVERAGE_GOPS} GOP/s")
    seg = seg_program()
    print(f"\ndiracdeltaseg 6x64x512 w4a4: {seg.macs / 1e6:.1f} M MACs")
    for b in (1, 4):
        s = op_costs(seg, b).summary()
        print(f"  batch {b}: {s['latency_ms']:.2f} ms, {s['fps']:.1f} fps, {s['energy_mj_per_frame']:.1f} mJ/frame, "
              f"avg {s['average_gops']:.1f} GOP/s, FPGA {s['fpga_busy_ms']:.2f} ms, CPU {s['cpu_ms']:.2f} ms, "
              f"calls {s['call_overhead_ms']:.2f} ms")
    if args.per_layer:
        print("\nper op, DiracDeltaNet batch 1:")
        for o in op_costs(program, 1).ops:
            print(f"  {o.name:28s} {o.kind:8s} {o.place:4s} {o.time_s * 1e3:7.3f} ms  "
                  f"busy {o.busy_s * 1e3:6.3f}  cpu {o.cpu_s * 1e3:6.3f}  {o.ops / 1e6:7.1f} MOP")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
