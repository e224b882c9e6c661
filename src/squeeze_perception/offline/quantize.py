"""Static int8 quantization of the exported ONNX graphs: what the `onnxruntime-int8` backend runs.

`squeeze-perception offline quantize-int8 --model squeezedet|squeezesegv2|squeezeseg` reads the
fp32 graph the `onnxruntime` backend runs (models/<name>.onnx, exported from the checkpoint when
missing or stale), calibrates it on SYNTHETIC frames only, and writes models/<name>.int8.onnx
with its manifest models/<name>.int8.manifest.json (calibration set, frame count, options).

Choices (ONNX Runtime 1.x, CPU execution provider):

* QDQ format, per-channel symmetric int8 weights: ORT's graph optimiser fuses
  DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv (MLAS int8 GEMM), and per-channel
  scales keep the narrow filters of the 1x1 squeeze layers from being crushed by the widest one.
* uint8 activations (asymmetric), int8 weights ("U8S8"): on x86 MLAS runs its int8 GEMM as
  u8 x s8 (AVX512-VNNI `vpdpbusd` / AVX-VNNI, AVX2 `vpmaddubsw` without), the native form of
  the instruction; s8 activations are shifted to u8 inside the kernel (an extra pass). Activations
  after ReLU are non-negative, so the asymmetric u8 range loses nothing. With VNNI there is no
  16-bit intermediate that could saturate, so reduce_range stays off (turn it on, --reduce-range,
  only for pre-VNNI AVX2 CPUs).
* What stays fp32 (nodes_to_exclude, found from the graph's structure, not from names):
  - everything before the first convolution: the segmentation networks' input normalisation
    ((x - mean) / std * mask, mask channel), raw metres and intensities whose range is not a
    feature map's;
  - the last convolution(s), whose outputs are the network's result, and every node after
    them: SqueezeDet's ConvDet layer and its decoding (anchor deltas through exp, sigmoid
    confidence, class softmax); SqueezeSeg's conv14 logits, which the recurrent CRF turns into
    probabilities with a softmax. A quantization step there moves box edges by whole pixels
    times exp() and shifts the CRF's softmax; it is one layer of ~30, so it costs little.
  - with --fp32-layers, named layers (a sensitivity sweep's knob, docs/performance.md).
* The head without its fp32 cost (int8_head.py; SqueezeDet's shipped file): --equalize-head
  (cross-layer equalization of the head's input channels), --head-input-clip (that input's
  uint8 range, a fraction of the calibration maximum chosen on a validation split) and
  --integer-head (the head as an int8 GEMM with int32 sums and an fp32 output, so no 8-bit step
  on the deltas and logits). Before these, fire11's expand pair and ConvDet stayed fp32 (8-bit
  steps on fire11's output cost 3 points of car AP) and were half the int8 run time.
* Calibration: MinMax over the synthetic frames (fast, deterministic, folded every few frames so
  memory stays bounded; --method percentile or entropy hold every frame's activations: > 18 GB
  for 64 SqueezeDet frames). Never the real KITTI data under ../shared/data: those are the
  evaluation set.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..backends import (INT8_SOURCE_KEY, ONNX_MODEL_KEY, export_onnx, exported_model, int8_path_for,
                        onnx_is_fresh, onnx_path_for, sha256_file)
from ..paths import project_root
from ..registry import ModelSpec, get_model

CALIB_DIRS = {  # synthetic data only (docs/synthetic.md); paths relative to the project root
    "detection": Path("data/synth_det/object/training/image_2"),
    "segmentation": Path("data/synth/lidar_2d/train"),
}
METHODS = ("minmax", "percentile", "entropy")
CONV_TYPES = ("Conv", "ConvTranspose")


@dataclass
class QuantOptions:
    per_channel: bool = True
    quant_format: str = "qdq"  # "qdq" (ORT fuses Q/DQ pairs at load) or "qoperator" (QLinearConv ... in the file)
    activation_type: str = "uint8"  # "uint8" (U8S8, the x86 fast path) or "int8"
    weight_type: str = "int8"
    method: str = "minmax"
    reduce_range: bool = False
    head_conv_fp32: bool = True  # False (--int8-head-conv): the last conv in int8 too, only what follows in fp32
    first_conv_fp32: bool = False  # True (--fp32-first-conv): the first convolution(s), on the raw input, in fp32
    # --fp32-layers: named layers (a model's layer names such as "fire11", or ONNX node-name
    # prefixes such as "/features/features.13/") kept fp32 whole: what a sensitivity sweep varies
    fp32_layers: list[str] = field(default_factory=list)
    keep_fp32: list[str] = field(default_factory=list)  # filled in: the excluded node names
    # --equalize-head POWER: cross-layer equalization of the head convolution's input channels
    # before calibration (int8_head.py); 0 = off
    equalize_head: float = 0.0
    # --integer-head PARTS: the head convolution as an int8 GEMM with int32 sums and an fp32 output,
    # PARTS int8 weight parts (1: 8-bit weights, 2: 16-bit as two int8 numbers); 0 = fp32 Conv
    integer_head: int = 0
    integer_nodes: list[str] = field(default_factory=list)  # filled in: the convolutions so rewritten
    # --head-input-clip: the uint8 range of the head convolution's input (and of the ReLUs
    # concatenated into it): "max" (MinMax), "mse" / "output" (least squared error of that input /
    # of the head's output on the calibration frames) or a fraction of the calibration maximum
    head_input_clip: str = "max"
    head_input_range: dict[str, float] = field(default_factory=dict)  # filled in: tensor -> rmax
    # --deconv-as-conv: width-doubling ConvTranspose layers (no int8 CPU kernel in ORT) rewritten
    # as convolutions + an interleave before quantization (int8_deconv.py)
    deconv_as_conv: bool = False
    deconv_nodes: list[str] = field(default_factory=list)  # filled in: the layers so rewritten
    # --pad-narrow-inputs C: convolution inputs with fewer than C channels padded to C after
    # quantization (exact; MLAS's int8 kernels are slow on 4-6 channels; int8_layout.py); 0 = off
    pad_narrow_inputs: int = 0
    padded_inputs: list[str] = field(default_factory=list)  # filled in: the tensors so padded
    # --shared-concat-scale: each Concat input quantized with the output's scale, so the int8
    # concatenation is a copy, not a requantization (int8_layout.py)
    shared_concat_scale: bool = False
    shared_concats: list[str] = field(default_factory=list)  # filled in: the Concats so changed


# ------------------------------------------------------------------------- graph analysis
def fp32_nodes(model, head_conv: bool = True, first_conv: bool = False,
               layer_prefixes: Sequence[str] = ()) -> tuple[list[str], dict[str, list[str]]]:
    """Names of the nodes to keep in fp32 (see the module docstring) and why, by group:
    'input' (no convolution upstream: input normalisation), 'head' (the last convolutions,
    those with no convolution downstream, and everything after them), with `first_conv`,
    'first' (the convolutions with no convolution upstream, which see the raw input), and
    'layers': every node whose name starts with one of `layer_prefixes` (ONNX node names of an
    exported torch module are its module path, '/features/features.13/squeeze/Conv', so a
    prefix selects a whole module; see `layer_prefixes_for`)."""
    graph = model.graph
    nodes = list(graph.node)
    for i, n in enumerate(nodes):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    producer = {out: n for n in nodes for out in n.output}
    consumers: dict[str, list] = {}
    for n in nodes:
        for inp in n.input:
            consumers.setdefault(inp, []).append(n)

    def upstream(node) -> set[str]:
        seen, stack = set(), [node]
        while stack:
            for inp in stack.pop().input:
                p = producer.get(inp)
                if p is not None and p.name not in seen:
                    seen.add(p.name)
                    stack.append(p)
        return seen

    def downstream(node) -> set[str]:
        seen, stack = set(), [node]
        while stack:
            for out in stack.pop().output:
                for c in consumers.get(out, ()):
                    if c.name not in seen:
                        seen.add(c.name)
                        stack.append(c)
        return seen

    by_name = {n.name: n for n in nodes}
    convs = [n for n in nodes if n.op_type in CONV_TYPES]
    if not convs:
        return [], {"input": [], "head": []}
    below = {n.name: downstream(n) for n in convs}
    conv_names = {c.name for c in convs}
    last = [c for c in convs if not (below[c.name] & conv_names)]
    head = set()
    for c in last:
        head |= ({c.name} if head_conv else set()) | below[c.name]
    after_a_conv = set().union(*below.values()) | conv_names
    pre = {n.name for n in nodes if n.name not in after_a_conv}
    # only what feeds a convolution is "input normalisation"; constants' producers are harmless
    feeding = set().union(*(upstream(c) for c in convs))
    pre &= feeding
    first = {c.name for c in convs if not (upstream(c) & conv_names)} if first_conv else set()
    unmatched = [p for p in layer_prefixes if not any(n.name.startswith(p) for n in nodes)]
    if unmatched:  # a typo must not silently quantize the layer the sweep meant to keep
        raise ValueError(f"no node of the graph is named like {unmatched}")
    layers = {n.name for n in nodes if any(n.name.startswith(p) for p in layer_prefixes)}
    # A non-convolution fed only by kept layers (their ReLU, the fire module's Concat) stays fp32
    # too: quantizing it would put an 8-bit step right after the layer kept fp32 for its precision
    # and gain no int8 kernel. Graph order is topological, so one pass follows chains.
    for n in nodes:
        fed_by = [producer[i] for i in n.input if i in producer]
        if (n.op_type not in CONV_TYPES and n.name not in layers and fed_by
                and all(p.name in layers for p in fed_by)):
            layers.add(n.name)
    order = {n.name: i for i, n in enumerate(nodes)}
    groups = {"input": sorted(pre, key=order.get), "first": sorted(first - head, key=order.get),
              "layers": sorted(layers - head - first - pre, key=order.get), "head": sorted(head, key=order.get)}
    assert all(name in by_name for g in groups.values() for name in g)
    return groups["input"] + groups["first"] + groups["layers"] + groups["head"], groups


def layer_prefixes_for(spec: ModelSpec | None, layers: Sequence[str]) -> list[str]:
    """ONNX node-name prefixes of the named layers. A model with `layer_names` parallel to its
    `features` (SqueezeDet: conv1, maxpool1, fire2 ... fire11) maps 'fire11' to the module path
    the exporter gives its nodes, '/features/features.13/'; other torch attributes ('convdet')
    become '/convdet/'; 'fire11/expand3x3' is that sub-module ('/features/features.13/expand3x3/');
    a name starting with '/' is taken as a prefix as it is."""
    names: tuple[str, ...] = ()
    if spec is not None and any(not layer.startswith("/") for layer in layers):
        with contextlib.suppress(Exception):  # an ONNX-only model has no torch module: prefixes only
            names = tuple(getattr(spec.build(), "layer_names", ()))
    prefixes = []
    for layer in layers:
        # 'fire11/expand3x3': a sub-module of a named layer
        top, _, sub = layer.partition("/")
        if layer.startswith("/"):
            prefixes.append(layer)
        elif top in names and names.index(top) < len(names) - 2 and names[-2:] == ("dropout", "convdet"):
            prefixes.append(f"/features/features.{names.index(top)}/" + (f"{sub}/" if sub else ""))
        else:
            prefixes.append(f"/{layer}/")
    return prefixes


# ------------------------------------------------------------------------- calibration data
def detection_calibration(spec: ModelSpec, folder: Path, count: int) -> tuple[list[np.ndarray], list[str]]:
    """(1, 3, H, W) batches of `count` images spread evenly over the folder, preprocessed as the
    runtime Detector does (letterbox + normalise, detection/data.preprocess)."""
    from ..detection.data import load_rgb, preprocess

    files = sorted(Path(folder).glob("*.png"))
    picked = _spread(files, count)
    _, h, w = spec.input_shape
    return [preprocess(load_rgb(f), w, h)[0] for f in picked], [f.name for f in picked]


def segmentation_calibration(spec: ModelSpec, folder: Path, count: int) -> tuple[list[np.ndarray], list[str]]:
    """(1, C, 64, 512) batches from lidar_2d grids, the network input the runtime pipeline builds
    from a projected cloud (segmentation/data.to_input, as SegmentationPipeline.network_input)."""
    from ..segmentation.data import load_grid, to_input

    files = sorted(Path(folder).glob("*.npy"))
    picked = _spread(files, count)
    c, h, w = spec.input_shape
    out = []
    for f in picked:
        grid = load_grid(f)
        if grid.shape[1] != w:  # wider grids (full view): the front columns, as a front tile
            start = (grid.shape[1] - w) // 2
            grid = grid[:, start:start + w]
        out.append(to_input(grid, c)[None])
    return out, [f.name for f in picked]


def _spread(files: Sequence[Path], count: int) -> list[Path]:
    if not files:
        return []
    if count >= len(files):
        return list(files)
    idx = np.linspace(0, len(files) - 1, count).round().astype(int)
    return [files[i] for i in sorted(set(idx.tolist()))]


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over a list of batches."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]):
        self.input_name = input_name
        self.batches = [{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in b.items()} if isinstance(b, dict)
                        else np.ascontiguousarray(b, dtype=np.float32) for b in batches]
        self._it = iter(self.batches)

    def get_next(self):
        b = next(self._it, None)
        if b is None or isinstance(b, dict):  # a dict: a graph with several inputs, fed by name
            return b
        return {self.input_name: b}

    def rewind(self):
        self._it = iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:  # CalibStridedMinMax
        self._it = iter(self.batches[start_index:end_index])


def _stride(n: int, most: int = 4) -> int:
    """Frames per MinMax chunk: at most `most`, dividing n (ORT requires it)."""
    return max(d for d in range(1, most + 1) if n % d == 0)


# ------------------------------------------------------------------------- quantization
def quantize_onnx(fp32: Path, out: Path, batches: Sequence[np.ndarray], options: QuantOptions | None = None,
                  metadata: dict[str, str] | None = None, layer_prefixes: Sequence[str] | None = None) -> QuantOptions:
    """Quantize the fp32 ONNX file `fp32` into `out` (QDQ, static) calibrated on `batches`.
    Returns the options with `keep_fp32` filled in. The graph's metadata (the model name stamp)
    is kept and `metadata` added. `layer_prefixes`: node-name prefixes kept fp32 (default: the
    options' fp32_layers taken as prefixes)."""
    import onnx

    from ..backends import import_onnxruntime

    import_onnxruntime()  # telemetry off before the quantization tool imports onnxruntime
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    options = options or QuantOptions()
    if layer_prefixes is None:
        layer_prefixes = list(options.fp32_layers)
    if not batches:
        raise ValueError("no calibration inputs")
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    # absolute: the pre-processing step below runs in a scratch working directory
    out, fp32 = Path(out).resolve(), Path(fp32).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    source_meta = {p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props}
    tmp_pre = out.with_name(f".{out.name}.{os.getpid()}.pre.onnx")
    tmp_out = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        # symbolic shape inference + ORT's constant folding / fusions, as the ORT docs advise
        # before static quantization (the optimiser renames nodes: exclusions come after)
        # In a scratch working directory: where ORT's symbolic shape inference gives up it dumps
        # sym_shape_infer_temp.onnx and its external data into the current directory.
        with tempfile.TemporaryDirectory(prefix="quant_pre.") as scratch, contextlib.chdir(scratch):
            try:
                quant_pre_process(str(fp32), str(tmp_pre))
            except Exception:  # noqa: BLE001 - ORT raises a bare Exception when symbolic inference is incomplete
                # It gives up on some graphs (a searched net's channel shuffle and nearest
                # up-sampling); ONNX's own shape inference suffices for quantize_static.
                quant_pre_process(str(fp32), str(tmp_pre), skip_symbolic_shape=True)
        pre = onnx.load(str(tmp_pre))
        if options.deconv_as_conv:
            from .int8_deconv import deconv_as_conv

            options.deconv_nodes = deconv_as_conv(pre)
        keep, groups = fp32_nodes(pre, head_conv=options.head_conv_fp32, first_conv=options.first_conv_fp32,
                                  layer_prefixes=layer_prefixes or ())
        op_of = {n.name: n.op_type for n in pre.graph.node}
        head_convs = [name for name in groups["head"] if op_of[name] == "Conv"]
        if (options.equalize_head or options.integer_head) and not (options.head_conv_fp32 and head_convs):
            raise ValueError("--equalize-head / --integer-head rewrite the head convolution, which must be kept "
                             "out of static quantization (not with --int8-head-conv)")
        by_name = {n.name: n for n in pre.graph.node}
        if options.equalize_head:
            from .int8_head import channel_ranges, equalize_head_inputs

            for head in head_convs:
                ranges = channel_ranges(pre.SerializeToString(), by_name[head].input[0], batches)
                equalize_head_inputs(pre, head, ranges, options.equalize_head)
        overrides = _head_input_overrides(pre, head_convs, batches, options)
        onnx.save(pre, str(tmp_pre))  # with the node names fp32_nodes may have filled in
        input_name = pre.graph.input[0].name
        options.keep_fp32 = keep
        quantize_static(
            str(tmp_pre), str(tmp_out), _Reader(input_name, batches),
            quant_format={"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[options.quant_format],
            per_channel=options.per_channel, reduce_range=options.reduce_range,
            activation_type=types[options.activation_type], weight_type=types[options.weight_type],
            nodes_to_exclude=keep, calibrate_method=methods[options.method],
            extra_options={"ActivationSymmetric": options.activation_type == "int8", "WeightSymmetric": True,
                           **({"TensorQuantOverrides": overrides} if overrides else {}),
                           # MinMax folds the ranges every few frames instead of holding every
                           # intermediate tensor of every frame (GBs for SqueezeDet at 1242x375)
                           **({"CalibStridedMinMax": _stride(len(batches))} if options.method == "minmax"
                              else {})})
        model = onnx.load(str(tmp_out))
        if options.integer_head:
            from .int8_head import integer_accumulate

            options.integer_nodes = integer_accumulate(model, head_convs, options.integer_head)
            options.keep_fp32 = [name for name in keep if name not in options.integer_nodes]
        if options.pad_narrow_inputs or options.shared_concat_scale:
            from .int8_layout import pad_narrow_inputs, share_concat_scale

            if options.shared_concat_scale:
                options.shared_concats = share_concat_scale(model)
            if options.pad_narrow_inputs:
                options.padded_inputs = pad_narrow_inputs(model, options.pad_narrow_inputs)
        del model.metadata_props[:]
        for key, value in {**source_meta, **(metadata or {})}.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, str(value)
        onnx.save(model, str(tmp_out))
        os.replace(tmp_out, out)
    finally:
        tmp_pre.unlink(missing_ok=True)
        tmp_out.unlink(missing_ok=True)
        for extra in out.parent.glob(f".{out.name}.{os.getpid()}*"):  # augmented-model leftovers
            extra.unlink(missing_ok=True)
    return options


def _head_input_overrides(model, head_convs: Sequence[str], batches: Sequence[np.ndarray],
                          options: QuantOptions) -> dict:
    """ORT's TensorQuantOverrides for the head convolutions' uint8 input (and the ReLUs a Concat
    joins into it) by options.head_input_clip: 'max' (none: MinMax), 'mse', 'output' or a
    fraction of the calibration maximum (int8_head.py). Records the ranges in the options."""
    clip_fraction = _clip_fraction(options.head_input_clip)
    if options.head_input_clip == "max":
        return {}
    if options.head_input_clip not in ("mse", "output") and clip_fraction is None:
        raise ValueError(f"head input clip {options.head_input_clip!r}: 'max', 'mse', 'output' or a fraction in (0, 1]")
    from .int8_head import head_input_tensors, mse_clip, output_aware_clip, tensor_statistics, tensor_values

    by_name = {n.name: n for n in model.graph.node}
    overrides = {}
    for head in head_convs:
        tensor_in, graph = by_name[head].input[0], model.SerializeToString()
        if clip_fraction is not None:
            rmax = clip_fraction * float(tensor_statistics(graph, tensor_in, batches)[0].max())
        elif options.head_input_clip == "mse":
            rmax = mse_clip(tensor_statistics(graph, tensor_in, batches, sample=2_000_000)[1])
        else:  # 8 of the calibration frames, spread over them: their head inputs are held in memory
            rmax = output_aware_clip(model, head, tensor_values(graph, tensor_in,
                                                                list(batches)[::max(len(batches) // 8, 1)][:8]))
        for tensor in head_input_tensors(model, head):
            # numpy scalars: ORT reads .dtype from the override values
            overrides[tensor] = [{"rmin": np.float32(0.0), "rmax": np.float32(rmax)}]
            options.head_input_range[tensor] = round(rmax, 4)
    return overrides


def _clip_fraction(clip: str) -> float | None:
    """--head-input-clip as a fraction of the calibration maximum ('0.25'), or None for a method name."""
    try:
        fraction = float(clip)
    except ValueError:
        return None
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"head input clip {clip}: a fraction of the calibration maximum must be in (0, 1]")
    return fraction


def ensure_fp32_onnx(spec: ModelSpec, weights: Path) -> Path:
    """The fp32 graph the onnxruntime backend runs for these weights, exported when missing/stale
    (an ONNX-only model's weights are that graph: used as they are)."""
    if spec.onnx_only or str(weights).endswith(".onnx"):
        return Path(weights)
    path = onnx_path_for(weights)
    if not (onnx_is_fresh(path, weights) and exported_model(path) == spec.name):
        export_onnx(spec, path, weights=weights)
    return path


def quantize_model(name: str, calib_frames: int = 32, weights: str | Path | None = None,
                   out: str | Path | None = None, calib_dir: str | Path | None = None,
                   options: QuantOptions | None = None, command: str = "") -> dict:
    """models/<name>.int8.onnx (+ manifest) from the registry model's checkpoint. Returns the manifest."""
    spec = get_model(name)
    weights = Path(weights) if weights else spec.weights_path()
    if weights is None or not weights.exists():
        raise FileNotFoundError(f"weights file '{weights}' not found; train it (models/README.md) or pass --weights")
    folder = Path(calib_dir) if calib_dir else project_root() / CALIB_DIRS[spec.task]
    _refuse_real_data(folder)
    loader = detection_calibration if spec.task == "detection" else segmentation_calibration
    batches, names = loader(spec, folder, calib_frames)
    if not batches:
        raise FileNotFoundError(f"no calibration frames in '{folder}'; make the synthetic set first "
                                "(squeeze-perception synth ..., docs/synthetic.md) or pass --calib-dir")
    fp32 = ensure_fp32_onnx(spec, weights)
    out = Path(out) if out else int8_path_for(weights, for_writing=True)
    options = options or QuantOptions()
    t0 = time.perf_counter()
    source_sha = sha256_file(weights)
    options = quantize_onnx(fp32, out, batches, options,
                            metadata={ONNX_MODEL_KEY: spec.name, INT8_SOURCE_KEY: source_sha},
                            layer_prefixes=layer_prefixes_for(spec, options.fp32_layers))
    seconds = time.perf_counter() - t0
    manifest = int8_manifest(spec, out, weights, source_sha, folder, names, options, seconds, command)
    from .manifest import write_manifest

    write_manifest(out, manifest)
    return manifest


def _refuse_real_data(folder: Path) -> None:
    """Calibration must never see the evaluation data (real KITTI under ../shared/data)."""
    from ..paths import shared_data_dir

    real = Path(shared_data_dir()).resolve()
    resolved = Path(folder).resolve()
    if resolved == real or real in resolved.parents:
        raise ValueError(f"'{folder}' is real evaluation data ({real}); calibrate on synthetic frames only")


def int8_manifest(spec: ModelSpec, out: Path, weights: Path, source_sha: str, folder: Path, names: list[str],
                  options: QuantOptions, seconds: float, command: str) -> dict:
    import onnxruntime

    try:
        calib = str(Path(folder).resolve().relative_to(project_root()))
    except ValueError:
        calib = str(folder)
    return {
        "manifest_version": 1,
        "name": spec.name,
        "task": spec.task,
        "kind": "onnx-int8-static-qdq",
        "input": {"shape": list(spec.input_shape), "dtype": "float32", "layout": "NCHW"},
        "classes": list(spec.classes),
        "weights": {"file": out.name, "sha256": sha256_file(out), "bytes": out.stat().st_size},
        "source": {"checkpoint": weights.name, "sha256": source_sha},
        "calibration": {"set": calib, "synthetic_only": True, "count": len(names), "frames": names,
                        "method": options.method},
        "quantization": {"format": {"qdq": "QDQ", "qoperator": "QOperator"}[options.quant_format],
                         "per_channel": options.per_channel,
                         "weights": options.weight_type, "activations": options.activation_type,
                         "reduce_range": options.reduce_range, "head_conv_fp32": options.head_conv_fp32,
                         "first_conv_fp32": options.first_conv_fp32, "fp32_layers": list(options.fp32_layers),
                         "equalize_head": options.equalize_head, "integer_head": options.integer_head,
                         "integer_nodes": list(options.integer_nodes),
                         "head_input_clip": options.head_input_clip, "head_input_range": dict(options.head_input_range),
                         "deconv_as_conv": options.deconv_as_conv, "deconv_nodes": list(options.deconv_nodes),
                         "pad_narrow_inputs": options.pad_narrow_inputs, "padded_inputs": list(options.padded_inputs),
                         "shared_concat_scale": options.shared_concat_scale,
                         "shared_concats": list(options.shared_concats),
                         "kept_fp32": options.keep_fp32},
        "metrics": {},  # not measured here: det eval / seg eval against fp32, tables in docs/performance.md
        "latency_ms": {},
        "seconds": round(seconds, 1),
        "command": command,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"onnxruntime": onnxruntime.__version__},
    }


def summary_line(manifest: dict) -> str:
    q, c = manifest["quantization"], manifest["calibration"]
    return (f"{manifest['name']}: wrote {manifest['weights']['file']} ({manifest['weights']['bytes'] / 1e6:.1f} MB) "
            f"in {manifest['seconds']:.0f} s; calibration {c['count']} synthetic frames from {c['set']} "
            f"({c['method']}); {q['format']}, {'per-channel ' if q['per_channel'] else ''}{q['weights']} weights, "
            f"{q['activations']} activations; {len(q['kept_fp32'])} nodes kept fp32"
            + (f" (layers {', '.join(q['fp32_layers'])})" if q.get("fp32_layers") else "")
            + (f"; head input equalized (power {q['equalize_head']})" if q.get("equalize_head") else "")
            + (f"; int8 GEMM with fp32 output ({q['integer_head']} weight part(s)): {', '.join(q['integer_nodes'])}"
               if q.get("integer_head") else "")
            + (f"; {len(q['padded_inputs'])} narrow input(s) padded to {q['pad_narrow_inputs']} channels"
               if q.get("pad_narrow_inputs") else "")
            + (f"; {len(q['shared_concats'])} concatenation(s) with one scale" if q.get("shared_concat_scale") else ""))

