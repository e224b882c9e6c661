"""Model manifests: every model the offline tools save gets `<name>.manifest.json` beside its
weights, holding what is needed to rebuild, trust and compare it:

  name, task, architecture (registry builder + its keyword arguments), input spec (C, H, W and
  the channel meaning), classes, weights (file, sha256, bytes), metrics, params, MACs/FLOPs,
  latency per backend (ms), the command that produced it, when, and the library versions.

Loading verifies the checksum (backends.verify_manifest_checksum, on every torch load, so the
ONNX export path too): a file that changed after its metrics were measured is refused with a
reason. A model card (Markdown) can be written from a manifest.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..backends import manifest_path, sha256_file

INPUT_CHANNELS = {5: ("x", "y", "z", "intensity", "range"), 6: ("x", "y", "z", "intensity", "range", "mask")}
MANIFEST_VERSION = 1


def build_manifest(weights: Path, *, name: str, task: str, builder: str, builder_kwargs: dict,
                   input_shape: tuple[int, ...], classes: tuple[str, ...] | list[str], metrics: dict,
                   latency_ms: dict[str, float], command: str, model: nn.Module | None = None,
                   extra: dict | None = None) -> dict[str, Any]:
    from .common import model_size

    size = model_size(model, tuple(input_shape)) if model is not None else {}
    return {
        "manifest_version": MANIFEST_VERSION,
        "name": name,
        "task": task,
        "architecture": {"builder": builder, "kwargs": builder_kwargs},
        "input": {"shape": list(input_shape), "dtype": "float32", "layout": "NCHW",
                  "channels": list(INPUT_CHANNELS.get(input_shape[0], ()))},
        "classes": list(classes),
        "weights": {"file": weights.name, "sha256": sha256_file(weights), "bytes": weights.stat().st_size},
        "metrics": metrics,
        "params": size.get("params"),
        "macs": size.get("macs"),
        "flops": 2 * size["macs"] if "macs" in size else None,
        "latency_ms": latency_ms,
        "command": command,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        **({"extra": extra} if extra else {}),
    }


def save_model_with_manifest(model: nn.Module, path: Path, *, name: str, task: str, builder: str,
                             builder_kwargs: dict, input_shape: tuple[int, ...], classes, metrics: dict,
                             latency_ms: dict[str, float], command: str, extra: dict | None = None) -> Path:
    """Weights in the project's checkpoint format ({'state_dict', 'model', 'meta'}) and the manifest
    beside them; the manifest is written last, so it never describes older bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "model": name,
                "meta": {"builder": builder, "builder_kwargs": builder_kwargs, "metrics": metrics}}, path)
    manifest = build_manifest(path, name=name, task=task, builder=builder, builder_kwargs=builder_kwargs,
                              input_shape=input_shape, classes=classes, metrics=metrics, latency_ms=latency_ms,
                              command=command, model=model, extra=extra)
    write_manifest(path, manifest)
    return path


def write_manifest(weights: Path, manifest: dict) -> Path:
    out = manifest_path(weights)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, default=_json_default) + "\n")
    tmp.replace(out)
    return out


def read_manifest(weights: Path) -> dict:
    return json.loads(manifest_path(weights).read_text())


def load_model(weights: Path) -> nn.Module:
    """Rebuild the architecture a manifest names and load its verified weights."""
    from ..backends import load_state_dict
    from ..registry import _resolve

    manifest = read_manifest(weights)
    arch = manifest["architecture"]
    model = _resolve(arch["builder"])(**arch["kwargs"])
    model.load_state_dict(load_state_dict(Path(weights)), strict=True)  # verifies the sha256 first
    return model.eval()


