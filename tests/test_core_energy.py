"""Energy per inference (energy.py): RAPL counters, the operation model, the choice of source
per backend spec; backends found through entry points (registry.py); the launch summary's
energy columns. ROS-free."""
from __future__ import annotations

import importlib.metadata
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from squeeze_perception import energy, registry
from squeeze_perception.registry import BackendSpec, ModelSpec

REPO = Path(__file__).resolve().parents[1]


def _zone(root: Path, name: str, uj: int, wrap: int = 1000, readable: bool = True) -> None:
    z = root / name
    z.mkdir(parents=True)
    (z / "energy_uj").write_text(f"{uj}\n" if readable else "")
    (z / "max_energy_range_uj").write_text(f"{wrap}\n")


def test_rapl_sums_packages_skips_subzones_and_unreadable_and_handles_wrap(tmp_path):
    _zone(tmp_path, "intel-rapl:0", 900)
    _zone(tmp_path, "intel-rapl:1", 10)
    _zone(tmp_path, "intel-rapl:0:0", 5)  # core sub-zone: inside package 0 already
    _zone(tmp_path, "intel-rapl:2", 0, readable=False)  # e.g. root-only since Linux 5.10
    rapl = energy.RaplCounter(tmp_path)
    assert [p.parent.name for p, _ in rapl.zones] == ["intel-rapl:0", "intel-rapl:1"]
    before = rapl.read_uj()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("100")  # wrapped: 900 -> 1000 -> 0 -> 100
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("510")
    assert rapl.delta_mj(before, rapl.read_uj()) == pytest.approx((201 + 500) / 1e3)
    assert not energy.RaplCounter(tmp_path / "absent").available


def test_operation_model_uses_the_cited_figures():
    w = energy.Workload(macs=1_000_000_000, dram_bytes=10_000_000)
    assert energy.PJ_PER_FP32_MAC == pytest.approx(3.7 + 0.9)
    assert energy.PJ_PER_DRAM_BYTE == pytest.approx(160.0)
    assert w.energy_mj() == pytest.approx(4.6 + 1.6)  # 1 G MAC x 4.6 pJ + 10 MB x 160 pJ, in mJ


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def build_tiny():
    return TinyNet()


SPEC = ModelSpec("tiny_energy", "detection", f"{__name__}:build_tiny", None, (3, 8, 8), ("a",))


def test_model_workload_counts_macs_and_traffic():
    w = energy.model_workload(SPEC)
    assert w.macs == 8 * 8 * 4 * 3 * 3 * 3
    assert w.dram_bytes == 4 * (3 * 64 + 2 * 4 * 64 + (4 * 27 + 4))  # input, conv out x2, params


class FakeBackend:
    def __init__(self, latency=None, energy_mj=None):
        self.last_latency_ms, self.last_energy_mj = latency, energy_mj

    def infer(self, batch):
        return batch * 2


def test_metered_backend_takes_the_backends_own_energy_when_the_spec_says_so():
    spec = BackendSpec("fake_fpga", "x:y", "fpga-emulated", provides_energy=True, emulated=True)
    run = energy.MeteredBackend(FakeBackend(20.0, 108.0), spec, SPEC).infer(np.ones((1, 3, 8, 8), np.float32))
    assert (run.latency_ms, run.energy_mj, run.energy_source, run.emulated) == (20.0, 108.0, "backend", True)
    assert float(run.outputs[0, 0, 0, 0]) == 2.0


def test_metered_backend_reads_rapl_when_readable(tmp_path):
    _zone(tmp_path, "intel-rapl:0", 0, wrap=10**12)
    rapl = energy.RaplCounter(tmp_path)

    class Busy(FakeBackend):
        def infer(self, batch):
            (tmp_path / "intel-rapl:0" / "energy_uj").write_text("2500")  # 2.5 mJ while it ran
            return batch

    run = energy.MeteredBackend(Busy(), BackendSpec("cpu_x", "x:y", "cpu"), SPEC, rapl=rapl).infer(
        np.ones((1, 3, 8, 8), np.float32))
    assert run.energy_source == "rapl" and run.energy_mj == pytest.approx(2.5)
    assert not run.emulated and run.latency_ms >= 0  # no backend latency: the measured wall time


def test_metered_backend_falls_back_to_the_operation_model(tmp_path):
    meter = energy.MeteredBackend(FakeBackend(), BackendSpec("cpu_x", "x:y", "cpu"), SPEC,
                                  rapl=energy.RaplCounter(tmp_path / "none"))
    run = meter.infer(np.ones((2, 3, 8, 8), np.float32))
    assert run.energy_source == "model"
    assert run.energy_mj == pytest.approx(2 * energy.model_workload(SPEC).energy_mj())


# ---------------------------------------------------------------- backends through entry points
@pytest.fixture()
def fresh_registry(monkeypatch):
    models, backends = dict(registry.MODELS), dict(registry.BACKENDS)
    monkeypatch.setattr(registry, "_loaded", False)
    registry.PLUGIN_ERRORS.clear()
    yield
    registry.MODELS.clear(), registry.MODELS.update(models)
    registry.BACKENDS.clear(), registry.BACKENDS.update(backends)
    registry.PLUGIN_ERRORS.clear()


