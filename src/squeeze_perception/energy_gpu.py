"""GPU energy per frame from NVML power samples, measured as the thesis measured it (3.4).

Thesis 3.4 ("Energy & power efficiency"): the GPU power was read with `nvidia-smi` every 0.1 s
while the detector ran over the evaluation set at batch 1; the *working period* is the time the
power stayed at or above 20 W (that GPU idled near 15 W); it is divided evenly into three parts,
the readings of the middle part are averaged, and

    energy per frame [J] = average power [W] / inference speed [frames / s].

Here (ROS-free, used by energy.MeteredBackend for a backend on a CUDA device, `torch-cuda`):

- `NvmlPowerSampler` reads the GPU's power through NVML (`pynvml`, from the optional
  `nvidia-ml-py` package, the library nvidia-smi itself reads) every `interval_s` (0.1 s, as the
  thesis) on a background thread, plus once at the end of every inference call, and keeps the
  recent (t, W) samples.
- `GpuEnergyMeter` knows the working period exactly (it sees the calls, so no power threshold
  is needed): from the first call of the current run of calls to the end of the latest one. A
  pause longer than `idle_gap_s` between calls starts a new period, and the period slides to its
  last `max_period_s` when longer. After each call: the mean power over the middle third of
  that period, times the period, divided by the frames run in it, is the energy per frame; the
  call's energy is that times its frames. Between frames that arrive slower than the GPU runs
  them (a node at 10 Hz), the period includes the GPU's idle power between frames, as the
  thesis's does: it is the GPU energy per frame at the rate frames came.
- The core is pure: `middle_third_power_w` integrates the piecewise-linear power curve through
  the samples (trapezoids; held flat before the first and after the last sample) over the middle
  third and divides by its length; `energy_per_frame_mj` applies the formula above;
  `working_period` is the thesis's >= 20 W rule for a recorded trace.

NVML's power reading (`nvmlDeviceGetPowerUsage`, milliwatts) is the board's power averaged over
a short window by the driver (on recent GPUs about a second), so periods shorter than that window
are smoothed; the middle third of a period of a few frames is an estimate, that of a run of many
frames the thesis's measurement. When pynvml is not installed, NVML cannot start (no driver, no
GPU) or stops answering, MeteredBackend falls back to the CPU method (energy.CpuEnergyMeter: RAPL
or the operation model) and says so once per reason.
"""
from __future__ import annotations

import os
import threading
import time
import warnings
import weakref
from collections import deque
from typing import Any, Callable, Sequence

DEFAULT_INTERVAL_S = 0.1  # thesis 3.4: nvidia-smi sampled every 0.1 s
WORKING_THRESHOLD_W = 20.0  # thesis 3.4: "power >= 20 W" is the working period (that GPU idled near 15 W)
SOURCE_NVML = "nvml"

Sample = tuple[float, float]  # (time in s on the meter's clock, power in W)


# ------------------------------------------------------------------ the pure core
def working_period(samples: Sequence[Sample], threshold_w: float = WORKING_THRESHOLD_W) -> tuple[float, float] | None:
    """The thesis's working period of a recorded trace: from the first to the last sample at or
    above `threshold_w` (None when none is)."""
    busy = [t for t, w in samples if w >= threshold_w]
    return (min(busy), max(busy)) if busy else None


def middle_third(t_start: float, t_end: float) -> tuple[float, float]:
    span = t_end - t_start
    return t_start + span / 3.0, t_start + 2.0 * span / 3.0


def _power_at(samples: Sequence[Sample], t: float) -> float:
    """The piecewise-linear curve through time-sorted samples at t, flat beyond the ends."""
    if t <= samples[0][0]:
        return samples[0][1]
    for (ta, wa), (tb, wb) in zip(samples, samples[1:]):
        if t <= tb:
            return wa if tb == ta else wa + (wb - wa) * (t - ta) / (tb - ta)
    return samples[-1][1]


