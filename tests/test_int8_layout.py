"""offline/int8_layout.py: narrow convolution inputs padded to 8 channels (the same int8 graph
output to the bit) and Concat inputs quantized with the output's scale (a copy instead of a
requantization; close to the plain int8 graph), on a small network with a 6-channel input and a
fire module, quantized here; `quantize-int8 --pad-narrow-inputs 8 --shared-concat-scale` end to
end on the tiny segmentation model of tests/test_backend_int8.py."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from squeeze_perception.offline.int8_layout import pad_narrow_inputs, share_concat_scale
from squeeze_perception.offline.quantize import QuantOptions, quantize_onnx
from test_backend_int8 import _grid, _quantize, tiny  # noqa: F401 - the fixture is used by name


class NarrowFire(torch.nn.Module):
    """A 6-channel input read by a 3x3 and a 1x1 convolution (SqueezeSeg's conv1 / conv1_skip), a
    4-channel map read by one convolution (a CAM gate), a fire module's Concat of two branches of
    very different ranges, and a 4-channel map also read by an Add (must not be padded)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(6, 8, 3, padding=1)
        self.skip = torch.nn.Conv2d(6, 8, 1)
        self.reduce = torch.nn.Conv2d(8, 4, 1)
        self.gate = torch.nn.Conv2d(4, 8, 1)
        self.expand1 = torch.nn.Conv2d(8, 6, 1)
        self.expand3 = torch.nn.Conv2d(8, 6, 3, padding=1)
        self.side = torch.nn.Conv2d(12, 4, 1)
        self.side2 = torch.nn.Conv2d(4, 4, 1)
        self.head = torch.nn.Conv2d(4, 3, 1)
        with torch.no_grad():
            self.expand3.weight.mul_(6.0)

    def forward(self, x):
        c = torch.relu(self.conv1(x)) + torch.relu(self.skip(x))
        g = torch.relu(self.gate(torch.relu(self.reduce(c)))) + c
        f = torch.cat([torch.relu(self.expand1(g)), torch.relu(self.expand3(g))], 1)
        s = torch.relu(self.side(f))
        return self.head(torch.relu(self.side2(s)) + s)


@pytest.fixture()
def quantized(tmp_path):
    """The network exported and quantized (QDQ, MinMax on 4 random inputs): (model, inputs)."""
    import onnx

    torch.manual_seed(5)
    fp32 = tmp_path / "narrow.onnx"
    torch.onnx.export(NarrowFire().eval(), torch.randn(1, 6, 12, 20), str(fp32), input_names=["x"],
                      output_names=["y"], opset_version=17, dynamo=False)
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(1, 6, 12, 20)).astype(np.float32) for _ in range(4)]
    out = tmp_path / "narrow.int8.onnx"
    quantize_onnx(fp32, out, batches, QuantOptions())
    return onnx.load(str(out)), batches


def _run(model, x):
    from squeeze_perception.backends import import_onnxruntime

    ort = import_onnxruntime()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _conv_input_channels(model):
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    widths = {}
    for n in model.graph.node:
        if n.op_type == "Conv":
            weight = producer[n.input[1]].input[0] if n.input[1] in producer else n.input[1]  # fp32 head: plain
            widths[n.name] = numpy_helper.to_array(inits[weight]).shape[1]
    return widths


def test_padding_narrow_inputs_gives_the_same_output_to_the_bit(quantized):
    import copy

    model, batches = quantized
    before = {name: c for name, c in _conv_input_channels(model).items()}
    padded_model = copy.deepcopy(model)
    padded = pad_narrow_inputs(padded_model, 8)
    after = _conv_input_channels(padded_model)
    # the 6-channel input (two readers) and the gate's 4-channel input; side2's 4-channel input
    # is also read by an Add, so it stays as it is
    assert len(padded) == 2
    assert {name for name in after if after[name] != before[name]} == {
        name for name in before if name.split("/")[1] in ("conv1", "skip", "gate")}
    assert all(after[name] == 8 for name in after if name.split("/")[1] in ("conv1", "skip", "gate"))
    assert after[next(name for name in after if name.startswith("/side2/"))] == 4
    pads = [n for n in padded_model.graph.node if n.op_type == "Pad"]
    assert len(pads) == 2 and all(n.input[2].endswith("zero_point") for n in pads)
    for x in batches:
        np.testing.assert_array_equal(_run(padded_model, x), _run(model, x))
    assert pad_narrow_inputs(padded_model, 8) == []  # nothing narrow is left
    assert pad_narrow_inputs(copy.deepcopy(model), 4) == []  # 4 channels: nothing is narrower


def test_concat_inputs_take_the_output_scale_and_stay_close(quantized):
    import copy

    from onnx import numpy_helper

    model, batches = quantized
    shared = copy.deepcopy(model)
    changed = share_concat_scale(shared)
    assert len(changed) == 1
    graph = shared.graph
    producer = {o: n for n in graph.node for o in n.output}
    concat = next(n for n in graph.node if n.op_type == "Concat" and n.name in changed)
    out_q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == concat.output[0])
    for tensor in concat.input:
        dq = producer[tensor]
        q = producer[dq.input[0]]
        assert dq.input[1:] == out_q.input[1:] and q.input[1:] == out_q.input[1:]
    used = {i for n in graph.node for i in n.input}
    assert all(t.name in used for t in graph.initializer)  # the inputs' own scales are dropped
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    step = float(inits[out_q.input[1]])
    for x in batches:
        got, ref = _run(shared, x), _run(model, x)
        # each concat value moves by at most half an output step; through two 1x1 layers this
        # stays a few steps of the output's range, well under its spread
        assert np.abs(got - ref).max() < 40 * step
        assert np.abs(got - ref).mean() < 0.1 * np.abs(ref).std()


def test_quantize_command_pads_and_shares_and_records_it(tiny, tmp_path):  # noqa: F811
    import onnx

    spec, models, calib = tiny
    assert _quantize(calib, "--out", str(tmp_path / "plain.onnx")) == 0
    assert _quantize(calib, "--pad-narrow-inputs", "8", "--shared-concat-scale") == 0
    manifest = json.loads((models / "tiny_int8.int8.manifest.json").read_text())
    q = manifest["quantization"]
    assert q["pad_narrow_inputs"] == 8 and len(q["padded_inputs"]) == 1  # conv1's 6-channel input
    assert q["shared_concat_scale"] and q["shared_concats"] == []  # its one Concat is the fp32 input's
    assert "--pad-narrow-inputs 8" in manifest["command"]
    padded, plain = onnx.load(str(models / "tiny_int8.int8.onnx")), onnx.load(str(tmp_path / "plain.onnx"))
    for seed in (7, 8):
        x = _grid(seed).transpose(2, 0, 1)[None].copy()
        np.testing.assert_array_equal(_run(padded, x), _run(plain, x))
    with pytest.raises(SystemExit):
        _quantize(calib, "--pad-narrow-inputs", "-1")
