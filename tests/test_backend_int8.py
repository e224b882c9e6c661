"""The onnxruntime-int8 backend: `offline quantize-int8` on a tiny model calibrated on synthetic
grids built here, the int8 graph close to fp32, what stays fp32, loading, refusal with the
command that makes a missing file, a stale file refused, and the runtime switch (the pipeline
core, and the detector node as tests/test_detection_node.py switches to onnxruntime).
The `auto` backend (the nodes' default): int8 when the graph loads, else fp32 with the reason.
The real models' committed int8 files are checked against fp32 on synthetic inputs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from squeeze_perception import registry
from squeeze_perception.backends import (ModelLoadError, OnnxRuntimeBackend, OnnxRuntimeInt8Backend,
                                         TorchBackend, int8_path_for)
from squeeze_perception.paths import project_root
from squeeze_perception.registry import ModelSpec

REPO_MODELS = project_root() / "models"
H, W = 64, 32  # lidar_2d height (the calibration loader checks it), a narrow tile


class TinySeg(torch.nn.Module):
    """SqueezeSeg's shape in miniature: input normalisation with the mask channel, convolutions
    with a skip addition, a last convolution giving class logits."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([10.0, 0.0, -1.0, 0.3, 12.0]).view(1, 5, 1, 1))
        self.register_buffer("std", torch.tensor([8.0, 6.0, 1.0, 0.2, 8.0]).view(1, 5, 1, 1))
        self.conv1 = torch.nn.Conv2d(6, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 16, 1)
        self.conv3 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.head = torch.nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x):
        mask = (x[:, 4:5] > 0).float()
        f = torch.cat([(x[:, :5] - self.mean) / self.std * mask, mask], 1)
        a = torch.relu(self.conv1(f))
        b = torch.relu(self.conv3(torch.relu(self.conv2(a)))) + a
        return self.head(b)


def _grid(seed: int) -> np.ndarray:
    """A synthetic (64, W, 6) lidar_2d grid: ground rows, an object block, empty cells."""
    rng = np.random.default_rng(seed)
    g = np.zeros((H, W, 6), np.float32)
    rows = np.arange(H)[:, None]
    rng_m = np.where(rows > 30, 40.0 / np.maximum(rows - 29, 1), 0.0) + rng.normal(0, 0.05, (H, W))
    g[..., 4] = np.clip(rng_m, 0, 80) * (rows > 30)
    g[..., 0] = g[..., 4] * 0.99
    g[..., 1] = (np.arange(W)[None] - W / 2) * 0.05 * g[..., 4]
    g[..., 2] = -1.73 + rng.normal(0, 0.02, (H, W))
    g[..., 3] = rng.uniform(0.1, 0.5, (H, W))
    c0 = int(rng.integers(4, W - 12))
    g[28:50, c0:c0 + 8, 0] = 10 + seed
    g[28:50, c0:c0 + 8, 4] = 10.2 + seed
    g[28:50, c0:c0 + 8, 2] = np.linspace(0.2, -1.6, 22)[:, None]
    g[28:50, c0:c0 + 8, 5] = 1
    g[rng.uniform(size=(H, W)) < 0.1] = 0  # dropped returns
    g[..., 3] *= g[..., 4] > 0
    return g


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    """A registered tiny segmentation model with weights in a private models/ folder and a
    synthetic calibration folder of 3 grids (+ 1 held out)."""
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(models))
    monkeypatch.setenv("SQUEEZE_PERCEPTION_SHARED_DATA", str(tmp_path / "shared" / "data"))
    spec = registry.register_model(ModelSpec("tiny_int8", "segmentation", f"{__name__}:TinySeg", "tiny_int8.pt",
                                             (6, H, W), ("unknown", "car", "pedestrian", "cyclist")))
    torch.manual_seed(0)
    torch.save({"state_dict": spec.build().state_dict(), "model": spec.name, "meta": {}}, models / "tiny_int8.pt")
    calib = tmp_path / "synth_lidar_2d"
    calib.mkdir()
    for i in range(3):
        np.save(calib / f"{i:06d}.npy", _grid(i))
    yield spec, models, calib
    registry.MODELS.pop("tiny_int8", None)


def _quantize(calib: Path, *extra: str) -> int:
    from squeeze_perception.offline.cli import main

    return main(["quantize-int8", "--model", "tiny_int8", "--calib-frames", "3", "--calib-dir", str(calib), *extra])


