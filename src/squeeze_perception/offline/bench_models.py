"""`squeeze-perception bench models`: every registered detection and segmentation model whose
weights exist, on every backend, side by side in one run (ROS-free; offline tooling, the runtime
never imports it).

For each model, each backend is loaded through the same path a node uses (`Detector`,
`SegmentationPipeline`); a backend that refuses the model (synetgy for a float model,
onnxruntime-int8 without its int8 file, ...) is a row "refused: <reason>", not an error.

Definitions (docs/accelerator.md, "Every model on every backend"):

- **latency**: batch 1, the network call only (`MeteredBackend.infer`: no letterbox, decoding,
  CRF or clustering). The same input frames for every backend of a model (the first evaluation
  frames); `warmup` calls each, then `repeats` rounds, each round timing every loaded backend
  once, in an order rotated by one per round, so a drifting machine load hits all alike (as
  `det bench` and `seg train-bench` do). The figure is the backend's own `last_latency_ms`:
  measured host time for the CPU backends, the **emulated** Ultra96 time for synetgy (its host
  wall time, what the emulation costs on this machine, is the "host ms" column).
- **fps** = 1000 / median latency (batch 1).
- **mJ/frame**: mean energy of the timed calls from `energy.MeteredBackend`, with its method:
  `emulated` (the synetgy board power model), `RAPL` (package counters, an upper bound: the
  whole socket), `model` (MACs x pJ + DRAM bytes x pJ: a lower bound, the same for every CPU
  backend of a model since it counts operations, not time), `NVML` (GPU), `none`.
- **x bound**: latency / (2 x MACs / peak), the peak being the best n x n x n matmul of the
  rounds (fp32: torch.mm and ONNX Runtime MatMul; int8 rows: u8 x s8 MatMulInteger), timed
  inside the same rounds (offline/detection/bench.py's kernels); MACs from `energy.model_workload`, or
  for DiracDelta models (whose QConv it does not count) from the compiled Synetgy program when
  the synetgy backend loads the model. n/a for emulated rows.
- **accuracy**: detection - car AP (%) at the moderate level, protocol kitti-2019
  (offline/detection/evaluation.py), of `Detector.predict` on the first `det_frames` frames of a
  KITTI-layout split; segmentation - mean class-level IoU (%) over the object classes with
  ground truth (offline/segmentation/evaluation.py `SegCounts.mean_iou`, the pipeline's network + CRF,
  as `seg eval`) on the first `seg_grids` lidar_2d grids.
- **change vs fp32**: accuracy minus that of the fp32 reference on the same frames: the torch
  backend of the same model, or, for a quantized model with a registered `<name>_fp32` sibling
  whose weights exist (diracdeltaseg -> diracdeltaseg_fp32), that sibling on torch. The torch
  row of a float model is its own reference (change exactly 0). An ONNX-only model (no torch
  architecture: its torch / synetgy rows are refused) is referenced to its own fp32 graph on
  `onnxruntime`.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..paths import project_root

TASKS = ("detection", "segmentation")
DEFAULT_DET_DIR = project_root() / "data" / "synth_det" / "object" / "testing"
DEFAULT_SEG_DIR = project_root() / "data" / "synth" / "lidar_2d" / "test"
REFERENCE_BACKEND = "torch"
FP32_SUFFIX = "_fp32"
DET_PROTOCOL = "kitti-2019"
METRIC_NAMES = {"detection": f"car AP(mod) % ({DET_PROTOCOL})", "segmentation": "mean IoU % (CRF on)"}
ENERGY_METHODS = {"rapl": "RAPL", "model": "model", "nvml": "NVML", "none": "none"}


@dataclass
class BenchConfig:
    models: list[str] | None = None  # None: every registered detection / segmentation model with weights
    backends: list[str] | None = None  # None: every registered backend
    repeats: int = 5
    warmup: int = 1
    threads: int = 2
    det_frames: int = 20
    det_dir: Path = DEFAULT_DET_DIR
    seg_grids: int = 10
    seg_dir: Path = DEFAULT_SEG_DIR
    peak_n: int = 1024  # matmul size of the peak measurement; 0: no bound


@dataclass
class Row:
    model: str
    task: str
    backend: str
    status: str = "ok"  # ok | refused | failed
    reason: str = ""
    emulated: bool = False
    latency_ms: dict = field(default_factory=dict)  # the backend's figure (emulated for synetgy)
    host_wall_ms: dict = field(default_factory=dict)  # measured around the call on this host
    fps: float | None = None
    energy_mj_per_frame: float | None = None
    energy_source: str = "none"
    energy_method: str = "none"
    bound_ms: float | None = None
    ratio_to_bound: float | None = None
    metric_name: str = ""
    metric: float | None = None
    metric_note: str = ""  # why there is no metric ("no data: <path>", ...)
    eval_frames: int = 0
    reference: str = ""  # "<model>/<backend>" of the fp32 reference
    reference_metric: float | None = None
    change_vs_fp32: float | None = None


# --------------------------------------------------------------------------- data
@dataclass
class EvalData:
    """The evaluation frames of one task: inputs for the timing and the metric's ground truth."""

    note: str = ""  # non-empty: no data, the reason
    det_frames: list = field(default_factory=list)  # [(rgb, labels)]
    seg_files: list = field(default_factory=list)  # [Path]


