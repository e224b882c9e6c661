"""Graph rewrites and a range choice that let a detector's last layers run in int8 without their
accuracy loss.

Used by `offline quantize-int8 --equalize-head POWER --integer-head PARTS --head-input-clip ...`
(quantize.py); the measurements that chose them are in docs/performance.md ("int8 head").

Why they exist. SqueezeDet's ConvDet writes box deltas (through exp), confidences and class
logits into one tensor: an 8-bit output step there collapses AP, so static quantization kept it
fp32, and with it fire11's expand pair, whose 8-bit outputs (ConvDet's input) cost 3 points of
car AP. Those fp32 layers were half of the int8 graph's run time.

* `equalize_head_inputs` (cross-layer equalization, Nagel et al., "Data-Free Quantization Through
  Weight Equalization and Bias Correction", ICCV 2019): the channels of the head's input have
  very different ranges, so one per-tensor activation scale crushes the narrow ones. Channel c
  of the producing convolutions (before their ReLU, which commutes with a positive scale) is
  divided by s_c and the head's input channel c multiplied by s_c: the fp32 function is unchanged
  (tested), the activation ranges move closer. s_c = (range_c / weight_range_c) ** power,
  normalised to a geometric mean of 1; power 0.5 balances activation and weight ranges fully,
  smaller values move less of the spread into the head's weights.
* `integer_accumulate` runs a convolution as an int8 GEMM whose int32 sums are scaled to fp32,
  with no 8-bit step on the output: ONNX `MatMulInteger` (u8 activations x s8 weights, the MLAS
  VNNI kernel) over all kh x kw taps at once, then the taps' partial sums shifted and added.
  ONNX `ConvInteger` would say the same in one node, but ONNX Runtime's CPU kernel for it ran a
  3x3 ConvDet in 61 ms against 5.4 ms for this form (same int32 result, tested), so it is
  deliberately not used. With `weight_parts=2` every weight is the sum of two int8 numbers (the
  second is the residual at 1/256 of the first's step): 16-bit weights at twice the GEMM work;
  on SqueezeDet one part scored as well as two, so the shipped file uses one.
* The head's uint8 input range (`mse_clip`, `output_aware_clip`, or a fraction of the calibration
  maximum in quantize.py): a ReLU output with a long tail leaves most values a few steps wide
  under MinMax.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

INT_MAX = np.iinfo(np.int64).max


def _index(model):
    nodes = list(model.graph.node)
    producer = {out: n for n in nodes for out in n.output}
    consumers: dict[str, list] = {}
    for n in nodes:
        for inp in n.input:
            consumers.setdefault(inp, []).append(n)
    inits = {t.name: t for t in model.graph.initializer}
    return nodes, producer, consumers, inits


def _attr(node, name, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def head_input_producers(model, head_name: str) -> list[tuple[object, int]]:
    """The convolutions that make the head convolution's input, with each one's first channel in
    it: the head reads Conv -> Relu, or a Concat of such (a fire module's expand pair). Anything
    else (a pooling, an addition) is refused: equalization would not be exact through it."""
    nodes, producer, consumers, inits = _index(model)
    head = next((n for n in nodes if n.name == head_name), None)
    if head is None or head.op_type != "Conv":
        raise ValueError(f"no Conv node named {head_name!r}")
    src = producer.get(head.input[0])
    branches = [src]
    if src is not None and src.op_type == "Concat":
        if _attr(src, "axis", None) != 1:
            raise ValueError("the head's input Concat is not along channels")
        branches = [producer.get(i) for i in src.input]
    found, offset = [], 0
    for relu in branches:
        conv = producer.get(relu.input[0]) if relu is not None and relu.op_type == "Relu" else None
        if conv is None or conv.op_type != "Conv" or len(consumers.get(conv.output[0], ())) != 1:
            raise ValueError(f"the head {head_name!r} is not fed by Conv -> Relu (-> Concat); cannot equalize")
        if conv.input[1] not in inits or len(conv.input) < 3 or conv.input[2] not in inits:
            raise ValueError(f"{conv.name}: weights or bias are not constants")
        channels = int(np.prod(inits[conv.input[1]].dims[:1]))
        found.append((conv, offset))
        offset += channels
    return found


def equalize_head_inputs(model, head_name: str, channel_range: np.ndarray, power: float = 0.25) -> np.ndarray:
    """Cross-layer equalization of the head's input channels, in place; returns the scales s_c
    (the input channel c of the head now carries 1/s_c times its old value)."""
    from onnx import numpy_helper

    if not 0.0 <= power <= 1.0:
        raise ValueError(f"power {power} outside [0, 1]")
    nodes, _, _, inits = _index(model)
    head = next(n for n in nodes if n.name == head_name)
    producers = head_input_producers(model, head_name)

    def get(name):
        return numpy_helper.to_array(inits[name]).astype(np.float64)

    def put(name, value):
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    w_head = get(head.input[1])
    if w_head.shape[1] != len(channel_range):
        raise ValueError(f"{len(channel_range)} channel ranges for a head with {w_head.shape[1]} input channels")
    weight_range = np.abs(w_head).max(axis=(0, 2, 3))
    # a channel that never fires (range 0) or has no weight gets scale 1 relative to the rest
    act = np.where(channel_range > 0, channel_range, np.nan)
    ratio = act / np.where(weight_range > 0, weight_range, np.nan)
    scale = np.where(np.isfinite(ratio), ratio, np.nan) ** power
    scale = scale / np.exp(np.nanmean(np.log(scale)))
    scale = np.where(np.isfinite(scale), scale, 1.0)
    for conv, first in producers:
        w = get(conv.input[1])
        part = scale[first:first + w.shape[0]]
        put(conv.input[1], w / part[:, None, None, None])
        put(conv.input[2], get(conv.input[2]) / part)
    put(head.input[1], w_head * scale[None, :, None, None])
    return scale


def channel_ranges(model_bytes: bytes, tensor: str, batches: Sequence[np.ndarray], threads: int = 1) -> np.ndarray:
    """Per-channel maximum of an intermediate fp32 tensor (N, C, H, W) over the calibration batches."""
    return tensor_statistics(model_bytes, tensor, batches, threads)[0]


def _tensor_per_batch(model_bytes: bytes, tensor: str, batches: Sequence[np.ndarray], threads: int = 1):
    """An intermediate fp32 tensor of the graph, batch by batch: the graph with that tensor added
    to its outputs, run on each batch."""
    import onnx

    from ..backends import import_onnxruntime, ort_session

    probe = onnx.load_from_string(model_bytes)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    options = import_onnxruntime().SessionOptions()
    options.intra_op_num_threads = max(threads, 1)
    session = ort_session(probe.SerializeToString(), options)
    name = session.get_inputs()[0].name
    for batch in batches:
        yield session.run([tensor], {name: batch})[0]


def tensor_statistics(model_bytes: bytes, tensor: str, batches: Sequence[np.ndarray], threads: int = 1,
                      sample: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel maximum of an intermediate fp32 tensor (N, C, H, W) over the calibration
    batches, and `sample` of its values drawn evenly from every batch (for `mse_clip`)."""
    rng = np.random.default_rng(seed)
    best, drawn = None, []
    for value in _tensor_per_batch(model_bytes, tensor, batches, threads):
        top = value.transpose(1, 0, 2, 3).reshape(value.shape[1], -1).max(axis=1)
        best = top if best is None else np.maximum(best, top)
        if sample:
            flat = value.ravel()
            drawn.append(flat[rng.integers(0, flat.size, max(sample // len(batches), 1))])
    return best, (np.concatenate(drawn) if drawn else np.zeros(0, np.float32))


def tensor_values(model_bytes: bytes, tensor: str, batches: Sequence[np.ndarray], threads: int = 1) -> list[np.ndarray]:
    """An intermediate fp32 tensor's values for each batch (few batches: they are held in memory)."""
    return list(_tensor_per_batch(model_bytes, tensor, batches, threads))


def mse_clip(values: np.ndarray, levels: int = 256, candidates: int = 100) -> float:
    """The upper clip of a non-negative activation (ReLU output, zero point 0) whose uint8
    quantization has the least mean squared error on `values` (the calibration frames' values):
    rounding error falls with a tighter range, clipping error rises. MinMax calibration takes the
    largest value ever seen, which for a long-tailed ReLU output leaves most values a few steps
    wide (SqueezeDet's ConvDet input: 99 % of the values below 0.5 against a range of 40)."""
    values = np.asarray(values, np.float64)
    top = float(values.max()) if values.size else 0.0
    if top <= 0:
        return top
    best, best_err = top, np.inf
    for clip in top * np.linspace(1.0 / candidates, 1.0, candidates):
        step = clip / (levels - 1)
        err = np.mean((np.clip(np.round(values / step), 0, levels - 1) * step - values) ** 2)
        if err < best_err:
            best, best_err = float(clip), err
    return best


def integer_accumulate(model, conv_names: Sequence[str], weight_parts: int = 1, dynamic_input: bool = False) -> list[str]:
    """Replace each named fp32 Conv (stride 1, no dilation, one group, 'same' padding) by an int8
    GEMM with int32 accumulation and an fp32 output (module docstring), in place. Its input is
    taken as uint8 from the DequantizeLinear feeding it, or quantized per frame
    (DynamicQuantizeLinear) when it is fp32. Returns the names of the replaced nodes."""
    from onnx import TensorProto, helper, numpy_helper

    if weight_parts not in (1, 2):
        raise ValueError("weight_parts is 1 (int8 weights) or 2 (int8 + int8 residual)")
    nodes, producer, consumers, inits = _index(model)
    wanted = set(conv_names)
    missing = wanted - {n.name for n in nodes}
    if missing:
        raise ValueError(f"no node named {sorted(missing)}")
    graph = model.graph
    new_nodes, replaced = [], []

    def const(name, value):
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    for node in nodes:
        if node.name not in wanted:
            new_nodes.append(node)
            continue
        if node.op_type != "Conv" or node.input[1] not in inits:
            raise ValueError(f"{node.name}: not a Conv with constant weights")
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        m, c, kh, kw = w.shape
        pads = list(_attr(node, "pads", [0, 0, 0, 0]))
        if (list(_attr(node, "strides", [1, 1])) != [1, 1] or list(_attr(node, "dilations", [1, 1])) != [1, 1]
                or _attr(node, "group", 1) != 1 or pads != [kh // 2, kw // 2, kh // 2, kw // 2]
                or kh % 2 == 0 or kw % 2 == 0):
            raise ValueError(f"{node.name}: only stride-1, undilated, ungrouped, odd 'same' convolutions")
        p = node.name
        # per-output-channel symmetric int8 weights; a second part carries the residual at 1/256 the step
        step = np.maximum(np.abs(w).reshape(m, -1).max(axis=1), 1e-30) / 127.0
        parts, scales, rest = [], [], w
        for k in range(weight_parts):
            s = step / (256.0 ** k)
            q = np.clip(np.round(rest / s[:, None, None, None]), -127 if k == 0 else -128, 127)
            parts.append(q.astype(np.int8))
            scales.append(s)
            rest = rest - q * s[:, None, None, None]
        taps = kh * kw
        # GEMM operand [C, taps * parts * M]: column (tap, part, m)
        wt = np.stack([q.transpose(1, 2, 3, 0).reshape(c, taps, m) for q in parts], axis=2).reshape(c, -1)
        src = producer.get(node.input[0])
        if not dynamic_input and src is not None and src.op_type == "DequantizeLinear" and len(src.input) == 3 \
                and src.input[1] in inits and numpy_helper.to_array(inits[src.input[1]]).size == 1 \
                and inits[src.input[2]].data_type == TensorProto.UINT8:
            q_in, x_scale, x_zero = src.input  # the uint8 tensor the DequantizeLinear reads
        else:
            q_in, x_scale, x_zero = p + "/x_u8", p + "/x_scale", p + "/x_zero"
            new_nodes.append(helper.make_node("DynamicQuantizeLinear", [node.input[0]], [q_in, x_scale, x_zero],
                                              name=p + "/quantize_input"))
        pm = len(parts) * m
        # [parts * M, 1, 1], part-major: scales broadcast over the (H, W) planes of an NCHW tensor
        w_scale = const(p + "/w_scale", np.concatenate(scales).astype(np.float32).reshape(-1, 1, 1))
        # The GEMM gives [N, H, W, taps * parts * M] int32. It is turned tap-major ([N, taps * parts * M,
        # H, W]) once, so that each tap's shifted window is a block of whole channel planes (rows of W
        # contiguous values) and the scaling broadcasts over planes: on SqueezeSegV2's 64 x 512 head,
        # slicing 4-value runs out of every pixel's 36 and scaling along a 4-wide last axis took 1.7
        # ms more per frame (docs/performance.md), for the same int32 sums and the same fp32 output.
        new_nodes += [
            helper.make_node("Transpose", [q_in], [p + "/x_nhwc"], perm=[0, 2, 3, 1], name=p + "/to_nhwc"),
            helper.make_node("MatMulInteger", [p + "/x_nhwc", const(p + "/w_int8", wt), x_zero,
                                               const(p + "/w_zero", np.int8(0))], [p + "/taps"], name=p + "/gemm"),
            helper.make_node("Transpose", [p + "/taps"], [p + "/taps_nchw"], perm=[0, 3, 1, 2], name=p + "/tap_major"),
            helper.make_node("Pad", [p + "/taps_nchw", const(p + "/pads", np.array([0, 0, kh // 2, kw // 2,
                                                                                    0, 0, kh // 2, kw // 2], np.int64))],
                             [p + "/taps_padded"], name=p + "/pad"),
        ]
        total = None
        for t in range(taps):
            dy, dx = divmod(t, kw)  # output (y, x) reads input (y + dy - kh//2, x + dx - kw//2)
            start = const(f"{p}/start{t}", np.array([t * pm, dy, dx], np.int64))
            end = const(f"{p}/end{t}", np.array([(t + 1) * pm, dy - (kh - 1) if dy < kh - 1 else INT_MAX,
                                                  dx - (kw - 1) if dx < kw - 1 else INT_MAX], np.int64))
            axes = const(f"{p}/axes{t}", np.array([1, 2, 3], np.int64))
            new_nodes.append(helper.make_node("Slice", [p + "/taps_padded", start, end, axes], [f"{p}/tap{t}"],
                                              name=f"{p}/tap{t}"))
            if total is None:
                total = f"{p}/tap{t}"
            else:
                new_nodes.append(helper.make_node("Add", [total, f"{p}/tap{t}"], [f"{p}/sum{t}"], name=f"{p}/sum{t}"))
                total = f"{p}/sum{t}"
        # int32 [N, parts * M, H, W] -> fp32, scaled per (part, channel); two parts are added as two
        # slices (ORT's ReduceSum over a short axis took 4 ms on a 64 x 512 x 4 output), one part
        # needs nothing more
        new_nodes += [
            helper.make_node("Cast", [total], [p + "/acc_f"], to=TensorProto.FLOAT, name=p + "/to_float"),
            helper.make_node("Mul", [w_scale, x_scale], [p + "/scale"], name=p + "/scale"),
            helper.make_node("Mul", [p + "/acc_f", p + "/scale"], [p + "/scaled"], name=p + "/dequantize"),
        ]
        out = p + "/scaled"
        if weight_parts == 2:
            axis = const(p + "/channel_axis", np.array([1], np.int64))
            new_nodes += [
                helper.make_node("Slice", [out, const(p + "/first_start", np.array([0], np.int64)),
                                           const(p + "/first_end", np.array([m], np.int64)), axis],
                                 [p + "/coarse"], name=p + "/coarse"),
                helper.make_node("Slice", [out, const(p + "/second_start", np.array([m], np.int64)),
                                           const(p + "/second_end", np.array([2 * m], np.int64)), axis],
                                 [p + "/fine"], name=p + "/fine"),
                helper.make_node("Add", [p + "/coarse", p + "/fine"], [p + "/summed"], name=p + "/sum_parts"),
            ]
            out = p + "/summed"
        if len(node.input) > 2 and node.input[2]:
            bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32).reshape(-1, 1, 1)
            new_nodes.append(helper.make_node("Add", [out, const(p + "/bias", bias)], [node.output[0]],
                                              name=p + "/bias"))
        else:
            new_nodes.append(helper.make_node("Identity", [out], [node.output[0]], name=p + "/output"))
        replaced.append(node.name)
    del graph.node[:]
    graph.node.extend(new_nodes)
    # the replaced convolutions' fp32 weights (and a DequantizeLinear nobody reads now) go
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    changed = True
    while changed:
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        changed = bool(dead)
        for n in dead:
            graph.node.remove(n)
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return replaced


def output_aware_clip(model, head_name: str, inputs: Sequence[np.ndarray], levels: int = 256,
                      candidates: int = 40) -> float:
    """The upper clip of the head's uint8 input that keeps the head's *output* closest to fp32:
    for each candidate clip the calibration frames' head inputs (`inputs`, fp32 N x C x H x W,
    non-negative) are rounded to that grid and run through the head convolution (torch, fp32),
    and the clip with the least mean squared output error against the unrounded input wins.
    Unlike the input's own squared error (`mse_clip`), this weighs each value by what the
    layer does with it: the many small activations matter to the box deltas and logits as much
    as the rare large ones. Labels are never used."""
    import torch
    import torch.nn.functional as F
    from onnx import numpy_helper

    nodes, _, _, inits = _index(model)
    head = next((n for n in nodes if n.name == head_name), None)
    if head is None or head.op_type != "Conv":
        raise ValueError(f"no Conv node named {head_name!r}")
    weight = torch.from_numpy(numpy_helper.to_array(inits[head.input[1]]).astype(np.float32))
    pads = list(_attr(head, "pads", [0, 0, 0, 0]))
    padding = (pads[0], pads[1])
    top = max(float(np.max(x)) for x in inputs)
    if top <= 0:
        return top
    frames = [torch.from_numpy(np.ascontiguousarray(x, np.float32)) for x in inputs]
    with torch.no_grad():
        reference = [F.conv2d(x, weight, padding=padding) for x in frames]
        best, best_err = top, np.inf
        for clip in top * np.linspace(1.0 / candidates, 1.0, candidates):
            step = clip / (levels - 1)
            err = sum(float(((F.conv2d(torch.clamp(torch.round(x / step), 0, levels - 1) * step, weight,
                                       padding=padding) - ref) ** 2).mean()) for x, ref in zip(frames, reference))
            if err < best_err:
                best, best_err = float(clip), err
    return best


def head_input_tensors(model, head_name: str) -> list[str]:
    """The tensors that carry the head convolution's input: its input, and when that is a Concat
    the tensors concatenated (one quantization range for all, so the Concat copies bytes)."""
    nodes, producer, _, _ = _index(model)
    head = next((n for n in nodes if n.name == head_name), None)
    if head is None:
        raise ValueError(f"no node named {head_name!r}")
    tensors = [head.input[0]]
    src = producer.get(head.input[0])
    if src is not None and src.op_type == "Concat":
        tensors += list(src.input)
    return tensors
