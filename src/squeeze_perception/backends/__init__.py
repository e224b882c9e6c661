"""Inference backends: the same model run by PyTorch, ONNX Runtime (fp32 or int8) on the CPU, or
the emulated Synetgy FPGA accelerator. One module per backend:

common.py               what they share: errors, the `InferenceBackend` protocol, the input check,
                        manifests / checksums, checkpoint loading, ONNX export, onnxruntime sessions,
                        int8 graph paths
torch_backend.py        `torch`             PyTorch eager on the CPU (the reference)
                        `torch-cuda`        the same on a CUDA GPU (energy: NVML, energy_gpu.py)
onnxruntime_backend.py  `onnxruntime`       ONNX Runtime, CPU execution provider
onnxruntime_int8.py     `onnxruntime-int8`  ONNX Runtime over the static int8 graph
synetgy.py              `synetgy`           the Synetgy emulator (accelerator/), emulated latency and energy
auto.py                 `auto`              onnxruntime-int8 when the model has a usable int8 graph, else
                        onnxruntime (fp32); `resolved_backend` / `reason` say which and why (the
                        model nodes' default)

Every backend follows `InferenceBackend`: construct with a ModelSpec (loads weights or raises
ModelLoadError with a user-facing reason), `infer(batch)` -> numpy outputs, `last_latency_ms`, and
`last_energy_mj` when it reports its own energy. Each module's BackendSpec is an entry point of the
`squeeze_perception.backends` group (setup.py ENTRY_POINTS, registry.load_plugins), so a
third-party package adds a backend the same way; energy.MeteredBackend adds the energy of backends
that do not report it.

This package re-exports the shared API (eagerly: light) and the backend classes and specs
(lazily, on first access), so `from squeeze_perception.backends import TorchBackend` works and
importing the package loads no backend module, let alone torch or onnxruntime.
"""
from __future__ import annotations

import importlib

from .common import (INT8_SOURCE_KEY, MANIFEST_SUFFIX, ONNX_MODEL_KEY, QUANTIZE_COMMAND, InferenceBackend,
                     InputShapeError, ModelLoadError, check_input, export_onnx, exported_model, import_onnxruntime,
                     int8_path_for, load_state_dict, manifest_path, onnx_is_fresh, onnx_path_for, ort_session,
                     refuse_onnx_only, resolved_backend, sha256_file, verify_manifest_checksum)

# name -> the module (of this package) that defines it
_LAZY = {
    "TorchBackend": "torch_backend", "TORCH": "torch_backend",
    "TorchCudaBackend": "torch_backend", "TORCH_CUDA": "torch_backend",
    "OnnxRuntimeBackend": "onnxruntime_backend", "ONNXRUNTIME": "onnxruntime_backend",
    "OnnxRuntimeInt8Backend": "onnxruntime_int8", "ONNXRUNTIME_INT8": "onnxruntime_int8",
    "SynetgyBackend": "synetgy", "SYNETGY": "synetgy",
    "AutoBackend": "auto", "AUTO": "auto",
}

__all__ = ["INT8_SOURCE_KEY", "MANIFEST_SUFFIX", "ONNX_MODEL_KEY", "QUANTIZE_COMMAND", "InferenceBackend",
           "InputShapeError", "ModelLoadError", "check_input", "export_onnx", "exported_model",
           "import_onnxruntime", "int8_path_for", "load_state_dict", "manifest_path", "onnx_is_fresh",
           "onnx_path_for", "ort_session", "refuse_onnx_only", "resolved_backend", "sha256_file",
           "verify_manifest_checksum", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