def load_eval_data(task: str, cfg: BenchConfig) -> EvalData:
    if task == "detection":
        from ..detection.data import list_samples, load_rgb

        root = Path(cfg.det_dir)
        try:
            samples = list_samples(root, require_labels=True)[: max(cfg.det_frames, 0)]
        except FileNotFoundError:
            return EvalData(note=f"no data: {root}")
        if not samples:
            return EvalData(note=f"no data: {root} (0 frames asked for)")
        return EvalData(det_frames=[(load_rgb(s.image_path), s.labels()) for s in samples])
    from ..segmentation.data import SegDataError, list_grids

    root = Path(cfg.seg_dir)
    try:
        files = list_grids(root)[: max(cfg.seg_grids, 0)]
    except SegDataError:
        return EvalData(note=f"no data: {root}")
    if not files:
        return EvalData(note=f"no data: {root} (0 grids asked for)")
    return EvalData(seg_files=files)


# --------------------------------------------------------------------------- tasks
def open_runner(task: str, model: str, backend: str, threads: int):
    """The object a node would run: Detector or SegmentationPipeline (network + CRF) on `backend`."""
    if task == "detection":
        from ..detection.inference import Detector

        return Detector(model, backend, num_threads=threads)
    from ..segmentation.pipeline import SegmentationPipeline

    # clustering is never run here; "sklearn" spares loading the native DBSCAN kernel
    return SegmentationPipeline(model, backend=backend, fov="front", crf=True, clustering="sklearn",
                                num_threads=threads)


def timing_inputs(task: str, runner, data: EvalData, count: int) -> tuple[list[np.ndarray], str]:
    """Batch-1 network inputs for the timed calls: the first evaluation frames, preprocessed as
    the node does; synthetic inputs of the model's shape when there is no (fitting) data."""
    spec = runner.spec
    shape = tuple(spec.input_shape)
    count = max(count, 1)
    batches: list[np.ndarray] = []
    if task == "detection" and data.det_frames:
        from ..detection.data import preprocess

        batches = [preprocess(rgb, runner.input_width, runner.input_height)[0]
                   for rgb, _ in data.det_frames[:count]]
    elif task == "segmentation" and data.seg_files:
        from ..segmentation.data import load_grid
        from .segmentation.evaluation import _GridView

        batches = [runner.network_input([_GridView(load_grid(f))]) for f in data.seg_files[:count]]
    if batches and all(tuple(b.shape[1:]) == shape for b in batches):
        return batches, "evaluation frames"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, *shape)).astype(np.float32)
    if task == "segmentation":  # a return in every cell: range > 0, mask on
        x[:, 4] = np.abs(x[:, 4]) * 10 + 1
        if shape[0] > 5:
            x[:, 5] = 1
    why = "synthetic noise" + ("" if not batches else f" (frames {tuple(batches[0].shape[1:])} != input {shape})")
    return [x], why


