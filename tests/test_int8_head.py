"""offline/int8_head.py: the head convolution's int8 rewrites (cross-layer equalization of its
input channels; the int8 GEMM with int32 sums and an fp32 output; the clip of its uint8 input)
on a small fire-module-shaped network exported here, and `quantize-int8 --integer-head` end to
end on the tiny segmentation model of tests/test_backend_int8.py; offline/int8_deconv.py: the
width-doubling transposed convolution as a convolution + interleave, the same function."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from squeeze_perception import registry
from squeeze_perception.backends import TorchBackend
from squeeze_perception.offline.int8_head import (equalize_head_inputs, head_input_producers, head_input_tensors,
                                                  integer_accumulate, mse_clip, output_aware_clip,
                                                  tensor_statistics, tensor_values)
from test_backend_int8 import _grid, _quantize, tiny  # noqa: F401 - the fixture is used by name


class FireHead(torch.nn.Module):
    """conv -> ReLU -> squeeze -> (expand1x1, expand3x3) -> ReLU -> Concat -> 3x3 head, as
    SqueezeDet's fire11 -> ConvDet; the expand channels get very different scales."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.squeeze = torch.nn.Conv2d(8, 4, 1)
        self.expand1x1 = torch.nn.Conv2d(4, 6, 1)
        self.expand3x3 = torch.nn.Conv2d(4, 6, 3, padding=1)
        self.head = torch.nn.Conv2d(12, 5, 3, padding=1)
        with torch.no_grad():
            self.expand1x1.weight.mul_(torch.tensor([0.05, 1, 10, 1, 3, 0.3]).view(6, 1, 1, 1))

    def forward(self, x):
        s = torch.relu(self.squeeze(torch.relu(self.stem(x))))
        return self.head(torch.cat([torch.relu(self.expand1x1(s)), torch.relu(self.expand3x3(s))], 1))


@pytest.fixture()
def fire_onnx(tmp_path):
    import onnx

    torch.manual_seed(3)
    net = FireHead().eval()
    path = tmp_path / "fire.onnx"
    torch.onnx.export(net, torch.randn(1, 3, 10, 14), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}}, opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    head = [n.name for n in model.graph.node if n.op_type == "Conv"][-1]
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(1, 3, 10, 14)).astype(np.float32) for _ in range(4)]
    return net, model, head, batches


def _node(model, name):
    return next(n for n in model.graph.node if n.name == name)


def _initializer(model, name):
    from onnx import numpy_helper

    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


def _run(model, x):
    from squeeze_perception.backends import import_onnxruntime

    ort = import_onnxruntime()
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_equalization_keeps_the_fp32_function_and_narrows_the_input_ranges(fire_onnx):
    _, model, head, batches = fire_onnx
    producers = head_input_producers(model, head)
    assert [offset for _, offset in producers] == [0, 6]
    tensor = head_input_tensors(model, head)[0]
    before = tensor_statistics(model.SerializeToString(), tensor, batches)[0]
    reference = [_run(model, x) for x in batches]
    scales = equalize_head_inputs(model, head, before, power=0.5)
    after = tensor_statistics(model.SerializeToString(), tensor, batches)[0]
    assert np.allclose(after, before / scales, rtol=1e-4, atol=1e-6)
    assert after.max() / after[after > 0].min() < before.max() / before[before > 0].min()
    assert abs(np.exp(np.log(scales).mean()) - 1) < 1e-6  # normalised: geometric mean 1
    for x, ref in zip(batches, reference):
        assert np.allclose(_run(model, x), ref, rtol=1e-4, atol=1e-5)


