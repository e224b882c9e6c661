"""DNAS (thesis 8.3/8.6) at the test-suite size: the Gumbel-softmax super net, the temperature
schedule, the latency-aware loss, and the Table 8.9 property that different latency targets
lead to different architectures; the Synetgy table is modelled, ONNX Runtime measured."""
from __future__ import annotations

import math

import pytest
import torch

from squeeze_perception.offline.dnas import (DnasRun, SuperNet, latency_aware_loss, run_dnas, search,
                                             SearchConfig, temperature)
from squeeze_perception.offline.data import load_samples
from squeeze_perception.offline.latency import LatencyTable, build_table, onnxruntime_us, synetgy_block_us
from squeeze_perception.segmentation.searched_net import BLOCKS, TINY_MACRO, LayerSlot, SearchedSegNet

torch.set_num_threads(1)


def _table(target: str, cheap: str, macro=TINY_MACRO) -> LatencyTable:
    """A made-up target on which one block is 10x cheaper than all others (skip included)."""
    blocks = {f"{s.index}:{n}": (100.0 if n == cheap else 1000.0) for s in macro.slots() for n in s.candidates}
    return LatencyTable(target, 16, 64, macro.to_dict(), 500.0, blocks)


def test_temperature_follows_eq_8_9():
    assert temperature(0, 5.0, 0.1) == 5.0
    assert temperature(10, 5.0, 0.1) == pytest.approx(5.0 * math.exp(-1.0))


def test_latency_loss_grows_with_latency_and_is_differentiable_in_the_mask():
    ce = torch.tensor(0.5)
    theta = torch.zeros(3, requires_grad=True)
    lat = torch.tensor([10.0, 100.0, 1000.0])
    expected = (torch.softmax(theta, 0) * lat).sum()
    loss = latency_aware_loss(ce, expected, alpha=0.2, beta=0.6)
    loss.backward()
    assert theta.grad[2] > 0 > theta.grad[0]  # gradient pushes probability to the fast block
    assert latency_aware_loss(ce, torch.tensor(1000.0), 0.2, 0.6) > latency_aware_loss(ce, torch.tensor(10.0), 0.2, 0.6)


def test_supernet_expected_latency_is_the_table_sum_for_a_one_hot_mask():
    table = _table("a", "k3_e3")
    net = SuperNet(TINY_MACRO, table)
    for layer in net.layers:  # a near one-hot distribution on k3_e3
        layer.theta.data[:] = -50.0
        layer.theta.data[layer.names.index("k3_e3")] = 50.0
    net.tau = 0.01
    out = net(torch.rand(1, 5, 16, 64) * 20)
    assert out.shape == (1, 4, 16, 64)
    assert float(net.last_latency_us.detach()) == pytest.approx(table.architecture_us(["k3_e3"] * len(net.layers)), rel=1e-3)


def test_different_latency_targets_give_different_architectures():
    samples = load_samples("", 10, 8, 32, seed=0)
    cfg = SearchConfig(epochs=6, warmup=1, batch_size=4, beta=6.0, theta_lr=0.5, eta=0.5)
    found_a = search(samples, _table("cheap_k5_e6", "k5_e6"), TINY_MACRO, cfg, show_progress=False)
    found_b = search(samples, _table("cheap_k3_e1_g2", "k3_e1_g2"), TINY_MACRO, cfg, show_progress=False)
    arch_a, arch_b = found_a["most_likely"], found_b["most_likely"]
    assert arch_a != arch_b
    assert arch_a.count("k5_e6") >= 3 and arch_b.count("k3_e1_g2") >= 3, (arch_a, arch_b)


