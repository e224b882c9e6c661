"""Models registered by name from their manifests (issue 13): a searched and a mixed-precision net
saved with `offline.manifest.save_model_with_manifest` into a private models folder are found by
name, loaded with their checksum verified, run by the segmentation pipeline on the torch and
onnxruntime backends, and switched to and back by the segmentation node's model slot; a tampered
checkpoint and a manifest naming a builder outside the runtime package are refused with the
reason; activation quantization (act_quant) of a mixed-precision net runs at inference."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from squeeze_perception import model_manifests, registry
from squeeze_perception.backends import ModelLoadError, TorchBackend
from squeeze_perception.interfaces import CLASS_NAMES
from squeeze_perception.offline.manifest import save_model_with_manifest
from squeeze_perception.segmentation import pipeline as seg_pipeline
from squeeze_perception.segmentation.searched_net import TINY_MACRO, SearchedSegNet, build_searched_segnet

torch.set_num_threads(1)
BUILDER = "squeeze_perception.segmentation.searched_net:build_searched_segnet"
SHAPE = (5, 64, 512)  # the pipeline's front-view grid
CHOICES = ["k3_e1", "k3_e1_g2", "k5_e1", "k3_e3", "skip"]  # one per TINY_MACRO layer; the last may skip


def _save(folder, name, *, act_quant=None, classes=CLASS_NAMES, shape=SHAPE, extra=None, seed=0):
    torch.manual_seed(seed)
    macro = {**TINY_MACRO.to_dict(), "num_classes": len(classes)}
    kwargs = {"choices": CHOICES, "macro": macro, **({"act_quant": act_quant} if act_quant else {})}
    net = build_searched_segnet(**kwargs).eval()
    for m in net.modules():  # non-trivial batch-norm statistics, so the outputs are not all alike
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    path = save_model_with_manifest(net, folder / f"{name}.pt", name=name, task="segmentation", builder=BUILDER,
                                    builder_kwargs=kwargs, input_shape=shape, classes=classes,
                                    metrics={"mIoU": 0.25}, latency_ms={"onnxruntime": 1.5, "synetgy": 3.25},
                                    command="pytest", extra=extra)
    return net, path


def _points(n: int = 3000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ang = rng.uniform(-0.7, 0.7, n)
    dist = rng.uniform(3, 30, n)
    return np.stack([dist * np.cos(ang), dist * np.sin(ang), rng.uniform(-1.7, 0.5, n), rng.uniform(0, 1, n)],
                    1).astype(np.float32)


@pytest.fixture()
def models(tmp_path, monkeypatch):
    """A private models folder holding a searched net and a mixed-precision net with act_quant."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(folder))
    monkeypatch.setattr(seg_pipeline, "_SAID", set())
    searched, _ = _save(folder, "tiny_searched", extra={"searched_for": "onnxruntime"})
    act_quant = {"layers.0.expand": [4, 3.0, True], "layers.0.depthwise": [4, 6.0, False],
                 "layers.1.project": [2, 6.0, False], "decoder.ups.0.0": [8, 3.0, True]}
    mp, _ = _save(folder, "tiny_mp", act_quant=act_quant, seed=1,
                  extra={"bits": ["w4a4", "w2a4"], "compression": 6.1, "cost": "size"})
    yield folder, searched, mp
    model_manifests.register_manifest_models(tmp_path / "none")  # forget them: the folder is gone for others