def measure_latency_ms(manifest_file: Path, backends: list[str], frames: int = 20, warmup: int = 2,
                       num_threads: int = 1) -> tuple[dict[str, float], dict[str, str]]:
    """Median latency (ms) of the network call per backend for the model a manifest describes:
    batch 1, a random raw grid of its input shape, the backend's own `last_latency_ms` (modelled
    for an emulated backend). Returns (latency per backend, why a backend could not run it)."""
    import numpy as np

    from ..model_manifests import spec_from_manifest
    from ..registry import get_backend

    spec = spec_from_manifest(Path(manifest_file))
    rng = np.random.default_rng(0)
    batch = (rng.uniform(0, 1, (1, *spec.input_shape)) * 20).astype(np.float32)
    latency, refused = {}, {}
    for name in backends:
        try:
            backend = get_backend(name).create(spec, num_threads=num_threads)
            times = []
            for i in range(warmup + frames):
                backend.infer(batch)
                if i >= warmup:
                    times.append(float(backend.last_latency_ms))
        except Exception as exc:  # noqa: BLE001 - a backend that cannot run the model is reported, not fatal
            refused[name] = f"{type(exc).__name__}: {exc}"
            continue
        latency[name] = float(np.median(times))
    return latency, refused


def model_card(manifest: dict) -> str:
    """A Markdown model card from a manifest."""
    lines = [f"# {manifest['name']}", "", f"Task: {manifest['task']}; input {manifest['input']['shape']} "
             f"({', '.join(manifest['input']['channels'])}); classes {', '.join(manifest['classes'])}.", "",
             f"Architecture: `{manifest['architecture']['builder']}` with "
             f"`{json.dumps(manifest['architecture']['kwargs'])}`.", "",
             f"Weights: `{manifest['weights']['file']}`, sha256 `{manifest['weights']['sha256']}`.", "",
             "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in manifest["metrics"].items()]
    lines += [f"| params | {manifest['params']:,} |" if manifest.get("params") is not None else "",
              f"| FLOPs (2 x MACs) | {manifest['flops']:,} |" if manifest.get("flops") is not None else ""]
    lines += ["", "| backend | latency (ms) |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" if isinstance(v, (int, float)) else f"| {k} | {v} |"
              for k, v in manifest["latency_ms"].items()]
    if not manifest["latency_ms"]:
        lines.append("| (none recorded) | |")
    where = manifest.get("latency_measured")
    if where:  # written by `offline card --latency`
        lines += ["", f"Timed by `offline card --latency` on {', '.join(where['backends'])}: {where['frames']} calls, "
                  f"{where['threads']} thread(s), {where['input']}, host {where['host']} ({where['cpu']}), "
                  f"{where['utc']}; the median is shown."]
    lines += _details(manifest)
    lines += ["", f"Produced by: `{manifest['command']}` ({manifest['created_utc']})."]
    return "\n".join(line for line in lines if line is not None) + "\n"


def _details(manifest: dict) -> list[str]:
    """How the model was made, from the manifest's `extra` (DNAS target, mixed-precision bits,
    Distill-Net channels), so a card tells a searched, quantized or distilled net apart."""
    extra = manifest.get("extra") or {}
    act_quant = manifest["architecture"]["kwargs"].get("act_quant")
    rows = []
    if "searched_for" in extra:
        rows.append(f"- Searched for the latency target `{extra['searched_for']}`.")
    if "bits" in extra:
        rows.append(f"- Bits per convolution (weights/activations): {' '.join(map(str, extra['bits']))}.")
        rows.append("- Activations: " + (f"quantized at inference (PACT on {len(act_quant)} convolution inputs)."
                                          if act_quant else "float at inference (the bit-widths are recorded only)."))
    if "compression" in extra:
        rows.append(f"- Compression against 32 bits ({extra.get('cost', 'size')} cost): {_fmt(extra['compression'])}x.")
    if "removed_channels" in extra:
        removed = extra["removed_channels"]
        total = sum(removed.values()) if isinstance(removed, dict) else removed
        rows.append(f"- Distill-Net removed {total} hidden channels.")
    return ["", "How it was made:", "", *rows] if rows else []


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
