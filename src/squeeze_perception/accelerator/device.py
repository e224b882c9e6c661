"""One emulated Synetgy board shared by several clients: request queue, batching, release of each
result after its emulated latency, and the board's utilisation / throughput / power (ROS-free;
nodes/synetgy_node.py is the ROS shell, device_client.py the other end).

Design (docs/accelerator.md, "synetgy_node"): the device owns *time*, not tensors. A client runs
the integer emulation of its own frames in its own process (bit-identical to the fake-quantized
model, tests/test_accelerator_emulator.py) and asks the device for the board time that batch
would take; the device queues the requests of all clients, runs them one batch at a time on the
single emulated board, and answers each request when its batch has finished in emulated time.
Sending the tensors (6 x 64 x 512 floats in, 4 x 64 x 512 out, 1.3 MB a frame) through the
middleware would add nothing the emulation does not already compute identically in the client.

Time is given by the caller (seconds on any monotonic clock), so tests drive it exactly.
Emulated semantics: a batch starts when the board is free and its first request has arrived,
at max(end of the previous batch, arrival of the oldest waiting request); it takes the oldest
request and every other waiting request *for the same model* that had arrived by then, in
arrival order, while the frames fit in `max_batch` (the first one always goes, whatever its
size). The batch finishes `Timing(model, frames).latency_s` later; all its requests are released
then. Results therefore do not depend on how often `poll` runs, only their delivery does.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .hardware import HWConfig, Timing


@dataclass
class DeviceRequest:
    client: str
    request_id: int
    model: str
    frames: int
    arrived_s: float


@dataclass
class Completion:
    """A request's result: released at `finished_s`."""

    request: DeviceRequest
    started_s: float
    finished_s: float
    batch_frames: int  # frames of the whole device batch it was part of
    energy_mj: float  # its frames' share of the batch's board energy

    @property
    def latency_ms(self) -> float:
        """Arrival to release: queueing plus the batch's emulated run."""
        return (self.finished_s - self.request.arrived_s) * 1e3

    @property
    def device_ms(self) -> float:
        return (self.finished_s - self.started_s) * 1e3

    def as_reply(self) -> dict:
        r = self.request
        return {"client": r.client, "id": r.request_id, "model": r.model, "frames": r.frames,
                "latency_ms": self.latency_ms, "device_ms": self.device_ms,
                "queued_ms": (self.started_s - r.arrived_s) * 1e3, "batch_frames": self.batch_frames,
                "energy_mj": self.energy_mj}


@dataclass
class _Batch:
    requests: list[DeviceRequest]
    started_s: float
    timing: Timing

    @property
    def frames(self) -> int:
        return sum(r.frames for r in self.requests)

    @property
    def finished_s(self) -> float:
        return self.started_s + self.timing.latency_s