def test_fp32_nodes_are_the_input_normalisation_and_the_last_conv(tiny, tmp_path):
    import onnx

    from squeeze_perception.backends import export_onnx
    from squeeze_perception.offline.quantize import fp32_nodes

    spec, models, _ = tiny
    path = export_onnx(spec, tmp_path / "tiny.onnx", weights=models / "tiny_int8.pt")
    model = onnx.load(str(path))
    keep, groups = fp32_nodes(model)
    types = {n.name: n.op_type for n in model.graph.node}
    assert {types[n] for n in groups["input"]} >= {"Sub", "Div", "Mul", "Greater", "Concat"}
    assert "Conv" not in {types[n] for n in groups["input"]}
    assert [types[n] for n in groups["head"]] == ["Conv"]  # the logits layer, nothing after it here
    last_conv = [n.name for n in model.graph.node if n.op_type == "Conv"][-1]
    assert groups["head"] == [last_conv] and set(keep) == set(groups["input"]) | set(groups["head"])
    assert groups["first"] == []  # only on request
    keep_first, with_first = fp32_nodes(model, first_conv=True)
    first_conv = [n.name for n in model.graph.node if n.op_type == "Conv"][0]
    assert with_first["first"] == [first_conv] and set(keep_first) == set(keep) | {first_conv}