def _with_entry_points(monkeypatch, extra):
    real = importlib.metadata.entry_points

    def entry_points(**kw):
        found = list(real(**kw))
        return found + [ep for ep in extra if ep.group == kw.get("group")]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


def test_a_third_party_backend_is_discovered_through_its_entry_point(fresh_registry, monkeypatch, tmp_path):
    (tmp_path / "acme_npu.py").write_text(
        "from squeeze_perception.registry import BackendSpec\n"
        "ACME = BackendSpec('acme_npu', 'acme_npu:Backend', 'npu', 'third-party NPU', provides_energy=True)\n"
        "class Backend:\n"
        "    def __init__(self, spec, **options):\n"
        "        self.spec, self.last_latency_ms, self.last_energy_mj = spec, 1.0, 0.5\n"
        "    def infer(self, batch):\n"
        "        return batch\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _with_entry_points(monkeypatch, [
        importlib.metadata.EntryPoint("acme_npu", "acme_npu:ACME", registry.BACKEND_GROUP),
        importlib.metadata.EntryPoint("broken", "no_such_module_xyz:X", registry.BACKEND_GROUP)])
    with pytest.warns(UserWarning, match="broken"):
        names = registry.backend_names()
    assert {"acme_npu", "torch", "onnxruntime", "synetgy"} <= set(names)
    assert registry.get_backend("acme_npu").provides_energy
    assert "no_such_module_xyz" in registry.PLUGIN_ERRORS[f"{registry.BACKEND_GROUP}:broken"]
    with pytest.raises(registry.RegistryError, match="failed to load"):
        registry.get_backend("broken")


def test_built_in_backends_load_without_installed_metadata(fresh_registry, monkeypatch):
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kw: [])
    registry.BACKENDS.clear()
    registry.MODELS.clear()
    # modules already imported do not register again on import: their specs are entry points
    assert {"torch", "onnxruntime", "synetgy"} <= set(registry.backend_names())


def test_entry_points_missing_from_stale_installed_metadata_come_from_the_source_tree(fresh_registry, monkeypatch):
    """Metadata installed before `auto` existed (no `pip install -e .` since) must not lose it: the
    node default would be an unknown backend."""
    real = importlib.metadata.entry_points

    def stale(**kw):
        return [ep for ep in real(**kw) if ep.name != "auto"]

    monkeypatch.setattr(importlib.metadata, "entry_points", stale)
    eps = registry.plugin_entry_points()
    ours = [(ep.group, ep.name) for ep in eps if ep.value.startswith("squeeze_perception.")]
    assert len(ours) == len(set(ours)) == sum(len(v) for v in registry.SOURCE_TREE_ENTRY_POINTS.values())
    assert [ep.group for ep in eps] == sorted((ep.group for ep in eps), key=lambda g: g != registry.MODEL_GROUP)
    registry.BACKENDS.clear()
    assert {"auto", "onnxruntime", "onnxruntime-int8"} <= set(registry.backend_names())


def test_a_backend_that_chose_another_is_metered_as_the_chosen_one():
    """`auto` resolves at load time: energy source and emulation come from the spec it chose."""
    chosen = BackendSpec("npu_x", "x:y", "npu", provides_energy=True, emulated=True)
    backend = FakeBackend(20.0, 108.0)
    backend.resolved_spec = chosen
    meter = energy.MeteredBackend(backend, BackendSpec("picker", "x:y", "cpu"), SPEC)
    assert meter.backend_spec is chosen and meter.energy_source == "backend" and meter.emulated
    run = meter.infer(np.ones((1, 3, 8, 8), np.float32))
    assert run.energy_mj == 108.0 and run.emulated and run.energy_source == "backend"


def test_installed_entry_points_are_the_source_tree_list_and_setup_py():
    setup = runpy.run_path(str(REPO / "setup.py"), run_name="setup_under_test")
    assert {g: tuple(v) for g, v in setup["ENTRY_POINTS"].items()} == registry.SOURCE_TREE_ENTRY_POINTS
    installed = {(ep.group, f"{ep.name} = {ep.value}") for group in registry.SOURCE_TREE_ENTRY_POINTS
                 for ep in importlib.metadata.entry_points(group=group)
                 if ep.value.startswith("squeeze_perception.")}
    assert installed == {(g, line) for g, lines in registry.SOURCE_TREE_ENTRY_POINTS.items() for line in lines}, \
        "re-run `.venv/bin/python -m pip install --no-deps -e .`"


def test_launch_summary_shows_inference_latency_and_energy_per_frame():
    from squeeze_perception.launch_runner.runner import summary_table

    table = summary_table({"seg": {"stages": {"network": {
        "frames_in": 4, "frames_out": 4, "processing_ms_mean": 900.0, "inference_ms_mean": 20.36,
        "energy_mj_per_frame": 108.38, "inference_latency": "emulated", "energy_source": "backend"}}}})
    assert "mJ/frame" in table.splitlines()[0]
    row = next(ln.split() for ln in table.splitlines() if ln.startswith("seg"))
    # fps at batch 1 from the emulated board time (1000 / 20.36), not from the host's 900 ms
    assert row[-4:] == ["20.36", "49.1", "108.38", "emulated,backend"]