@dataclass
class DeviceStats:
    """Over the last `window_s` (or since the start, when shorter)."""

    window_s: float
    queue_depth: int  # requests waiting (not running)
    occupancy: float  # fraction of the time the board was running a batch
    fpga_utilisation: float  # fraction of the time the accelerator fabric was busy (7.5: low)
    gops: float  # operations done per second (2 x MACs)
    fps: float  # frames finished per second
    power_w: float  # board power: idle power all the time + load power while the fabric works
    energy_mj_per_frame: float  # board energy of the finished batches per frame (idle gaps excluded)
    frames_total: int
    batches_total: int
    energy_mj_total: float  # board energy since the start, idle time included
    refused_total: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class DeviceQueue:
    """The emulated board and its queue. `timing_of(model, frames)` gives the cost model's
    Timing (hardware.op_costs of the model's compiled program) or raises KeyError for a model
    the device does not hold."""

    def __init__(self, timing_of: Callable[[str, int], Timing], max_batch: int = 4, max_queue: int = 64,
                 window_s: float = 5.0, start_s: float = 0.0, hw: HWConfig | None = None):
        self.timing_of = timing_of
        self.max_batch = int(max_batch)
        self.max_queue = int(max_queue)
        self.window_s = float(window_s)
        self.hw = hw or HWConfig()
        self.start_s = float(start_s)
        self.waiting: deque[DeviceRequest] = deque()
        self.running: _Batch | None = None
        self.done: deque[_Batch] = deque()  # finished batches inside the stats window
        self.free_since_s = self.start_s  # when the board last became free
        self.frames_total = self.batches_total = self.refused_total = 0
        self.busy_energy_mj_total = 0.0  # batches' energy (idle power during them included)
        self.busy_s_total = 0.0

    # ------------------------------------------------------------------ requests
    def submit(self, request: DeviceRequest) -> str | None:
        """Queue a request; returns the reason when it is refused (queue full, unknown model,
        no frames)."""
        if request.frames < 1:
            reason = f"request {request.request_id} from '{request.client}' has {request.frames} frames"
        elif len(self.waiting) >= self.max_queue:
            reason = f"queue full ({self.max_queue} requests waiting)"
        else:
            try:
                self.timing_of(request.model, 1)
            except KeyError:
                reason = f"model '{request.model}' is not loaded on the device"
            else:
                self.waiting.append(request)
                return None
        self.refused_total += 1
        return reason

    def poll(self, now_s: float) -> list[Completion]:
        """Advance emulated time to `now_s`: every batch that finished by then is released (in
        order), and the board starts the next ones as their requests allow."""
        released: list[Completion] = []
        while True:
            if self.running is None:
                if not self._start_next(now_s):
                    break
            batch = self.running
            if batch.finished_s > now_s:
                break
            released += self._finish(batch)
        return released

    def next_event_s(self) -> float | None:
        """When the running batch finishes (None: idle). A new request is the other event."""
        return None if self.running is None else self.running.finished_s

    def _start_next(self, now_s: float) -> bool:
        if not self.waiting or self.waiting[0].arrived_s > now_s:
            return False
        head = self.waiting[0]
        start = max(self.free_since_s, head.arrived_s)
        chosen, frames = [], 0
        for req in self.waiting:
            if req.arrived_s > start:
                break  # FIFO: later ones arrived after the board started
            if req.model != head.model:
                continue
            if chosen and frames + req.frames > self.max_batch:
                continue
            chosen.append(req)
            frames += req.frames
        for req in chosen:
            self.waiting.remove(req)
        self.running = _Batch(chosen, start, self.timing_of(head.model, frames))
        return True

    def _finish(self, batch: _Batch) -> list[Completion]:
        self.running = None
        self.free_since_s = batch.finished_s
        self.frames_total += batch.frames
        self.batches_total += 1
        energy_mj = batch.timing.energy_j * 1e3
        self.busy_energy_mj_total += energy_mj
        self.busy_s_total += batch.timing.latency_s
        self.done.append(batch)
        return [Completion(r, batch.started_s, batch.finished_s, batch.frames, energy_mj * r.frames / batch.frames)
                for r in batch.requests]

    # ------------------------------------------------------------------ statistics
    def stats(self, now_s: float) -> DeviceStats:
        lo = max(self.start_s, now_s - self.window_s)
        while self.done and self.done[0].finished_s <= lo:
            self.done.popleft()
        span = max(now_s - lo, 1e-9)
        occupied = fabric = ops = energy = 0.0
        frames = finished = 0
        batches = list(self.done) + ([self.running] if self.running is not None else [])
        for b in batches:
            overlap = max(0.0, min(b.finished_s, now_s) - max(b.started_s, lo))
            if overlap <= 0:
                continue
            share = overlap / b.timing.latency_s  # the part of the batch inside the window
            occupied += overlap
            fabric += b.timing.fpga_busy_s * share
            ops += b.timing.total_ops * share
            energy += b.timing.energy_j * share
            if b is not self.running and b.finished_s > lo:
                frames += b.frames
                finished += 1
        idle = max(0.0, span - occupied)
        window_energy_j = energy + self.hw.p_idle_w * idle
        done_energy_mj = sum(b.timing.energy_j for b in self.done) * 1e3
        done_frames = sum(b.frames for b in self.done)
        idle_total_s = max(0.0, (now_s - self.start_s) - self.busy_s_total)
        return DeviceStats(
            window_s=span, queue_depth=len(self.waiting), occupancy=occupied / span,
            fpga_utilisation=fabric / span, gops=ops / span / 1e9, fps=frames / span,
            power_w=window_energy_j / span,
            energy_mj_per_frame=done_energy_mj / done_frames if done_frames else math.nan,
            frames_total=self.frames_total, batches_total=self.batches_total,
            energy_mj_total=self.busy_energy_mj_total + self.hw.p_idle_w * idle_total_s * 1e3,
            refused_total=self.refused_total)


@dataclass
class ModelTimings:
    """Timing per (model, frames) from each model's compiled program, compiled once per model.
    `compile_model(name)` returns an object with `timing(frames)` (e.g. a SynetgyBackend or
    SynetgyEmulator). Models not loaded raise KeyError, as DeviceQueue expects."""

    compile_model: Callable[[str], object]
    loaded: dict = field(default_factory=dict)

    def load(self, name: str) -> None:
        if name not in self.loaded:
            self.loaded[name] = self.compile_model(name)

    def __call__(self, model: str, frames: int) -> Timing:
        return self.loaded[model].timing(frames)
