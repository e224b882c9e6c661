"""The `torch` backend: PyTorch eager on the CPU, the reference every other backend is checked
against (entry point `torch`, setup.py ENTRY_POINTS). torch is imported on first use."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import BackendSpec, ModelSpec, register_backend
from .common import ModelLoadError, check_input, load_state_dict


def _to_numpy(out: Any) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        return out.detach().cpu().numpy()
    if isinstance(out, (tuple, list)):
        return type(out)(_to_numpy(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_numpy(v) for k, v in out.items()}
    return out



class TorchBackend:
    """PyTorch eager on the CPU (the reference backend)."""

    def __init__(self, spec: ModelSpec, weights: str | Path | None = None, num_threads: int = 0,
                 require_weights: bool = True):
        import torch

        self.spec = spec
        self.last_latency_ms: float | None = None
        self.last_energy_mj: float | None = None
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.module = spec.build().eval()
        path = Path(weights) if weights else spec.weights_path()
        self.weights_path = path
        if path is None:
            if require_weights:
                raise ModelLoadError(f"model '{spec.name}' has no trained weights registered")
        else:
            state = load_state_dict(path)
            try:
                self.module.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise ModelLoadError(
                    f"weights '{path}' do not match model '{spec.name}': {str(exc).splitlines()[0]}") from exc

    def infer(self, batch: np.ndarray) -> Any:
        import torch

        check_input(self.spec, batch)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        result = _to_numpy(out)
        self.last_latency_ms = (time.perf_counter() - t0) * 1e3
        return result


# Entry point of the squeeze_perception.backends group (setup.py ENTRY_POINTS).
TORCH = register_backend(BackendSpec("torch", "squeeze_perception.backends.torch_backend:TorchBackend", "cpu",
                                     "PyTorch eager, CPU (reference)"))
