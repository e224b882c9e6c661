"""Batch-1 latency of a detection model on this CPU, against its compute bound.

The compute bound is the time the model's arithmetic would take at this machine's measured
peak: 2 x MACs / peak FLOP/s, where the peak is the best of many 1024^3 fp32 matrix
multiplications (torch.mm and ONNX Runtime's MatMul) timed between the model runs, the most
favourable kernel this CPU runs. ratio = measured latency /
bound, so 1.0 would mean the model runs at peak arithmetic throughput.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ...registry import get_model
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
    load_average: float  # 1-min load average at the end (this CPU is shared)
    # onnxruntime-int8 (models/<model>.int8.onnx), against the int8 bound: 2 x MACs / the best
    # u8 x s8 MatMulInteger rate (MLAS, VNNI where the CPU has it), timed in the same rounds
    int8_ms: float | None = None
    int8_peak_gops: float | None = None
    int8_bound_ms: float | None = None
    int8_ratio: float | None = None  # latency / int8 bound, as torch_ratio
    int8_skipped: str | None = None  # why int8 was not measured (no int8 file, ...)
    # further int8 graphs / session settings timed in the same rounds (label -> median ms)
    int8_variants_ms: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


PEAK_N = 1024  # 2 GFLOP per call: long enough to time, short enough to catch a quiet moment


def measure_peak_flops(n: int = PEAK_N, repeats: int = 5, dtype: str = "float32") -> float:
    """Best FLOP/s of an n x n x n torch.mm (2 n^3 FLOPs) in `dtype` with torch's current threads
    (bfloat16: oneDNN uses AVX-512 BF16 where the CPU has it)."""
    import torch

    a = torch.randn(n, n).to(getattr(torch, dtype))
    b = torch.randn(n, n).to(getattr(torch, dtype))
    torch.mm(a, b)  # warm-up: thread pool and caches
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def _ort_single_op_session(op: str, a_type, b_type, c_type, n: int, threads: int):
    """An ONNX Runtime session of one n x n x n matrix op (the peak measurements below)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["c"])], f"peak_{op}",
                              [helper.make_tensor_value_info("a", a_type, [n, n]),
                               helper.make_tensor_value_info("b", b_type, [n, n])],
                              [helper.make_tensor_value_info("c", c_type, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION, 9)
    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_matmul_runner(n: int = PEAK_N, threads: int = 0):
    """A callable running an n x n x n fp32 MatMul in ONNX Runtime (MLAS GEMM), which on this
    CPU is faster than torch.mm; the peak is the best of both kernels."""
    from onnx import TensorProto

    sess = _ort_single_op_session("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT, n, threads)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((n, n), dtype=np.float32), "b": rng.standard_normal((n, n), dtype=np.float32)}
    return lambda: sess.run(None, feeds)


def ort_int8_matmul_runner(n: int = PEAK_N, threads: int = 0):
    """A callable running an n x n x n uint8 x int8 -> int32 MatMulInteger in ONNX Runtime: the
    MLAS quantized GEMM (AVX512-VNNI / AVX-VNNI where present) that the QLinearConv kernels of
    the int8 graphs use, so its best rate is the int8 peak (2 n^3 integer ops per call)."""
    from onnx import TensorProto

    sess = _ort_single_op_session("MatMulInteger", TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, n, threads)
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(0, 256, (n, n), dtype=np.uint8), "b": rng.integers(-128, 128, (n, n), dtype=np.int8)}
    return lambda: sess.run(None, feeds)


def _time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def int8_backend(spec, path: str | Path | None = None, config: dict[str, str] | None = None, threads: int = 0):
    """The onnxruntime-int8 backend over `path` (default: the committed graph) with session config
    entries added to the backend's own (a setting to compare, not what the backend runs)."""
    from ...backends import OnnxRuntimeInt8Backend

    cls = OnnxRuntimeInt8Backend
    if config:
        cls = type("OnnxRuntimeInt8Variant", (OnnxRuntimeInt8Backend,),
                   {"session_config": {**OnnxRuntimeInt8Backend.session_config, **config}})
    return cls(spec, weights=path, num_threads=threads)


def bench(model: str = "squeezedet", repeats: int = 10, threads: int = 2, onnx: bool = True,
          progress=None, int8: bool = True, int8_variants: dict[str, tuple] | None = None) -> BenchResult:
    """Median batch-1 latency (ms) with torch and onnxruntime (the shipped weights when present,
    else random ones: latency does not depend on the values); peak = best matmul round.
    int8_variants: label -> (int8 ONNX file or None for the committed one, session config dict),
    timed in the same interleaved rounds (quantization / ORT settings side by side)."""
    import torch

    from ...backends import ModelLoadError, OnnxRuntimeBackend, OnnxRuntimeInt8Backend, load_state_dict

    torch.set_num_threads(threads)
    spec = get_model(model, task="detection")
    stats = model_stats(model)
    step = progress or (lambda msg: None)
    module = spec.build().eval()
    weights = spec.weights_path()
    if weights is not None and weights.exists():
        module.load_state_dict(load_state_dict(weights))
    x = torch.zeros((1, *spec.input_shape))
    batch = x.numpy()

    def run_torch():  # what TorchBackend.infer does
        with torch.inference_mode():
            module(x).numpy()

    a, b = torch.randn(PEAK_N, PEAK_N), torch.randn(PEAK_N, PEAK_N)
    runners = {"matmul": lambda: torch.mm(a, b), "ort_matmul": ort_matmul_runner(PEAK_N, threads),
               "torch": run_torch}
    with tempfile.TemporaryDirectory() as tmp:
        if onnx:
            step("exporting ONNX")
            onnx_path = Path(tmp) / f"{model}.onnx"
            torch.onnx.export(module, x, str(onnx_path), dynamo=False, opset_version=17,
                              input_names=["input"], dynamic_axes={"input": {0: "batch"}})
            ort = OnnxRuntimeBackend(spec, weights=onnx_path, num_threads=threads)
            runners["onnxruntime"] = lambda: ort.infer(batch)
        int8_skipped = None if int8 else "not asked for"
        if int8:  # the committed int8 graph of the shipped weights (it holds its own weights)
            try:
                q = OnnxRuntimeInt8Backend(spec, num_threads=threads)
                runners["onnxruntime-int8"] = lambda: q.infer(batch)
                runners["ort_int8_matmul"] = ort_int8_matmul_runner(PEAK_N, threads)
            except ModelLoadError as exc:
                int8_skipped = str(exc)
                step(f"int8 skipped: {exc}")
        for label, (path, config) in (int8_variants or {}).items():
            variant = int8_backend(spec, path, config, threads)
            runners[f"int8:{label}"] = lambda v=variant: v.infer(batch)
            runners.setdefault("ort_int8_matmul", ort_int8_matmul_runner(PEAK_N, threads))
        # Interleaved rounds: on a shared machine the load drifts, so every round times the
        # peak kernel and each backend back to back and the ratios compare like with like.
        times = {k: [] for k in runners}
        for fn in runners.values():
            fn()  # warm-up
        for r in range(repeats):
            step(f"round {r + 1}/{repeats}")
            for k, fn in runners.items():
                if k.endswith("matmul"):  # best of 3 short calls: the peak is what the CPU can do
                    times[k].append(min(_time(fn, 1, warmup=0) for _ in range(3)))
                else:
                    times[k].append(_time(fn, 1, warmup=0))
    peak = 2 * PEAK_N ** 3 / (min(times["matmul"] + times["ort_matmul"]) / 1e3)
    bound_ms = 2 * stats.macs / peak * 1e3
    torch_ms = statistics.median(times["torch"])
    ort_ms = statistics.median(times["onnxruntime"]) if onnx else None
    int8_fields = {"int8_skipped": int8_skipped}
    if "onnxruntime-int8" in times:
        int8_peak = 2 * PEAK_N ** 3 / (min(times["ort_int8_matmul"]) / 1e3)
        int8_ms = statistics.median(times["onnxruntime-int8"])
        int8_bound = 2 * stats.macs / int8_peak * 1e3
        int8_fields.update(int8_ms=int8_ms, int8_peak_gops=int8_peak / 1e9, int8_bound_ms=int8_bound,
                           int8_ratio=int8_ms / int8_bound)
    if int8_variants:
        int8_fields["int8_variants_ms"] = {k[len("int8:"):]: statistics.median(v) for k, v in times.items()
                                           if k.startswith("int8:")}
        if "int8_peak_gops" not in int8_fields:
            int8_peak = 2 * PEAK_N ** 3 / (min(times["ort_int8_matmul"]) / 1e3)
            int8_fields.update(int8_peak_gops=int8_peak / 1e9, int8_bound_ms=2 * stats.macs / int8_peak * 1e3)
    return BenchResult(model=model, threads=threads, macs=stats.macs, peak_gflops=peak / 1e9, bound_ms=bound_ms,
                       torch_ms=torch_ms, torch_ratio=torch_ms / bound_ms,
                       onnxruntime_ms=ort_ms, onnxruntime_ratio=None if ort_ms is None else ort_ms / bound_ms,
                       repeats=repeats, load_average=os.getloadavg()[0], **int8_fields)


# ---------------------------------------------------------------------------------------------
# Where an ONNX graph's time goes: ONNX Runtime's own profiler, summed by operator type.

def op_profile(path: str | Path, threads: int = 1, runs: int = 10, config: dict[str, str] | None = None,
               input_shape: Sequence[int] | None = None, warmup: int = 2) -> dict:
    """Per-run milliseconds by operator type of the graph as ORT optimised it (SessionOptions.
    enable_profiling; the kernel_time events of the CPU provider's nodes), over `runs` runs
    after `warmup` (first runs pay allocations and pre-packing). Returns {"ops": {op: ms},
    "nodes": {op: count}, "run_ms": median model_run ms, "kernel_ms": sum of the ops}."""
    import json

    from ...backends import import_onnxruntime, ort_session

    ort = import_onnxruntime()
    with tempfile.TemporaryDirectory(prefix="ort_profile.") as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        for key, value in (config or {}).items():
            opts.add_session_config_entry(key, value)
        sess = ort_session(str(path), opts)
        inp = sess.get_inputs()[0]
        shape = [1, *input_shape] if input_shape else [d if isinstance(d, int) else 1 for d in inp.shape]
        x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
        for _ in range(warmup + runs):
            sess.run(None, {inp.name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    model_runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    timed = model_runs[warmup:]
    start = timed[0]["ts"] if timed else 0
    ops: dict[str, float] = {}
    nodes: dict[str, set] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < start:
            continue
        op = e.get("args", {}).get("op_name", "?")
        ops[op] = ops.get(op, 0.0) + e["dur"] / 1e3 / max(len(timed), 1)
        nodes.setdefault(op, set()).add(e["name"])
    return {"ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])), "nodes": {k: len(v) for k, v in nodes.items()},
            "run_ms": statistics.median(e["dur"] / 1e3 for e in timed) if timed else None,
            "kernel_ms": sum(ops.values()), "threads": threads, "runs": len(timed)}


# ---------------------------------------------------------------------------------------------
# Training throughput: forward + backward per image, for the precision / layout variants.

TRAIN_VARIANTS = ("fp32", "channels_last", "bf16", "bf16+channels_last", "bf16+channels_last+compile")


def measure_peak_bf16_flops(n: int = PEAK_N, repeats: int = 5) -> float:
    """Best bf16 FLOP/s of an n x n x n torch.mm (oneDNN uses AVX-512 BF16 where the CPU has it)."""
    return measure_peak_flops(n, repeats, dtype="bfloat16")


def train_throughput(model: str = "squeezedet", batch_size: int = 2, width: int = 0, height: int = 0,
                     repeats: int = 5, threads: int = 2, variants=TRAIN_VARIANTS, progress=None) -> dict:
    """Milliseconds of forward + backward + optimiser step per image for each variant, measured
    in interleaved rounds (the machine's load drifts, so every round times every variant), with
    the compute bound 3 x forward FLOPs / peak (fp32 peak for fp32 variants, bf16 peak for bf16)."""
    import torch

    from ...detection.loss import squeezedet_loss
    from .train import DetTrainConfig, build_training_module, input_anchors

    torch.set_num_threads(threads)
    spec = get_model(model, task="detection")
    step_msg = progress or (lambda msg: None)
    width = width or spec.input_shape[2]
    height = height or spec.input_shape[1]
    stats = model_stats(model)
    # MACs scale with the input area (the network is fully convolutional).
    macs = stats.macs * (width * height) / (spec.input_shape[1] * spec.input_shape[2])
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((batch_size, 3, height, width), dtype=np.float32))
    runners = {}
    for variant in variants:
        # The network `det train` trains (batch norm on by default), not the deployed plain one.
        module = build_training_module(spec, DetTrainConfig.batchnorm).train()
        anchors = torch.from_numpy(input_anchors(module, width, height))
        from ...detection.loss import build_targets
        gt = np.array([[100, 150, 180, 200], [300, 160, 330, 230]], np.float32)
        targets = [build_targets(anchors.numpy(), gt, np.array([0, 1]))] * batch_size
        channels_last = "channels_last" in variant
        bf16 = variant.startswith("bf16")
        if channels_last:
            module.to(memory_format=torch.channels_last)
        xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        fwd = torch.compile(module.forward_raw) if "compile" in variant else module.forward_raw
        opt = torch.optim.SGD(module.parameters(), lr=1e-4, momentum=0.9)

        def run(fwd=fwd, xin=xin, bf16=bf16, opt=opt, anchors=anchors, targets=targets):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                d, c, k = fwd(xin)
            loss, _ = squeezedet_loss(d.float(), c.float(), k.float(), anchors, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step_msg(f"warming up {variant}")
        run()
        run()  # compile and oneDNN primitive caches warm
        runners[variant] = run
    times = {k: [] for k in runners}
    peaks = {"fp32": [], "bf16": []}
    for r in range(repeats):
        step_msg(f"round {r + 1}/{repeats}")
        peaks["fp32"].append(measure_peak_flops(repeats=2))
        peaks["bf16"].append(measure_peak_bf16_flops(repeats=2))
        for k, fn in runners.items():
            times[k].append(_time(fn, 1, warmup=0) / batch_size)
    peak = {k: max(v) for k, v in peaks.items()}
    rows = []
    for k, ts in times.items():
        ms = statistics.median(ts)
        p = peak["bf16" if k.startswith("bf16") else "fp32"]
        bound_ms = 3 * 2 * macs / p * 1e3
        rows.append({"variant": k, "ms_per_image": ms, "images_per_s": 1e3 / ms, "bound_ms": bound_ms,
                     "ratio_to_bound": bound_ms / ms})
    return {"model": model, "input": [width, height], "batch_size": batch_size, "threads": threads,
            "forward_gflops_per_image": 2 * macs / 1e9, "peak_gflops": {k: v / 1e9 for k, v in peak.items()},
            "rows": rows, "repeats": repeats, "load_average": os.getloadavg()[0]}