def test_quantize_command_writes_an_int8_graph_close_to_fp32(tiny, tmp_path, capsys):
    import onnx

    from squeeze_perception.backends import ort_session, import_onnxruntime

    spec, models, calib = tiny
    assert _quantize(calib) == 0
    assert "3 synthetic frames" in capsys.readouterr().out
    path = models / "tiny_int8.int8.onnx"
    assert path.exists() and int8_path_for(models / "tiny_int8.pt") == path
    manifest = json.loads((models / "tiny_int8.int8.manifest.json").read_text())
    assert manifest["calibration"]["count"] == 3 and manifest["calibration"]["synthetic_only"]
    assert manifest["quantization"] == {**manifest["quantization"], "format": "QDQ", "per_channel": True,
                                        "weights": "int8", "activations": "uint8"}
    graph = onnx.load(str(path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= 3 and "DequantizeLinear" in ops
    convs = [n for n in graph.node if n.op_type == "Conv"]
    producers = {o: n.op_type for n in graph.node for o in n.output}
    assert all(producers.get(c.input[1]) == "DequantizeLinear" for c in convs[:-1])  # int8 weights
    assert producers.get(convs[-1].input[1]) is None  # the logits layer keeps fp32 weights
    # ONNX Runtime fuses the QDQ pairs into int8 kernels
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort_session(str(path), opts)
    assert "QLinearConv" in {n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node}

    backend = registry.get_backend("onnxruntime-int8").create(spec)
    assert isinstance(backend, OnnxRuntimeInt8Backend)
    x = _grid(7).transpose(2, 0, 1)[None].copy()
    x[:, 5] = x[:, 4] > 0
    got = backend.infer(x)
    ref = TorchBackend(spec).infer(x)
    valid = x[0, 4] > 0
    assert got.shape == ref.shape and backend.last_latency_ms > 0
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()
    assert (got.argmax(1)[0][valid] == ref.argmax(1)[0][valid]).mean() >= 0.9


def test_fp32_layers_keep_the_named_convolutions_fp32_and_quantize_the_others(tiny, tmp_path, capsys):
    import onnx

    from squeeze_perception.backends import import_onnxruntime, ort_session
    from squeeze_perception.offline.quantize import layer_prefixes_for

    spec, models, calib = tiny
    out = tmp_path / "sweep" / "tiny_conv2_fp32.int8.onnx"
    assert _quantize(calib, "--fp32-layers", "conv2", "--out", str(out)) == 0
    manifest = json.loads(out.with_name("tiny_conv2_fp32.int8.manifest.json").read_text())
    assert manifest["quantization"]["fp32_layers"] == ["conv2"]
    kept_names = manifest["quantization"]["kept_fp32"]
    assert "/conv2/Conv" in kept_names and "/Relu_1" in kept_names  # its ReLU, fed only by it, too
    assert "/conv1/Conv" not in kept_names and "/Relu" not in kept_names
    graph = onnx.load(str(out)).graph
    producers = {o: n.op_type for n in graph.node for o in n.output}
    convs = {n.name: n for n in graph.node if n.op_type == "Conv"}
    kept = convs["/conv2/Conv"]
    assert producers.get(kept.input[1]) is None  # fp32 weights
    for name in ("/conv1/Conv", "/conv3/Conv"):  # the others: int8 weights and int8 inputs (QDQ)
        assert producers.get(convs[name].input[1]) == "DequantizeLinear"
        assert producers.get(convs[name].input[0]) == "DequantizeLinear"
    # as the backend's session runs it: conv1 and conv3 fused into int8 kernels, conv2 and the
    # head fp32 Conv (without the backend's session config ORT would quantize conv2's weights)
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    for key, value in OnnxRuntimeInt8Backend.session_config.items():
        opts.add_session_config_entry(key, value)
    ort_session(str(out), opts)
    ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == 2 and ops.count("Conv") == 2
    assert not (models / "tiny_int8.int8.onnx").exists()  # --out: the default file is left alone
    # a name that matches no node is refused, not silently quantized
    assert _quantize(calib, "--fp32-layers", "conv9", "--out", str(tmp_path / "typo.int8.onnx")) == 1
    assert "conv9" in capsys.readouterr().err
    # SqueezeDet's fire modules are named by the layer names of its trunk
    assert layer_prefixes_for(registry.get_model("squeezedet"), ["fire10", "fire11/expand3x3", "convdet", "/x/"]) == [
        "/features/features.12/", "/features/features.13/expand3x3/", "/convdet/", "/x/"]


def test_op_profile_sums_the_int8_graph_by_operator_type(tiny):
    from squeeze_perception.offline.detection.bench import op_profile

    spec, models, calib = tiny
    assert _quantize(calib) == 0
    prof = op_profile(models / "tiny_int8.int8.onnx", threads=1, runs=3,
                      config=OnnxRuntimeInt8Backend.session_config, input_shape=spec.input_shape)
    assert prof["runs"] == 3 and prof["nodes"]["QLinearConv"] == 3  # conv1..conv3 fused, the head fp32
    assert prof["ops"]["QLinearConv"] > 0 and prof["nodes"]["Conv"] == 1
    assert abs(prof["kernel_ms"] - sum(prof["ops"].values())) < 1e-9 and prof["run_ms"] >= prof["kernel_ms"] * 0.5


def test_missing_int8_file_is_refused_with_the_command_that_makes_it(tiny):
    spec, models, _ = tiny
    with pytest.raises(ModelLoadError, match=r"tiny_int8\.int8\.onnx' not found.*"
                                             r"squeeze-perception offline quantize-int8 --model tiny_int8"):
        registry.get_backend("onnxruntime-int8").create(spec)
    OnnxRuntimeBackend(spec)  # fp32 still loads: nothing but the int8 file is missing


def test_int8_file_of_other_weights_is_refused(tiny):
    spec, models, calib = tiny
    assert _quantize(calib) == 0
    OnnxRuntimeInt8Backend(spec)
    torch.manual_seed(1)  # retrained: the int8 graph now holds stale weights
    torch.save({"state_dict": spec.build().state_dict(), "model": spec.name, "meta": {}}, models / "tiny_int8.pt")
    with pytest.raises(ModelLoadError, match="quantized from other weights.*offline quantize-int8"):
        OnnxRuntimeInt8Backend(spec)
    (models / "tiny_int8.int8.onnx").write_bytes(b"truncated")
    with pytest.raises(ModelLoadError, match="do not match their manifest"):
        OnnxRuntimeInt8Backend(spec, weights=models / "tiny_int8.int8.onnx")


# ----------------------------------------------------------------- auto: int8 when usable, else fp32
def _input() -> np.ndarray:
    x = _grid(7).transpose(2, 0, 1)[None].copy()
    x[:, 5] = x[:, 4] > 0
    return x


def test_auto_runs_the_int8_graph_when_it_is_there_with_the_int8_backends_outputs(tiny):
    from squeeze_perception.backends import AutoBackend

    spec, models, calib = tiny
    assert _quantize(calib) == 0
    auto = registry.get_backend("auto").create(spec, num_threads=1)
    assert isinstance(auto, AutoBackend) and isinstance(auto.backend, OnnxRuntimeInt8Backend)
    assert auto.resolved_backend == "onnxruntime-int8" and auto.resolved_spec is registry.get_backend("onnxruntime-int8")
    assert auto.reason == f"int8 graph {models / 'tiny_int8.int8.onnx'}"  # outside the project: the full path
    x = _input()
    np.testing.assert_array_equal(auto.infer(x), OnnxRuntimeInt8Backend(spec, num_threads=1).infer(x))
    assert auto.last_latency_ms > 0 and auto.last_energy_mj is None
    assert auto.weights_path == models / "tiny_int8.int8.onnx"  # the chosen backend's attributes


def test_auto_falls_back_to_fp32_with_the_reason_when_the_int8_graph_is_missing_stale_or_corrupt(tiny):
    from squeeze_perception.backends import AutoBackend

    spec, models, calib = tiny
    auto = AutoBackend(spec, num_threads=1)  # no int8 graph yet
    assert auto.resolved_backend == "onnxruntime" and auto.resolved_spec is registry.get_backend("onnxruntime")
    assert type(auto.backend) is OnnxRuntimeBackend
    assert auto.reason.startswith("no int8 graph for model 'tiny_int8': int8 model file '")
    assert "tiny_int8.int8.onnx' not found" in auto.reason and "offline quantize-int8 --model tiny_int8" in auto.reason
    assert auto.reason.endswith(", running fp32 onnxruntime")
    x = _input()
    np.testing.assert_array_equal(auto.infer(x), OnnxRuntimeBackend(spec, num_threads=1).infer(x))
    assert _quantize(calib) == 0
    assert AutoBackend(spec).resolved_backend == "onnxruntime-int8"
    torch.manual_seed(1)  # retrained: the int8 graph holds stale weights
    torch.save({"state_dict": spec.build().state_dict(), "model": spec.name, "meta": {}}, models / "tiny_int8.pt")
    stale = AutoBackend(spec, num_threads=1)
    assert stale.resolved_backend == "onnxruntime" and "quantized from other weights" in stale.reason
    np.testing.assert_allclose(stale.infer(x), TorchBackend(spec).infer(x), rtol=1e-4, atol=1e-4)  # the new weights
    (models / "tiny_int8.int8.onnx").write_bytes(b"truncated")
    corrupt = AutoBackend(spec)
    assert corrupt.resolved_backend == "onnxruntime" and "do not match their manifest" in corrupt.reason


def test_auto_with_given_weights_looks_for_their_int8_graph(tiny, tmp_path):
    from squeeze_perception.backends import AutoBackend

    spec, models, calib = tiny
    assert _quantize(calib) == 0  # the shipped weights' int8 graph: not the given weights'
    mine = tmp_path / "mine" / "retrained.pt"
    mine.parent.mkdir()
    torch.manual_seed(2)
    torch.save({"state_dict": spec.build().state_dict(), "model": spec.name, "meta": {}}, mine)
    auto = AutoBackend(spec, weights=mine)
    assert auto.resolved_backend == "onnxruntime" and "retrained.int8.onnx' not found" in auto.reason
    assert "--weights " in auto.reason  # the command that makes it for these weights
    assert _quantize(calib, "--weights", str(mine)) == 0
    auto = AutoBackend(spec, weights=mine)
    assert auto.resolved_backend == "onnxruntime-int8" and auto.backend.weights_path == mine.with_name(
        "retrained.int8.onnx")
    # a given fp32 graph: the int8 graph beside it must have been quantized from that file
    fp32_graph = models / "tiny_int8.onnx"
    assert fp32_graph.exists()  # exported by the quantizer
    auto = AutoBackend(spec, weights=fp32_graph)
    assert auto.resolved_backend == "onnxruntime" and "quantized from other weights" in auto.reason


def test_metered_auto_backend_reports_as_the_backend_it_chose(tiny):
    from squeeze_perception.backends import AutoBackend
    from squeeze_perception.energy import MeteredBackend

    spec, models, calib = tiny
    assert _quantize(calib) == 0
    auto = AutoBackend(spec, num_threads=1)
    meter = MeteredBackend(auto, registry.get_backend("auto"), spec)
    assert meter.backend_spec is registry.get_backend("onnxruntime-int8")
    run = meter.infer(_input())
    assert run.latency_ms == auto.last_latency_ms and not run.emulated and run.energy_source in ("rapl", "model", "none")


def test_calibration_on_real_data_is_refused(tiny, tmp_path, capsys):
    real = tmp_path / "shared" / "data" / "kitti_real" / "lidar_2d"
    real.mkdir(parents=True)
    np.save(real / "000000.npy", _grid(0))
    assert _quantize(real) == 1
    assert "synthetic frames only" in capsys.readouterr().err
    assert not (tmp_path / "models" / "tiny_int8.int8.onnx").exists()


# ----------------------------------------------------------------- the real models' int8 files
def _scan() -> np.ndarray:
    """A synthetic HDL-64E sweep of the front 90 degrees: flat ground and a car-sized box."""
    from squeeze_perception.kitti.hdl64e import HDL64E_BEAM_HEIGHT_M, HDL64E_ELEVATION_DEG

    az = np.radians(np.linspace(44.9, -44.9, 512))
    el = np.radians(np.asarray(HDL64E_ELEVATION_DEG, np.float64))[:, None]
    h = np.asarray(HDL64E_BEAM_HEIGHT_M, np.float64)[:, None]
    d = np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), -1)
    t = np.where(d[..., 2] < 0, (-1.73 - h) / np.minimum(d[..., 2], -1e-9), np.inf)
    lo, hi = np.array([9.0, -1.0, -1.73]), np.array([13.0, 0.9, -0.25])  # the box (slab test)
    origin = np.stack([np.zeros_like(h), np.zeros_like(h), h], -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - origin) / d, (hi - origin) / d
    near, far = np.minimum(t1, t2).max(-1), np.maximum(t1, t2).min(-1)
    hit = (near <= far) & (near > 0)
    t = np.where(hit & (near < t), near, t)
    keep = np.isfinite(t) & (t < 80)
    pts = origin + t[..., None] * d
    intensity = np.where(hit, 0.6, 0.25)
    return np.concatenate([pts[keep], intensity[keep][:, None]], 1).astype(np.float32)


