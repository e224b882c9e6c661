"""Energy per inference for every backend (ROS-free).

Four sources, in order of preference (docs/accelerator.md, "Energy telemetry"):

1. **backend** - the backend reports its own energy (`BackendSpec.provides_energy`, e.g. the
   Synetgy emulator's board power model), taken from `backend.last_energy_mj`.
2. **nvml** - a backend on a CUDA GPU (`torch-cuda`): NVML power sampled during inference,
   averaged over the middle third of the working period, per frame (thesis 3.4; energy_gpu.py).
   Without pynvml (`pip install nvidia-ml-py`) or a readable GPU, the CPU sources below, said
   once.
3. **rapl** - the CPU package energy counters of Linux powercap
   (`/sys/class/powercap/intel-rapl:N/energy_uj`; AMD Zen exposes the same files through the
   same driver). The difference of the package counters over the inference call, wrap-around
   handled with `max_energy_range_uj`. It is the whole socket's energy: other processes running
   at the same time are included, so it is an upper bound of the inference's share.
   Since Linux 5.10 the files are readable by root only (CVE-2020-8694, "Platypus"); an
   unreadable counter falls through to the model.
4. **model** - operations x energy per operation + DRAM bytes x energy per byte:

   - 4.6 pJ per fp32 multiply-accumulate: 3.7 pJ fp32 multiply + 0.9 pJ fp32 add, 45 nm
     (M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014);
   - 160 pJ per DRAM byte: 640 pJ per 32-bit DRAM access, 45 nm (the same source, as tabulated
     in S. Han et al., "EIE: Efficient Inference Engine on Compressed Deep Neural Network",
     ISCA 2016, Table I);
   - operations: the model's convolution MACs (model_cost.count_macs, one forward with hooks);
     DRAM bytes: weights once plus the input plus every convolution output written and read
     back once (4 bytes a value). Feature maps of these networks (e.g. 64 x 64 x 512 floats,
     8 MB) do not fit in a CPU's L2 cache, so one round trip per map is the least traffic.

   It is a **lower bound**: arithmetic and DRAM only, no instruction fetch / decode, caches,
   static or idle power, and 45 nm figures. Read it as a comparison between models on the same
   footing, not as a measurement.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

POWERCAP_ROOT = Path("/sys/class/powercap")

# Horowitz, ISSCC 2014 (45 nm): fp32 multiply 3.7 pJ + fp32 add 0.9 pJ.
PJ_PER_FP32_MAC = 4.6
# Horowitz, ISSCC 2014 via Han et al., ISCA 2016 Table I: 640 pJ per 32-bit DRAM access.
PJ_PER_DRAM_BYTE = 640.0 / 4

SOURCE_BACKEND, SOURCE_RAPL, SOURCE_MODEL, SOURCE_NONE = "backend", "rapl", "model", "none"
SOURCE_NVML = "nvml"  # energy_gpu.SOURCE_NVML


class RaplCounter:
    """Sum of the CPU package energy counters (top-level powercap zones, e.g. intel-rapl:0 and
    intel-rapl:1 on two sockets; sub-zones such as core / dram are inside them and not added)."""

    def __init__(self, root: Path = POWERCAP_ROOT):
        self.zones: list[tuple[Path, int]] = []  # (energy_uj file, wrap range in uJ)
        if not root.is_dir():
            return
        for zone in sorted(root.glob("intel-rapl:*")):
            if zone.name.count(":") != 1:  # intel-rapl:0:0 (a sub-zone) is counted in its package
                continue
            energy = zone / "energy_uj"
            try:
                int(energy.read_text())
                wrap = int((zone / "max_energy_range_uj").read_text())
            except (OSError, ValueError):  # not readable (root only since Linux 5.10) or not there
                continue
            self.zones.append((energy, wrap))

    @property
    def available(self) -> bool:
        return bool(self.zones)

    def read_uj(self) -> list[int]:
        return [int(path.read_text()) for path, _ in self.zones]

    def delta_mj(self, before: list[int], after: list[int]) -> float:
        total = 0
        for (_, wrap), b, a in zip(self.zones, before, after):
            total += a - b if a >= b else a + wrap + 1 - b  # the counter wrapped once
        return total / 1e3


@dataclass(frozen=True)
class Workload:
    """What one frame (batch of 1) of a model costs in operations and memory traffic."""

    macs: int
    dram_bytes: int

    def energy_mj(self, pj_per_mac: float = PJ_PER_FP32_MAC, pj_per_byte: float = PJ_PER_DRAM_BYTE) -> float:
        return (self.macs * pj_per_mac + self.dram_bytes * pj_per_byte) * 1e-9


_WORKLOADS: dict[tuple, Workload] = {}


def model_workload(spec) -> Workload | None:
    """MACs and DRAM bytes of one frame of a registry model (its torch architecture, built once
    per process and cached). None when the architecture cannot be built or counted (an ONNX-only
    model has none: no operation-model estimate)."""
    if getattr(spec, "builder", "") is None:
        return None
    # JSON text, not the items: a manifest's kwargs hold lists and dicts (block choices, macro).
    key = (spec.name, spec.builder, json.dumps(spec.builder_kwargs, sort_keys=True, default=str),
           tuple(spec.input_shape))
    if key not in _WORKLOADS:
        import torch

        from .model_cost import count_workload

        counted = None
        # On the meta device first: shapes only, no arithmetic and no weights in memory, so the
        # count costs milliseconds instead of a forward pass; a model whose forward needs real
        # values (numpy calls, data-dependent shapes) is counted on the CPU.
        for device in ("meta", "cpu"):
            try:
                with torch.device(device):  # tensors the forward itself makes too
                    # .to(): buffers made from numpy arrays (SqueezeDet's anchors) start on the CPU
                    counted = count_workload(spec.build().eval().to(device), torch.zeros((1, *spec.input_shape)))
                break
            except Exception:  # noqa: BLE001 - try the next device; none: no estimate
                continue
        if counted is None:
            return None
        macs, values, params = counted
        if macs == 0:  # operators our counter does not see (e.g. quantized QConv): no estimate
            return None
        _WORKLOADS[key] = Workload(macs, 4 * (params + values))
    return _WORKLOADS[key]


@dataclass
class InferenceResult:
    """What one `MeteredBackend.infer` call gives: outputs, latency, energy and their origin."""

    outputs: Any
    latency_ms: float | None  # the backend's: measured host time, or the emulated device time
    energy_mj: float | None  # whole batch
    energy_source: str  # backend | nvml | rapl | model | none
    emulated: bool  # latency (and energy) modelled for another device, not measured here
    batch: int = 1
    counters: dict | None = None  # the backend's own counts (synetgy: frames on device / CPU)


class CpuEnergyMeter:
    """Energy of work done on this host's CPU: RAPL when readable, else the operation model of a
    workload (`workload_fn` is called once, at the first measurement that needs it)."""

    def __init__(self, workload_fn: Callable[[], Workload | None], rapl: RaplCounter | None = None):
        self.rapl = rapl if rapl is not None else RaplCounter()
        self.source = SOURCE_RAPL if self.rapl.available else SOURCE_MODEL
        self._workload_fn = workload_fn
        self.workload: Workload | None = None
        self._before: list[int] | None = None

    def start(self) -> None:
        self._before = self.rapl.read_uj() if self.source == SOURCE_RAPL else None

    def estimate_mj(self, frames: int) -> float | None:
        """The operation model's energy of `frames` frames, whatever the source."""
        self.workload = self.workload or self._workload_fn()
        return None if self.workload is None else self.workload.energy_mj() * frames

    def stop(self, frames: int) -> float | None:
        """Energy (mJ) since start() of `frames` frames; None when there is no source."""
        if self.source == SOURCE_RAPL:
            return self.rapl.delta_mj(self._before, self.rapl.read_uj())
        if self.source == SOURCE_MODEL:
            energy = self.estimate_mj(frames)
            if energy is None:
                self.source = SOURCE_NONE
            return energy
        return None