def evaluate(task: str, runner, data: EvalData) -> tuple[float | None, int, str, dict]:
    """(metric %, frames, note, detail) of one loaded backend on the evaluation frames."""
    if data.note:
        return None, 0, data.note, {}
    if task == "detection":
        from .detection.evaluation import evaluate as det_evaluate

        dets = [runner.predict(rgb).detections for rgb, _ in data.det_frames]
        result = det_evaluate(dets, [labels for _, labels in data.det_frames], DET_PROTOCOL)
        car = result["per_class"]["car"]["moderate"]
        note = "" if car["ap"] is not None else "no moderate car in the frames"
        return car["ap"], len(dets), note, {"car_moderate_n_gt": car["n_gt"], "map": result["map"],
                                            "protocol": DET_PROTOCOL}
    from ..segmentation.data import load_grid
    from .segmentation.evaluation import counts_to_json, evaluate_grids

    grid = load_grid(data.seg_files[0])
    if (grid.shape[0], grid.shape[1]) != tuple(runner.spec.input_shape[1:]):
        return None, 0, f"grids {grid.shape[0]}x{grid.shape[1]} != input {tuple(runner.spec.input_shape)}", {}
    counts = evaluate_grids(runner, data.seg_files, progress=False)
    miou = counts.mean_iou()
    ok = bool(np.isfinite(miou))
    detail = counts_to_json(counts)
    return (100.0 * miou if ok else None), counts.frames, ("" if ok else "no ground truth"), {
        "mean_iou": detail["mean_iou"], "class_iou": detail["class"]["IoU"],
        "classes_without_gt": detail["classes_without_gt"]}


# --------------------------------------------------------------------------- selection
def select_models(cfg: BenchConfig) -> tuple[list[str], dict[str, str]]:
    """(models to run, {model: why skipped}). Without --models: every detection / segmentation
    model with weights; named models without weights are reported as skipped."""
    from ..registry import get_model, model_names

    names = [n for t in TASKS for n in model_names(t)]
    chosen = names if not cfg.models else list(dict.fromkeys(cfg.models))
    run, skipped = [], {}
    for name in chosen:
        try:
            spec = get_model(name)
        except KeyError as exc:
            skipped[name] = str(exc)
            continue
        path = spec.weights_path()
        if spec.task not in TASKS:
            skipped[name] = f"a {spec.task} model"
        elif path is None or not path.exists():
            skipped[name] = f"no weights ({path})"
        else:
            run.append(name)
    return run, skipped


def fp32_reference_model(model: str) -> str:
    """The model whose torch output is this model's fp32 reference: `<model>_fp32` when it is
    registered and its weights exist (the float stage of a quantized model), else the model."""
    from ..registry import MODELS, load_plugins

    load_plugins()
    sibling = MODELS.get(model + FP32_SUFFIX)
    if sibling is not None and sibling.weights_path() is not None and sibling.weights_path().exists():
        return sibling.name
    return model


def reference_backend(model: str) -> str:
    """The backend of the fp32 reference: torch, or onnxruntime for an ONNX-only model."""
    from ..registry import get_model

    return "onnxruntime" if get_model(model).onnx_only else REFERENCE_BACKEND


def energy_method(source: str, emulated: bool) -> str:
    if source == "backend":
        return "emulated" if emulated else "backend"
    return ENERGY_METHODS.get(source, source)