def test_synetgy_model_charges_grouped_convolutions_per_call_and_skip_nothing():
    slot = LayerSlot(0, 0, 16, 16, 1)
    plain, grouped = synetgy_block_us(slot, "k3_e1", 16, 64), synetgy_block_us(slot, "k3_e1_g2", 16, 64)
    assert grouped > plain > 0  # one accelerator call per group
    assert synetgy_block_us(slot, "k5_e6", 16, 64) > synetgy_block_us(slot, "k3_e6", 16, 64)  # depthwise on the CPU
    assert synetgy_block_us(slot, "skip", 16, 64) == 0.0


def test_onnxruntime_measures_a_block():
    from squeeze_perception.segmentation.searched_net import make_block

    us = onnxruntime_us(make_block(8, 8, 1, "k3_e3"), (torch.rand(1, 8, 16, 32),), threads=1, repeats=3)
    assert 0 < us < 1e6


def test_tiny_end_to_end_run_saves_a_loadable_searched_model(tmp_path):
    from squeeze_perception.offline.manifest import load_model, read_manifest

    run = DnasRun(targets=("synetgy", "fake"), tiny=True, out=str(tmp_path)).shrink()
    tables = {"fake": _table("fake", "k3_e1")}
    tables["synetgy"] = build_table(TINY_MACRO, 16, 64, "synetgy", show_progress=False)
    res = run_dnas(run, tables=tables, show_progress=False, command="pytest")
    for target in ("synetgy", "fake"):
        arch = res["targets"][target]["architectures"][0]
        assert set(arch["lut_latency_us"]) == {"synetgy", "fake"}  # measured on every target
        assert 0.0 <= arch["metrics"]["mIoU"] <= 1.0 or math.isnan(arch["metrics"]["mIoU"])
        model = load_model(tmp_path / f"{arch['weights'].split('/')[-1]}")
        assert isinstance(model, SearchedSegNet) and list(model.choices) == arch["choices"]
        manifest = read_manifest(tmp_path / arch["weights"].split("/")[-1])
        assert manifest["input"]["shape"] == [5, 16, 64] and manifest["flops"] > 0
        assert "synetgy (lookup table)" in manifest["latency_ms"]


def test_a_time_budget_shortens_the_search_but_keeps_its_schedule_and_warmup_share():
    from squeeze_perception.offline.common import epochs_for_budget

    assert epochs_for_budget(90, 10, epoch_s=2.0, budget_s=0) == (90, 10)  # no budget: as planned
    assert epochs_for_budget(90, 10, epoch_s=2.0, budget_s=1000) == (90, 10)  # the plan fits
    assert epochs_for_budget(90, 10, epoch_s=2.0, budget_s=60) == (30, 3)  # a third of it fits
    epochs, warmup = epochs_for_budget(90, 10, epoch_s=50.0, budget_s=60)
    assert epochs == 2 and 1 <= warmup < epochs  # never fewer than one warm-up and one search epoch
    assert epochs_for_budget(40, 0, epoch_s=1.0, budget_s=10) == (10, 0)


def test_the_int8_target_times_the_block_as_the_int8_backend_would_run_it():
    import io

    import onnx

    from squeeze_perception.offline.latency import TARGETS, _quantized, build_table
    from squeeze_perception.segmentation.searched_net import TINY_MACRO, make_block

    assert "onnxruntime-int8" in TARGETS
    block = make_block(8, 8, 1, "k3_e3").eval()
    x = torch.rand(1, 8, 16, 32)
    buf = io.BytesIO()
    torch.onnx.export(block, (x,), buf, dynamo=False, opset_version=17, input_names=["in0"])
    ops = [n.op_type for n in onnx.load_from_string(_quantized(buf.getvalue(), ["in0"], (x,), False)).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops  # QDQ, as offline quantize-int8 writes
    assert ops.count("DequantizeLinear") >= 2 * ops.count("Conv")  # input and weights of every conv in int8
    table = build_table(TINY_MACRO, 16, 64, "onnxruntime-int8", repeats=2, show_progress=False)
    assert table.fixed_us > 0 and all(v >= 0 for v in table.blocks.values())
    assert any(v > 0 for v in table.blocks.values())
