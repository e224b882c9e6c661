"""`squeeze-perception track eval|bench`.

eval   MOT metrics (TrackEval: HOTA, CLEAR MOT, IDF1) on synthetic sequences with ground-truth
       tracks, LiDAR-only vs camera fusion vs fusion + camera updates, plus the per-frame latency
       of each. Inputs (--source): `noise`, the seeded noise model around the ground truth
       (offline/tracking/scenarios.py), or `network`, the shipped SqueezeSeg pipeline and
       SqueezeDet run on each drive's scans and images as their nodes run them, cached per drive
       under out/track_network (offline/tracking/network_source.py).
bench  Per-frame latency (mean, p99, std) of fusion + tracking vs number of objects.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ... import interfaces as itf
from ...paths import config_dir, project_root
from ...tracking.fusion import KITTI_IMAGE_SIZE, KITTI_P_RECT_02, KITTI_VELO_TO_RECT, velo_to_image_matrix
from ...tracking.pipeline import TrackingPipeline
from ...tracking.tracker import TrackerConfig
from ...backends import ModelLoadError
from ...registry import RegistryError
from . import evaluation as ev
from . import scenarios as sc
from .network_source import DEFAULT_CACHE_DIR, NetworkSourceError

VARIANTS = {
    "lidar_only": dict(use_camera=False, camera_updates=False),
    "fusion": dict(use_camera=True, camera_updates=False),
    "fusion+camera_updates": dict(use_camera=True, camera_updates=True),
}


@dataclass
class Camera:
    p: np.ndarray
    velo_to_cam: np.ndarray
    image_size: tuple[int, int]

    @property
    def velo_to_image(self) -> np.ndarray:
        return velo_to_image_matrix(self.p, self.velo_to_cam)


DEFAULT_CAMERA = Camera(KITTI_P_RECT_02, KITTI_VELO_TO_RECT, KITTI_IMAGE_SIZE)


def load_config(path: str | None, overrides: list[str] | None = None) -> TrackerConfig:
    """config/tracker.yaml (or `path`), then `key=value` overrides (YAML values, e.g. car.gate_m=5)."""
    import yaml

    file = Path(path) if path else config_dir() / "tracker.yaml"
    params: dict = {}
    if file.exists():
        data = yaml.safe_load(file.read_text()) or {}
        params = dict(data.get("tracker_node", {}).get("ros__parameters", data))
    config = TrackerConfig.from_params(params)
    extra = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got '{item}'")
        extra[key.strip()] = yaml.safe_load(value)
    return TrackerConfig.from_params(extra, base=config) if extra else config


def camera_for(csv_path: Path) -> Camera:
    """The drive's raw calibration (raw/<date>/calib_*.txt) when present, else KITTI 2011_09_26."""
    from ...kitti.calib import CalibrationError, image_size_from_raw_calib, load_raw_calib

    calib_dir = csv_path.parent.parent
    try:
        calib = load_raw_calib(calib_dir)
        size = image_size_from_raw_calib(calib_dir)
    except (CalibrationError, KeyError, ValueError, OSError):
        return DEFAULT_CAMERA
    return Camera(calib.P2, calib.velo_to_rect, size)


def run_sequence(seq: sc.GroundTruthSequence, inputs, camera: Camera, config: TrackerConfig,
                 use_camera: bool, camera_updates: bool, lidar_dropout: set[int] = frozenset()):
    """Tracks per frame and per-frame processing times (ms) of one variant on one sequence."""
    pipe = TrackingPipeline(config, use_camera=use_camera, camera_updates=camera_updates)
    pipe.set_camera(camera.p, camera.velo_to_cam, camera.image_size)
    tracks, times = [], []
    for k, (t, (inst, det)) in enumerate(zip(seq.stamps_s, inputs)):
        t0 = time.perf_counter()
        if k in lidar_dropout:
            if use_camera and det is not None:
                out = pipe.process_camera_only(float(t), det).tracks
            else:
                out = itf.empty(itf.TRACK_DTYPE)  # nothing arrives: the node publishes nothing
        else:
            out = pipe.process(float(t), inst, det if use_camera else None).tracks
        times.append((time.perf_counter() - t0) * 1e3)
        tracks.append(out)
    return tracks, times


