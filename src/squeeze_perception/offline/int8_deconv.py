"""Width-doubling transposed convolutions rewritten as ordinary convolutions, so that static
quantization can run them in int8 (`offline quantize-int8 --deconv-as-conv`).

SqueezeSegV2's decoder up-samples with four ConvTranspose layers (kernel 1 x 4, stride 1 x 2,
padding 1 on each side of the width). ONNX Runtime has no int8 CPU kernel for ConvTranspose, so
in the int8 graph they ran in fp32 between DequantizeLinear and QuantizeLinear, with layout
transposes around them (about 4 ms of a 32 ms frame). The same arithmetic as a "sub-pixel"
convolution: output column 2j takes input columns j (tap 1) and j - 1 (tap 3), output column
2j + 1 takes j + 1 (tap 0) and j (tap 2). So one 1 x 3 convolution with 2 x C_out output channels
(even outputs: taps [3, 1, -], odd outputs: [-, 2, 0]; the empty taps zero) gives both phases,
and an interleave puts them side by side: in channels-last terms a Reshape, written as NCHW ->
NHWC Transpose, Reshape, Transpose back, which ONNX Runtime's channels-last int8 convolutions
absorb (their own layout Transposes cancel these), so it moves no data. The ReLU that followed moves before the interleave (it
commutes with a permutation), so the quantizer fuses it into the convolution. Exact in fp32 up
to summation order (tested).
"""
from __future__ import annotations

import numpy as np

from .int8_head import _attr


def deconv_as_conv(model, height: int | None = None) -> list[str]:
    """Rewrite, in place, every ConvTranspose with kernel (1, 4), stride (1, 2), pads (0, 1, 0, 1),
    one group and constant weights; `height` is the feature maps' row count (needed by the
    interleave's Reshape; read from the graph's input when None). Returns the rewritten names."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    if height is None:
        dims = graph.input[0].type.tensor_type.shape.dim
        height = dims[2].dim_value if len(dims) == 4 and dims[2].HasField("dim_value") else 0
    new_nodes, done, skip = [], [], set()
    for node in graph.node:
        if node.name in skip:
            continue
        if not (node.op_type == "ConvTranspose" and list(_attr(node, "kernel_shape", [])) == [1, 4]
                and list(_attr(node, "strides", [1, 1])) == [1, 2] and list(_attr(node, "pads", [0] * 4)) == [0, 1, 0, 1]
                and _attr(node, "group", 1) == 1 and list(_attr(node, "dilations", [1, 1])) == [1, 1]
                and not list(_attr(node, "output_padding", [])) and node.input[1] in inits):
            new_nodes.append(node)
            continue
        if not height:
            raise ValueError("the feature maps' height is not static: pass height=")
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)  # (C_in, C_out, 1, 4)
        c_in, c_out = w.shape[:2]
        k = np.zeros((2 * c_out, c_in, 1, 3), np.float32)  # taps at input columns j-1, j, j+1
        k[:c_out, :, 0, 0] = w[:, :, 0, 3].T  # even output 2j: x[j-1] by tap 3
        k[:c_out, :, 0, 1] = w[:, :, 0, 1].T  # ... and x[j] by tap 1
        k[c_out:, :, 0, 1] = w[:, :, 0, 2].T  # odd output 2j+1: x[j] by tap 2
        k[c_out:, :, 0, 2] = w[:, :, 0, 0].T  # ... and x[j+1] by tap 0
        bias = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float32) if len(node.input) > 2 and node.input[2]
                else np.zeros(c_out, np.float32))
        p = node.name
        graph.initializer.extend([numpy_helper.from_array(k, p + "/phases_w"),
                                  numpy_helper.from_array(np.concatenate([bias, bias]), p + "/phases_b"),
                                  numpy_helper.from_array(np.array([0, height, -1, c_out], np.int64), p + "/merge")])
        out = node.output[0]
        users = consumers.get(out, [])
        relu = users[0] if len(users) == 1 and users[0].op_type == "Relu" else None
        phases = p + "/phases"
        new_nodes.append(helper.make_node("Conv", [node.input[0], p + "/phases_w", p + "/phases_b"], [phases],
                                          kernel_shape=[1, 3], pads=[0, 1, 0, 1], name=p + "/phases"))
        if relu is not None:  # the ReLU before the interleave, where it fuses with the convolution
            new_nodes.append(helper.make_node("Relu", [phases], [phases + "_relu"], name=relu.name))
            phases, out = phases + "_relu", relu.output[0]
            skip.add(relu.name)
        # The interleave in channels-last terms: [N, H, W, 2 x C] (channel = phase * C + c) read as
        # [N, H, 2W, C] puts column 2w + phase at w * 2C + phase * C, i.e. it is a Reshape. Written as
        # NCHW -> NHWC -> Reshape -> NCHW, the two Transposes cancel against the ones ONNX Runtime puts
        # around its channels-last int8 convolutions, so nothing is moved at all (an interleave by
        # Reshape -> Transpose -> Reshape in NCHW cost 0.8 ms per SqueezeSegV2 frame, its transposes
        # included).
        new_nodes += [
            helper.make_node("Transpose", [phases], [p + "/phases_nhwc"], perm=[0, 2, 3, 1], name=p + "/to_nhwc"),
            helper.make_node("Reshape", [p + "/phases_nhwc", p + "/merge"], [p + "/interleaved"], name=p + "/interleave"),
            helper.make_node("Transpose", [p + "/interleaved"], [out], perm=[0, 3, 1, 2], name=p + "/to_nchw"),
        ]
        done.append(node.name)
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return done