def _committed(name: str) -> Path:
    path = REPO_MODELS / f"{name}.int8.onnx"
    if not path.exists():
        pytest.skip(f"{path} not made (squeeze-perception offline quantize-int8 --model {name})")
    return path


def test_squeezesegv2_int8_pipeline_agrees_with_fp32_and_switches_at_runtime():
    from squeeze_perception.segmentation.pipeline import SegmentationPipeline

    _committed("squeezesegv2")
    points = _scan()
    fp32 = SegmentationPipeline("squeezesegv2", backend="onnxruntime", crf=True, num_threads=1)
    int8 = SegmentationPipeline("squeezesegv2", backend="onnxruntime-int8", crf=True, num_threads=1)
    a, b = fp32.process(points), int8.process(points)
    assert a.in_fov > 20000 and b.in_fov == a.in_fov
    assert int8.backend_name == "onnxruntime-int8" and b.inference is not None
    assert (a.labels == b.labels).mean() >= 0.97
    assert (b.labels[a.labels == 1] == 1).mean() >= 0.9 if (a.labels == 1).sum() > 100 else True


def test_detector_node_switches_to_int8_at_runtime_or_refuses_with_the_reason(ros, tmp_path):
    from rclpy.parameter import Parameter

    from squeeze_perception.nodes.squeezedet_node import SqueezeDetNode
    from test_detection_node import _capture, _image, _weights

    _committed("squeezedet")
    node = SqueezeDetNode(parameter_overrides=[Parameter("backend", value="onnxruntime")])
    other = SqueezeDetNode(parameter_overrides=[Parameter("weights", value=str(_weights(tmp_path))),
                                                Parameter("backend", value="onnxruntime")])
    try:
        result = node.set_parameters([Parameter("backend", value="onnxruntime-int8")])[0]
        assert result.successful, result.reason
        assert node.detector.backend_name == "onnxruntime-int8" and node.p["backend"] == "onnxruntime-int8"
        out = _capture(node)
        node.on_image(_image())
        assert len(out["det"]) == 1 and node.stats["detect"].errors == 0
        # other weights without an int8 graph beside them: refused, the fp32 detector stays
        result = other.set_parameters([Parameter("backend", value="onnxruntime-int8")])[0]
        assert not result.successful
        assert "int8.onnx' not found" in result.reason and "offline quantize-int8 --model squeezedet" in result.reason
        assert other.detector.backend_name == "onnxruntime" and other.p["backend"] == "onnxruntime"
    finally:
        node.destroy_node()
        other.destroy_node()