def test_manifests_are_registered_by_name_with_their_metadata(models):
    folder, searched, _ = models
    assert {"tiny_searched", "tiny_mp"} <= set(registry.model_names("segmentation"))
    spec = registry.get_model("tiny_searched", task="segmentation")
    assert (spec.builder, spec.input_shape, spec.classes) == (BUILDER, SHAPE, CLASS_NAMES)
    assert spec.weights_path() == folder / "tiny_searched.pt"
    info = spec.manifest
    assert info.kind == "searched" and info.searched_for == "onnxruntime"
    assert info.metrics == {"mIoU": 0.25} and info.latency_ms == {"onnxruntime": 1.5, "synetgy": 3.25}
    assert info.params == sum(p.numel() for p in searched.parameters()) and info.flops > 0
    assert "searched for onnxruntime" in info.summary() and "onnxruntime 1.500 ms" in info.summary()
    mp = registry.get_model("tiny_mp").manifest
    assert mp.kind == "mixed-precision" and mp.bits == ("w4a4", "w2a4") and mp.activations_quantized
    assert "compression 6.1x" in mp.summary()
    # Registered once, never over a built-in name, and forgotten when the manifest goes.
    assert registry.get_model("squeezesegv2").manifest is None
    (folder / "tiny_mp.manifest.json").unlink()
    with pytest.raises(registry.RegistryError, match="unknown model 'tiny_mp'"):
        registry.get_model("tiny_mp")


def test_the_torch_backend_loads_it_verified_and_runs_the_saved_net(models):
    folder, searched, _ = models
    backend = TorchBackend(registry.get_model("tiny_searched"))
    x = torch.rand(1, *SHAPE) * 10
    with torch.inference_mode():
        np.testing.assert_allclose(backend.infer(x.numpy()), searched(x).numpy(), rtol=1e-5, atol=1e-5)


def test_a_tampered_checkpoint_is_refused_with_the_reason(models):
    folder, _, _ = models
    weights = folder / "tiny_searched.pt"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="do not match their manifest .* changed after its metrics"):
        TorchBackend(registry.get_model("tiny_searched"))
    with pytest.raises(ModelLoadError, match="do not match their manifest"):
        seg_pipeline.SegmentationPipeline("tiny_searched", backend="onnxruntime", crf=False, clustering="sklearn")