def mean_power_w(samples: Sequence[Sample], t0: float, t1: float) -> float | None:
    """Time-weighted mean power over [t0, t1]: the integral of the piecewise-linear curve through
    the samples (trapezoids, with the curve's values at t0 and t1 as end points) over the length.
    None without samples; the value at t0 when t1 <= t0."""
    if not samples:
        return None
    pts = sorted(samples)
    if t1 <= t0:
        return _power_at(pts, t0)
    knots = [(t0, _power_at(pts, t0))] + [(t, w) for t, w in pts if t0 < t < t1] + [(t1, _power_at(pts, t1))]
    joules = sum((tb - ta) * (wa + wb) / 2.0 for (ta, wa), (tb, wb) in zip(knots, knots[1:]))
    return joules / (t1 - t0)


def middle_third_power_w(samples: Sequence[Sample], t_start: float, t_end: float) -> float | None:
    """Thesis 3.4: the average power over the middle third of the working period [t_start, t_end]."""
    return mean_power_w(samples, *middle_third(t_start, t_end))


def energy_per_frame_mj(samples: Sequence[Sample], t_start: float, t_end: float, frames: int) -> float | None:
    """Thesis 3.4: average power (middle third) / inference speed (frames / working period), in mJ.
    None without samples."""
    if frames <= 0:
        raise ValueError(f"frames must be positive, got {frames}")
    if t_end <= t_start:
        raise ValueError(f"the working period must have a length, got [{t_start}, {t_end}]")
    power = middle_third_power_w(samples, t_start, t_end)
    return None if power is None else power * (t_end - t_start) / frames * 1e3


# ------------------------------------------------------------------ NVML
def import_pynvml():
    """pynvml (pip install nvidia-ml-py), imported when a GPU backend is metered: optional."""
    import pynvml

    return pynvml


def nvml_handle(nvml, uuid: str | None = None, cuda_index: int = 0):
    """NVML's handle of the GPU torch calls cuda:<cuda_index>: by its UUID when known; else
    through CUDA_VISIBLE_DEVICES (indices or UUIDs) to NVML's numbering, which it ignores."""
    if uuid:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(uuid)
        except Exception:  # noqa: BLE001 - e.g. a MIG slice or an older pynvml: try the index
            pass
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if cuda_index < len(visible):
        entry = visible[cuda_index]
        if entry.isdigit():
            return nvml.nvmlDeviceGetHandleByIndex(int(entry))
        return nvml.nvmlDeviceGetHandleByUUID(entry)
    return nvml.nvmlDeviceGetHandleByIndex(cuda_index)


def _sample_loop(ref: weakref.ref, stop: threading.Event, interval_s: float, nvml) -> None:
    """The sampler's thread. It holds the sampler weakly, so a sampler nobody uses any more (a
    model switched out) ends its thread within one interval."""
    try:
        while not stop.wait(interval_s):
            sampler = ref()
            if sampler is None:
                return
            try:
                sampler.sample()
            except Exception as exc:  # noqa: BLE001 - NVML stopped answering: the meter falls back
                sampler.error = exc
                return
            del sampler
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