def test_detector_node_defaults_to_auto_reports_what_it_resolved_to_and_switches(ros, tmp_path):
    """The default backend `auto` loads the committed int8 graph and says so (log line, diagnostics
    `backend` / `backend_reason`); switching to fp32 and back to auto at runtime works, other
    weights run fp32 with the reason, and a switch that loads nothing is refused with it."""
    from rclpy.parameter import Parameter

    from squeeze_perception.nodes.squeezedet_node import SqueezeDetNode
    from test_detection_node import _capture, _image, _weights

    _committed("squeezedet")
    node = SqueezeDetNode()
    other = SqueezeDetNode(parameter_overrides=[Parameter("weights", value=str(_weights(tmp_path)))])
    try:
        assert node.p["backend"] == "auto" and node.detector.backend_name == "auto"
        assert node.detector.backend.resolved_backend == "onnxruntime-int8"
        assert node.detector.meter.backend_spec.name == "onnxruntime-int8"
        values = {kv.key: kv.value for kv in node.diagnostic_status("detect").values}
        assert values["backend"] == "onnxruntime-int8"
        assert values["backend_reason"] == "int8 graph models/squeezedet.int8.onnx"
        out = _capture(node)
        node.on_image(_image())
        assert len(out["det"]) == 1 and node.stats["detect"].errors == 0
        info = node.stats["detect"].info
        assert node.set_parameters([Parameter("backend", value="onnxruntime")])[0].successful
        assert node.detector.backend_name == "onnxruntime"
        assert info["backend"] == "onnxruntime" and "backend_reason" not in info
        assert node.set_parameters([Parameter("backend", value="auto")])[0].successful
        assert node.detector.backend.resolved_backend == "onnxruntime-int8" and info["backend"] == "onnxruntime-int8"
        # weights without an int8 graph beside them: fp32, and why
        assert other.detector.backend.resolved_backend == "onnxruntime"
        reason = other.stats["detect"].info["backend_reason"]
        assert reason.startswith("no int8 graph for model 'squeezedet': int8 model file ")
        assert reason.endswith(", running fp32 onnxruntime") and other.stats["detect"].info["backend"] == "onnxruntime"
        bad = tmp_path / "bad.pt"
        bad.write_text("not a checkpoint")
        result = other.set_parameters([Parameter("weights", value=str(bad))])[0]
        assert not result.successful and "corrupt" in result.reason
        assert "backend auto: onnxruntime-int8 did not load either" in result.reason
        assert other.detector.backend.resolved_backend == "onnxruntime" and other.p["weights"] != str(bad)
    finally:
        node.destroy_node()
        other.destroy_node()


