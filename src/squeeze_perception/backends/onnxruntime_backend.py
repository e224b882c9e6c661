"""The `onnxruntime` backend: ONNX Runtime's CPU execution provider over the graph exported from
the torch checkpoint (models/<name>.onnx, exported on first use when missing or stale), or, for an
ONNX-only model (ModelSpec builder None, weights `<file>.onnx`), over that file as it is: no
export and no staleness check (there is no checkpoint); the input is checked against the spec's
input_shape as for every model. Entry point `onnxruntime` (setup.py ENTRY_POINTS); onnxruntime is
imported when a backend is made."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import BackendSpec, ModelSpec, register_backend
from .common import (ONNX_MODEL_KEY, ModelLoadError, check_input, export_onnx, exported_model, import_onnxruntime,
                     onnx_is_fresh, onnx_path_for, ort_session, verify_manifest_checksum)


class OnnxRuntimeBackend:
    """ONNX Runtime CPU execution provider over an exported graph (models/<name>.onnx)."""

    # SessionOptions config entries (add_session_config_entry) a subclass needs
    session_config: dict[str, str] = {}

    def __init__(self, spec: ModelSpec, weights: str | Path | None = None, num_threads: int = 0):
        ort = import_onnxruntime()

        self.spec = spec
        self.last_latency_ms: float | None = None
        self.last_energy_mj: float | None = None
        if weights and str(weights).endswith(".onnx"):
            path = Path(weights)
        elif spec.onnx_only:
            if weights:
                raise ModelLoadError(f"model '{spec.name}' has no torch architecture (ONNX only), so weights "
                                     f"'{weights}' cannot be run; give an .onnx file")
            path = spec.weights_path()
            if not path.exists():
                raise ModelLoadError(f"ONNX model file '{path}' of model '{spec.name}' not found (an ONNX-only "
                                     "model is run as is: put the file in the models folder)")
            verify_manifest_checksum(path)  # its own manifest, when it has one
        else:
            base = Path(weights) if weights else spec.weights_path()
            if base is None:
                raise ModelLoadError(f"model '{spec.name}' has no trained weights registered")
            path = onnx_path_for(base)
            if base.exists():
                # A graph exported before the checkpoint was swapped under its manifest must not
                # run either: the checkpoint is checked here, not only when an export happens.
                verify_manifest_checksum(base)
            if base.exists() and not (onnx_is_fresh(path, base) and exported_model(path) == spec.name):
                # Export from the torch checkpoint so users need no separate step; again when
                # the checkpoint is newer (retrained weights must not run a stale graph) or the
                # file holds another model (loading these weights into this model then fails
                # with the reason, as with the torch backend).
                try:
                    export_onnx(spec, path, weights=base)
                except OSError as exc:
                    raise ModelLoadError(f"cannot write the ONNX file '{path}': {exc}") from exc
            elif not base.exists() and not path.exists():
                raise ModelLoadError(
                    f"weights file '{base}' not found, so no ONNX file can be exported from it; restore it "
                    f"(a colcon build installs models/*.pt into share/squeeze_perception/models) or train it "
                    f"(models/README.md), then run `squeeze-perception export {spec.name}` (in a colcon workspace: "
                    f"`ros2 run squeeze_perception squeeze-perception export {spec.name}`)")
        if not path.exists():
            raise ModelLoadError(f"ONNX file '{path}' not found (squeeze-perception export {spec.name} "
                                 f"--weights WEIGHTS.pt --out {path}; in a colcon workspace: ros2 run "
                                 f"squeeze_perception squeeze-perception export ...)")
        opts = ort.SessionOptions()
        if num_threads > 0:
            opts.intra_op_num_threads = num_threads
        for key, value in self.session_config.items():
            opts.add_session_config_entry(key, value)
        try:
            self.session = ort_session(str(path), opts)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"ONNX file '{path}' cannot be loaded: {exc}") from exc
        self.input_name = self.session.get_inputs()[0].name
        exported_for = self.session.get_modelmeta().custom_metadata_map.get(ONNX_MODEL_KEY)
        if exported_for is not None and exported_for != spec.name:
            raise ModelLoadError(f"ONNX file '{path}' holds model '{exported_for}', not '{spec.name}'")

    def infer(self, batch: np.ndarray) -> Any:
        check_input(self.spec, batch)
        t0 = time.perf_counter()
        outs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        self.last_latency_ms = (time.perf_counter() - t0) * 1e3
        return outs[0] if len(outs) == 1 else tuple(outs)


# Entry point of the squeeze_perception.backends group (setup.py ENTRY_POINTS).
ONNXRUNTIME = register_backend(BackendSpec(
    "onnxruntime", "squeeze_perception.backends.onnxruntime_backend:OnnxRuntimeBackend", "cpu",
    "ONNX Runtime, CPU execution provider"))