class NvmlPowerSampler:
    """One GPU's power, read through NVML every `interval_s` on a daemon thread (and on demand);
    `samples` holds the last `history_s` seconds as (t, W), t on `clock`."""

    def __init__(self, nvml=None, uuid: str | None = None, cuda_index: int = 0,
                 interval_s: float = DEFAULT_INTERVAL_S, history_s: float = 60.0,
                 clock: Callable[[], float] = time.perf_counter, thread: bool = True):
        self.nvml = nvml if nvml is not None else import_pynvml()
        self.interval_s, self.history_s, self._clock = interval_s, history_s, clock
        self.samples: deque[Sample] = deque()
        self.error: Exception | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.nvml.nvmlInit()
        try:
            self.handle = nvml_handle(self.nvml, uuid, cuda_index)
            self.sample()  # the first reading: refuses a GPU whose power NVML cannot read
        except Exception:
            self.nvml.nvmlShutdown()
            raise
        self._thread: threading.Thread | None = None
        if thread:
            self._thread = threading.Thread(target=_sample_loop, name="nvml-power", daemon=True,
                                            args=(weakref.ref(self), self._stop, interval_s, self.nvml))
            self._thread.start()

    def read_w(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0  # milliwatts

    def sample(self) -> Sample:
        if self.error is not None:
            raise RuntimeError(f"NVML power reading failed: {self.error}") from self.error
        watts = self.read_w()
        now = self._clock()
        with self._lock:
            self.samples.append((now, watts))
            while self.samples and self.samples[0][0] < now - self.history_s:
                self.samples.popleft()
        return now, watts

    def window(self, t0: float, t1: float) -> list[Sample]:
        """The samples inside [t0, t1] plus the nearest one on each side (for interpolation)."""
        with self._lock:
            pts = list(self.samples)
        inside = [s for s in pts if t0 <= s[0] <= t1]
        before = [s for s in pts if s[0] < t0][-1:]
        after = [s for s in pts if s[0] > t1][:1]
        return before + inside + after

    def close(self) -> None:
        """Stop the thread (it shuts NVML down); without a thread, shut NVML down here."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.interval_s + 1.0)
        else:
            self.nvml.nvmlShutdown()


class GpuEnergyMeter:
    """Energy of the calls of a backend on a GPU (start()/stop(frames) like energy.CpuEnergyMeter),
    from a power sampler over the middle third of the working period (module docstring)."""

    source = SOURCE_NVML

    def __init__(self, sampler: NvmlPowerSampler, clock: Callable[[], float] = time.perf_counter,
                 idle_gap_s: float = 1.0, max_period_s: float = 30.0):
        self.sampler, self._clock = sampler, clock
        self.idle_gap_s, self.max_period_s = idle_gap_s, max_period_s
        self.calls: deque[tuple[float, float, int]] = deque()  # (start, end, frames) of this period
        self.last_power_w: float | None = None  # the middle third's mean of the last call
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = self._clock()

    def stop(self, frames: int) -> float | None:
        """Energy (mJ) of the `frames` frames run since start(); raises when NVML failed."""
        t1 = self._clock()
        t0 = self._t0 if self._t0 is not None else t1
        self.sampler.sample()  # one reading at each call's end: even a short period has one inside
        if self.calls and t0 - self.calls[-1][1] > self.idle_gap_s:
            self.calls.clear()  # the GPU rested: a new working period
        self.calls.append((t0, t1, frames))
        while len(self.calls) > 1 and self.calls[0][0] < t1 - self.max_period_s:
            self.calls.popleft()
        start = self.calls[0][0]
        if t1 <= start:
            return None
        total = sum(n for _, _, n in self.calls)
        samples = self.sampler.window(start, t1)
        self.last_power_w = middle_third_power_w(samples, start, t1)
        per_frame = energy_per_frame_mj(samples, start, t1, total)
        return None if per_frame is None else per_frame * frames

    def close(self) -> None:
        self.sampler.close()


# ------------------------------------------------------------------ choosing it
_SAID: set[str] = set()


def say_once(message: str) -> None:
    """A RuntimeWarning, once per process and message."""
    if message not in _SAID:
        _SAID.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def cuda_device(backend: Any) -> str | None:
    """The CUDA device a backend runs on ("cuda:N", from its `device` attribute), else None."""
    device = str(getattr(backend, "device", "") or "")
    return device if device.startswith("cuda") else None


def meter_for(backend: Any, clock: Callable[[], float] = time.perf_counter,
              interval_s: float = DEFAULT_INTERVAL_S) -> tuple[GpuEnergyMeter | None, str | None]:
    """An NVML meter for a backend on a CUDA device, or (None, why not) - pynvml missing, NVML not
    starting, the GPU's power not readable."""
    device = cuda_device(backend)
    if device is None:
        return None, "the backend does not run on a CUDA device"
    try:
        nvml = import_pynvml()
    except ImportError:
        return None, "pynvml is not installed (pip install nvidia-ml-py)"
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    try:
        sampler = NvmlPowerSampler(nvml, uuid=getattr(backend, "gpu_uuid", None), cuda_index=index,
                                   interval_s=interval_s, clock=clock)
    except Exception as exc:  # noqa: BLE001 - NVMLError and friends: no driver, no GPU, no power sensor
        return None, f"NVML cannot read the power of {device} ({type(exc).__name__}: {exc})"
    return GpuEnergyMeter(sampler, clock=clock), None