def _dropout_frames(n: int, period: int, length: int) -> set[int]:
    if period <= 0 or length <= 0:
        return set()
    return {k for k in range(n) if k % period >= period - length}


def cmd_eval(args) -> int:
    from tqdm import tqdm

    config = load_config(args.config, args.set)
    region = ev.EvalRegion(max_range_m=args.max_range, d_max_m=args.d_max)
    csvs = ev.find_sequences(args.root) if not args.builtin else []
    if csvs:
        csvs = csvs[: args.max_sequences] if args.max_sequences else csvs
        sequences = [ev.read_tracks_velo(p) for p in csvs]
        cameras = [camera_for(p) for p in csvs]
        for p, s in zip(csvs, sequences):
            s.name = f"{p.parent.parent.name}/{p.parent.name}"
        source = f"{args.root} ({len(csvs)} sequences with tracks_velo.csv)"
    elif args.builtin:
        sequences = [sc.random_traffic(args.builtin_objects, args.builtin_frames, seed=i) for i in range(args.builtin)]
        cameras = [DEFAULT_CAMERA] * len(sequences)
        source = f"built-in random traffic ({args.builtin} x {args.builtin_objects} objects x {args.builtin_frames} frames)"
    else:
        print(f"no raw/*/*_sync/tracks_velo.csv under {args.root}; generate the synthetic set "
              "(squeeze-perception synth ...) or pass --builtin N", file=sys.stderr)
        return 2
    variants = dict(VARIANTS)
    if args.source == "network":
        if not csvs:
            print("--source network needs raw drives with tracks_velo.csv (not --builtin)", file=sys.stderr)
            return 2
        try:
            inputs, inputs_text, with_camera = network_inputs(args, csvs, sequences)
        except (NetworkSourceError, ModelLoadError, RegistryError) as exc:
            print(f"network source: {exc}", file=sys.stderr)
            return 2
        if not with_camera:  # no camera boxes: the fusion variants would repeat LiDAR-only
            variants = {"lidar_only": VARIANTS["lidar_only"]}
    else:
        lidar_noise = sc.LidarNoise(clutter_objects=args.clutter)
        inputs = [sc.simulate_inputs(s, args.seed + i, c.velo_to_image, c.image_size, lidar_noise)
                  for i, (s, c) in enumerate(tqdm(list(zip(sequences, cameras)), desc="noise model", leave=False))]
        inputs_text = (f"noise model, seed {args.seed}, {args.clutter} static clutter blobs")
    quality = ev.input_quality(sequences, inputs, ev.EvalRegion(max_range_m=args.max_range, d_max_m=args.d_max))
    dropouts = [_dropout_frames(len(s), args.dropout_period, args.dropout_frames) for s in sequences]
    results: dict[str, dict] = {}
    scenarios = [("", [set()] * len(sequences))]
    if args.dropout_period:
        scenarios.append((" [lidar dropout]", dropouts))
    for suffix, drops in scenarios:
        for name, flags in variants.items():
            all_tracks, all_times = [], []
            for seq, inp, cam, drop in tqdm(list(zip(sequences, inputs, cameras, drops)), desc=name + suffix,
                                            leave=False):
                tracks, times = run_sequence(seq, inp, cam, config, lidar_dropout=drop, **flags)
                all_tracks.append(tracks)
                all_times += times
            metrics = ev.evaluate(sequences, all_tracks, region)
            per_class = {itf.CLASS_NAMES[c]: ev.evaluate(sequences, all_tracks, region, class_id=c)
                         for c in (1, 2, 3)}
            t = np.asarray(all_times)
            metrics.update(latency_ms_mean=float(t.mean()), latency_ms_p99=float(np.percentile(t, 99)),
                           latency_ms_std=float(t.std()), frames=int(t.size))
            results[name + suffix] = {"all": metrics, "per_class": per_class}
    report = format_eval(results, source, args, inputs_text, quality)
    print(report)
    if args.plot:
        plot_eval(results, args.plot, f"{source}, {args.source} inputs")
        print(f"wrote {args.plot}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"source": source, "inputs": args.source, "inputs_text": inputs_text,
                                   "seed": args.seed, "input_quality": quality, "results": results}, indent=1))
        print(f"wrote {out}")
    return 0