# --------------------------------------------------------------------------- the bench
class ModelsBench:
    def __init__(self, cfg: BenchConfig, progress: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.say = progress or (lambda msg: None)
        self._data: dict[str, EvalData] = {}
        self._metrics: dict[tuple[str, str], tuple] = {}  # (model, backend) -> evaluate()'s tuple
        self._ref_errors: dict[str, str] = {}

    def data(self, task: str) -> EvalData:
        if task not in self._data:
            self._data[task] = load_eval_data(task, self.cfg)
            d = self._data[task]
            self.say(f"{task} data: {d.note or f'{len(d.det_frames) or len(d.seg_files)} frames'}")
        return self._data[task]

    def metric(self, task: str, model: str, backend: str, runner) -> tuple:
        key = (model, backend)
        if key not in self._metrics:
            self.say(f"{model} / {backend}: evaluating")
            t0 = time.perf_counter()
            self._metrics[key] = evaluate(task, runner, self.data(task))
            self.say(f"{model} / {backend}: {METRIC_NAMES[task]} = {_fmt(self._metrics[key][0])} "
                     f"({time.perf_counter() - t0:.1f} s)")
        return self._metrics[key]

    def reference(self, task: str, model: str) -> tuple[str, float | None, str]:
        """(reference name, its metric, why n/a)."""
        ref_model = fp32_reference_model(model)
        ref_backend = reference_backend(ref_model)
        name = f"{ref_model}/{ref_backend}"
        if (ref_model, ref_backend) not in self._metrics and ref_model not in self._ref_errors:
            try:
                runner = open_runner(task, ref_model, ref_backend, self.cfg.threads)
            except Exception as exc:  # noqa: BLE001 - the reference refused: change n/a with the reason
                self._ref_errors[ref_model] = f"{ref_backend} refused {ref_model}: {_why(exc)}"
            else:
                self.metric(task, ref_model, ref_backend, runner)
        if ref_model in self._ref_errors:
            return name, None, self._ref_errors[ref_model]
        value, _, note, _ = self._metrics[(ref_model, ref_backend)]
        return name, value, note

    def run_model(self, model: str, backends: list[str]) -> tuple[list[Row], dict]:
        from ..registry import get_backend, get_model

        cfg = self.cfg
        spec = get_model(model)
        task = spec.task
        rows = {b: Row(model, task, b, metric_name=METRIC_NAMES[task]) for b in backends}
        runners: dict[str, Any] = {}
        for b in backends:
            self.say(f"{model} / {b}: loading")
            try:
                runners[b] = open_runner(task, model, b, cfg.threads)
            except Exception as exc:  # noqa: BLE001 - a refusal is a row, never the end of the run
                from ..backends import ModelLoadError

                rows[b].status = "refused" if isinstance(exc, (ModelLoadError, KeyError)) else "failed"
                rows[b].reason = _why(exc)
                self.say(f"{model} / {b}: {rows[b].status}: {rows[b].reason}")
                continue
            rows[b].emulated = bool(get_backend(b).emulated)
        info: dict = {"task": task, "input_shape": list(spec.input_shape), "rounds": []}
        if not runners:
            return list(rows.values()), info
        data = self.data(task)
        # accuracy (outputs do not depend on the load: not interleaved)
        for b, runner in runners.items():
            value, frames, note, detail = self.metric(task, model, b, runner)
            rows[b].metric, rows[b].eval_frames, rows[b].metric_note = value, frames, note
            info.setdefault("eval", {})[b] = detail
        ref_name, ref_value, ref_note = self.reference(task, model)
        info["reference"] = ref_name
        for b in runners:
            row = rows[b]
            row.reference, row.reference_metric = ref_name, ref_value
            if row.metric is not None and ref_value is not None:
                row.change_vs_fp32 = row.metric - ref_value
            elif ref_value is None and not row.metric_note:
                row.metric_note = f"reference {ref_name}: {ref_note or 'no value'}"
        # latency, energy: interleaved rounds
        first = next(iter(runners.values()))
        inputs, source = timing_inputs(task, first, data, cfg.repeats)
        info["timing_input"] = f"{len(inputs)} {source}"
        timings = self._time(model, runners, inputs, info)
        macs, info["macs_from"] = _macs(spec), "energy.model_workload"
        if macs is None and "synetgy" in runners:  # QConv models: the compiled program's count
            macs, info["macs_from"] = _program_macs(runners["synetgy"].backend), "synetgy program"
        info["macs"] = macs
        for b, t in timings.items():
            self._fill_timing(rows[b], t, macs, info)
        return list(rows.values()), info

    def _time(self, model: str, runners: dict, inputs: list[np.ndarray], info: dict) -> dict:
        cfg = self.cfg
        names = list(runners)
        samples = {b: {"latency": [], "wall": [], "energy": [], "source": "none", "emulated": False} for b in names}
        peaks = _PeakKernels(cfg.peak_n, cfg.threads, int8="onnxruntime-int8" in runners) if cfg.peak_n > 0 else None

        def call(b: str, x: np.ndarray):
            meter = runners[b].meter
            t0 = time.perf_counter()
            res = meter.infer(x)
            wall = (time.perf_counter() - t0) * 1e3
            return res, wall

        for b in names:
            for _ in range(max(cfg.warmup, 0)):
                call(b, inputs[0])
        for r in range(cfg.repeats):
            order = names[r % len(names):] + names[:r % len(names)]  # rotated: no backend always first
            self.say(f"{model}: round {r + 1}/{cfg.repeats} ({', '.join(order)})")
            if peaks is not None:
                peaks.round()
            for b in order:
                res, wall = call(b, inputs[r % len(inputs)])
                s = samples[b]
                s["latency"].append(float(res.latency_ms if res.latency_ms is not None else wall))
                s["wall"].append(wall)
                s["energy"].append(None if res.energy_mj is None else float(res.energy_mj) / max(res.batch, 1))
                s["source"], s["emulated"] = res.energy_source, bool(res.emulated)
            info["rounds"].append(order)
        if peaks is not None:
            info.update(peaks.summary())
        return samples

    def _fill_timing(self, row: Row, s: dict, macs: int | None, info: dict) -> None:
        from .graphbench.core import latency_summary

        if not s["latency"]:
            return
        row.latency_ms = _summary(latency_summary(s["latency"]))
        row.host_wall_ms = _summary(latency_summary(s["wall"]))
        p50 = row.latency_ms["p50"]
        row.fps = 1e3 / p50 if p50 and p50 > 0 else None
        energies = s["energy"]
        row.energy_mj_per_frame = (float(np.mean(energies)) if energies and all(e is not None for e in energies)
                                   else None)
        row.emulated = row.emulated or s["emulated"]
        row.energy_source = s["source"]
        row.energy_method = energy_method(s["source"], row.emulated)
        peak = info.get("int8_peak_gops" if row.backend == "onnxruntime-int8" else "peak_gflops")
        if macs and peak and not row.emulated:
            row.bound_ms = 2.0 * macs / (peak * 1e9) * 1e3
            row.ratio_to_bound = p50 / row.bound_ms

    def run(self) -> dict:
        from ..registry import backend_names

        cfg = self.cfg
        t0 = time.perf_counter()
        load_before = [round(x, 2) for x in os.getloadavg()]
        started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        if cfg.threads > 0:
            import torch

            torch.set_num_threads(cfg.threads)
        # The reference first, then the others by name; `auto` only picks one of the others (its
        # row would repeat onnxruntime-int8's or onnxruntime's), so it runs only when asked for.
        known = [b for b in backend_names() if b != "auto"]
        known = [b for b in known if b == REFERENCE_BACKEND] + [b for b in known if b != REFERENCE_BACKEND]
        backends = known if not cfg.backends else list(dict.fromkeys(cfg.backends))
        models, skipped = select_models(cfg)
        self.say(f"models: {', '.join(models) or 'none'}; backends: {', '.join(backends)}"
                 + (f"; skipped: {', '.join(f'{k} ({v})' for k, v in skipped.items())}" if skipped else ""))
        rows: list[Row] = []
        per_model: dict = {}
        for model in models:
            self.say(f"== {model}")
            model_rows, info = self.run_model(model, backends)
            rows += model_rows
            per_model[model] = info
        return {
            "definitions": __doc__,
            "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
                       "backends_run": backends},
            "git": _git(), "host": host_info(cfg.threads),
            "started_utc": started, "duration_s": round(time.perf_counter() - t0, 1),
            "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "models": per_model, "skipped_models": skipped,
            "rows": [asdict(r) for r in rows],
        }


