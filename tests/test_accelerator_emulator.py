"""The integer emulation of the Synetgy accelerator against the fake-quantized torch model.

Claim tested: bit for bit. Every intermediate tensor (input codes, every layer's 4-bit
activation codes, pooled / shifted / shuffled / concatenated codes) is identical, and so are
the classifier's float logits (the same float32 dequantization of identical accumulators).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.fx as fx

from squeeze_perception.accelerator.compiler import _Tracer, compile_model
from squeeze_perception.accelerator.emulator import SynetgyEmulator, run_program
from squeeze_perception.accelerator.models import DiracDeltaNet, DiracDeltaSeg
from squeeze_perception.accelerator.quant import QConv, levels, qconvs, set_precision


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def _randomise(model, seed=0):
    """Non-trivial quantized parameters: random BN (some negative gammas), alphas, and running
    statistics gathered from a few training-mode passes so codes spread over 0..15."""
    g = torch.Generator().manual_seed(seed)
    for m in qconvs(model):
        if m.act:
            with torch.no_grad():
                m.gamma.copy_(torch.randn(m.cout, generator=g) * 0.5 + 1.0)
                m.gamma[: max(1, m.cout // 8)] *= -1
                m.beta.copy_(torch.randn(m.cout, generator=g) * 0.3)
                m.alpha.fill_(float(torch.rand(1, generator=g) * 3 + 1.5))
    return model


def _calibrate_bn(model, shape, seed=1):
    for m in qconvs(model):
        m.momentum = 1.0  # running statistics := this batch's
    model.train()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model(torch.randn((4, *shape), generator=g) * 2)
    model.eval()


def _reference_values(body, x: torch.Tensor) -> dict[str, np.ndarray]:
    gm = fx.GraphModule(body, _Tracer().trace(body))
    seen: dict[str, np.ndarray] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                seen[n.name] = out.detach().numpy()
            return out

    with torch.no_grad():
        Recorder(gm).run(x)
    return seen


def _lidar_like(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 6, h, w), np.float32)
    x[:, 0] = rng.normal(10, 10, (n, h, w))
    x[:, 1] = rng.normal(0, 7, (n, h, w))
    x[:, 2] = rng.normal(-1, 1, (n, h, w))
    x[:, 3] = rng.uniform(0, 1, (n, h, w))
    x[:, 4] = np.hypot(x[:, 0], x[:, 1]) * (rng.uniform(size=(n, h, w)) > 0.2)
    x[:, 5] = x[:, 4] > 0
    return x


def _check_bit_exact(model, x_raw: np.ndarray, raw_shape):
    set_precision(model, 4, 4)
    _randomise(model)
    _calibrate_bn(model, raw_shape)
    emu = SynetgyEmulator(model, raw_shape)
    body_in = emu.preprocess(x_raw)
    ref = _reference_values(model.body, torch.from_numpy(body_in))
    out, got = run_program(emu.program, body_in, keep=True)
    compared = 0
    for op in emu.program.ops:
        if op.kind == "input":
            continue
        r, e = ref[op.name], got[op.name]
        assert r.shape == e.shape, op.name
        if np.issubdtype(e.dtype, np.floating):  # classifier logits (and their flatten)
            np.testing.assert_array_equal(e, r, err_msg=f"logits of {op.name}")
        else:
            assert np.array_equal(r, np.round(r)), f"{op.name}: reference is not integer-valued"
            mismatches = int((r.astype(np.int64) != e).sum())
            assert mismatches == 0, f"{op.name}: {mismatches} of {r.size} codes differ"
        compared += 1
    # the codes are not degenerate: every level 0..15 occurs, and layers are not all zero
    acts = [got[op.name] for op in emu.program.convs() if op.params["act"]]
    levels_seen = np.unique(np.concatenate([a.ravel() for a in acts]))
    assert set(levels_seen.tolist()) == set(range(16))
    assert all(a.any() for a in acts)
    # the torch model's own forward gives the same logits
    with torch.no_grad():
        full = model(torch.from_numpy(x_raw)).numpy()
    np.testing.assert_array_equal(out, full)
    return compared


def test_segmentation_model_bit_exact():
    torch.manual_seed(0)
    model = DiracDeltaSeg(widths=(10, 20, 40, 80))
    shape = (6, 8, 64)
    n = _check_bit_exact(model, _lidar_like(2, 8, 64), shape)
    assert n > 50


def test_classifier_bit_exact_with_global_pool():
    torch.manual_seed(1)
    model = DiracDeltaNet(num_classes=10, input_size=64, widths=(8, 16, 20, 40, 80, 96), repeats=(1, 1, 1))
    x = np.random.default_rng(2).normal(size=(2, 3, 64, 64)).astype(np.float32)
    _check_bit_exact(model, x, (3, 64, 64))


def test_actquant_table_equals_post_on_every_accumulator():
    torch.manual_seed(3)
    m = QConv(6, 12)
    m.bits[0], m.bits[1] = 4, 4
    m.in_unit.fill_(1 / 16)
    with torch.no_grad():
        m.gamma.copy_(torch.linspace(-2, 2, 12))
        m.gamma[5] = 0.0  # a constant channel
        m.beta.copy_(torch.linspace(-1, 1, 12))
        m.running_mean.copy_(torch.linspace(-3, 3, 12))
        m.running_var.copy_(torch.linspace(0.5, 4, 12))
    m.eval()
    from squeeze_perception.accelerator.compiler import _act_thresholds

    table = _act_thresholds(m, 127)
    bound = 6 * 15 * 127
    acc = np.arange(-bound, bound + 1, dtype=np.int64)
    with torch.no_grad():
        ref = m.post(torch.from_numpy(np.tile(acc, (12, 1))).float().T.reshape(-1, 12, 1, 1)).numpy()
    ref = ref.reshape(-1, 12)
    s = acc[:, None] * table["sign"][None]
    codes = (s[:, :, None] >= table["T"][None]).sum(-1)
    np.testing.assert_array_equal(codes, ref.astype(np.int64))
    assert len(np.unique(ref[:, 0])) == 16 and len(np.unique(ref[:, 5])) == 1


def test_emulator_reports_latency_and_energy_per_batch():
    torch.manual_seed(4)
    model = DiracDeltaSeg(widths=(10, 20, 40, 80))
    set_precision(model, 4, 4)
    emu = SynetgyEmulator(model, (6, 8, 64))
    r1 = emu.run(_lidar_like(1, 8, 64))
    r2 = emu.run(_lidar_like(2, 8, 64))
    assert r1.output.shape == (1, 4, 8, 64) and r2.output.shape == (2, 4, 8, 64)
    assert 0 < r1.latency_ms < r2.latency_ms < 2 * r1.latency_ms  # batching amortises call overheads
    t = r1.timing
    assert 5.3 * r1.latency_ms <= r1.energy_mj <= 5.5 * r1.latency_ms  # W x ms = mJ
    assert 0 < t.utilization < 1 and t.peak_gops <= emu.hw.peak_gops


def test_unsupported_models_are_refused():
    from squeeze_perception.accelerator.compiler import UnsupportedModel
    from squeeze_perception.segmentation.models import build_squeezeseg

    with pytest.raises(UnsupportedModel, match="1x1 convolutions"):
        compile_model(build_squeezeseg(), (5, 64, 512))
    with pytest.raises(UnsupportedModel, match="float precision"):
        compile_model(DiracDeltaSeg(widths=(10, 20, 40, 80)), (6, 8, 64), tables=False)
    assert levels(4) == 15
