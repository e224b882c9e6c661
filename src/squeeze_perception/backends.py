"""Inference backends: the same model run by PyTorch or ONNX Runtime on the CPU.

Every backend follows `InferenceBackend`: construct with a ModelSpec (loads weights or
raises ModelLoadError with a user-facing reason), `infer(batch)` -> numpy outputs. The
Synetgy FPGA emulator (accelerator/backend.py) is one more BackendSpec, reporting energy via
`last_energy_mj` and an emulated latency via `last_latency_ms`. Each spec is an entry point of
the `squeeze_perception.backends` group (registry.py); energy.MeteredBackend adds the energy
of backends that do not report it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .registry import BackendSpec, ModelSpec, register_backend


class ModelLoadError(RuntimeError):
    """Weights missing, corrupt or not matching the architecture."""


class InputShapeError(ValueError):
    """The input tensor does not have the shape the model was built for."""


class InferenceBackend(Protocol):
    spec: ModelSpec
    last_latency_ms: float | None
    last_energy_mj: float | None

    def infer(self, batch: np.ndarray) -> Any: ...


def check_input(spec: ModelSpec, batch: np.ndarray) -> None:
    if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(spec.input_shape):
        raise InputShapeError(
            f"model '{spec.name}' expects input (N, {', '.join(map(str, spec.input_shape))}), "
            f"got {tuple(batch.shape)}")


MANIFEST_SUFFIX = ".manifest.json"


def manifest_path(weights: Path) -> Path:
    """The manifest the offline tools write beside a model (models/<name>.manifest.json)."""
    return Path(weights).with_suffix(MANIFEST_SUFFIX)


def sha256_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_manifest_checksum(weights: Path) -> None:
    """Weights saved with a manifest must still be the bytes it describes: a model retrained,
    truncated or swapped after its metrics were measured is refused with the reason. Weights
    without a manifest (the hand-made cards of models/) load as before."""
    import json

    man = manifest_path(weights)
    if not man.exists():
        return
    try:
        expected = json.loads(man.read_text())["weights"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"manifest '{man}' of weights '{weights}' is unreadable ({exc}); "
                             "re-save the model with its manifest or remove the manifest") from exc
    actual = sha256_file(weights)
    if actual != expected:
        raise ModelLoadError(
            f"weights '{weights}' do not match their manifest '{man}': sha256 {actual[:16]}..., manifest says "
            f"{str(expected)[:16]}...; the file changed after its metrics were recorded (re-save the model "
            "with its manifest, or restore the original file)")


def load_state_dict(path: Path) -> dict[str, Any]:
    """Our checkpoint format: {'state_dict', 'model', 'meta'} (or a bare state_dict)."""
    import torch

    if not path.exists():
        raise ModelLoadError(
            f"weights file '{path}' not found; train it (see models/README.md) or set the "
            "'weights' parameter to an existing file")
    verify_manifest_checksum(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise ModelLoadError(f"weights file '{path}' is corrupt or not a torch checkpoint: {exc}") from exc
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelLoadError(f"weights file '{path}' does not hold a state_dict")
    return obj


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


def onnx_path_for(weights: Path) -> Path:
    """Where the ONNX graph of a torch checkpoint lives: beside it (models/<name>.onnx), or in
    the user cache when that folder is read-only (e.g. an apt install) and holds no fresh copy."""
    beside = weights.with_suffix(".onnx")
    if onnx_is_fresh(beside, weights) or os.access(beside.parent, os.W_OK):
        return beside
    from .paths import cache_dir

    return cache_dir() / "models" / beside.name


def onnx_is_fresh(onnx: Path, weights: Path) -> bool:
    """The ONNX file exists and is not older than the checkpoint it was exported from."""
    return onnx.exists() and (not weights.exists() or onnx.stat().st_mtime >= weights.stat().st_mtime)


def exported_model(path: Path) -> str | None:
    """The registry model name stamped into an ONNX file by export_onnx (None: not ours/unknown)."""
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable: treat as unknown, the caller re-exports
        return None
    return next((p.value for p in graph.metadata_props if p.key == ONNX_MODEL_KEY), None)


def export_onnx(spec: ModelSpec, out_path: Path, weights: str | Path | None = None) -> Path:
    import torch

    backend = TorchBackend(spec, weights=weights)
    dummy = torch.zeros((1, *spec.input_shape), dtype=torch.float32)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed: a reader (another node exporting the same model,
    # an interrupted export) never sees a half-written graph.
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        torch.onnx.export(backend.module, dummy, str(tmp), dynamo=False, opset_version=17,
                          input_names=["input"], dynamic_axes={"input": {0: "batch"}})
        _stamp_model_name(tmp, spec.name)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


ONNX_MODEL_KEY = "squeeze_perception.model"


def _stamp_model_name(path: Path, name: str) -> None:
    """Record which registry model the graph is, so another model's weights beside it (the same
    models/<x>.onnx name) are never run silently under the wrong name."""
    import onnx

    graph = onnx.load(str(path))
    entry = graph.metadata_props.add()
    entry.key, entry.value = ONNX_MODEL_KEY, name
    onnx.save(graph, str(path))


def import_onnxruntime():
    """onnxruntime with its telemetry off. Since 1.29 the official Linux wheels send usage
    events (session creation: model names and hashes) to a Microsoft collector and resolve its
    host name about 20 times a minute (issue 16): a perception stack on a vehicle must send
    nothing off the machine. Measured with strace on 1.31.1 (docs/performance.md): a bare
    session makes DNS queries within 20 s; `disable_telemetry_events()` alone does not stop
    them, nor does ORT_DISABLE_TELEMETRY set after the import; the variable set before
    `import onnxruntime` does. The package __init__ sets it at import time, this sets it again
    for callers that bypass the package, and the API call is kept as the documented switch."""
    import os

    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    if hasattr(ort, "disable_telemetry_events"):
        ort.disable_telemetry_events()
    return ort


def ort_session(model, opts=None, providers=("CPUExecutionProvider",)):
    """The one place an onnxruntime InferenceSession is made (telemetry off, see above)."""
    ort = import_onnxruntime()
    opts = opts if opts is not None else ort.SessionOptions()
    return ort.InferenceSession(model, opts, providers=list(providers))


class OnnxRuntimeBackend:
    """ONNX Runtime CPU execution provider over an exported graph (models/<name>.onnx)."""

    def __init__(self, spec: ModelSpec, weights: str | Path | None = None, num_threads: int = 0):
        ort = import_onnxruntime()

        self.spec = spec
        self.last_latency_ms: float | None = None
        self.last_energy_mj: float | None = None
        if weights and str(weights).endswith(".onnx"):
            path = Path(weights)
        else:
            base = Path(weights) if weights else spec.weights_path()
            if base is None:
                raise ModelLoadError(f"model '{spec.name}' has no trained weights registered")
            path = onnx_path_for(base)
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


INT8_SOURCE_KEY = "squeeze_perception.int8.source_sha256"  # sha256 of the checkpoint it was quantized from
QUANTIZE_COMMAND = "squeeze-perception offline quantize-int8 --model {name}"


def int8_path_for(weights: Path, for_writing: bool = False) -> Path:
    """Where the int8 graph of a torch checkpoint lives: models/<name>.int8.onnx beside it (the
    files made by `offline quantize-int8` are committed there and installed with the weights),
    else the user cache (a read-only models/ folder); `for_writing`: where a new one goes."""
    weights = Path(weights)
    beside = weights.with_name(f"{weights.stem}.int8.onnx")
    if beside.exists() or (for_writing and os.access(beside.parent, os.W_OK)):
        return beside
    from .paths import cache_dir

    cached = cache_dir() / "models" / beside.name
    return cached if (cached.exists() or for_writing) else beside


class OnnxRuntimeInt8Backend(OnnxRuntimeBackend):
    """ONNX Runtime over the statically quantized graph (models/<name>.int8.onnx: QDQ, per-channel
    int8 weights, uint8 activations, input normalisation and output layers in fp32), made
    offline by `squeeze-perception offline quantize-int8` (offline/quantize.py). Never made on
    the fly: calibration needs the synthetic data set and minutes, so a missing file is refused
    with the command that creates it, and a file quantized from other weights than the
    checkpoint beside it is refused too (it would run stale weights)."""

    def __init__(self, spec: ModelSpec, weights: str | Path | None = None, num_threads: int = 0):
        command = QUANTIZE_COMMAND.format(name=spec.name)
        source: Path | None = None
        if weights and str(weights).endswith(".onnx"):
            path = Path(weights)
        else:
            base = Path(weights) if weights else spec.weights_path()
            if base is None:
                raise ModelLoadError(f"model '{spec.name}' has no trained weights registered, so it has no int8 "
                                     "graph")
            source = base
            path = int8_path_for(base)
            if weights:
                command += f" --weights {base}"
        if not path.exists():
            raise ModelLoadError(f"int8 model file '{path}' not found; create it with `{command}` "
                                 "(static quantization calibrated on the synthetic data)")
        verify_manifest_checksum(path)
        self._check_source(path, source, command)
        try:
            super().__init__(spec, weights=path, num_threads=num_threads)
        except ModelLoadError as exc:
            raise ModelLoadError(f"{exc}; re-create it with `{command}`") from exc
        self.weights_path = path

    @staticmethod
    def _check_source(path: Path, source: Path | None, command: str) -> None:
        if source is None or not source.exists():
            return
        try:
            import onnx

            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"int8 model file '{path}' cannot be read ({exc}); re-create it with "
                                 f"`{command}`") from exc
        made_from = meta.get(INT8_SOURCE_KEY)
        if made_from is not None and made_from != sha256_file(source):
            raise ModelLoadError(
                f"int8 model file '{path}' was quantized from other weights than '{source}' (sha256 "
                f"{made_from[:16]}...); the checkpoint changed since: re-create it with `{command}`")


# Entry points of the squeeze_perception.backends group (setup.py ENTRY_POINTS).
TORCH = register_backend(BackendSpec("torch", "squeeze_perception.backends:TorchBackend", "cpu",
                             "PyTorch eager, CPU (reference)"))
ONNXRUNTIME = register_backend(BackendSpec("onnxruntime", "squeeze_perception.backends:OnnxRuntimeBackend", "cpu",
                             "ONNX Runtime, CPU execution provider"))
ONNXRUNTIME_INT8 = register_backend(BackendSpec(
    "onnxruntime-int8", "squeeze_perception.backends:OnnxRuntimeInt8Backend", "cpu",
    "ONNX Runtime, CPU, static int8 (QDQ) graph from `offline quantize-int8`"))
