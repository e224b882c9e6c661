"""GPU energy from NVML (energy_gpu.py): the middle-third integration of thesis 3.4 on synthetic
samples with hand-computed values, the NVML sampler and meter on a fake `pynvml` module (this
machine has no GPU), the fall-back to the CPU method said once, and the `torch-cuda` backend's
device handling (its GPU test runs where torch sees a CUDA GPU)."""
from __future__ import annotations

import gc
import sys
import time
import types
import warnings

import numpy as np
import pytest

from squeeze_perception import energy, energy_gpu, registry
from squeeze_perception.backends import ModelLoadError
from squeeze_perception.energy_gpu import (GpuEnergyMeter, NvmlPowerSampler, energy_per_frame_mj, mean_power_w,
                                           middle_third, middle_third_power_w, working_period)
from squeeze_perception.registry import BackendSpec, ModelSpec

SPEC = ModelSpec("tiny_gpu", "detection", "torch.nn:Conv2d", None, (3, 8, 8), ("a",),
                 builder_kwargs={"in_channels": 3, "out_channels": 2, "kernel_size": 3, "padding": 1})
GPU_SPEC = BackendSpec("gpu_x", "x:y", "cuda")


# ------------------------------------------------------------------ the pure core, by hand
def test_middle_third_of_a_plateau_is_the_plateau():
    samples = [(0.0, 15.0), (1.0, 60.0), (2.0, 60.0), (3.0, 15.0)]
    assert middle_third(0.0, 3.0) == (1.0, 2.0)
    assert middle_third_power_w(samples, 0.0, 3.0) == pytest.approx(60.0)
    # 30 frames in 3 s: 10 fps; 60 W / 10 fps = 6 J a frame
    assert energy_per_frame_mj(samples, 0.0, 3.0, 30) == pytest.approx(6000.0)


def test_middle_third_of_a_ramp_integrates_the_line():
    # 0 W at t=0 to 30 W at t=3: over [1, 2] the line goes 10 -> 20 W, mean 15 W;
    # 6 frames in 3 s = 2 fps -> 7.5 J a frame
    assert middle_third_power_w([(0.0, 0.0), (3.0, 30.0)], 0.0, 3.0) == pytest.approx(15.0)
    assert energy_per_frame_mj([(3.0, 30.0), (0.0, 0.0)], 0.0, 3.0, 6) == pytest.approx(7500.0)  # any order


def test_only_the_middle_third_counts():
    # rising for a second, then flat at 30 W: the middle third [1, 2] is 30 W; the whole period
    # would average (15 + 30 + 30) / 3 = 25 W. 3 frames in 3 s: 30 J a frame
    samples = [(0.0, 0.0), (1.0, 30.0), (2.0, 30.0), (3.0, 30.0)]
    assert mean_power_w(samples, 0.0, 3.0) == pytest.approx(25.0)
    assert middle_third_power_w(samples, 0.0, 3.0) == pytest.approx(30.0)
    assert energy_per_frame_mj(samples, 0.0, 3.0, 3) == pytest.approx(30000.0)


def test_a_window_between_two_samples_is_interpolated():
    # 10 W at t=0, 40 W at t=10: period [3, 6], middle third [4, 5]: 22 W -> 25 W, mean 23.5 W;
    # 3 frames in 3 s = 1 fps -> 23.5 J a frame
    samples = [(0.0, 10.0), (10.0, 40.0)]
    assert middle_third_power_w(samples, 3.0, 6.0) == pytest.approx(23.5)
    assert energy_per_frame_mj(samples, 3.0, 6.0, 3) == pytest.approx(23500.0)


def test_trapezoids_weight_uneven_samples_by_time():
    # over [0, 4]: 10 W for the first second, then 10 -> 50 W linearly for 1 s, then 50 W for 2 s:
    # energy 10 + 30 + 100 = 140 J, mean 35 W
    samples = [(0.0, 10.0), (1.0, 10.0), (2.0, 50.0), (4.0, 50.0)]
    assert mean_power_w(samples, 0.0, 4.0) == pytest.approx(35.0)
    # the plain average of the four readings would say 30 W: the readings are not evenly spaced
    assert np.mean([w for _, w in samples]) == pytest.approx(30.0)


