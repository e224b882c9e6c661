"""Two rewrites of a quantized (QDQ) graph that make ONNX Runtime's int8 kernels cheaper without
touching what the network computes (`offline quantize-int8 --pad-narrow-inputs 8
--shared-concat-scale`).

* **Narrow inputs padded** (`pad_narrow_inputs`): a convolution whose input has fewer than 8
  channels (SqueezeSeg's first two layers read the 6-channel normalised grid; the CAM gates read
  4) is a poor shape for MLAS's u8 x s8 kernels, which work through the reduction dimension in
  blocks of 4 and 8 bytes: on this CPU the 6 -> 64 1 x 1 convolution at 64 x 512 took 0.69 ms as
  a kernel alone and 0.25 ms with the input padded to 8 channels; the 3 x 3 one 0.82 -> 0.52 ms
  (one-layer int8 graphs, ORT profiler, 1 thread). The uint8 input gets zero-point-valued channels
  (which dequantize to exactly 0) and the weights zero input channels, so the result is the same
  to the bit: only the memory layout changes.
* **Concatenations with one scale** (`share_concat_scale`): the quantizer gives each input of a
  Concat its own (scale, zero point) from calibration and the output another, so ORT's
  QLinearConcat requantizes every byte through a table (2.3 of SqueezeSegV2's 26 ms on 12
  concatenations). Quantizing each input with the output's parameters makes the concatenation a
  copy. The output's calibrated range is the union of the inputs' (MinMax), so nothing is
  clipped; the narrower branch gets coarser steps, an accuracy change measured like every other
  int8 choice (docs/performance.md). TFLite's int8 spec requires the same of its Concat.

Both take a model quantized by onnxruntime.quantization.quantize_static in QDQ format and change
it in place; each returns the names of what it changed (recorded in the int8 manifest).
"""
from __future__ import annotations

import numpy as np

from .int8_head import _attr, _index


def pad_narrow_inputs(model, channels: int = 8) -> list[str]:
    """Pad, in place, the uint8 input of every convolution with fewer than `channels` input
    channels to `channels` (zero-point-valued, i.e. exactly 0 after DequantizeLinear) and its
    weights with zero input channels. Only where every consumer of the DequantizeLinear is such a
    convolution (a non-convolution reader would see the extra channels). Returns the padded
    tensors' names."""
    from onnx import helper, numpy_helper

    graph = model.graph
    _, producer, consumers, inits = _index(model)

    def weight_of(conv):
        """(initializer holding the int8 weights, its array) or None when not a constant QDQ weight."""
        w_dq = producer.get(conv.input[1])
        if w_dq is None or w_dq.op_type != "DequantizeLinear" or w_dq.input[0] not in inits:
            return None
        return inits[w_dq.input[0]], numpy_helper.to_array(inits[w_dq.input[0]])

    padded = []
    for dq in list(graph.node):
        if dq.op_type != "DequantizeLinear" or dq.input[0] in inits or len(dq.input) < 3:
            continue
        readers = consumers.get(dq.output[0], [])
        if not readers or any(r.op_type != "Conv" or r.input[0] != dq.output[0] or _attr(r, "group", 1) != 1
                              or weight_of(r) is None for r in readers):
            continue
        widths = {weight_of(r)[1].shape[1] for r in readers}
        if len(widths) != 1 or next(iter(widths)) >= channels:
            continue
        extra = channels - next(iter(widths))
        for reader in readers:
            tensor, w = weight_of(reader)
            zeros = np.zeros((w.shape[0], extra) + w.shape[2:], w.dtype)
            tensor.CopyFrom(numpy_helper.from_array(np.concatenate([w, zeros], axis=1), tensor.name))
        source = dq.input[0]
        pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, extra, 0, 0], np.int64), f"{source}_pad{channels}")
        graph.initializer.append(pads)
        # pad value = the input's zero point: dequantizes to exactly 0.0
        pad = helper.make_node("Pad", [source, pads.name, dq.input[2]], [f"{source}_padded{channels}"],
                               name=f"{dq.name}_pad{channels}", mode="constant")
        dq.input[0] = pad.output[0]
        nodes = list(graph.node)
        graph.node.insert(nodes.index(dq), pad)
        padded.append(source)
    return padded


def share_concat_scale(model) -> list[str]:
    """Quantize, in place, every input of a quantized Concat with the Concat output's scale and
    zero point (see the module docstring). A Concat qualifies when its output goes to exactly one
    QuantizeLinear and each input is DequantizeLinear(QuantizeLinear(x)); every DequantizeLinear
    of that QuantizeLinear's output is repointed with it, so all readers stay consistent. Returns
    the Concat names."""
    graph = model.graph
    _, producer, consumers, _ = _index(model)
    changed = []
    for concat in graph.node:
        if concat.op_type != "Concat":
            continue
        readers = consumers.get(concat.output[0], [])
        if len(readers) != 1 or readers[0].op_type != "QuantizeLinear" or len(readers[0].input) < 3:
            continue
        scale, zero_point = readers[0].input[1], readers[0].input[2]
        quantizers = []
        for tensor in concat.input:
            dq = producer.get(tensor)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear" or len(q.input) < 3:
                quantizers = []
                break
            quantizers.append(q)
        if not quantizers:
            continue
        for q in quantizers:
            q.input[1], q.input[2] = scale, zero_point
            for dq in consumers.get(q.output[0], []):
                if dq.op_type == "DequantizeLinear":
                    dq.input[1], dq.input[2] = scale, zero_point
        changed.append(concat.name)
    # the inputs' own scale / zero-point initializers are no longer read
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)
    return changed