def test_equalization_power_zero_changes_nothing_and_bad_input_is_refused(fire_onnx):
    _, model, head, batches = fire_onnx
    ranges = tensor_statistics(model.SerializeToString(), head_input_tensors(model, head)[0], batches)[0]
    assert np.allclose(equalize_head_inputs(model, head, ranges, power=0.0), 1.0)
    with pytest.raises(ValueError, match="outside"):
        equalize_head_inputs(model, head, ranges, power=2.0)
    with pytest.raises(ValueError, match="channel ranges"):
        equalize_head_inputs(model, head, ranges[:3], power=0.5)
    stem = [n.name for n in model.graph.node if n.op_type == "Conv"][0]
    with pytest.raises(ValueError, match="not fed by Conv -> Relu"):
        head_input_producers(model, stem)  # the stem reads the graph input


@pytest.mark.parametrize("parts, tolerance", [(1, 2e-2), (2, 2e-3)])
def test_integer_head_matches_the_fp32_convolution_on_an_uint8_grid(fire_onnx, parts, tolerance):
    """Dynamic input quantization (the head's input is fp32 here): the rewritten graph gives the
    fp32 convolution of the uint8-rounded input, to the weights' rounding, and two weight parts
    are ~100x closer than one."""
    import onnx

    _, model, head, batches = fire_onnx
    tensor = head_input_tensors(model, head)[0]
    inputs = tensor_values(model.SerializeToString(), tensor, batches)
    reference = [_run(model, x) for x in batches]
    rewritten = onnx.load_from_string(model.SerializeToString())
    assert integer_accumulate(rewritten, [head], weight_parts=parts) == [head]
    ops = [n.op_type for n in rewritten.graph.node]
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops and ops.count("Conv") == 4
    worst = 0.0
    for x, inp, ref in zip(batches, inputs, reference):
        got = _run(rewritten, x)
        step = inp.max() / 255  # DynamicQuantizeLinear: [0, max] on 256 levels (ReLU output, min 0)
        rounded = torch.from_numpy(np.round(inp / step) * step)
        w, b = (torch.from_numpy(_initializer(model, name).copy()) for name in _node(model, head).input[1:3])
        expected = torch.nn.functional.conv2d(rounded, w, b, padding=1).numpy()
        worst = max(worst, float(np.abs(got - expected).max() / np.abs(expected).max()))
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()
    assert worst < tolerance