def test_samples_are_held_flat_beyond_the_ends_and_degenerate_inputs():
    assert middle_third_power_w([(0.0, 50.0)], 1.0, 4.0) == pytest.approx(50.0)  # one reading
    assert middle_third_power_w([(0.0, 20.0), (1.0, 40.0)], 5.0, 8.0) == pytest.approx(40.0)  # after the last
    assert mean_power_w([(0.0, 20.0), (2.0, 40.0)], 1.0, 1.0) == pytest.approx(30.0)  # a point: the value there
    assert mean_power_w([], 0.0, 1.0) is None and energy_per_frame_mj([], 0.0, 1.0, 1) is None
    with pytest.raises(ValueError, match="frames"):
        energy_per_frame_mj([(0.0, 1.0)], 0.0, 1.0, 0)
    with pytest.raises(ValueError, match="length"):
        energy_per_frame_mj([(0.0, 1.0)], 2.0, 2.0, 1)


def test_the_thesis_working_period_is_power_at_or_above_20_w():
    trace = [(0.0, 15.0), (0.1, 25.0), (0.2, 30.0), (0.3, 18.0), (0.4, 20.0), (0.5, 15.0)]
    assert working_period(trace) == (0.1, 0.4)
    assert working_period([(0.0, 15.0)]) is None
    assert working_period(trace, threshold_w=26.0) == (0.2, 0.2)


# ------------------------------------------------------------------ a fake pynvml
class FakeNvml(types.ModuleType):
    """The few NVML calls energy_gpu makes, on two GPUs; power in mW from `power(uuid)`."""

    class NVMLError(Exception):
        pass

    def __init__(self, power=lambda uuid: 42_000, init_error: str | None = None):
        super().__init__("pynvml")
        self.power, self.init_error = power, init_error
        self.uuids = ["GPU-aaaa", "GPU-bbbb"]
        self.inits = self.shutdowns = 0
        self.read_from: list[str] = []

    def nvmlInit(self):
        if self.init_error:
            raise self.NVMLError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.uuids[index]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid not in self.uuids:
            raise self.NVMLError("Not Found")
        return uuid

    def nvmlDeviceGetPowerUsage(self, handle):
        self.read_from.append(handle)
        return self.power(handle)


class Clock:
    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture()
def fake_nvml(monkeypatch):
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(energy_gpu, "_SAID", set())
    return fake


class FakeCudaBackend:
    """A backend on cuda:1 whose every call takes `step` seconds of the fake clock."""

    def __init__(self, clock: Clock, step: float = 0.5, device: str = "cuda:1", uuid: str | None = "GPU-bbbb"):
        self.spec, self.clock, self.step = SPEC, clock, step
        self.device, self.gpu_uuid = device, uuid
        self.last_latency_ms = self.last_energy_mj = None

    def infer(self, batch):
        self.clock.t += self.step
        return batch * 2


# ------------------------------------------------------------------ the sampler on the fake
def test_sampler_reads_milliwatts_as_watts_on_its_clock_and_keeps_its_history(fake_nvml):
    clock = Clock(10.0)
    sampler = NvmlPowerSampler(fake_nvml, uuid="GPU-bbbb", clock=clock, history_s=5.0, thread=False)
    assert fake_nvml.inits == 1 and list(sampler.samples) == [(10.0, 42.0)]  # a first reading at start
    fake_nvml.power = lambda uuid: 61_500
    clock.t = 12.0
    assert sampler.sample() == (12.0, 61.5)
    clock.t = 16.0
    sampler.sample()
    assert [t for t, _ in sampler.samples] == [12.0, 16.0]  # 10.0 is older than 5 s
    assert sampler.window(13.0, 15.0) == [(12.0, 61.5), (16.0, 61.5)]  # the neighbours, for interpolation
    assert set(fake_nvml.read_from) == {"GPU-bbbb"}
    sampler.close()
    sampler.close()
    assert fake_nvml.shutdowns == 1