class _PeakKernels:
    """The peak fp32 (and int8) rate, timed once per round between the model calls: best of
    three calls of each n x n x n kernel (offline/detection/bench.py's runners)."""

    def __init__(self, n: int, threads: int, int8: bool):
        import torch

        from .detection.bench import ort_int8_matmul_runner, ort_matmul_runner

        self.n = n
        a, b = torch.randn(n, n), torch.randn(n, n)
        self.fp32 = {"torch.mm": lambda: torch.mm(a, b), "ort MatMul": ort_matmul_runner(n, threads)}
        self.int8 = {"ort MatMulInteger": ort_int8_matmul_runner(n, threads)} if int8 else {}
        self.best = {k: float("inf") for k in (*self.fp32, *self.int8)}
        for fn in (*self.fp32.values(), *self.int8.values()):
            fn()  # warm-up

    def round(self) -> None:
        for k, fn in (*self.fp32.items(), *self.int8.items()):
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                self.best[k] = min(self.best[k], time.perf_counter() - t0)

    def summary(self) -> dict:
        ops = 2.0 * self.n ** 3
        out = {"peak_n": self.n, "peak_kernels": {k: ops / v / 1e9 for k, v in self.best.items() if v < float("inf")}}
        fp32 = [v for k, v in self.best.items() if k in self.fp32 and v < float("inf")]
        int8 = [v for k, v in self.best.items() if k in self.int8 and v < float("inf")]
        if fp32:
            out["peak_gflops"] = ops / min(fp32) / 1e9
        if int8:
            out["int8_peak_gops"] = ops / min(int8) / 1e9
        return out


