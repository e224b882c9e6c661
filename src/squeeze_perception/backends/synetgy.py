"""The `synetgy` inference backend: a model run through the in-process Synetgy emulator
(accelerator/: the quantized model, its compiler, the Ultra96 emulator and the shared-board client).

Outputs are those of the integer emulation (bit-identical to the fake-quantized torch model);
`last_latency_ms` is the *emulated* latency of the call on the Ultra96 (batch = the call's batch),
`last_energy_mj` its emulated board energy (whole call), `last_wall_ms` the host time the
emulation took. Only DiracDelta models (QConv / shift / pool / shuffle, quantized) are accepted;
anything else is refused at load time with the reason.

Where the board is (`device`):
- "local": an emulated board of its own, in this process (benchmarks, tests, offline tools).
- "node": the one board of synetgy_node, shared with the other model nodes (device.py,
  device_client.py): the frame is emulated here, its board time comes from the node's queue
  (queueing + batching + emulated latency; the call returns when the node releases it). When
  the node is absent, dies or stalls, the frame runs on the CPU backend instead (the same
  fake-quantized torch model, measured latency, CPU energy: energy.CpuEnergyMeter), said once
  per switch; it returns to the node when its heartbeat does. `counters` counts both sides.
- "auto" (default): "node" inside a ROS process (rclpy initialised), else "local".
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import BackendSpec, ModelSpec, register_backend


def _ros_is_running() -> bool:
    from ..accelerator.device_client import ros_is_running

    return ros_is_running()


class SynetgyBackend:
    def __init__(self, spec: ModelSpec, weights: str | Path | None = None, num_threads: int = 0,
                 require_weights: bool = True, hw=None, device: str = "auto"):
        from ..accelerator.compiler import UnsupportedModel
        from ..accelerator.emulator import SynetgyEmulator
        from ..accelerator.quant import FP, precision, set_precision
        from .common import ModelLoadError, load_state_dict, refuse_onnx_only

        refuse_onnx_only(spec, "synetgy")
        self.spec = spec
        self.last_latency_ms: float | None = None
        self.last_energy_mj: float | None = None
        self.last_wall_ms: float | None = None
        self.last_emulated = True  # False for a frame run on the CPU fallback
        self.last_energy_source = "backend"  # the board model; CPU meter's source on fallback
        self.link = self.transport = None
        if device not in ("auto", "local", "node"):
            raise ModelLoadError(f"synetgy device must be auto, local or node, not '{device}'")
        if num_threads > 0:
            import torch

            torch.set_num_threads(num_threads)
        if weights and str(weights).endswith(".onnx"):
            raise ModelLoadError("the synetgy backend runs torch checkpoints of DiracDelta models, not ONNX")
        module = spec.build().eval()
        path = Path(weights) if weights else spec.weights_path()
        self.weights_path = path
        if path is not None and (path.exists() or require_weights):
            state = load_state_dict(path)
            try:
                module.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise ModelLoadError(
                    f"weights '{path}' do not match model '{spec.name}': {str(exc).splitlines()[0]}") from exc
            if FP in precision(module):
                raise ModelLoadError(
                    f"weights '{path}' are at float precision w{precision(module)[0]}a{precision(module)[1]}; "
                    "the accelerator runs quantized models (progressive_quantize to w4a4 first)")
        elif require_weights:
            raise ModelLoadError(f"model '{spec.name}' has no trained weights registered")
        else:  # untrained: still useful for latency / energy
            set_precision(module, 4, 4)
        try:
            self.emulator = SynetgyEmulator(module, tuple(spec.input_shape), hw=hw)
        except UnsupportedModel as exc:
            raise ModelLoadError(f"model '{spec.name}' cannot run on Synetgy: {exc}") from exc
        self.module = module  # the CPU fallback: the same fake-quantized model in torch
        from ..energy import CpuEnergyMeter

        self.cpu_energy = CpuEnergyMeter(self._workload)
        if device == "node" or (device == "auto" and _ros_is_running()):
            from ..accelerator.device_client import DeviceLink, RosDeviceTransport

            self.link = DeviceLink(log=self._log)
            self.transport = RosDeviceTransport(self.link)

    def _log(self, message: str) -> None:
        self.transport.node.get_logger().warning(f"[{self.spec.name}] {message}")

    def _workload(self):
        """One frame's MACs and DRAM traffic for the CPU energy model, from the compiled program:
        its convolutions' MACs; its weights plus every op output written and read once (4 bytes)."""
        from ..energy import Workload

        ops = self.emulator.program.ops
        macs = sum(op.macs for op in ops)
        values = sum(2 * int(np.prod(op.shape)) for op in ops if op.shape)
        weights = sum(op.params["cin"] * op.params["cout"] for op in ops if op.kind == "conv")
        return Workload(int(macs), 4 * (values + weights))

    @property
    def counters(self) -> dict | None:
        """Frames on the node's board / on the CPU fallback, switches (device "node" only)."""
        return None if self.link is None else dict(self.link.counters.__dict__)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def infer(self, batch: np.ndarray) -> Any:
        from .common import check_input

        check_input(self.spec, batch)
        x = np.ascontiguousarray(batch, dtype=np.float32)
        where = "local" if self.link is None else self.link.choose()
        if where == "cpu":
            return self._infer_cpu(x)
        rid = sent = None
        if where == "device":  # ask for board time first: the node queues while we compute
            sent = self.link.clock()
            rid = self.transport.send(self.spec.name, len(x))
        t0 = time.perf_counter()
        result = self.emulator.run(x)
        self.last_wall_ms = (time.perf_counter() - t0) * 1e3
        if where == "local":
            self._set(result.latency_ms, result.energy_mj, emulated=True, source="backend")
            return result.output
        reply, why = self.transport.wait(rid, sent)
        if reply is None:  # this frame's output is computed; its time and energy are the CPU's
            self.link.request_lost(why)
            self.link.frame_done("cpu")
            # (RAPL was not read around it: the operation model's estimate)
            energy = self.cpu_energy.estimate_mj(len(x))
            self._set(self.last_wall_ms, energy, emulated=False, source="model")
            return result.output
        self.link.frame_done("device")
        self._set(float(reply["latency_ms"]), float(reply["energy_mj"]), emulated=True, source="backend")
        return result.output

    def _infer_cpu(self, x: np.ndarray) -> Any:
        import torch

        self.cpu_energy.start()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.module(torch.from_numpy(x)).numpy()
        self.last_wall_ms = (time.perf_counter() - t0) * 1e3
        self._set(self.last_wall_ms, self.cpu_energy.stop(len(x)), emulated=False, source=self.cpu_energy.source)
        self.link.frame_done("cpu")
        return out

    def _set(self, latency_ms: float, energy_mj: float | None, emulated: bool, source: str) -> None:
        self.last_latency_ms, self.last_energy_mj = latency_ms, energy_mj
        self.last_emulated, self.last_energy_source = emulated, source

    def timing(self, batch: int = 1):
        """Emulated cost of a batch without running it (hardware.Timing)."""
        return self.emulator.timing(batch)


SYNETGY = register_backend(BackendSpec(  # entry point: setup.py ENTRY_POINTS
    "synetgy", "squeeze_perception.backends.synetgy:SynetgyBackend", "fpga-emulated",
    "Synetgy FPGA accelerator (Ultra96, thesis 7.5), emulated in integer arithmetic: emulated latency and energy",
    provides_energy=True, emulated=True))