def test_integer_head_is_bit_exact_against_conv_integer():
    """The MatMulInteger + shifted-sum form gives ONNX ConvInteger's int32 sums exactly (the form
    ConvInteger would be, were ORT's CPU kernel for it not 10x slower): a 3x3 and a 1x5 kernel."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from squeeze_perception.backends import import_onnxruntime

    ort = import_onnxruntime()
    rng = np.random.default_rng(1)
    for kh, kw in ((3, 3), (1, 5)):
        w = rng.normal(size=(7, 5, kh, kw)).astype(np.float32)
        conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[kh // 2, kw // 2, kh // 2, kw // 2], name="c")
        graph = helper.make_graph([helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"], name="dq"), conv],
                                  "g", [helper.make_tensor_value_info("xq", TensorProto.UINT8, [2, 5, 6, 9])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7, 6, 9])],
                                  [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float32(0.5), "s"),
                                   numpy_helper.from_array(np.uint8(3), "z")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
        integer_accumulate(model, ["c"], weight_parts=1)
        assert "DequantizeLinear" not in [n.op_type for n in model.graph.node]  # reads the uint8 tensor
        xq = rng.integers(0, 256, (2, 5, 6, 9)).astype(np.uint8)
        got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"xq": xq})[0]
        step = np.abs(w).reshape(7, -1).max(1) / 127
        wq = np.clip(np.round(w / step[:, None, None, None]), -127, 127).astype(np.int8)
        ref_graph = helper.make_graph(
            [helper.make_node("ConvInteger", ["xq", "wq", "z"], ["acc"], pads=[kh // 2, kw // 2, kh // 2, kw // 2])],
            "r", [helper.make_tensor_value_info("xq", TensorProto.UINT8, [2, 5, 6, 9])],
            [helper.make_tensor_value_info("acc", TensorProto.INT32, None)],
            [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(np.uint8(3), "z")])
        acc = ort.InferenceSession(helper.make_model(ref_graph, opset_imports=[helper.make_opsetid("", 17)],
                                                     ir_version=9).SerializeToString(),
                                   providers=["CPUExecutionProvider"]).run(None, {"xq": xq})[0]
        expected = acc * (0.5 * step)[None, :, None, None]
        assert np.allclose(got, expected, rtol=1e-6, atol=1e-4), (kh, kw)
        assert onnx.checker.check_model(model) is None


def test_integer_head_refuses_what_it_cannot_rewrite(fire_onnx):
    _, model, head, _ = fire_onnx
    with pytest.raises(ValueError, match="no node named"):
        integer_accumulate(model, ["/nothing/Conv"])
    with pytest.raises(ValueError, match="weight_parts"):
        integer_accumulate(model, [head], weight_parts=3)
    relu = next(n.name for n in model.graph.node if n.op_type == "Relu")
    with pytest.raises(ValueError, match="not a Conv"):
        integer_accumulate(model, [relu])
    for node in model.graph.node:
        if node.name == head:
            for a in node.attribute:
                if a.name == "strides":
                    a.ints[:] = [2, 2]
    with pytest.raises(ValueError, match="stride-1"):
        integer_accumulate(model, [head])


def test_clips_trade_rounding_against_clipping():
    rng = np.random.default_rng(0)
    # a long-tailed ReLU output: most values small, a few large
    values = np.concatenate([np.abs(rng.normal(0, 0.3, 100_000)), rng.uniform(5, 40, 20)])
    clip = mse_clip(values)
    assert 0 < clip < values.max()
    step = clip / 255
    err = np.mean((np.clip(np.round(values / step), 0, 255) * step - values) ** 2)
    step_max = values.max() / 255
    err_max = np.mean((np.round(values / step_max) * step_max - values) ** 2)
    assert err < err_max
    assert mse_clip(np.zeros(10)) == 0.0
    uniform = rng.uniform(0, 1, 10_000)
    assert mse_clip(uniform) > 0.95  # nothing to gain from clipping a uniform distribution


def test_output_aware_clip_is_within_the_calibration_range(fire_onnx):
    _, model, head, batches = fire_onnx
    inputs = tensor_values(model.SerializeToString(), head_input_tensors(model, head)[0], batches)
    clip = output_aware_clip(model, head, inputs)
    assert 0 < clip <= max(float(x.max()) for x in inputs) + 1e-6


def test_quantize_command_with_an_integer_head_and_a_clip_fraction(tiny, capsys):  # noqa: F811
    """End to end: `quantize-int8 --integer-head 2 --head-input-clip 0.9` on the tiny model (its
    head reads an Add, so equalization is refused with the reason, and the rest works)."""
    import onnx

    spec, models, calib = tiny
    assert _quantize(calib, "--integer-head", "2", "--head-input-clip", "0.9") == 0
    manifest = json.loads((models / "tiny_int8.int8.manifest.json").read_text())
    q = manifest["quantization"]
    assert q["integer_head"] == 2 and len(q["integer_nodes"]) == 1 and q["head_input_clip"] == "0.9"
    assert q["integer_nodes"][0] not in q["kept_fp32"]
    assert len(q["head_input_range"]) == 1 and list(q["head_input_range"].values())[0] > 0
    graph = onnx.load(str(models / "tiny_int8.int8.onnx")).graph
    assert "MatMulInteger" in {n.op_type for n in graph.node}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    producers = {o: n.op_type for n in graph.node for o in n.output}
    assert all(producers.get(c.input[1]) == "DequantizeLinear" for c in convs)  # no fp32 conv left
    backend = registry.get_backend("onnxruntime-int8").create(spec)
    x = _grid(7).transpose(2, 0, 1)[None].copy()
    x[:, 5] = x[:, 4] > 0
    got, ref = backend.infer(x), TorchBackend(spec).infer(x)
    valid = x[0, 4] > 0
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()
    assert (got.argmax(1)[0][valid] == ref.argmax(1)[0][valid]).mean() >= 0.9
    capsys.readouterr()
    assert _quantize(calib, "--equalize-head", "0.25") == 1
    assert "not fed by Conv -> Relu" in capsys.readouterr().err
    assert _quantize(calib, "--head-input-clip", "1.5") == 1
    assert "(0, 1]" in capsys.readouterr().err
    assert _quantize(calib, "--integer-head", "1", "--int8-head-conv") == 1
    assert "kept out of static quantization" in capsys.readouterr().err


class WidthDoubler(torch.nn.Module):
    """SqueezeSegV2's decoder step: a 1x4 transposed convolution, stride 1x2, padding 1 on the
    width, then batch norm and ReLU, between two ordinary convolutions."""

    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.up = torch.nn.ConvTranspose2d(8, 6, (1, 4), stride=(1, 2), padding=(0, 1))
        self.bn = torch.nn.BatchNorm2d(6)
        self.head = torch.nn.Conv2d(6, 4, 1)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.up(torch.relu(self.enc(x))))))


@pytest.mark.parametrize("fold_batchnorm", [False, True])
def test_deconv_as_conv_is_the_same_function(tmp_path, fold_batchnorm):
    """Raw export (ConvTranspose -> BatchNormalization -> Relu) and after ORT's pre-processing
    folds the batch norm (ConvTranspose -> Relu, the ReLU then moves before the interleave)."""
    import onnx

    from squeeze_perception.offline.int8_deconv import deconv_as_conv

    torch.manual_seed(1)
    net = WidthDoubler().eval()
    path = tmp_path / "up.onnx"
    torch.onnx.export(net, torch.randn(1, 3, 5, 16), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}}, opset_version=17, dynamo=False)
    if fold_batchnorm:
        from squeeze_perception.backends import import_onnxruntime

        import_onnxruntime()
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(path), str(tmp_path / "pre.onnx"))
        path = tmp_path / "pre.onnx"
    model = onnx.load(str(path))
    assert "BatchNormalization" in {n.op_type for n in model.graph.node} or fold_batchnorm
    assert len(deconv_as_conv(model)) == 1
    ops = [n.op_type for n in model.graph.node]
    # the interleave is a Reshape in channels-last terms, between a Transpose to NHWC and one back
    assert "ConvTranspose" not in ops and ops.count("Transpose") == 2
    perms = [list(a.ints) for n in model.graph.node if n.op_type == "Transpose" for a in n.attribute if a.name == "perm"]
    assert perms == [[0, 2, 3, 1], [0, 3, 1, 2]]
    first = ops.index("Transpose")
    assert ops[first:first + 3] == ["Transpose", "Reshape", "Transpose"]
    if fold_batchnorm:  # Conv -> Relu next to each other: the quantizer fuses them
        after = {n.input[0]: n.op_type for n in model.graph.node}
        phases = next(n for n in model.graph.node if n.name.endswith("/phases"))
        assert after[phases.output[0]] == "Relu"
    x = np.random.default_rng(2).normal(size=(2, 3, 5, 16)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert np.allclose(_run(model, x), ref, rtol=1e-4, atol=1e-5)


def test_deconv_as_conv_leaves_other_transposed_convolutions_alone():
    from onnx import TensorProto, helper, numpy_helper

    from squeeze_perception.offline.int8_deconv import deconv_as_conv

    w = numpy_helper.from_array(np.ones((2, 2, 1, 3), np.float32), "w")
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], kernel_shape=[1, 3], strides=[1, 2], name="t")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph)
    assert deconv_as_conv(model) == [] and [n.op_type for n in model.graph.node] == ["ConvTranspose"]
