"""The `auto` backend, the model nodes' default: the fastest configuration that keeps accuracy.

At load time it runs `onnxruntime-int8` when the model has a usable int8 graph (the int8 backend
loads without ModelLoadError: `<weights>.int8.onnx` present, its manifest checksum right, quantized
from the current weights), else `onnxruntime` (fp32), with the int8 backend's refusal as the reason.
Measured (docs/performance.md, "int8 backend"): int8 is the fastest CPU backend here at equal
accuracy (SqueezeDet car AP within 0.1, SqueezeSegV2 IoU within 1 point), but only the shipped
squeezedet and squeezesegv2 have an int8 graph, so an `onnxruntime-int8` default would refuse
every other model.

The same rule holds for given weights: a checkpoint's int8 graph lies beside it (or in the user
cache, backends.int8_path_for); for an `.onnx` file (an ONNX-only model, or a graph given as
`weights`) it is `<file>.int8.onnx` beside it, checked against the file it was quantized from.
The choice is never silent: `resolved_backend` names the backend that runs, `reason` says why,
and `resolved_spec` is its BackendSpec (energy.MeteredBackend meters with it); the model nodes
log both once per load and report them in their diagnostics (`backend`, `backend_reason`).
Entry point `auto` (setup.py ENTRY_POINTS)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..registry import BackendSpec, ModelSpec, get_backend, register_backend
from .common import ModelLoadError, int8_path_for

INT8, FP32 = "onnxruntime-int8", "onnxruntime"


def _shown(path: Path) -> str:
    """The path as a user reads it: relative to the project root when inside it (models/x.int8.onnx)."""
    from ..paths import project_root

    try:
        return str(Path(path).resolve().relative_to(project_root().resolve()))
    except (ValueError, OSError):
        return str(path)


class AutoBackend:
    """`onnxruntime-int8` when it loads, else `onnxruntime`; `backend` is the one chosen, which
    runs every call (outputs, latency and attributes are its own)."""

    def __init__(self, spec: ModelSpec, weights: str | Path | None = None, num_threads: int = 0):
        from .onnxruntime_backend import OnnxRuntimeBackend
        from .onnxruntime_int8 import OnnxRuntimeInt8Backend

        self.spec = spec
        try:
            if weights and str(weights).endswith(".onnx") and not str(weights).endswith(".int8.onnx"):
                # a given fp32 graph: its int8 graph is the one beside it, made from it
                chosen: Any = OnnxRuntimeInt8Backend(spec, weights=int8_path_for(Path(weights)),
                                                     num_threads=num_threads, made_from=weights)
            else:
                chosen = OnnxRuntimeInt8Backend(spec, weights=weights, num_threads=num_threads)
        except ModelLoadError as int8_exc:
            try:
                chosen = OnnxRuntimeBackend(spec, weights=weights, num_threads=num_threads)
            except ModelLoadError as exc:
                raise ModelLoadError(f"{exc} (backend auto: onnxruntime-int8 did not load either: {int8_exc})") \
                    from exc
            self.resolved_backend = FP32
            self.reason = f"no int8 graph for model '{spec.name}': {int8_exc}, running fp32 onnxruntime"
        else:
            self.resolved_backend = INT8
            self.reason = f"int8 graph {_shown(chosen.weights_path)}"
        self.backend = chosen
        self.resolved_spec: BackendSpec = get_backend(self.resolved_backend)

    # the InferenceBackend protocol, answered by the chosen backend
    @property
    def last_latency_ms(self) -> float | None:
        return self.backend.last_latency_ms

    @property
    def last_energy_mj(self) -> float | None:
        return self.backend.last_energy_mj

    def infer(self, batch: np.ndarray) -> Any:
        return self.backend.infer(batch)

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()

    def __getattr__(self, name: str) -> Any:
        # anything else (session, input_name, weights_path, device, ...) is the chosen backend's;
        # `backend` itself missing (a failed __init__) must not recurse
        if name == "backend":
            raise AttributeError(name)
        return getattr(self.backend, name)

    def __repr__(self) -> str:
        return f"AutoBackend({self.spec.name!r} -> {self.resolved_backend}: {self.reason})"


# Entry point of the squeeze_perception.backends group (setup.py ENTRY_POINTS).
AUTO = register_backend(BackendSpec(
    "auto", "squeeze_perception.backends.auto:AutoBackend", "cpu",
    "onnxruntime-int8 when the model has a usable int8 graph, else onnxruntime (fp32); says which and why"))
