"""Synetgy cost model: DiracDeltaNet at 224 x 224 against Table 7.14 (tolerance 10 %), the
thesis' model counts, GOP/s against 7.5, and the power model."""
from __future__ import annotations

import pytest

from squeeze_perception.accelerator.hardware import (CALIBRATED, PAPER_AVERAGE_GOPS, PAPER_PEAK_GOPS,
                                                     TABLE_7_14, HWConfig, calibrate, op_costs,
                                                     reference_program)

TOLERANCE = 0.10


@pytest.fixture(scope="module")
def program():
    return reference_program()


def test_diracdeltanet_matches_the_thesis_counts(program):
    # Table 7.11: 330M MACs, 3.3M parameters; 7.4: first module 2144 weights, 30.5M MACs
    assert program.macs == 330_178_560
    convs = program.convs()
    assert sum(op.params["cin"] * op.params["cout"] for op in convs) == 3_274_848
    first_two = convs[:2]
    assert sum(op.params["cin"] * op.params["cout"] for op in first_two) == 2144
    assert abs(sum(op.macs for op in first_two) - 30.5e6) < 0.05e6
    assert [op.place for op in convs[:2]] == ["cpu", "fpga"]  # first layer: CPU fallback
    assert {op.place for op in program.ops if op.kind == "shuffle"} == {"cpu"}


@pytest.mark.parametrize("batch", sorted(TABLE_7_14))
def test_table_7_14_within_tolerance(program, batch):
    fps = op_costs(program, batch).fps
    paper = TABLE_7_14[batch]
    assert abs(fps / paper - 1) <= TOLERANCE, f"batch {batch}: {fps:.1f} fps vs {paper} in Table 7.14"


def test_calibration_reproduces_the_frozen_constants(program):
    fitted = calibrate(program)
    for key, value in CALIBRATED.items():
        assert fitted[key] == pytest.approx(value, rel=1e-3), key
    assert HWConfig().t_call_s == CALIBRATED["t_call_s"]


def test_throughput_and_energy(program):
    hw = HWConfig()
    t1, t16 = op_costs(program, 1), op_costs(program, 16)
    assert hw.peak_gops == pytest.approx(512.0)
    # peak attainable on the best layer: at most the roofline, and near 418 (within 25 %)
    assert t16.peak_gops <= hw.peak_gops
    assert abs(t16.peak_gops / PAPER_PEAK_GOPS - 1) < 0.25
    # the thesis' average (47.09 GOP/s) lies between our batch-1 and batch-16 averages
    assert t1.average_gops < PAPER_AVERAGE_GOPS < t16.average_gops
    assert t1.total_ops == pytest.approx(2 * 330_178_560)
    # board power between 5.3 W idle and 5.5 W load
    for t in (t1, t16):
        watts = t.energy_j / t.latency_s
        assert hw.p_idle_w < watts < hw.p_load_w
    assert t16.energy_mj_per_frame < t1.energy_mj_per_frame  # batching amortises the overheads
