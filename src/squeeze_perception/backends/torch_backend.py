"""The `torch` backends: PyTorch eager on the CPU (`torch`, the reference every other backend is
checked against) and on a CUDA GPU (`torch-cuda`: the same class with `device="cuda"`; its energy
comes from NVML power samples, energy_gpu.py). Entry points in setup.py ENTRY_POINTS; torch is
imported on first use."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import BackendSpec, ModelSpec, register_backend
from .common import ModelLoadError, check_input, load_state_dict, refuse_onnx_only


def _to_numpy(out: Any) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        return out.detach().cpu().numpy()
    if isinstance(out, (tuple, list)):
        return type(out)(_to_numpy(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_numpy(v) for k, v in out.items()}
    return out


def resolve_device(device: str) -> str:
    """"cpu", "cuda" / "cuda:N" (refused with the reason when torch sees no such GPU) or "auto"
    (the first CUDA GPU when there is one, else the CPU) -> a torch device string."""
    import torch

    name = str(device).strip().lower()
    if name == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        index = 0 if name == "cuda" else name[5:]
        if not str(index).isdigit():
            raise ModelLoadError(f"torch device '{device}' is not cpu, cuda, cuda:N or auto")
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"torch device '{device}': this torch ({torch.__version__}) sees no CUDA GPU "
                f"({'a CPU-only build' if torch.version.cuda is None else 'no device or driver'}); "
                "use the `torch` backend (CPU) or install a CUDA build of torch")
        if int(index) >= torch.cuda.device_count():
            raise ModelLoadError(f"torch device '{device}': only {torch.cuda.device_count()} CUDA GPU(s) here")
        return f"cuda:{int(index)}"
    raise ModelLoadError(f"torch device '{device}' is not cpu, cuda, cuda:N or auto")


def gpu_uuid(device: str) -> str | None:
    """NVML's name of a CUDA device ("GPU-<uuid>"), so energy_gpu samples the GPU torch runs on
    whatever CUDA_VISIBLE_DEVICES renumbers; None when torch cannot tell."""
    import torch

    try:
        uuid = torch.cuda.get_device_properties(torch.device(device)).uuid
    except Exception:  # noqa: BLE001 - older torch / no such attribute: NVML goes by index
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


class TorchBackend:
    """PyTorch eager, on the CPU (the reference backend) or, with `device`, on a CUDA GPU.

    `last_latency_ms` covers the copy to the GPU, the forward and the copy back (which waits for
    the GPU), so it is the frame's latency as a caller sees it on either device."""

    def __init__(self, spec: ModelSpec, weights: str | Path | None = None, num_threads: int = 0,
                 require_weights: bool = True, device: str = "cpu"):
        import torch

        refuse_onnx_only(spec, "torch")
        self.spec = spec
        self.last_latency_ms: float | None = None
        self.last_energy_mj: float | None = None
        self.device = resolve_device(device)
        self.gpu_uuid = gpu_uuid(self.device) if self.device.startswith("cuda") else None
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
        if self.device != "cpu":
            self.module.to(self.device)

    def infer(self, batch: np.ndarray) -> Any:
        import torch

        check_input(self.spec, batch)
        t0 = time.perf_counter()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            out = self.module(x if self.device == "cpu" else x.to(self.device))
        result = _to_numpy(out)  # .cpu() waits for the GPU
        self.last_latency_ms = (time.perf_counter() - t0) * 1e3
        return result


class TorchCudaBackend(TorchBackend):
    """The `torch-cuda` backend: TorchBackend on a CUDA GPU (`device` "cuda", or "cuda:N"). Loading
    is refused with the reason where torch sees no GPU (e.g. its CPU-only build)."""

    def __init__(self, spec: ModelSpec, weights: str | Path | None = None, num_threads: int = 0,
                 require_weights: bool = True, device: str = "cuda"):
        super().__init__(spec, weights=weights, num_threads=num_threads, require_weights=require_weights,
                         device=device)


# Entry points of the squeeze_perception.backends group (setup.py ENTRY_POINTS).
TORCH = register_backend(BackendSpec("torch", "squeeze_perception.backends.torch_backend:TorchBackend", "cpu",
                                     "PyTorch eager, CPU (reference)"))
TORCH_CUDA = register_backend(BackendSpec(
    "torch-cuda", "squeeze_perception.backends.torch_backend:TorchCudaBackend", "cuda",
    "PyTorch eager, CUDA GPU; energy from NVML power over the middle third of the working period"))