@pytest.mark.parametrize("builder, reason", [
    ("os:system", "outside the squeeze_perception runtime package"),
    ("squeeze_perception.offline.dnas:build_searched_segnet", "in the offline tooling"),
    ("not a builder", "is not a 'module:callable' string"),
])
def test_a_manifest_naming_a_builder_outside_the_runtime_package_is_refused_once(models, builder, reason):
    folder, _, _ = models
    manifest = json.loads((folder / "tiny_searched.manifest.json").read_text())
    manifest["name"] = "evil"
    manifest["architecture"]["builder"] = builder
    manifest["weights"]["file"] = "evil.pt"
    (folder / "evil.pt").write_bytes((folder / "tiny_searched.pt").read_bytes())
    (folder / "evil.manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(RuntimeWarning, match=f"evil.manifest.json' not registered: .*{reason}"):
        assert "evil" not in registry.model_names()
    assert reason in model_manifests.MANIFEST_ERRORS[str(folder / "evil.manifest.json")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per file version, not at every lookup
        with pytest.raises(registry.RegistryError, match="unknown model 'evil'"):
            registry.get_model("evil")


def test_manifests_not_describing_a_checkable_checkpoint_are_refused(models):
    folder, _, _ = models
    manifest = json.loads((folder / "tiny_searched.manifest.json").read_text())
    manifest["name"] = "other"
    (folder / "other.manifest.json").write_text(json.dumps(manifest))  # names tiny_searched.pt
    (folder / "broken.manifest.json").write_text("{not json")
    with pytest.warns(RuntimeWarning) as said:
        registry.model_names()
    text = " ".join(str(w.message) for w in said)
    assert "does not belong to this manifest" in text and "cannot be read as JSON" in text
    # An int8 graph's manifest describes another model's file, not a model: never a refusal.
    (folder / "tiny_searched.int8.manifest.json").write_text("{}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.model_names()


def test_the_pipeline_runs_them_without_a_crf_on_torch_and_onnxruntime(models):
    folder, searched, mp = models
    pts = _points()
    for name in ("tiny_searched", "tiny_mp"):
        with pytest.warns(RuntimeWarning, match=f"'{name}' has no learned CRF .* without the CRF"):
            ref = seg_pipeline.SegmentationPipeline(name, backend="torch", crf=True, clustering="sklearn",
                                                    ground_removal=False)
        assert ref.crf is None and ref.class_ids is None
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a reload (the node's model slot) says nothing again
            ort = seg_pipeline.SegmentationPipeline(name, backend="onnxruntime", crf=True, clustering="sklearn",
                                                    ground_removal=False)
        assert (folder / f"{name}.onnx").exists()  # exported on first use, beside the checkpoint
        assert [i.name for i in ort.backend.session.get_inputs()] == ["input"]
        projs, _ = seg_pipeline.project_tiles(pts, "front")
        batch = ref.network_input(projs)
        assert batch.shape == (1, *SHAPE)
        with torch.inference_mode():
            expected = (searched if name == "tiny_searched" else mp)(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(ref.run_network(batch), expected, rtol=1e-5, atol=1e-5)
        out = ort.run_network(batch)
        assert out.shape == (1, len(CLASS_NAMES), 64, 512)
        # onnxruntime may round a few activations on the other side of a step: nearly all agree
        assert np.mean(np.isclose(out, expected, rtol=1e-3, atol=1e-3)) > 0.99
        result = ort.process(pts)
        assert result.labels.shape == (len(pts),) and result.in_fov > 0 and result.timings_ms["crf"] < 5.0


def test_a_distilled_nets_classes_map_to_the_interface_ids_and_a_tiny_grid_is_refused(models):
    folder, _, _ = models
    _save(folder, "tiny_distilled", classes=("unknown", "pedestrian"), extra={"removed_channels": {"0": 3}})
    _save(folder, "tiny_small_grid", shape=(5, 16, 64))
    assert registry.get_model("tiny_distilled").manifest.kind == "distilled"
    pl = seg_pipeline.SegmentationPipeline("tiny_distilled", backend="torch", crf=False, clustering="sklearn",
                                           ground_removal=False)
    assert pl.class_ids.tolist() == [0, CLASS_NAMES.index("pedestrian")]
    result = pl.process(_points())
    assert set(np.unique(result.labels)) <= {0, CLASS_NAMES.index("pedestrian")}
    with pytest.raises(ModelLoadError, match="takes a 5x16x64 input; .* 64x512 front-view grid"):
        seg_pipeline.SegmentationPipeline("tiny_small_grid", backend="torch", crf=False)


def test_the_segmentation_nodes_model_slot_switches_to_it_and_back(models):
    """What the node builds on start-up and on a `model` change (node_base.ModelSlot)."""
    from squeeze_perception.node_base import ModelSlot
    from squeeze_perception.nodes import squeezeseg_node
    from squeeze_perception.paths import project_root

    folder, _, _ = models
    params = {p.name: p.default for p in squeezeseg_node.PARAMS}
    default = params["model"]  # the node's default model, a shipped SqueezeSegV2 checkpoint
    (folder / f"{default}.pt").symlink_to(project_root() / "models" / f"{default}.pt")
    params.update(backend="torch", clustering="sklearn", num_threads=1)
    model_param = {p.name: p for p in squeezeseg_node.PARAMS}["model"]
    assert {"tiny_searched", "tiny_mp"} <= set(model_param.choices())
    slot = ModelSlot(squeezeseg_node.MODEL_KEYS, lambda p: squeezeseg_node.SqueezeSegNode._build(None, p))
    assert slot.load(params), slot.error
    assert slot.current.spec.name == default and slot.current.crf is not None
    for name, backend in (("tiny_mp", "torch"), ("tiny_searched", "onnxruntime"), (default, "torch")):
        assert slot.prepare(params, {"model": name, "backend": backend}) is None
        assert slot.commit() and slot.current.spec.name == name and slot.current.backend_name == backend
        params.update(model=name, backend=backend)
    # A checkpoint swapped under its manifest: the switch is refused with the reason, the model stays.
    weights = folder / "tiny_searched.pt"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    reason = slot.prepare(params, {"model": "tiny_searched"})
    assert reason is not None and "do not match their manifest" in reason
    assert slot.current.spec.name == default


def test_act_quant_quantizes_the_named_conv_inputs_and_keeps_the_state_dict():
    torch.manual_seed(0)
    plain = SearchedSegNet(CHOICES, TINY_MACRO).eval()
    bits = {"layers.0.expand": 2, "layers.0.depthwise": 3, "decoder.ups.1.0": 4}
    act_quant = {"layers.0.expand": [2, 2.0, True], "layers.0.depthwise": [3, 1.0, False],
                 "decoder.ups.1.0": [4, 2.0, True], "layers.2.project": [32, 1.0, False]}  # 32: left float
    quant = build_searched_segnet(CHOICES, TINY_MACRO.to_dict(), act_quant=act_quant).eval()
    assert set(quant.state_dict()) == set(plain.state_dict())
    quant.load_state_dict(plain.state_dict(), strict=True)
    seen: dict[str, torch.Tensor] = {}
    for name in [*bits, "layers.2.project"]:  # registered after the quantizer: sees what the conv gets
        quant.get_submodule(name).register_forward_pre_hook(lambda m, a, name=name: seen.__setitem__(name, a[0]))
    x = torch.rand(2, 5, 16, 64) * 20
    with torch.inference_mode():
        out, ref = quant(x), plain(x)
    assert out.shape == ref.shape and not torch.allclose(out, ref, atol=1e-4)
    for name, b in bits.items():
        assert 1 < len(torch.unique(seen[name])) <= 2 ** b, name
    assert len(torch.unique(seen["layers.2.project"])) > 2 ** 8
    with pytest.raises(ValueError, match="not a convolution"):
        build_searched_segnet(CHOICES, TINY_MACRO.to_dict(), act_quant={"layers.0.bn1": [4, 1.0, True]})
    with pytest.raises(ValueError, match="not a module"):
        build_searched_segnet(CHOICES, TINY_MACRO.to_dict(), act_quant={"layers.9.expand": [4, 1.0, True]})


def test_export_writes_the_graph_the_onnxruntime_backend_expects(models, capsys):
    from squeeze_perception.backends import import_onnxruntime
    from squeeze_perception.cli import export_models

    folder, _, _ = models
    assert export_models(["tiny_mp"]) == 0
    session = import_onnxruntime().InferenceSession(str(folder / "tiny_mp.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape[1:]) for i in session.get_inputs()] == [("input", list(SHAPE))]
    assert len(session.get_outputs()) == 1
    assert session.get_modelmeta().custom_metadata_map["squeeze_perception.model"] == "tiny_mp"



def test_quantize_int8_then_the_int8_backend_runs_a_searched_net(models, tmp_path, monkeypatch):
    """ORT's symbolic shape inference gives up on a searched net's graph; quantize-int8 falls back
    to ONNX shape inference, and the int8 manifest beside it is not taken for a model."""
    from squeeze_perception.offline.cli import main

    folder, _, _ = models
    monkeypatch.setenv("SQUEEZE_PERCEPTION_SHARED_DATA", str(tmp_path / "shared" / "data"))
    calib = tmp_path / "synth_lidar_2d"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        grid = np.zeros((64, 512, 6), np.float32)
        grid[..., :5] = rng.uniform(0, 1, (64, 512, 5)) * [20, 10, 2, 1, 20]
        grid[..., 5] = grid[..., 4] > 5
        np.save(calib / f"{i:06d}.npy", grid)
    assert main(["quantize-int8", "--model", "tiny_searched", "--calib-frames", "3", "--calib-dir", str(calib)]) == 0
    assert (folder / "tiny_searched.int8.manifest.json").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert "tiny_searched.int8" not in registry.model_names()
    fp32 = seg_pipeline.SegmentationPipeline("tiny_searched", backend="onnxruntime", crf=False, clustering="sklearn")
    int8 = seg_pipeline.SegmentationPipeline("tiny_searched", backend="onnxruntime-int8", crf=False,
                                             clustering="sklearn")
    batch = np.load(calib / "000000.npy")[..., :5].transpose(2, 0, 1)[None].copy()
    out, ref = int8.run_network(batch), fp32.run_network(batch)
    assert out.shape == ref.shape and np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.98
