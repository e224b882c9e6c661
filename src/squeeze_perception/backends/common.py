"""What every backend shares: the errors, the `InferenceBackend` protocol, the input check,
weights manifests and checksums, checkpoint loading, the ONNX export helpers, the one
onnxruntime session maker (telemetry off) and where int8 graphs live.

The backends themselves are one module each beside this one (torch_backend, onnxruntime_backend,
onnxruntime_int8, synetgy); nothing here imports torch or onnxruntime at module level.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..registry import ModelSpec


class ModelLoadError(RuntimeError):
    """Weights missing, corrupt or not matching the architecture."""


class InputShapeError(ValueError):
    """The input tensor does not have the shape the model was built for."""


class InferenceBackend(Protocol):
    spec: ModelSpec
    last_latency_ms: float | None
    last_energy_mj: float | None

    def infer(self, batch: np.ndarray) -> Any: ...


def resolved_backend(backend: Any, requested: str) -> tuple[str, str | None]:
    """(the backend that runs, why) of a backend object made under the name `requested`: one that
    chooses at load time (`auto`) says what it chose (`resolved_backend`) and why (`reason`);
    any other is what was asked for, with no reason."""
    name = getattr(backend, "resolved_backend", None)
    if isinstance(name, str) and name:
        reason = getattr(backend, "reason", None)
        return name, reason if isinstance(reason, str) else None
    return requested, None


def refuse_onnx_only(spec: ModelSpec, backend: str) -> None:
    """A backend that runs the torch architecture refuses a model that has none (builder None)."""
    if spec.onnx_only:
        raise ModelLoadError(f"model '{spec.name}' has no torch architecture (ONNX only: {spec.weights}); "
                             f"the {backend} backend cannot run it; use backend onnxruntime")


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


def onnx_path_for(weights: Path) -> Path:
    """Where the ONNX graph of a torch checkpoint lives: beside it (models/<name>.onnx), or in
    the user cache when that folder is read-only (e.g. an apt install) and holds no fresh copy."""
    beside = weights.with_suffix(".onnx")
    if onnx_is_fresh(beside, weights) or os.access(beside.parent, os.W_OK):
        return beside
    from ..paths import cache_dir

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

    from .torch_backend import TorchBackend

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
    from ..paths import cache_dir

    cached = cache_dir() / "models" / beside.name
    return cached if (cached.exists() or for_writing) else beside