def test_squeezedet_int8_boxes_overlap_fp32():
    from squeeze_perception.detection.data import load_rgb
    from squeeze_perception.detection.decode import DecodeConfig
    from squeeze_perception.detection.inference import Detector

    _committed("squeezedet")
    images = sorted((project_root() / "data" / "synth_det" / "object" / "testing" / "image_2").glob("*.png"))[:2]
    if not images:
        pytest.skip("synthetic detection test images not generated (data/synth_det)")
    cfg = DecodeConfig(score_threshold=0.3)
    fp32, int8 = Detector("squeezedet", "onnxruntime", decode_config=cfg), Detector("squeezedet", "onnxruntime-int8",
                                                                                     decode_config=cfg)
    matched = total = 0
    for path in images:
        rgb = load_rgb(path)
        a, b = fp32.detect(rgb), int8.detect(rgb)
        # confident detections (marginal ones near the threshold may trade places: AP, measured by
        # `det eval --backend onnxruntime-int8`, is the accuracy criterion)
        for d in a[a["score"] >= 0.6]:
            total += 1
            same = b[b["class_id"] == d["class_id"]]
            if len(same) and _iou(d, same).max() >= 0.7:
                matched += 1
    assert total == 0 or matched / total >= 0.8


def _iou(d, others) -> np.ndarray:
    x1 = np.maximum(d["u_min"], others["u_min"])
    y1 = np.maximum(d["v_min"], others["v_min"])
    x2 = np.minimum(d["u_max"], others["u_max"])
    y2 = np.minimum(d["v_max"], others["v_max"])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r["u_max"] - r["u_min"]) * (r["v_max"] - r["v_min"])  # noqa: E731
    return inter / (area(d) + area(others) - inter)
