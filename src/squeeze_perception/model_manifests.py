"""Models registered by name from the manifests the offline tools save beside their weights
(`models/<name>.pt` + `models/<name>.manifest.json`, offline/manifest.py): a searched, a
mixed-precision or a distilled net runs in a node as `model:=<name>` once its two files are
copied into the models folder, with no code change.

Runtime code: it reads the JSON itself and imports nothing from `squeeze_perception.offline`.
A manifest is refused, with the reason said once per file version (a RuntimeWarning, kept in
MANIFEST_ERRORS), when it is unreadable, lacks a field the ModelSpec needs, or names a builder
outside this runtime package (a manifest is data: it must not make a node import arbitrary
code, nor the offline tooling). A manifest whose name is already registered (a built-in model,
an entry point) is skipped: it cannot replace that model. The checksum is not computed here but
on every load (backends.load_state_dict -> verify_manifest_checksum), where a mismatch is
refused with the reason and the node keeps its previous model (node_base.ModelSlot).
`<name>.int8.manifest.json` files describe the int8 graph of a model registered otherwise
(onnxruntime-int8 reads them) and are not models of their own.
"""
from __future__ import annotations

import json
import re
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .backends.common import MANIFEST_SUFFIX
from .paths import models_dir
from .registry import MODELS, ModelSpec, register_model

INT8_MANIFEST_SUFFIX = ".int8.manifest.json"
RUNTIME_PACKAGE = "squeeze_perception"
OFFLINE_PACKAGE = "squeeze_perception.offline"
TASKS = ("detection", "segmentation")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_BUILDER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class ManifestRefused(ValueError):
    """A manifest that cannot become a ModelSpec; the text says why."""


@dataclass(frozen=True)
class ManifestInfo:
    """What a manifest says about a model beyond its architecture: how it was made and measured."""

    path: Path  # the manifest file
    kind: str  # "searched" | "mixed-precision" | "distilled" | "trained"
    sha256: str  # of the weights, checked on every load
    metrics: Mapping[str, Any] = field(default_factory=dict)
    latency_ms: Mapping[str, float] = field(default_factory=dict)  # per backend / target
    params: int | None = None
    flops: int | None = None
    command: str = ""
    created_utc: str = ""
    searched_for: str | None = None  # DNAS latency target
    bits: tuple[str, ...] = ()  # mixed precision: 'w4a8' per convolution
    compression: float | None = None
    activations_quantized: bool = False  # the net emulates its activation bit-widths (act_quant)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for `squeeze-perception models`."""
        parts = [self.kind]
        if self.searched_for:
            parts.append(f"searched for {self.searched_for}")
        if self.bits:
            parts.append("bits " + " ".join(self.bits))
            parts.append("activations " + ("quantized" if self.activations_quantized else "float (not emulated)"))
        if self.compression is not None:
            parts.append(f"compression {self.compression:.1f}x")
        scalars = {k: v for k, v in self.metrics.items() if isinstance(v, (int, float))}
        if scalars:
            parts.append("metrics " + ", ".join(f"{k} {_fmt(v)}" for k, v in scalars.items()))
        if self.params is not None:
            parts.append(f"{self.params:,} params")
        if self.flops is not None:
            parts.append(f"{self.flops / 1e9:.2f} GFLOPs")
        if self.latency_ms:
            parts.append("latency " + ", ".join(f"{k} {_fmt(v)} ms" for k, v in self.latency_ms.items()))
        else:
            parts.append("no latency recorded")
        return "; ".join(parts)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def check_builder(builder: Any) -> str:
    """The builder must be a `module:callable` inside the runtime package (not under offline/)."""
    if not isinstance(builder, str) or not _BUILDER.match(builder):
        raise ManifestRefused(f"architecture builder {builder!r} is not a 'module:callable' string")
    module = builder.partition(":")[0]
    if module != RUNTIME_PACKAGE and not module.startswith(RUNTIME_PACKAGE + "."):
        raise ManifestRefused(f"builder '{builder}' is outside the {RUNTIME_PACKAGE} runtime package; a manifest "
                              "may only name one of its builders (e.g. squeeze_perception.segmentation."
                              "searched_net:build_searched_segnet)")
    if module == OFFLINE_PACKAGE or module.startswith(OFFLINE_PACKAGE + "."):
        raise ManifestRefused(f"builder '{builder}' is in the offline tooling, which the runtime never imports; "
                              "use the runtime builder of the architecture (segmentation/searched_net.py)")
    return builder


def _kind(extra: Mapping[str, Any]) -> str:
    if "bits" in extra:
        return "mixed-precision"
    if "removed_channels" in extra:
        return "distilled"
    if "searched_for" in extra:
        return "searched"
    return "trained"


def _get(manifest: Mapping[str, Any], *keys: str) -> Any:
    value: Any = manifest
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            raise ManifestRefused(f"it has no '{'.'.join(keys)}'")
        value = value[key]
    return value


