"""Batch-1 latency of a detection model on this CPU, against its compute bound.

The compute bound is the time the model's arithmetic would take at this machine's measured
peak: 2 x MACs / peak FLOP/s, where the peak is the best of several large fp32 matrix
multiplications (the most favourable kernel the CPU runs). ratio = measured latency /
bound, so 1.0 would mean the model runs at peak arithmetic throughput.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..registry import get_model
from .stats import model_stats


@dataclass
class BenchResult:
    model: str
    threads: int
    macs: int
    peak_gflops: float
    bound_ms: float
    torch_ms: float
    torch_ratio: float
    onnxruntime_ms: float | None
    onnxruntime_ratio: float | None
    repeats: int

    def as_dict(self) -> dict:
        return asdict(self)


def measure_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 FLOP/s of an n x n x n matmul (2 n^3 FLOPs) with torch's current threads."""
    import torch

    a = torch.randn(n, n)
    b = torch.randn(n, n)
    torch.mm(a, b)  # warm-up: thread pool and caches
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def _time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench(model: str = "squeezedet", repeats: int = 10, threads: int = 2, onnx: bool = True,
          progress=None) -> BenchResult:
    """Median batch-1 latency (ms) with torch and onnxruntime, the same random weights (or the
    shipped ones when present: latency does not depend on the values)."""
    import torch

    from ..backends import OnnxRuntimeBackend, TorchBackend

    torch.set_num_threads(threads)
    spec = get_model(model, task="detection")
    stats = model_stats(model)
    step = progress or (lambda msg: None)
    step("peak FLOP/s (2048^3 fp32 matmul)")
    peak = measure_peak_flops()
    bound_ms = 2 * stats.macs / peak * 1e3
    weights = spec.weights_path()
    have_weights = weights is not None and weights.exists()
    backend = TorchBackend(spec, weights=weights if have_weights else None, require_weights=False,
                           num_threads=threads)
    batch = np.zeros((1, *spec.input_shape), dtype=np.float32)
    step("torch latency")
    torch_ms = _time(lambda: backend.infer(batch), repeats)
    ort_ms = None
    if onnx:
        step("onnxruntime latency")
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / f"{model}.onnx"
            dummy = torch.zeros((1, *spec.input_shape))
            torch.onnx.export(backend.module, dummy, str(onnx_path), dynamo=False, opset_version=17,
                              input_names=["input"], dynamic_axes={"input": {0: "batch"}})
            ort = OnnxRuntimeBackend(spec, weights=onnx_path, num_threads=threads)
            ort_ms = _time(lambda: ort.infer(batch), repeats)
    return BenchResult(model=model, threads=threads, macs=stats.macs, peak_gflops=peak / 1e9, bound_ms=bound_ms,
                       torch_ms=torch_ms, torch_ratio=torch_ms / bound_ms,
                       onnxruntime_ms=ort_ms, onnxruntime_ratio=None if ort_ms is None else ort_ms / bound_ms,
                       repeats=repeats)
