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


# ------------------------------------------------------------------ backends/: one module per backend
BACKEND_MODULES = {"torch": "torch_backend", "torch-cuda": "torch_backend", "onnxruntime": "onnxruntime_backend",
                   "onnxruntime-int8": "onnxruntime_int8", "synetgy": "synetgy", "auto": "auto"}


def test_every_backend_is_its_own_module_of_the_backends_package():
    import importlib

    import squeeze_perception.backends as backends

    for name, module in BACKEND_MODULES.items():
        spec = registry.get_backend(name)
        assert spec.factory.startswith(f"squeeze_perception.backends.{module}:"), spec.factory
        mod = importlib.import_module(f"squeeze_perception.backends.{module}")
        cls = registry._resolve(spec.factory)
        assert cls.__module__ == mod.__name__
        assert getattr(backends, cls.__name__) is cls  # re-exported by the package
    from squeeze_perception.accelerator import backend as old_name  # the synetgy backend's former home

    assert old_name.SynetgyBackend is backends.SynetgyBackend and old_name.SYNETGY is backends.SYNETGY


def test_entry_points_written_before_the_move_still_resolve():
    """Installed metadata not refreshed since backends.py became a package names the old paths."""
    import importlib.metadata

    for value, name in (("squeeze_perception.backends:TORCH", "torch"),
                        ("squeeze_perception.backends:ONNXRUNTIME", "onnxruntime"),
                        ("squeeze_perception.backends:ONNXRUNTIME_INT8", "onnxruntime-int8"),
                        ("squeeze_perception.accelerator.backend:SYNETGY", "synetgy")):
        ep = importlib.metadata.EntryPoint(name, value, registry.BACKEND_GROUP)
        assert ep.load() is registry.get_backend(name)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchBackend'"):
        __import__("squeeze_perception.backends").backends.NoSuchBackend


def test_importing_the_backends_package_loads_no_backend_module_nor_torch_or_onnxruntime():
    import subprocess
    import sys

    probe = ("import sys\n"
             "from squeeze_perception.backends import ModelLoadError, load_state_dict, ort_session, export_onnx\n"
             "import squeeze_perception.backends.onnxruntime_int8, squeeze_perception.backends.synetgy\n"
             "import squeeze_perception.backends.auto\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime', 'onnx')))\n"
             "print(sorted(m for m in sys.modules if m.startswith('squeeze_perception.backends.')))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    heavy, loaded = out.stdout.strip().splitlines()
    assert heavy == "[]", heavy
    assert "torch_backend" not in loaded  # the int8 module needs only the onnxruntime one
