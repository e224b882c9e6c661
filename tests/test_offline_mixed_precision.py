"""Mixed-precision DNAS (thesis 8.4): DoReFa/PACT quantizers, the eq. 8.13/8.14 costs of the
super net, the 0-bit block gate, and a tiny end-to-end run whose baked model loads by manifest."""
from __future__ import annotations

import pytest
import torch

from squeeze_perception.offline.mixed_precision import (FLOPS_CANDIDATES, MixedPrecisionNet, MixedPrecisionRun,
                                                        cost_weighted_loss, quantize_activation, quantize_weight,
                                                        run_mixed_precision)
from squeeze_perception.segmentation.searched_net import TINY_MACRO, SearchedSegNet

torch.set_num_threads(1)
SHAPE = (5, 8, 32)


def test_quantizers_have_2_to_the_k_levels():
    w = torch.randn(64, 16)
    assert torch.unique(quantize_weight(w, 2)).numel() <= 4
    assert quantize_weight(w, 1).abs().eq(1).all()
    assert torch.equal(quantize_weight(w, 32), w)
    x = torch.linspace(-3, 8, 200)
    alpha = torch.tensor(4.0)
    q = quantize_activation(x, 3, alpha, signed=False)
    assert q.min() == 0 and q.max() == pytest.approx(4.0) and torch.unique(q).numel() <= 8
    qs = quantize_activation(torch.linspace(-8, 8, 200), 3, alpha, signed=True)
    assert qs.min() == pytest.approx(-4.0) and torch.unique(qs).numel() <= 8


def test_costs_follow_eq_8_13_and_8_14_and_the_zero_bit_gate():
    net = MixedPrecisionNet(SearchedSegNet(["k3_e3"] * 5, TINY_MACRO), "size", SHAPE)
    full = net.full_precision_cost()
    all32 = {"convs": [len(m.candidates) - 1 for m in net.convs], "gates": [0] * len(net.gates)}
    assert net.assignment_cost(all32) == pytest.approx(full)
    w1 = {"convs": [0] * len(net.convs), "gates": [0] * len(net.gates)}  # 1-bit everywhere
    quantized_params = sum(m.params for m in net.convs)
    assert net.assignment_cost(w1) == pytest.approx(full - quantized_params * 31)
    assert net.gates, "residual blocks get the 0-bit option"
    skip = {"convs": w1["convs"], "gates": [1] * len(net.gates)}
    assert net.assignment_cost(skip) < net.assignment_cost(w1)
    net.fix(skip)
    x = torch.rand(1, *SHAPE) * 20
    net.eval()
    assert net(x).shape == (1, 4, 8, 32)

    flops = MixedPrecisionNet(SearchedSegNet(["k3_e3"] * 5, TINY_MACRO), "flops", SHAPE)
    assert all(m.macs > 0 for m in flops.convs) and not flops.gates
    w4a4 = {"convs": [FLOPS_CANDIDATES.index((4, 4))] * len(flops.convs), "gates": []}
    assert flops.full_precision_cost() / flops.assignment_cost(w4a4) > 1.0


def test_cost_loss_prefers_cheaper_edges():
    theta = torch.zeros(2, requires_grad=True)
    cost = (torch.softmax(theta, 0) * torch.tensor([1e3, 1e6])).sum()
    cost_weighted_loss(torch.tensor(0.3), cost, beta=0.1, gamma=2.0).backward()
    assert theta.grad[1] > 0 > theta.grad[0]


def test_tiny_run_reports_compression_and_saves_loadable_models(tmp_path):
    from squeeze_perception.offline.manifest import load_model, read_manifest

    run = MixedPrecisionRun(cost="size", tiny=True, out=str(tmp_path)).shrink()
    run.height, run.width, run.samples = 8, 32, 10
    res = run_mixed_precision(run, show_progress=False, command="pytest")
    assert res["most_efficient"]["compression"] >= res["most_accurate"]["compression"] >= 1.0
    path = tmp_path / res["archs"][0]["weights"].split("/")[-1]
    assert read_manifest(path)["extra"]["bits"] == res["archs"][0]["bits"]
    assert load_model(path)(torch.rand(1, 5, 8, 32) * 20).shape == (1, 4, 8, 32)