def _macs(spec) -> int | None:
    from ..energy import model_workload

    try:
        w = model_workload(spec)
    except Exception:  # noqa: BLE001 - no count: no bound
        return None
    return None if w is None else int(w.macs)


def _program_macs(backend) -> int | None:
    try:
        return int(sum(op.macs for op in backend.emulator.program.ops)) or None
    except AttributeError:
        return None


def _summary(s: dict) -> dict:
    return {"mean": s["mean_ms"], "p50": s["p50_ms"], "p99": s["p99_ms"], "max": s["max_ms"], "count": s["count"]}


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    from ..backends import ModelLoadError

    return text if isinstance(exc, (ModelLoadError, KeyError)) else f"{type(exc).__name__}: {text}"


def _git() -> dict:
    from .graphbench.core import git_revision

    return git_revision(project_root())


def host_info(threads: int) -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("torch", "onnxruntime", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads, "python": sys.version.split()[0],
            "platform": platform.platform(), "versions": versions, "nice": os.nice(0)}


# --------------------------------------------------------------------------- output
def _fmt(v: float | None, digits: int = 1, sign: bool = False) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _ms(v: float | None) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


def render_table(report: dict) -> str:
    lines = ["| model | backend | latency ms (mean / p50 / p99) | host ms (p50) | fps | x bound | mJ/frame (method) "
             "| accuracy | change vs fp32 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | {r['backend']} | {r['status']}: {_cell(r['reason'])} | | | | | | |")
            continue
        lat = r["latency_ms"]
        emulated = " (emulated)" if r["emulated"] else ""
        latency = f"{_ms(lat.get('mean'))} / {_ms(lat.get('p50'))} / {_ms(lat.get('p99'))}{emulated}" if lat else "n/a"
        energy = ("n/a" if r["energy_mj_per_frame"] is None else f"{r['energy_mj_per_frame']:.1f}") + \
            f" ({r['energy_method']})"
        bound = "n/a" if r["ratio_to_bound"] is None else f"{r['ratio_to_bound']:.1f}x"
        metric = _fmt(r["metric"]) if r["metric"] is not None else _na(r["metric_note"])
        if r["metric"] is not None:
            metric += f" ({r['metric_name'].split(' (')[0]}, {r['eval_frames']} fr)"
        own = r["reference"].rsplit("/", 1)[0] == r["model"]
        change = _fmt(r["change_vs_fp32"], sign=True)
        if r["change_vs_fp32"] is not None and not own:
            change += f" (vs {r['reference']})"
        elif r["change_vs_fp32"] is None and r["metric"] is not None:
            change = _na(r["metric_note"] or "no reference")
        fps = "n/a" if r["fps"] is None else f"{r['fps']:.1f}"
        wall = _ms(r["host_wall_ms"].get("p50")) if r["host_wall_ms"] else "n/a"
        lines.append(f"| {r['model']} | {r['backend']} | {latency} | {wall} | {fps} | {bound} | {energy} "
                     f"| {_cell(metric)} | {_cell(change)} |")
    return "\n".join(lines)


