"""The `synetgy` inference backend: a model run through the in-process Synetgy emulator.

Outputs are those of the integer emulation (bit-identical to the fake-quantized torch model);
`last_latency_ms` is the *emulated* latency of the call on the Ultra96 (batch = the call's batch),
`last_energy_mj` its emulated board energy (whole call), `last_wall_ms` the host time the
emulation took. Only DiracDelta models (QConv / shift / pool / shuffle, quantized) are accepted;
anything else is refused at load time with the reason.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import BackendSpec, ModelSpec, register_backend


class SynetgyBackend:
    def __init__(self, spec: ModelSpec, weights: str | Path | None = None, num_threads: int = 0,
                 require_weights: bool = True, hw=None):
        from ..backends import ModelLoadError, load_state_dict
        from .compiler import UnsupportedModel
        from .emulator import SynetgyEmulator
        from .quant import FP, precision, set_precision

        self.spec = spec
        self.last_latency_ms: float | None = None
        self.last_energy_mj: float | None = None
        self.last_wall_ms: float | None = None
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

    def infer(self, batch: np.ndarray) -> Any:
        from ..backends import check_input

        check_input(self.spec, batch)
        t0 = time.perf_counter()
        result = self.emulator.run(np.ascontiguousarray(batch, dtype=np.float32))
        self.last_wall_ms = (time.perf_counter() - t0) * 1e3
        self.last_latency_ms = result.latency_ms
        self.last_energy_mj = result.energy_mj
        return result.output

    def timing(self, batch: int = 1):
        """Emulated cost of a batch without running it (hardware.Timing)."""
        return self.emulator.timing(batch)


register_backend(BackendSpec(
    "synetgy", "squeeze_perception.accelerator.backend:SynetgyBackend", "fpga-emulated",
    "Synetgy FPGA accelerator (Ultra96, thesis 7.5), emulated in integer arithmetic: emulated latency and energy",
    provides_energy=True, emulated=True))
