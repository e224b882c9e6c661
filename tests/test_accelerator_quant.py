"""Shift-family operators, DoReFa / PACT fake quantization with the shared scale, and the
progressive precision schedule (a smoke training of a few steps per step of the schedule)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from squeeze_perception.accelerator.models import DiracBlock, DiracDeltaSeg
from squeeze_perception.accelerator.quant import (InputQuant, QConv, dorefa_int, pact, precision,
                                                  progressive_quantize, qconvs, set_precision,
                                                  shared_scale)
from squeeze_perception.accelerator.shift import ChannelShuffle, MaxPool, Shift, Upsample, shift_groups


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def test_shift_moves_four_groups_and_keeps_the_rest():
    x = torch.arange(1, 1 + 7 * 3 * 3, dtype=torch.float32).view(1, 7, 3, 3)
    y = Shift()(x)
    assert [g[0] for g in shift_groups(7)] == ["up", "down", "left", "right", "identity"]
    assert torch.equal(y[0, 0, :2], x[0, 0, 1:]) and not y[0, 0, 2].any()  # up
    assert torch.equal(y[0, 1, 1:], x[0, 1, :2]) and not y[0, 1, 0].any()  # down
    assert torch.equal(y[0, 2, :, :2], x[0, 2, :, 1:]) and not y[0, 2, :, 2].any()  # left
    assert torch.equal(y[0, 3, :, 1:], x[0, 3, :, :2]) and not y[0, 3, :, 0].any()  # right
    assert torch.equal(y[0, 4:], x[0, 4:])  # 7 // 5 = 1 per direction, 3 identity
    # with 9 channels, the centre pixel of the output sees its 4 neighbours and itself
    z = Shift()(torch.arange(9.0).view(1, 1, 3, 3).repeat(1, 5, 1, 1))[0, :, 1, 1]
    assert z.tolist() == [7.0, 1.0, 5.0, 3.0, 4.0]


def test_circular_shuffle_mixes_halves_and_pool_upsample():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    y = ChannelShuffle()(x).flatten().tolist()
    assert y == [6, 7, 0, 1, 2, 3, 4, 5]  # each half of the next split: 2 from each branch
    p = MaxPool((1, 2))(torch.tensor([[[[1.0, 5, 2, 0]]]]))
    assert p.tolist() == [[[[5.0, 2.0]]]]
    assert MaxPool(2)(torch.arange(16.0).view(1, 1, 4, 4)).flatten().tolist() == [5, 7, 13, 15]
    assert Upsample((1, 2))(p).flatten().tolist() == [5, 5, 2, 2]


def test_block_uses_concatenative_skip():
    blk = DiracBlock(10).eval()
    x = torch.rand(1, 10, 4, 4)
    with torch.no_grad():
        y = blk(x)
    # the untouched half reappears (rolled by 10 // 4 = 2 channels)
    assert torch.equal(torch.roll(y, -2, dims=1)[:, :5], x[:, :5])


def test_dorefa_and_pact():
    w = torch.randn(32, 16)
    q = dorefa_int(w, 4)
    vals = set(q.unique().tolist())
    assert vals <= set(range(-15, 16, 2)) and {-15, 15} & vals
    assert q.abs().max() == 15  # the largest |tanh w| reaches the extreme level
    x = torch.tensor([-1.0, 0.5, 3.0], requires_grad=True)
    alpha = torch.tensor(2.0, requires_grad=True)
    y = pact(x, alpha)
    assert y.tolist() == [0.0, 0.5, 2.0]
    y.sum().backward()
    assert alpha.grad.item() == 1.0 and x.grad.tolist() == [0.0, 1.0, 0.0]


def test_shared_scale_makes_every_layer_speak_the_same_units():
    model = DiracDeltaSeg(widths=(10, 20, 40, 80))
    for i, m in enumerate(qconvs(model)):
        if m.act:
            m.alpha.data.fill_(2.0 + 0.1 * (i % 3))
    s = set_precision(model, 4, 4)
    assert precision(model) == (4, 4) and shared_scale(model) == s
    assert abs(s - np.mean([float(m.alpha.detach()) for m in qconvs(model) if m.act])) < 1e-6
    iq = [m for m in model.modules() if isinstance(m, InputQuant)][0]
    for m in qconvs(model):
        expected = float(iq.unit) if m.first else s / 15
        assert abs(float(m.in_unit) - expected) < 1e-7
    # the precision travels with the state_dict
    fresh = DiracDeltaSeg(widths=(10, 20, 40, 80))
    fresh.load_state_dict(model.state_dict())
    assert precision(fresh) == (4, 4) and abs(shared_scale(fresh) - s) < 1e-6
    out = QConv(4, 3)
    out.bits[0], out.bits[1] = 4, 4
    codes = out.eval()(torch.rand(1, 4, 2, 2) * 15)
    assert torch.equal(codes, codes.round()) and codes.min() >= 0 and codes.max() <= 15


def test_progressive_schedule_smoke_training():
    torch.manual_seed(0)
    model = DiracDeltaSeg(widths=(10, 20, 40, 80))
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(4, 6, 8, 64)
    x[:, 0] = torch.randn(4, 8, 64, generator=g) * 10 + 10
    x[:, 4] = x[:, 0].abs() + 1
    x[:, 5] = 1
    target = (x[:, 0] > 10).long()  # a learnable toy labelling
    losses = {}

    def fine_tune(net, bits):
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        net.train()
        hist = []
        for _ in range(6):
            loss = torch.nn.functional.cross_entropy(net(x), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            hist.append(loss.item())
        losses[bits] = hist
        return {"loss": hist[-1]}

    history = progressive_quantize(model, fine_tune)
    assert [(h["wbits"], h["abits"]) for h in history] == [(32, 32), (8, 8), (4, 4)]
    assert history[0]["s"] is None and history[1]["s"] == history[2]["s"] > 0
    assert all(np.isfinite(v).all() for v in losses.values())
    assert losses[(32, 32)][-1] < losses[(32, 32)][0]  # it learns at all
    assert precision(model) == (4, 4)
    # gradients reach the PACT clip levels and the latent float weights through the STE
    assert all(m.alpha.grad is not None for m in qconvs(model) if m.act)
    # and the result is what the accelerator runs
    from squeeze_perception.accelerator.emulator import SynetgyEmulator

    emu = SynetgyEmulator(model.eval(), (6, 8, 64))
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_array_equal(emu.run(x.numpy()).output, ref)
