"""A model file separate from its architecture (issue 12 item 1): a model registered as an ONNX file
only (ModelSpec builder None, weights `<name>.onnx`), as a third-party detector or a graph from
another toolchain would be. Made here by exporting a tiny torch model (no name stamp: a foreign
graph), run by name through onnxruntime (Detector, SegmentationPipeline, the nodes' model slots)
and compared with the torch model it came from; the torch / synetgy backends refuse it with the
reason, onnxruntime-int8 uses `<name>.int8.onnx` beside it or refuses, `bench models` lists the
refusals as rows, and an entry point can register such a model."""
from __future__ import annotations

import importlib.metadata
import shutil
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from squeeze_perception import registry
from squeeze_perception.backends import InputShapeError, ModelLoadError, OnnxRuntimeBackend
from squeeze_perception.registry import ModelSpec, NoTorchArchitecture

DET_W, DET_H = 373, 113  # SqueezeDet at 0.3x (as tests/test_bench_models.py)
SEG_SHAPE = (6, 64, 512)  # the pipeline's front-view grid
CLASSES = ("unknown", "car", "pedestrian", "cyclist")


class TinySeg(torch.nn.Module):
    """Per-class logits from a (N, 6, 64, 512) grid, as our exported SqueezeSeg graphs give."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(6, 8, 3, padding=1)
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.conv1(x)))


def _export(module: torch.nn.Module, shape, path) -> None:
    """A plain torch.onnx export, without our model-name stamp (as a foreign graph has none)."""
    torch.onnx.export(module.eval(), torch.zeros((1, *shape)), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], dynamic_axes={"input": {0: "batch"}})


@pytest.fixture()
def det(tmp_path, monkeypatch):
    """(torch source spec, ONNX-only spec): a tiny SqueezeDet checkpoint and the ONNX file exported
    from it, registered as `onnx_det` with builder None in a private models folder."""
    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(tmp_path))
    base = registry.get_model("squeezedet")
    src = registry.register_model(ModelSpec("onnx_det_src", "detection", base.builder, "onnx_det_src.pt",
                                            (3, DET_H, DET_W), base.classes,
                                            builder_kwargs={"variant": "squeezedet", "scale": 0.3}))
    torch.manual_seed(0)
    module = src.build()
    torch.save({"state_dict": module.state_dict()}, tmp_path / "onnx_det_src.pt")
    _export(module, src.input_shape, tmp_path / "onnx_det.onnx")
    spec = registry.register_model(ModelSpec("onnx_det", "detection", None, "onnx_det.onnx", (3, DET_H, DET_W),
                                             base.classes, description="ONNX only, made by a test"))
    yield src, spec
    registry.MODELS.pop("onnx_det", None)
    registry.MODELS.pop("onnx_det_src", None)


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (DET_H, DET_W, 3), dtype=np.uint8)


def test_spec_without_builder_needs_an_onnx_file():
    with pytest.raises(ValueError, match="must be an ONNX file"):
        ModelSpec("x", "detection", None, "x.pt", (3, 8, 8), CLASSES)
    with pytest.raises(ValueError, match="torch checkpoint"):
        ModelSpec("x", "detection", "m:f", "x.onnx", (3, 8, 8), CLASSES)
    spec = ModelSpec("x", "detection", None, "x.onnx", (3, 8, 8), CLASSES)
    assert spec.onnx_only and not registry.get_model("squeezedet").onnx_only
    with pytest.raises(NoTorchArchitecture, match="no torch architecture"):
        spec.build()
    from squeeze_perception.energy import model_workload

    assert model_workload(spec) is None  # no operation-model estimate without an architecture


def test_onnxruntime_runs_the_file_as_is_and_matches_torch(det):
    src, spec = det
    from squeeze_perception.backends import TorchBackend

    x = np.random.default_rng(1).normal(size=(2, *spec.input_shape)).astype(np.float32)
    ref = TorchBackend(src).infer(x)
    onnx_path = spec.weights_path()
    mtime = onnx_path.stat().st_mtime_ns
    backend = OnnxRuntimeBackend(spec)
    out = backend.infer(x)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-3)
    assert onnx_path.stat().st_mtime_ns == mtime  # not re-exported (there is nothing to export from)
    with pytest.raises(InputShapeError, match=r"expects input \(N, 3, 113, 373\)"):
        backend.infer(np.zeros((1, 3, DET_H, DET_W + 1), np.float32))
    with pytest.raises(ModelLoadError, match="no torch architecture.*give an .onnx file"):
        OnnxRuntimeBackend(spec, weights=str(onnx_path.with_name("onnx_det_src.pt")))


def test_detector_by_name_on_onnxruntime_equals_the_torch_model(det):
    from squeeze_perception.detection.inference import Detector

    src, spec = det
    ref = Detector("onnx_det_src", "torch")
    got = Detector("onnx_det", "onnxruntime")
    assert (got.input_width, got.input_height) == (DET_W, DET_H)
    for seed in range(2):
        a, b = ref.predict(_image(seed)), got.predict(_image(seed))
        np.testing.assert_allclose(b.raw, a.raw, rtol=1e-4, atol=1e-3)
        assert len(a.detections) == len(b.detections)
        assert b.latency_ms is not None and b.latency_ms > 0


@pytest.mark.parametrize("backend", ["torch", "torch-cuda", "synetgy"])
def test_torch_architecture_backends_refuse_with_the_reason(det, backend):
    from squeeze_perception.detection.inference import Detector

    with pytest.raises(ModelLoadError) as info:
        Detector("onnx_det", backend)
    text = str(info.value)
    assert "model 'onnx_det' has no torch architecture (ONNX only" in text
    assert "use backend onnxruntime" in text


def test_int8_uses_the_int8_file_beside_it_or_refuses(det):
    from squeeze_perception.detection.inference import Detector

    _, spec = det
    int8 = spec.weights_path().with_name("onnx_det.int8.onnx")
    with pytest.raises(ModelLoadError, match=r"int8 model file '.*onnx_det\.int8\.onnx' not found.*quantize-int8"):
        Detector("onnx_det", "onnxruntime-int8")
    shutil.copy(spec.weights_path(), int8)  # any graph at that path is the model's int8 graph
    det_int8 = Detector("onnx_det", "onnxruntime-int8")
    assert det_int8.backend.weights_path == int8
    assert det_int8.predict(_image()).raw.shape[1] == 5 + len(spec.classes)


def test_auto_runs_the_int8_file_beside_it_when_there_else_the_onnx_file(det, tmp_path):
    """`auto` (the nodes' default) on an ONNX-only model: the same rule with its file, or a file
    given as weights: `<file>.int8.onnx` beside it when it loads, else the file itself in fp32."""
    from squeeze_perception.detection.inference import Detector

    _, spec = det
    auto = Detector("onnx_det", "auto", num_threads=1)
    assert auto.backend.resolved_backend == "onnxruntime" and auto.meter.backend_spec.name == "onnxruntime"
    assert "no int8 graph for model 'onnx_det'" in auto.backend.reason
    assert "onnx_det.int8.onnx' not found" in auto.backend.reason
    fp32 = Detector("onnx_det", "onnxruntime", num_threads=1)
    np.testing.assert_array_equal(auto.predict(_image()).raw, fp32.predict(_image()).raw)
    int8 = spec.weights_path().with_name("onnx_det.int8.onnx")
    shutil.copy(spec.weights_path(), int8)  # any graph at that path is the model's int8 graph
    auto = Detector("onnx_det", "auto", num_threads=1)
    assert auto.backend.resolved_backend == "onnxruntime-int8" and auto.backend.weights_path == int8
    assert auto.meter.backend_spec.name == "onnxruntime-int8"
    np.testing.assert_array_equal(auto.predict(_image()).raw,
                                  Detector("onnx_det", "onnxruntime-int8", num_threads=1).predict(_image()).raw)
    mine = tmp_path / "given" / "mine.onnx"
    mine.parent.mkdir()
    shutil.copy(spec.weights_path(), mine)
    given = Detector("onnx_det", "auto", weights=str(mine))
    assert given.backend.resolved_backend == "onnxruntime" and "mine.int8.onnx' not found" in given.backend.reason
    shutil.copy(mine, mine.with_name("mine.int8.onnx"))
    given = Detector("onnx_det", "auto", weights=str(mine))
    assert given.backend.resolved_backend == "onnxruntime-int8"
    assert given.backend.weights_path == mine.with_name("mine.int8.onnx")


def test_segmentation_runs_without_the_learned_crf_said_once(tmp_path, monkeypatch):
    from squeeze_perception.segmentation import pipeline as seg_pipeline

    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(tmp_path))
    torch.manual_seed(0)
    module = TinySeg().eval()
    _export(module, SEG_SHAPE, tmp_path / "onnx_seg.onnx")
    registry.register_model(ModelSpec("onnx_seg", "segmentation", None, "onnx_seg.onnx", SEG_SHAPE, CLASSES))
    monkeypatch.setattr(seg_pipeline, "_SAID", set())
    try:
        with pytest.warns(RuntimeWarning, match="'onnx_seg' is ONNX only .* without the CRF"):
            pl = seg_pipeline.SegmentationPipeline("onnx_seg", backend="onnxruntime", crf=True, clustering="sklearn",
                                                   ground_removal=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a reload (the node's model slot) says nothing again
            seg_pipeline.SegmentationPipeline("onnx_seg", backend="onnxruntime", crf=True, clustering="sklearn")
        assert pl.crf is None
        rng = np.random.default_rng(0)
        n = 4000
        ang = rng.uniform(-0.7, 0.7, n)
        dist = rng.uniform(3, 30, n)
        pts = np.stack([dist * np.cos(ang), dist * np.sin(ang), rng.uniform(-1.7, 0.5, n), rng.uniform(0, 1, n)],
                       1).astype(np.float32)
        projs, _ = seg_pipeline.project_tiles(pts, "front")
        batch = pl.network_input(projs)
        with torch.inference_mode():
            ref = module(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(pl.run_network(batch), ref, rtol=1e-4, atol=1e-4)
        pl.use_crf = True  # what the node sets on a `crf` change: still no CRF to run
        result = pl.process(pts)
        assert result.labels.shape == (n,) and result.in_fov > 0
        assert set(result.timings_ms) >= {"network", "crf"}
        with pytest.raises(ModelLoadError, match="no torch architecture"):
            seg_pipeline.SegmentationPipeline("onnx_seg", backend="torch", crf=False)
    finally:
        registry.MODELS.pop("onnx_seg", None)


def test_quantize_int8_from_the_onnx_file_then_the_int8_backend_runs_it(tmp_path, monkeypatch):
    """`offline quantize-int8 --model X` on an ONNX-only model quantizes its file as it is (no export
    from a checkpoint) and writes X.int8.onnx beside it, which onnxruntime-int8 then runs."""
    from squeeze_perception.backends import OnnxRuntimeInt8Backend
    from squeeze_perception.offline.cli import main

    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(models))
    monkeypatch.setenv("SQUEEZE_PERCEPTION_SHARED_DATA", str(tmp_path / "shared" / "data"))
    shape = (6, 64, 32)
    torch.manual_seed(0)
    module = TinySeg().eval()
    _export(module, shape, models / "onnx_seg8.onnx")
    spec = registry.register_model(ModelSpec("onnx_seg8", "segmentation", None, "onnx_seg8.onnx", shape, CLASSES))
    calib = tmp_path / "synth_lidar_2d"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        grid = np.zeros((64, 32, 6), np.float32)
        grid[..., :5] = rng.uniform(0, 1, (64, 32, 5)) * [20, 10, 2, 1, 20]
        grid[..., 5] = grid[..., 4] > 5
        np.save(calib / f"{i:06d}.npy", grid)
    try:
        with pytest.raises(ModelLoadError, match="onnx_seg8.int8.onnx' not found"):
            OnnxRuntimeInt8Backend(spec)
        assert main(["quantize-int8", "--model", "onnx_seg8", "--calib-frames", "3", "--calib-dir", str(calib)]) == 0
        backend = OnnxRuntimeInt8Backend(spec)
        assert backend.weights_path == models / "onnx_seg8.int8.onnx"
        x = np.load(calib / "000000.npy").transpose(2, 0, 1)[None].copy()
        with torch.inference_mode():
            ref = module(torch.from_numpy(x)).numpy()
        out = backend.infer(x)
        assert out.shape == ref.shape and np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.98
    finally:
        registry.MODELS.pop("onnx_seg8", None)


def test_the_nodes_model_slots_load_it_by_name(det):
    """What the nodes build on start-up and on a `model` / `backend` change (node_base.ModelSlot)."""
    from squeeze_perception.node_base import MODEL_RELOAD_KEYS, ModelSlot
    from squeeze_perception.nodes import squeezedet_node

    params = {p.name: p.default for p in squeezedet_node.PARAMS}
    assert "onnx_det" in dict((p.name, p) for p in squeezedet_node.PARAMS)["model"].choices()
    slot = ModelSlot(MODEL_RELOAD_KEYS, lambda p: squeezedet_node.SqueezeDetNode._make_detector(None, p))
    assert slot.load({**params, "model": "onnx_det", "backend": "onnxruntime"}), slot.error
    assert slot.current.name == "onnx_det"
    reason = slot.prepare({**params, "model": "onnx_det", "backend": "onnxruntime"}, {"backend": "torch"})
    assert reason is not None and "no torch architecture" in reason and slot.current.name == "onnx_det"


def test_bench_models_lists_the_refusals_and_references_onnxruntime(det, tmp_path):
    from squeeze_perception.offline import bench_models as bm

    split = tmp_path / "split"
    (split / "image_2").mkdir(parents=True)
    (split / "label_2").mkdir()
    for i in range(2):
        Image.fromarray(_image(i)).save(split / "image_2" / f"{i:06d}.png")
        (split / "label_2" / f"{i:06d}.txt").write_text(
            "Car 0.00 0 0.00 40.00 30.00 110.00 80.00 1.5 1.6 3.9 1 1.5 20 0\n")
    report = bm.ModelsBench(bm.BenchConfig(models=["onnx_det"], backends=["torch", "onnxruntime", "synetgy"],
                                           repeats=1, warmup=0, threads=1, det_dir=split, det_frames=2,
                                           peak_n=0)).run()
    rows = {r["backend"]: r for r in report["rows"]}
    for refused in ("torch", "synetgy"):
        assert rows[refused]["status"] == "refused"
        assert "no torch architecture" in rows[refused]["reason"]
    ok = rows["onnxruntime"]
    assert ok["status"] == "ok" and ok["eval_frames"] == 2 and ok["latency_ms"]["count"] == 1
    assert ok["reference"] == "onnx_det/onnxruntime" and ok["change_vs_fp32"] == 0.0
    assert report["models"]["onnx_det"]["macs"] is None  # no architecture to count: no bound
    table = bm.render_table(report)
    assert "| onnx_det | torch | refused: model 'onnx_det' has no torch architecture" in table
    assert "(vs onnx_det/onnxruntime)" not in table


def onnx_only_plugin_models():
    """What a third-party package's entry point names: a callable returning ModelSpecs."""
    return [ModelSpec("plugin_onnx_det", "detection", None, "plugin_onnx_det.onnx", (3, DET_H, DET_W), CLASSES)]


def test_an_entry_point_registers_an_onnx_only_model(monkeypatch):
    registry.load_plugins()
    ep = importlib.metadata.EntryPoint("thirdparty", f"{__name__}:onnx_only_plugin_models", registry.MODEL_GROUP)
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "plugin_entry_points", lambda: [ep])
    try:
        registry.load_plugins()
        assert "thirdparty" not in str(registry.PLUGIN_ERRORS)
        spec = registry.get_model("plugin_onnx_det", task="detection")
        assert spec.onnx_only and spec.weights_path().name == "plugin_onnx_det.onnx"
    finally:
        registry.MODELS.pop("plugin_onnx_det", None)
