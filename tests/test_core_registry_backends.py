"""Registry lookups and backend loading errors, with a tiny model registered by the test."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from squeeze_perception import registry
from squeeze_perception.backends import (InputShapeError, ModelLoadError, OnnxRuntimeBackend,
                                         TorchBackend)
from squeeze_perception.registry import ModelSpec, RegistryError


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


@pytest.fixture()
def tiny_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(tmp_path))
    spec = ModelSpec("tiny_test", "detection", f"{__name__}:TinyNet", "tiny_test.pt", (3, 8, 8), ("a", "b"))
    registry.register_model(spec)
    yield spec
    registry.MODELS.pop("tiny_test", None)


def _save(spec, path):
    torch.save({"state_dict": spec.build().state_dict(), "model": spec.name, "meta": {}}, path)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(RegistryError, match="unknown backend 'fpga'.*onnxruntime.*torch"):
        registry.get_backend("fpga")
    with pytest.raises(RegistryError, match="unknown model 'nope'"):
        registry.get_model("nope")


def test_task_mismatch_is_refused(tiny_spec):
    with pytest.raises(RegistryError, match="is a detection model, not segmentation"):
        registry.get_model("tiny_test", task="segmentation")


def test_missing_weights_name_the_file(tiny_spec, tmp_path):
    with pytest.raises(ModelLoadError, match="tiny_test.pt' not found"):
        registry.get_backend("torch").create(tiny_spec)


def test_corrupt_weights_are_reported(tiny_spec, tmp_path):
    (tmp_path / "tiny_test.pt").write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ModelLoadError, match="corrupt"):
        TorchBackend(tiny_spec)


def test_mismatched_weights_are_reported(tiny_spec, tmp_path):
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}}, tmp_path / "tiny_test.pt")
    with pytest.raises(ModelLoadError, match="do not match model 'tiny_test'"):
        TorchBackend(tiny_spec)


def test_wrong_input_shape_is_a_clear_error(tiny_spec, tmp_path):
    _save(tiny_spec, tmp_path / "tiny_test.pt")
    backend = TorchBackend(tiny_spec)
    with pytest.raises(InputShapeError, match=r"expects input \(N, 3, 8, 8\), got \(1, 3, 9, 8\)"):
        backend.infer(np.zeros((1, 3, 9, 8), np.float32))


def test_torch_and_onnxruntime_agree(tiny_spec, tmp_path):
    _save(tiny_spec, tmp_path / "tiny_test.pt")
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    ref = TorchBackend(tiny_spec).infer(x)
    onnx_backend = OnnxRuntimeBackend(tiny_spec)  # exports models/tiny_test.onnx on first use
    assert (tmp_path / "tiny_test.onnx").exists()
    np.testing.assert_allclose(onnx_backend.infer(x), ref, rtol=1e-4, atol=1e-5)
    assert onnx_backend.last_latency_ms is not None and onnx_backend.last_latency_ms > 0