def test_the_gpu_is_found_by_uuid_or_through_cuda_visible_devices(fake_nvml, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert energy_gpu.nvml_handle(fake_nvml, "GPU-bbbb", 0) == "GPU-bbbb"
    assert energy_gpu.nvml_handle(fake_nvml, None, 1) == "GPU-bbbb"
    assert energy_gpu.nvml_handle(fake_nvml, "GPU-unknown", 0) == "GPU-aaaa"  # unknown uuid: by index
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # torch's cuda:0 is NVML's GPU 1
    assert energy_gpu.nvml_handle(fake_nvml, None, 0) == "GPU-bbbb"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa,GPU-bbbb")
    assert energy_gpu.nvml_handle(fake_nvml, None, 1) == "GPU-bbbb"


def test_the_sampler_thread_samples_in_the_background_and_ends_with_its_sampler(fake_nvml):
    sampler = NvmlPowerSampler(fake_nvml, interval_s=0.01)
    deadline = time.monotonic() + 5.0
    while len(sampler.samples) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(sampler.samples) >= 4
    sampler.close()
    assert not sampler._thread.is_alive() and fake_nvml.shutdowns == 1
    # a sampler nobody holds any more (a model switched out) stops its thread by itself
    thread = NvmlPowerSampler(fake_nvml, interval_s=0.01)._thread
    gc.collect()
    thread.join(timeout=2.0)
    assert not thread.is_alive() and fake_nvml.shutdowns == 2


# ------------------------------------------------------------------ the meter: working period, middle third
def test_meter_over_a_ramp_takes_the_middle_third_of_the_period_so_far(fake_nvml):
    """Power 10 W per second of the fake clock; readings only at start and at each call's end
    (no thread); three back-to-back 1 s calls of one frame."""
    clock = Clock(0.0)
    fake_nvml.power = lambda uuid: int(10_000 * clock.t)
    meter = GpuEnergyMeter(NvmlPowerSampler(fake_nvml, clock=clock, thread=False), clock=clock)
    got = []
    for _ in range(3):
        meter.start()
        clock.t += 1.0
        got.append(meter.stop(1))
    # [0,1]: middle [1/3, 2/3] mean 5 W x 1 s / 1 frame = 5 J; [0,2]: middle [2/3, 4/3] mean 10 W
    # x 2 s / 2 frames = 10 J; [0,3]: middle [1, 2] mean 15 W x 3 s / 3 frames = 15 J
    assert got == pytest.approx([5000.0, 10000.0, 15000.0])
    assert meter.last_power_w == pytest.approx(15.0)


def test_meter_starts_a_new_working_period_after_a_pause_and_slides_a_long_one(fake_nvml):
    clock = Clock(0.0)  # 42 W throughout: energy per frame = 42 W x period / frames
    meter = GpuEnergyMeter(NvmlPowerSampler(fake_nvml, clock=clock, thread=False), clock=clock,
                           idle_gap_s=1.0, max_period_s=3.0)

    def call(start: float, end: float, frames: int) -> float:
        clock.t = start
        meter.start()
        clock.t = end
        return meter.stop(frames)

    assert call(0.0, 0.5, 1) == pytest.approx(42 * 0.5 * 1e3)  # [0, 0.5], 1 frame: 21 J
    assert call(1.0, 1.5, 2) == pytest.approx(42 * 1.5 / 3 * 2 * 1e3)  # [0, 1.5], 3 frames; 2 of them: 42 J
    # 1.1 s pause: a new period [2.6, 3.1] (kept going, [1, 3.1] with 3 frames would give 29.4 J)
    assert call(2.6, 3.1, 1) == pytest.approx(42 * 0.5 * 1e3)
    for start in (4.0, 5.0, 6.0, 7.0):  # back to back: the period slides to the calls of the last 3 s
        call(start, start + 1.0, 1)
    assert [c[0] for c in meter.calls] == [5.0, 6.0, 7.0]  # [5, 8]
    assert call(8.0, 9.0, 1) == pytest.approx(42 * 3.0 / 3 * 1e3)  # [6, 9]: 3 frames in 3 s


# ------------------------------------------------------------------ MeteredBackend with the fake NVML
def test_metered_gpu_backend_reports_nvml_energy(fake_nvml, tmp_path):
    clock = Clock(0.0)
    metered = energy.MeteredBackend(FakeCudaBackend(clock), GPU_SPEC, SPEC,
                                    rapl=energy.RaplCounter(tmp_path / "none"), clock=clock)
    assert metered.energy_source == "nvml" and metered.cpu is None
    first = metered.infer(np.ones((1, 3, 8, 8), np.float32))
    second = metered.infer(np.ones((2, 3, 8, 8), np.float32))
    assert first.energy_source == second.energy_source == "nvml"
    assert first.energy_mj == pytest.approx(42 * 0.5 * 1e3)  # period [0, 0.5], 1 frame
    assert second.energy_mj == pytest.approx(42 * 1.0 / 3 * 2 * 1e3)  # [0, 1.0], 3 frames; 2 here
    assert first.latency_ms == pytest.approx(500.0)
    assert set(fake_nvml.read_from) == {"GPU-bbbb"}  # the backend's GPU, by its uuid
    metered.close()
    assert fake_nvml.shutdowns == 1


def _no_warnings(fn):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = fn()
    assert not [w for w in seen if "NVML" in str(w.message)], [str(w.message) for w in seen]
    return out


def test_without_pynvml_a_gpu_backend_gets_the_cpu_method_said_once(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    monkeypatch.setattr(energy_gpu, "_SAID", set())

    def make():
        return energy.MeteredBackend(FakeCudaBackend(Clock()), GPU_SPEC, SPEC,
                                     rapl=energy.RaplCounter(tmp_path / "none"))

    with pytest.warns(RuntimeWarning, match=r"NVML unavailable \(pynvml is not installed \(pip install nvidia-ml-py"):
        metered = make()
    assert metered.gpu is None and metered.energy_source == "model" and "nvidia-ml-py" in metered.nvml_unavailable
    run = metered.infer(np.ones((1, 3, 8, 8), np.float32))
    assert run.energy_source == "model" and run.energy_mj == pytest.approx(energy.model_workload(SPEC).energy_mj())
    _no_warnings(make)  # once per process


def test_nvml_that_cannot_start_falls_back_with_the_reason(fake_nvml, tmp_path):
    fake_nvml.init_error = "Driver Not Loaded"
    with pytest.warns(RuntimeWarning, match="NVML cannot read the power of cuda:1 .*Driver Not Loaded"):
        metered = energy.MeteredBackend(FakeCudaBackend(Clock()), GPU_SPEC, SPEC,
                                        rapl=energy.RaplCounter(tmp_path / "none"))
    assert metered.energy_source == "model"


def test_nvml_failing_mid_run_switches_to_the_cpu_method_once(fake_nvml, tmp_path):
    clock = Clock(0.0)
    metered = energy.MeteredBackend(FakeCudaBackend(clock), GPU_SPEC, SPEC,
                                    rapl=energy.RaplCounter(tmp_path / "none"), clock=clock)
    metered.gpu.sampler.close()  # no background readings: the failure comes from the call's reading
    batch = np.ones((1, 3, 8, 8), np.float32)
    assert metered.infer(batch).energy_source == "nvml"

    def gone(uuid):
        raise FakeNvml.NVMLError("GPU is lost")

    fake_nvml.power = gone
    with pytest.warns(RuntimeWarning, match="power reading failed: GPU is lost"):
        run = metered.infer(batch)
    assert run.energy_source == "model" and run.energy_mj == pytest.approx(energy.model_workload(SPEC).energy_mj())
    assert metered.gpu is None
    assert _no_warnings(lambda: metered.infer(batch)).energy_source == "model"


def test_a_cpu_backend_never_touches_nvml(fake_nvml, tmp_path):
    class CpuBackend(FakeCudaBackend):
        pass

    backend = CpuBackend(Clock(), device="cpu")
    metered = energy.MeteredBackend(backend, BackendSpec("cpu_x", "x:y", "cpu"), SPEC,
                                    rapl=energy.RaplCounter(tmp_path / "none"))
    assert metered.energy_source == "model" and metered.gpu is None and fake_nvml.inits == 0


# ------------------------------------------------------------------ the torch-cuda backend
def test_torch_cuda_is_a_registered_backend_on_a_cuda_device():
    spec = registry.get_backend("torch-cuda")
    assert spec.device == "cuda" and not spec.provides_energy and not spec.emulated


def test_torch_devices_are_checked_before_anything_loads():
    import torch

    from squeeze_perception.backends.torch_backend import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ModelLoadError, match="not cpu, cuda, cuda:N or auto"):
        resolve_device("tpu")
    with pytest.raises(ModelLoadError, match="not cpu, cuda, cuda:N or auto"):
        resolve_device("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="sees no CUDA GPU.*use the `torch` backend"):
            registry.get_backend("torch-cuda").create(SPEC, require_weights=False)


def test_torch_cuda_matches_torch_and_reports_gpu_energy():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU seen by torch here (CPU-only build or no device)")
    from squeeze_perception.backends import TorchBackend, TorchCudaBackend

    torch.manual_seed(0)
    cpu = TorchBackend(SPEC, require_weights=False)
    gpu = TorchCudaBackend(SPEC, require_weights=False)
    gpu.module.load_state_dict(cpu.module.state_dict())
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(gpu.infer(x), cpu.infer(x), rtol=1e-4, atol=1e-4)
    assert gpu.device == "cuda:0" and gpu.last_latency_ms > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # without pynvml: the CPU method, said once
        metered = energy.MeteredBackend(gpu, registry.get_backend("torch-cuda"), SPEC)
    runs = [metered.infer(x) for _ in range(5)]
    if metered.nvml_unavailable is None:
        assert all(r.energy_source == "nvml" and r.energy_mj > 0 for r in runs), runs
        assert metered.gpu.last_power_w > 0
    metered.close()