class MeteredBackend:
    """A backend plus its energy meter: `infer(batch)` -> InferenceResult.

    The source is chosen once, at construction: the backend's own figure when its spec says
    `provides_energy`, else NVML when the backend runs on a CUDA device (its `device` attribute,
    e.g. `torch-cuda`) and NVML can read that GPU's power, else RAPL when readable, else the
    operation model (when the model's workload can be counted; counted at the first call, a
    forward pass, not at every model load), else none. A GPU backend without NVML (pynvml not
    installed, no driver) or whose NVML reading fails later gets the CPU method, said once per
    reason (a RuntimeWarning; `nvml_unavailable` keeps the reason). `emulated` comes from the
    spec too: the latency is then the device's modelled time, not this host's. A backend that
    can leave its device (synetgy without its node) says per call what it did through
    `last_emulated` / `last_energy_source`. A backend that chooses another at load time (`auto`)
    is metered as the one it chose: its `resolved_spec` replaces `backend_spec`."""

    def __init__(self, backend, backend_spec, model_spec, rapl: RaplCounter | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        from .registry import BackendSpec

        resolved = getattr(backend, "resolved_spec", None)
        if isinstance(resolved, BackendSpec):
            backend_spec = resolved
        self.backend = backend
        self.backend_spec = backend_spec
        self.emulated = bool(backend_spec.emulated)
        self._clock = clock
        self._rapl, self._model_spec = rapl, model_spec
        self.cpu: CpuEnergyMeter | None = None
        self.gpu = None  # energy_gpu.GpuEnergyMeter
        self.nvml_unavailable: str | None = None  # why a GPU backend is metered by the CPU method
        if backend_spec.provides_energy:
            self.energy_source = SOURCE_BACKEND
            return
        from . import energy_gpu

        if energy_gpu.cuda_device(backend) is not None:
            self.gpu, why = energy_gpu.meter_for(backend, clock=clock)
            if self.gpu is None:
                self._gpu_fallback(why)
        if self.gpu is not None:
            self.energy_source = self.gpu.source
        else:
            self.cpu = CpuEnergyMeter(lambda: model_workload(model_spec), rapl)
            self.energy_source = self.cpu.source

    def _gpu_fallback(self, why: str) -> None:
        from .energy_gpu import say_once

        self.nvml_unavailable = why
        device = getattr(self.backend, "device", "cuda")
        say_once(f"GPU energy of backend '{self.backend_spec.name}' on {device}: NVML unavailable ({why}); "
                 "reporting the CPU method (RAPL or the operation model) instead")

    def infer(self, batch) -> InferenceResult:
        n = int(len(batch))
        meter = self.gpu if self.gpu is not None else self.cpu
        if meter is not None:
            meter.start()
        t0 = self._clock()
        outputs = self.backend.infer(batch)
        wall_ms = (self._clock() - t0) * 1e3
        latency = getattr(self.backend, "last_latency_ms", None)
        if latency is None:
            latency = wall_ms
        if self.gpu is not None:
            try:
                energy = self.gpu.stop(n)
            except Exception as exc:  # noqa: BLE001 - NVML stopped answering: the CPU method from now on
                self.gpu.close()
                self.gpu = None
                self._gpu_fallback(f"power reading failed: {exc}")
                self.cpu = CpuEnergyMeter(lambda: model_workload(self._model_spec), self._rapl)
                energy = self.cpu.estimate_mj(n)  # not measured around this call: the model's figure
                self.energy_source = SOURCE_MODEL if energy is not None else SOURCE_NONE
            else:
                self.energy_source = self.gpu.source
        elif self.cpu is not None:
            energy = self.cpu.stop(n)
            self.energy_source = self.cpu.source
        else:
            energy = getattr(self.backend, "last_energy_mj", None)
        emulated = bool(getattr(self.backend, "last_emulated", self.emulated))
        source = getattr(self.backend, "last_energy_source", None) or self.energy_source
        return InferenceResult(outputs, latency, energy, source, emulated, n,
                               getattr(self.backend, "counters", None))

    def close(self) -> None:
        """Stop the GPU power sampler, if any (it also stops by itself once this is unused)."""
        if self.gpu is not None:
            self.gpu.close()
