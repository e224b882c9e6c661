"""One registry for models and one for inference backends, with typed metadata.

A node picks both by name from ROS parameters; adding a model or backend means one
`register_*` call in the module that defines it (listed in _PLUGIN_MODULES), no node edits.
Builders and factories are "module:attr" strings so nothing heavy (torch) imports until used.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .paths import models_dir


class RegistryError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str  # "detection" | "segmentation"
    builder: str  # "module:callable" returning a torch.nn.Module
    weights: str | None  # file name under models/ (None: no trained weights shipped)
    input_shape: tuple[int, ...]  # (C, H, W) the network expects
    classes: tuple[str, ...]
    description: str = ""
    builder_kwargs: dict[str, Any] = field(default_factory=dict)

    def weights_path(self) -> Path | None:
        return None if self.weights is None else models_dir() / self.weights

    def build(self):
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

# Modules that register models/backends on import. Missing ones are skipped so a partial
# install (or a model family not built yet) does not break the others.
_PLUGIN_MODULES = (
    "squeeze_perception.backends",
    "squeeze_perception.detection.models",
    "squeeze_perception.segmentation.models",
    "squeeze_perception.accelerator.models",
    "squeeze_perception.accelerator.backend",
)
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


def load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _PLUGIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name is None or not mod.startswith(exc.name):
                raise


def get_model(name: str, task: str | None = None) -> ModelSpec:
    load_plugins()
    if name not in MODELS:
        raise RegistryError(f"unknown model '{name}'; known: {sorted(MODELS)}")
    spec = MODELS[name]
    if task is not None and spec.task != task:
        raise RegistryError(f"model '{name}' is a {spec.task} model, not {task}")
    return spec


def get_backend(name: str) -> BackendSpec:
    load_plugins()
    if name not in BACKENDS:
        raise RegistryError(f"unknown backend '{name}'; known: {sorted(BACKENDS)}")
    return BACKENDS[name]


def model_names(task: str | None = None) -> list[str]:
    load_plugins()
    return sorted(n for n, s in MODELS.items() if task is None or s.task == task)


def backend_names() -> list[str]:
    load_plugins()
    return sorted(BACKENDS)
