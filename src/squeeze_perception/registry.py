"""One registry for models and one for inference backends, with typed metadata.

A node picks both by name from ROS parameters. Models and backends are found through two
Python entry-point groups, so another installed package can add one without editing this one:

    # its setup.py / pyproject.toml
    entry_points={"squeeze_perception.backends": ["mybackend = my_pkg.backend:MY_BACKEND_SPEC"],
                  "squeeze_perception.models": ["mymodels = my_pkg.models"]}

An entry point may name a BackendSpec / ModelSpec (registered under its own name), a callable
returning one or a list of them, or a module that calls `register_*` when imported. Our own
models and backends are entry points of this package (setup.py ENTRY_POINTS).
Builders and factories are "module:attr" strings so nothing heavy (torch) imports until used.

A model file is separate from its architecture: a ModelSpec's `weights` is either a torch
checkpoint (`.pt`, loaded into the module its `builder` makes) or an ONNX graph (`.onnx`, run as
is by the onnxruntime backends). A model that exists only as an ONNX file (a third-party
detector, a graph from another toolchain) has `builder=None`: it runs on `onnxruntime` (and
`onnxruntime-int8` when `<name>.int8.onnx` lies beside it); the torch and synetgy backends
refuse it with the reason (docs/accelerator.md, "Backends and models as entry points").

Models saved by the offline tools with a manifest (`models/<name>.manifest.json`: searched,
mixed-precision, distilled nets) are registered from it by name, with their metrics, latency
per backend and provenance as `ModelSpec.manifest` (model_manifests.py). Only builders inside
this runtime package are accepted, and the weights are checked against the manifest's sha256 on
every load (backends.verify_manifest_checksum).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .paths import models_dir

if TYPE_CHECKING:
    from .model_manifests import ManifestInfo


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


class NoTorchArchitecture(RuntimeError):
    """The model has no torch architecture (an ONNX-only ModelSpec, builder None)."""


ONNX_SUFFIX = ".onnx"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str  # "detection" | "segmentation"
    builder: str | None  # "module:callable" returning a torch.nn.Module; None: no torch architecture
    weights: str | None  # file under models/ (None: no trained weights shipped): a torch checkpoint
    #                      (.pt) for a builder, else the ONNX graph itself (.onnx)
    input_shape: tuple[int, ...]  # (C, H, W) the network expects
    classes: tuple[str, ...]
    description: str = ""
    builder_kwargs: dict[str, Any] = field(default_factory=dict)
    manifest: ManifestInfo | None = None  # set when registered from models/<name>.manifest.json

    def __post_init__(self) -> None:
        if self.builder is None and not str(self.weights or "").endswith(ONNX_SUFFIX):
            raise ValueError(f"model '{self.name}' has no builder, so its weights must be an ONNX file "
                             f"(weights='<file>{ONNX_SUFFIX}'), not {self.weights!r}")
        if self.builder is not None and str(self.weights or "").endswith(ONNX_SUFFIX):
            raise ValueError(f"model '{self.name}': a torch builder loads a torch checkpoint, not "
                             f"'{self.weights}'; register an ONNX-only model with builder=None")

    @property
    def onnx_only(self) -> bool:
        """No torch architecture: `weights` is the ONNX graph that onnxruntime runs as is."""
        return self.builder is None

    def weights_path(self) -> Path | None:
        return None if self.weights is None else models_dir() / self.weights

    def build(self):
        if self.builder is None:
            raise NoTorchArchitecture(f"model '{self.name}' has no torch architecture (ONNX only: "
                                      f"{self.weights}); use backend onnxruntime")
        return _resolve(self.builder)(**self.builder_kwargs)


@dataclass(frozen=True)
class BackendSpec:
    name: str
    factory: str  # "module:callable" (model_spec, **options) -> InferenceBackend
    device: str  # "cpu", "cuda", "fpga-emulated", ...
    description: str = ""
    provides_energy: bool = False  # reports energy per inference (e.g. Synetgy emulator)
    emulated: bool = False  # latency modelled rather than measured on the real device

    def create(self, model: ModelSpec, **options):
        return _resolve(self.factory)(model, **options)


MODELS: dict[str, ModelSpec] = {}
BACKENDS: dict[str, BackendSpec] = {}

MODEL_GROUP = "squeeze_perception.models"
BACKEND_GROUP = "squeeze_perception.backends"
# This package's own entry points (the same lines as setup.py ENTRY_POINTS, a test keeps them
# equal), used for those the installed metadata lacks: a source tree without installed metadata,
# or metadata from before an entry point existed (re-run `pip install --no-deps -e .`).
SOURCE_TREE_ENTRY_POINTS = {
    MODEL_GROUP: (
        "detection = squeeze_perception.detection.models",
        "segmentation = squeeze_perception.segmentation.models",
        "accelerator = squeeze_perception.accelerator.models",
    ),
    BACKEND_GROUP: (
        "torch = squeeze_perception.backends.torch_backend:TORCH",
        "torch-cuda = squeeze_perception.backends.torch_backend:TORCH_CUDA",
        "onnxruntime = squeeze_perception.backends.onnxruntime_backend:ONNXRUNTIME",
        "onnxruntime-int8 = squeeze_perception.backends.onnxruntime_int8:ONNXRUNTIME_INT8",
        "synetgy = squeeze_perception.backends.synetgy:SYNETGY",
        "auto = squeeze_perception.backends.auto:AUTO",
    ),
}
PLUGIN_ERRORS: dict[str, str] = {}  # "group:name" -> why that entry point was not loaded
_loaded = False


def _resolve(path: str) -> Callable[..., Any]:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def register_model(spec: ModelSpec) -> ModelSpec:
    MODELS[spec.name] = spec
    return spec


def register_backend(spec: BackendSpec) -> BackendSpec:
    BACKENDS[spec.name] = spec
    return spec


def plugin_entry_points() -> list[importlib.metadata.EntryPoint]:
    """Every entry point of both groups, models first (a backend may refer to a model). Ours come
    from the installed metadata, and from SOURCE_TREE_ENTRY_POINTS where it lacks them."""
    found = [ep for group in (MODEL_GROUP, BACKEND_GROUP)
             for ep in importlib.metadata.entry_points(group=group)]
    # Ours missing from the installed metadata (none: a source tree; some: metadata written before
    # an entry point was added, e.g. `auto`) come from the source tree's list.
    ours = {(ep.group, ep.name) for ep in found if ep.value.startswith("squeeze_perception.")}
    missing = [importlib.metadata.EntryPoint(*(part.strip() for part in line.split("=", 1)), group)
               for group, lines in SOURCE_TREE_ENTRY_POINTS.items() for line in lines]
    eps = [ep for ep in missing if (ep.group, ep.name) not in ours] + found
    return sorted(eps, key=lambda ep: ep.group != MODEL_GROUP)  # stable: models first, order kept


def _register_plugin(obj: Any) -> None:
    if isinstance(obj, BackendSpec):
        register_backend(obj)
    elif isinstance(obj, ModelSpec):
        register_model(obj)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _register_plugin(item)
    elif callable(obj) and not isinstance(obj, type):
        _register_plugin(obj())
    # a module: it registered what it defines when imported


def load_plugins() -> None:
    """Load every model / backend entry point once. One that fails to import (a missing optional
    dependency, a broken third-party package) is skipped with a warning and kept in
    PLUGIN_ERRORS, so it cannot take the other backends down."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ep in plugin_entry_points():
        try:
            _register_plugin(ep.load())
        except Exception as exc:  # noqa: BLE001 - one bad plugin must not break the registry
            PLUGIN_ERRORS[f"{ep.group}:{ep.name}"] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"{ep.group} entry point '{ep.name}' ({ep.value}) not loaded: {exc}", stacklevel=2)
    refresh_manifest_models()  # after the plugins: a manifest never replaces a registered name


