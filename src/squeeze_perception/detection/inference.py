"""A ready-to-use detector: registry model + backend + letterbox preprocessing + decoding.

Used by the ROS node and by `squeeze-perception det eval`, so both see exactly the same
pipeline. Boxes come back in the original image's pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backends import ModelLoadError
from ..energy import MeteredBackend
from ..registry import RegistryError, get_backend, get_model
from .data import Letterbox, preprocess
from .decode import DecodeConfig, decode


@dataclass
class Prediction:
    raw: np.ndarray  # (A, 5+C) all boxes, x1..y2 in original pixels, confidence, class probs
    detections: np.ndarray  # DETECTION_DTYPE rows in original pixels
    letterbox: Letterbox
    latency_ms: float | None  # the backend's inference latency (emulated device time when `emulated`)
    energy_mj: float | None = None  # energy of the inference (energy.py: backend, RAPL or model)
    energy_source: str = "none"
    emulated: bool = False
    counters: dict | None = None  # the backend's own counts (synetgy: frames on device / CPU)


class Detector:
    def __init__(self, model: str = "squeezedet", backend: str = "torch", weights: str | None = None,
                 decode_config: DecodeConfig = DecodeConfig(), num_threads: int = 0):
        try:
            self.spec = get_model(model, task="detection")
            backend_spec = get_backend(backend)
        except RegistryError as exc:
            raise ModelLoadError(str(exc)) from exc
        self.backend_name = backend
        self.backend = backend_spec.create(self.spec, weights=weights or None, num_threads=num_threads)
        self.meter = MeteredBackend(self.backend, backend_spec, self.spec)
        self.decode_config = decode_config
        _, self.input_height, self.input_width = self.spec.input_shape

    @property
    def name(self) -> str:
        return self.spec.name

    def predict(self, rgb: np.ndarray) -> Prediction:
        batch, lb = preprocess(rgb, self.input_width, self.input_height)
        run = self.meter.infer(batch)
        out = run.outputs
        raw = np.asarray(out[0] if isinstance(out, (tuple, list)) else out)[0].astype(np.float32)
        dets = decode(raw, self.decode_config)
        if len(dets):
            boxes = np.stack([dets["u_min"], dets["v_min"], dets["u_max"], dets["v_max"]], 1)
            dets["u_min"], dets["v_min"], dets["u_max"], dets["v_max"] = lb.to_original(boxes).T
        raw = raw.copy()
        raw[:, :4] = lb.to_original(raw[:, :4])
        return Prediction(raw, dets, lb, run.latency_ms, run.energy_mj, run.energy_source, run.emulated,
                          run.counters)

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        return self.predict(rgb).detections

    def warm_up(self) -> float | None:
        """One inference on a blank frame, so the first camera frame does not pay the lazy set-up
        of the backend and of the energy meter (1.4 s for the first frame, 60 ms after). Returns its ms;
        None, doing nothing, for an emulated backend (a real accelerator link would count and
        carry the frame)."""
        if self.meter.emulated:
            return None
        import time

        batch, _ = preprocess(np.zeros((self.input_height, self.input_width, 3), np.uint8), self.input_width,
                              self.input_height)
        t0 = time.perf_counter()
        self.meter.infer(batch)  # through the meter: its first call also counts the model's operations
        return (time.perf_counter() - t0) * 1e3