def network_inputs(args, csvs: list[Path], sequences: list[sc.GroundTruthSequence]):
    """(tracker inputs per sequence, a line naming them, whether camera boxes are included)."""
    from . import network_source as ns

    threads = args.threads
    seg = ns.segmentation_params(args.seg_model, args.seg_backend, args.seg_weights, threads)
    det = None
    if args.det_model != "none":
        det = ns.detection_params(args.det_model, args.det_backend, args.det_weights, threads)
    source = ns.NetworkSource(seg, det, Path(args.cache_dir), refresh=args.refresh_cache)
    drives = [(p.parent, len(s)) for p, s in zip(csvs, sequences)]
    outputs = source.outputs(drives)
    table_params = ns.tracker_table_params(Path(args.config) if args.config else None)
    inputs = [ns.tracker_inputs(seg_out, det_out, table_params) for seg_out, det_out in outputs]
    seg_ms = np.concatenate([o[0].frame_ms for o in outputs])
    seg_net = np.concatenate([o[0].network_ms for o in outputs])
    text = (f"networks: {source.describe()}; segmentation {seg_ms.mean():.0f} ms/frame "
            f"(network + CRF {seg_net.mean():.0f})")
    if det is not None:
        det_ms = np.concatenate([o[1].frame_ms for o in outputs])
        text += f", detection {det_ms.mean():.0f} ms/frame"
    cached = sum(o[0].from_cache for o in outputs) + sum(o[1].from_cache for o in outputs if o[1] is not None)
    total = len(outputs) * (2 if det is not None else 1)
    text += (f" ({args.threads} thread(s); {source.computed_frames['segmentation']} + "
             f"{source.computed_frames['detection']} frames run now, {cached}/{total} drive outputs from the cache in "
             f"{args.cache_dir})")
    return inputs, text, det is not None