def _na(note: str) -> str:
    return f"n/a ({note})" if note else "n/a"


def _cell(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")


def render_summary(report: dict, json_path: str | None = None) -> str:
    rows = report["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    refused = [r for r in rows if r["status"] == "refused"]
    failed = [r for r in rows if r["status"] == "failed"]
    cfg, host = report["config"], report["host"]
    lines = [f"{len(report['models'])} model(s) x {len(cfg['backends_run'])} backend(s): {len(ok)} measured, "
             f"{len(refused)} refused, {len(failed)} failed; batch 1, {cfg['repeats']} interleaved round(s) after "
             f"{cfg['warmup']} warm-up call(s), {host['threads']} thread(s), {host['cpu']} ({host['cpu_count']} CPUs)"]
    for name, info in report["models"].items():
        peak = info.get("peak_gflops")
        extra = (f"; fp32 peak {peak:.1f} GFLOP/s" if peak else "") + \
            (f", int8 peak {info['int8_peak_gops']:.1f} GOP/s" if info.get("int8_peak_gops") else "")
        macs = f"{info['macs'] / 1e9:.2f} GMAC" if info.get("macs") else "MACs n/a"
        lines.append(f"  {name} ({info['task']}): {macs}{extra}; timing input {info.get('timing_input', 'n/a')}; "
                     f"reference {info.get('reference', 'n/a')}")
    if report["skipped_models"]:
        lines.append("skipped: " + "; ".join(f"{k}: {v}" for k, v in report["skipped_models"].items()))
    git = report["git"]
    lines.append(f"load average before {' '.join(map(str, report['load_average_before']))}, after "
                 f"{' '.join(map(str, report['load_average_after']))}; {report['duration_s']:.0f} s; git "
                 f"{(git.get('commit') or 'n/a')[:12]}{' (dirty)' if git.get('dirty') else ''}"
                 + (f"; JSON: {json_path}" if json_path else ""))
    return "\n".join(lines)


def to_json(report: dict) -> str:
    """Strict JSON: NaN / inf become null (json.dumps(..., allow_nan=False) would refuse them)."""
    from .segmentation.evaluation import json_safe

    return json.dumps(json_safe(report), indent=2, allow_nan=False, default=str)