def refresh_manifest_models() -> None:
    """Register the models whose manifests lie in the models folder now: one copied there while a
    node runs is found on the next lookup, one removed (or a changed SQUEEZE_PERCEPTION_MODELS)
    is forgotten. Files are re-read only when they change; a refused one is said once."""
    from .model_manifests import register_manifest_models

    try:
        register_manifest_models()
    except Exception as exc:  # noqa: BLE001 - a broken models folder must not break the registry
        PLUGIN_ERRORS["manifests"] = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"models from manifests not registered: {exc}", stacklevel=2)


def get_model(name: str, task: str | None = None) -> ModelSpec:
    load_plugins()
    refresh_manifest_models()  # a glob and a stat per manifest; files are parsed only when they change
    if name not in MODELS:
        raise RegistryError(f"unknown model '{name}'; known: {sorted(MODELS)}")
    spec = MODELS[name]
    if task is not None and spec.task != task:
        raise RegistryError(f"model '{name}' is a {spec.task} model, not {task}")
    return spec


def get_backend(name: str) -> BackendSpec:
    load_plugins()
    if name not in BACKENDS:
        why = PLUGIN_ERRORS.get(f"{BACKEND_GROUP}:{name}")
        raise RegistryError(f"unknown backend '{name}'; known: {sorted(BACKENDS)}"
                            + (f" ('{name}' failed to load: {why})" if why else ""))
    return BACKENDS[name]


def model_names(task: str | None = None) -> list[str]:
    load_plugins()
    refresh_manifest_models()
    return sorted(n for n, s in MODELS.items() if task is None or s.task == task)


def backend_names() -> list[str]:
    load_plugins()
    return sorted(BACKENDS)