def spec_from_manifest(path: Path, folder: Path | None = None) -> ModelSpec:
    """The ModelSpec a manifest describes; raises ManifestRefused with the reason."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestRefused(f"it cannot be read as JSON ({exc})") from exc
    if not isinstance(manifest, Mapping):
        raise ManifestRefused("it is not a JSON object")
    name = _get(manifest, "name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ManifestRefused(f"model name {name!r} is not a plain name (letters, digits, _ . -)")
    task = _get(manifest, "task")
    if task not in TASKS:
        raise ManifestRefused(f"task {task!r} is not one of {TASKS}")
    builder = check_builder(_get(manifest, "architecture", "builder"))
    kwargs = _get(manifest, "architecture", "kwargs")
    if not isinstance(kwargs, Mapping):
        raise ManifestRefused("architecture.kwargs is not an object")
    shape = _get(manifest, "input", "shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise ManifestRefused(f"input.shape {shape!r} is not [C, H, W]")
    classes = _get(manifest, "classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise ManifestRefused(f"classes {classes!r} is not a list of names")
    weights = _get(manifest, "weights", "file")
    sha256 = _get(manifest, "weights", "sha256")
    if not isinstance(weights, str) or Path(weights).name != weights or not weights.endswith(".pt"):
        raise ManifestRefused(f"weights.file {weights!r} is not a torch checkpoint's file name beside the manifest")
    # The load-time checksum check finds a checkpoint's manifest by its name (<stem>.manifest.json):
    # weights under another stem would load unchecked.
    if Path(weights).stem + MANIFEST_SUFFIX != path.name:
        raise ManifestRefused(f"weights.file '{weights}' does not belong to this manifest (expected "
                              f"'{path.name[: -len(MANIFEST_SUFFIX)]}.pt'), so its checksum could not be checked on load")
    extra = manifest.get("extra") or {}
    extra = extra if isinstance(extra, Mapping) else {}
    folder = Path(folder) if folder is not None else path.parent
    # A file under models/ is named as the built-in specs are; elsewhere by its absolute path.
    weights_ref = weights if folder.resolve() == models_dir().resolve() else str((folder / weights).resolve())
    info = ManifestInfo(
        path=path, kind=_kind(extra), sha256=str(sha256), metrics=dict(manifest.get("metrics") or {}),
        latency_ms=dict(manifest.get("latency_ms") or {}), params=manifest.get("params"),
        flops=manifest.get("flops"), command=str(manifest.get("command", "")),
        created_utc=str(manifest.get("created_utc", "")), searched_for=extra.get("searched_for"),
        bits=tuple(str(b) for b in extra.get("bits", ())), compression=extra.get("compression"),
        activations_quantized=bool(kwargs.get("act_quant")), extra=dict(extra))
    description = f"{info.kind} net from {path.name}"
    if info.searched_for:
        description += f" (searched for {info.searched_for})"
    return ModelSpec(name, task, builder, weights_ref, tuple(shape), tuple(classes), description,
                     builder_kwargs=dict(kwargs), manifest=info)


MANIFEST_ERRORS: dict[str, str] = {}  # manifest path -> why it was not registered
_lock = threading.Lock()
_read: dict[Path, tuple[int, int]] = {}  # manifest -> (mtime_ns, size) when last read
_registered: dict[str, Path] = {}  # model name -> the manifest it was registered from


def _forget(path: Path) -> None:
    for name, source in list(_registered.items()):
        if source == path:
            del _registered[name]
            spec = MODELS.get(name)
            if spec is not None and spec.manifest is not None and spec.manifest.path == path:
                del MODELS[name]


def register_manifest_models(folder: Path | None = None) -> list[str]:
    """Bring the registry in line with the manifests in `folder` (default the models folder):
    register new or changed ones, forget those gone. Returns the names registered from them."""
    folder = Path(folder) if folder is not None else models_dir()
    found = sorted(p for p in folder.glob("*" + MANIFEST_SUFFIX) if not p.name.endswith(INT8_MANIFEST_SUFFIX)) \
        if folder.is_dir() else []
    with _lock:
        for path in set(_read) - set(found):
            _forget(path)
            del _read[path]
            MANIFEST_ERRORS.pop(str(path), None)
        for path in found:
            try:
                st = path.stat()
            except OSError:
                continue
            stamp = (st.st_mtime_ns, st.st_size)
            if _read.get(path) == stamp:
                continue
            _read[path] = stamp
            _forget(path)
            MANIFEST_ERRORS.pop(str(path), None)
            try:
                spec = spec_from_manifest(path, folder)
            except ManifestRefused as exc:
                MANIFEST_ERRORS[str(path)] = str(exc)
                warnings.warn(f"model manifest '{path}' not registered: {exc}", RuntimeWarning, stacklevel=3)
                continue
            if spec.name in MODELS:  # a built-in, an entry point or another manifest has the name
                del _read[path]  # read again next time: the name may be free by then
                continue
            register_model(spec)
            _registered[spec.name] = path
        return sorted(_registered)
