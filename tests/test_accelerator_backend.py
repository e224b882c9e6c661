"""The `synetgy` backend: registered like the others, loads DiracDelta checkpoints, refuses what
the accelerator cannot run, and returns the emulated latency and energy with its outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from squeeze_perception import registry
from squeeze_perception.backends import ModelLoadError, TorchBackend
from squeeze_perception.registry import ModelSpec

BUILD = "squeeze_perception.accelerator.models:build_diracdeltaseg"
SHAPE = (6, 8, 64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("SQUEEZE_PERCEPTION_MODELS", str(tmp_path))
    spec = ModelSpec("tiny_dirac", "segmentation", BUILD, "tiny_dirac.pt", SHAPE,
                     ("unknown", "car", "pedestrian", "cyclist"),
                     builder_kwargs={"widths": (10, 20, 40, 80)})
    registry.register_model(spec)
    yield spec
    registry.MODELS.pop("tiny_dirac", None)


def _grid(n=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *SHAPE)).astype(np.float32) * 5
    x[:, 4] = np.abs(x[:, 4]) + 1
    x[:, 5] = 1
    return x


def _save(spec, path, bits=(4, 4)):
    from squeeze_perception.accelerator.quant import set_precision

    torch.manual_seed(0)
    model = spec.build()
    if bits:
        set_precision(model, *bits)
    torch.save({"state_dict": model.state_dict(), "model": spec.name, "meta": {}}, path)


def test_registered_with_energy_and_emulated_flags():
    spec = registry.get_backend("synetgy")
    assert spec.provides_energy and spec.emulated and spec.device == "fpga-emulated"
    assert "synetgy" in registry.backend_names()
    assert registry.get_model("diracdeltaseg", task="segmentation").input_shape == (6, 64, 512)


def test_untrained_model_runs_with_emulated_latency_and_energy(tiny):
    with pytest.raises(ModelLoadError, match="tiny_dirac.pt' not found"):
        registry.get_backend("synetgy").create(tiny)
    backend = registry.get_backend("synetgy").create(tiny, require_weights=False)
    out = backend.infer(_grid(1))
    assert out.shape == (1, 4, 8, 64) and out.dtype == np.float32
    lat1, e1 = backend.last_latency_ms, backend.last_energy_mj
    assert lat1 > 0 and 5.3 * lat1 <= e1 <= 5.5 * lat1  # W x ms = mJ
    backend.infer(_grid(3))
    assert lat1 < backend.last_latency_ms < 3 * lat1
    assert backend.last_wall_ms > 0


def test_checkpoint_runs_identically_on_torch_and_synetgy(tiny, tmp_path):
    _save(tiny, tmp_path / "tiny_dirac.pt")
    x = _grid(2, seed=1)
    emulated = registry.get_backend("synetgy").create(tiny).infer(x)
    reference = TorchBackend(tiny).infer(x)  # the fake-quantized torch model
    np.testing.assert_array_equal(emulated, reference)


def test_refusals_name_the_reason(tiny, tmp_path):
    _save(tiny, tmp_path / "tiny_dirac.pt", bits=None)
    with pytest.raises(ModelLoadError, match="float precision"):
        registry.get_backend("synetgy").create(tiny)
    with pytest.raises(ModelLoadError, match="cannot run on Synetgy"):
        registry.get_backend("synetgy").create(registry.get_model("squeezeseg"), require_weights=False)