def format_eval(results: dict, source: str, args, inputs_text: str = "", quality: dict | None = None) -> str:
    lines = [f"tracker evaluation on {source}, BEV centre-distance similarity "
             f"(d_max {args.d_max} m), range <= {args.max_range} m, front 90 deg",
             f"inputs ({args.source}): {inputs_text}"]
    if quality:
        lines.append(f"inputs in the region: {quality['instances_per_frame']:.2f} instances/frame, "
                     f"{quality['instance_precision']:.2f} of them within 1 m of a ground-truth object, "
                     f"{quality['object_recall']:.2f} of the ground-truth objects (with LiDAR points) have one; "
                     f"{quality['detections_per_frame']:.2f} camera boxes/frame")
    lines.append("")
    head = "| variant | HOTA | DetA | AssA | MOTA | MOTP (m) | IDF1 | IDSW | Frag | FP | FN | latency ms mean / p99 |"
    lines += [head, "|" + "---|" * 12]
    for name, r in results.items():
        a = r["all"]
        lines.append(f"| {name} | {a['HOTA']:.3f} | {a['DetA']:.3f} | {a['AssA']:.3f} | {a['MOTA']:.3f} | "
                     f"{a['MOTP_m']:.3f} | {a['IDF1']:.3f} | {int(a['IDSW'])} | {int(a['Frag'])} | "
                     f"{int(a['CLR_FP'])} | {int(a['CLR_FN'])} | {a['latency_ms_mean']:.2f} / "
                     f"{a['latency_ms_p99']:.2f} |")
    lines += ["", "per class (HOTA / MOTA / IDSW):", "",
              "| variant | car | pedestrian | cyclist |", "|---|---|---|---|"]
    for name, r in results.items():
        cells = [f"{m['HOTA']:.3f} / {m['MOTA']:.3f} / {int(m['IDSW'])}" for m in r["per_class"].values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_eval(results: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("HOTA", "DetA", "AssA", "MOTA", "IDF1")
    names = list(results)
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = [results[name]["all"][k] for k in keys]
        ax.bar(np.arange(len(keys)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, keys)
    lowest = min(results[n]["all"][k] for n in names for k in keys)
    ax.set_ylim(min(0.0, lowest * 1.05), 1)  # MOTA goes below 0 when false tracks outnumber the objects
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_title(f"tracker on {title}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bench(rows: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    n = [r[0] for r in rows]
    for name, label in (("lidar_only", "LiDAR-only"), ("fusion+camera_updates", "fusion + camera updates")):
        mean = [r[2][name][0] for r in rows]
        p99 = [r[2][name][1] for r in rows]
        cpu = [r[2][name][3] for r in rows]
        ax.plot(n, mean, "o-", label=f"{label} wall mean")
        ax.plot(n, p99, "x--", label=f"{label} wall p99")
        ax.plot(n, cpu, "s:", label=f"{label} CPU mean")
    ax.set_xlabel("objects in the scene")
    ax.set_ylabel("ms per frame")
    ax.set_title("tracker per-frame latency (track bench)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _interleaved_times(seq, inputs, config, names) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-frame wall and thread-CPU ms of several variants, run frame by frame side by side
    (order alternating) so load changes on a shared machine hit every variant alike."""
    pipes = {}
    for name in names:
        flags = VARIANTS[name]
        pipes[name] = TrackingPipeline(config, use_camera=flags["use_camera"], camera_updates=flags["camera_updates"])
        pipes[name].set_camera(DEFAULT_CAMERA.p, DEFAULT_CAMERA.velo_to_cam, DEFAULT_CAMERA.image_size)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for k, (t, (inst, det)) in enumerate(zip(seq.stamps_s, inputs)):
        order = names if k % 2 == 0 else names[::-1]
        for name in order:
            w0, c0 = time.perf_counter(), time.thread_time()
            pipes[name].process(float(t), inst, det if VARIANTS[name]["use_camera"] else None)
            cpu[name].append((time.thread_time() - c0) * 1e3)
            wall[name].append((time.perf_counter() - w0) * 1e3)
    return {n: (np.asarray(wall[n]), np.asarray(cpu[n])) for n in names}


def cmd_bench(args) -> int:
    from tqdm import tqdm

    config = load_config(args.config, args.set)
    counts = [int(c) for c in args.objects.split(",")]
    names = ("lidar_only", "fusion+camera_updates")
    rows = []
    for n in tqdm(counts, desc="objects", leave=False):
        seq = sc.random_traffic(n, args.frames, seed=args.seed, fov_deg=80.0)
        inputs = sc.simulate_inputs(seq, args.seed, DEFAULT_CAMERA.velo_to_image, DEFAULT_CAMERA.image_size)
        times = _interleaved_times(seq, inputs, config, names)
        stats = {}
        for name, (wall, cpu) in times.items():
            w, c = wall[args.warmup:], cpu[args.warmup:]
            stats[name] = (w.mean(), np.percentile(w, 99), w.std(), c.mean())
        n_meas = float(np.mean([len(i) for i, _ in inputs]))
        rows.append((n, n_meas, stats))
    print(f"tracker per-frame latency, {args.frames} frames per row ({args.warmup} warm-up dropped), "
          "random traffic + noise model, single thread, both variants interleaved frame by frame")
    print("| objects | instances/frame | LiDAR-only wall mean / p99 / std (ms) | CPU mean (ms) | "
          "fusion wall mean / p99 / std (ms) | CPU mean (ms) | fusion / LiDAR-only (CPU mean) |")
    print("|---|---|---|---|---|---|---|")
    for n, n_meas, st in rows:
        a, b = st[names[0]], st[names[1]]
        print(f"| {n} | {n_meas:.1f} | {a[0]:.3f} / {a[1]:.3f} / {a[2]:.3f} | {a[3]:.3f} | "
              f"{b[0]:.3f} / {b[1]:.3f} / {b[2]:.3f} | {b[3]:.3f} | {b[3] / a[3]:.2f} |")
    if args.plot:
        plot_bench(rows, args.plot)
        print(f"wrote {args.plot}")
    first, last = rows[0], rows[-1]
    print(f"summary: {first[0]} -> {last[0]} objects: LiDAR-only CPU time per frame grows "
          f"{last[2][names[0]][3] / first[2][names[0]][3]:.1f}x "
          f"({first[2][names[0]][3]:.2f} -> {last[2][names[0]][3]:.2f} ms)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squeeze-perception track", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    e = sub.add_parser("eval", help="MOT metrics on synthetic sequences, with and without camera fusion")
    e.add_argument("--root", default=str(project_root() / "data" / "synth"),
                   help="dataset root holding raw/<date>/<drive>_sync/tracks_velo.csv")
    e.add_argument("--config", default=None, help="tracker parameters (default config/tracker.yaml)")
    e.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a tracker parameter, e.g. car.motion_model=ctrv (repeatable)")
    e.add_argument("--seed", type=int, default=0, help="noise-model seed (sequence i uses seed + i)")
    e.add_argument("--max-sequences", type=int, default=0, help="first N sequences only (0 = all)")
    e.add_argument("--builtin", type=int, default=0, help="use N built-in random-traffic sequences instead")
    e.add_argument("--builtin-objects", type=int, default=12)
    e.add_argument("--builtin-frames", type=int, default=150)
    e.add_argument("--clutter", type=int, default=sc.LidarNoise().clutter_objects,
                   help="static LiDAR clutter blobs per sequence in the noise model")
    e.add_argument("--max-range", type=float, default=50.0)
    e.add_argument("--d-max", type=float, default=2.0, help="distance (m) at which similarity reaches 0")
    e.add_argument("--dropout-period", type=int, default=50,
                   help="also run with the LiDAR silent for --dropout-frames of every N frames (0 = off)")
    e.add_argument("--dropout-frames", type=int, default=10)
    e.add_argument("--source", choices=("noise", "network"), default="noise",
                   help="tracker inputs: the seeded noise model around the ground truth, or the shipped "
                        "networks run on the drives' scans and images (needs raw drives)")
    e.add_argument("--seg-model", default=None, help="--source network: segmentation registry model "
                   "(default: config/squeezeseg.yaml)")
    e.add_argument("--seg-backend", default=None, help="--source network: segmentation backend "
                   "(default: config/squeezeseg.yaml, onnxruntime)")
    e.add_argument("--seg-weights", default=None, help="--source network: segmentation weights file")
    e.add_argument("--det-model", default=None, help="--source network: SqueezeDet registry model for the "
                   "fusion variants (default: config/squeezedet.yaml; 'none' = LiDAR-only)")
    e.add_argument("--det-backend", default=None, help="--source network: detection backend "
                   "(default: config/squeezedet.yaml)")
    e.add_argument("--det-weights", default=None, help="--source network: detection weights file")
    e.add_argument("--threads", type=int, default=1, help="--source network: inference threads per network")
    e.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR),
                   help="--source network: per-drive network outputs are cached here")
    e.add_argument("--refresh-cache", action="store_true", help="--source network: run the networks again "
                   "even when cached outputs exist")
    e.add_argument("--out", default=None, help="write the results as JSON here")
    e.add_argument("--plot", default=None, help="write a bar chart (PNG) here")
    b = sub.add_parser("bench", help="per-frame latency vs number of objects")
    b.add_argument("--objects", default="1,5,10,20,50,100")
    b.add_argument("--frames", type=int, default=200)
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--config", default=None)
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--plot", default=None, help="write latency vs objects (PNG) here")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return {"eval": cmd_eval, "bench": cmd_bench}[args.command](args)
