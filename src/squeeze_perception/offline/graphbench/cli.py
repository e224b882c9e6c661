"""`squeeze-perception bench graph`: play a bag through the perception graph and report, per
output topic, the sensor-to-publish latency (p50/p95/p99/max), jitter and dropped frames, and
CPU% and resident memory per node process; one process per node and all nodes in one process,
side by side. Writes a JSON report (configuration, git revision, sha256 of the bag).

    squeeze-perception bench graph                          # the bag at its own timing
    squeeze-perception bench graph --rate-hz 10             # a fixed input rate
    squeeze-perception bench graph --search --max-hz 40     # highest rate with < 5 % dropped frames
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import time
from pathlib import Path

from . import core


def parse(argv: list[str]) -> argparse.Namespace:
    from ...paths import bags_dir

    ap = argparse.ArgumentParser(prog="squeeze-perception bench graph", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bag", default=str(bags_dir() / "kitti_real_4frames"), help="rosbag2 folder or ROS 1 .bag")
    rate = ap.add_mutually_exclusive_group()
    rate.add_argument("--rate-hz", type=float, help="play the sensor frames at this rate (player rate scaled from "
                      "the bag's own frame rate) instead of the recorded timing")
    rate.add_argument("--search", action="store_true", help="search the highest rate with < 5%% dropped frames")
    ap.add_argument("--max-hz", type=float, default=40.0, help="upper end of the rate search")
    ap.add_argument("--graph", choices=("processes", "composed", "both"), default="both",
                    help="one process per node, all nodes in one process, or both (default)")
    ap.add_argument("--nodes", default="squeezedet_node,squeezeseg_node,tracker_node", help="nodes to run")
    ap.add_argument("--plays", type=int, default=1, help="measured plays of the bag per setting")
    ap.add_argument("--warmup", type=int, default=1, help="plays before measuring (first-frame costs)")
    ap.add_argument("--drain-s", type=float, default=3.0, help="after a play, wait for late outputs until this long passes without a message")
    ap.add_argument("--max-drain-s", type=float, default=120.0, help="longest wait for late outputs after a play")
    ap.add_argument("--startup-timeout", type=float, default=300.0, help="seconds for the nodes to come up")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                    help="parameter for every node (e.g. num_threads:=1); repeatable")
    ap.add_argument("--out", default="out/graph_bench.json", help="JSON report path (node logs beside it)")
    ap.add_argument("--log-dir", default="", help="node logs (default: beside the report)")
    return ap.parse_args(argv)


def run_mode(args, mode: str, nodes: tuple[str, ...], monitor, bag_hz: float, env: dict, log_dir: Path) -> dict:
    from . import ros

    outputs = {t: v for t, v in ros.OUTPUTS.items() if v[2] in nodes}
    graph = ros.start_graph(mode, nodes, args.param, log_dir, env)
    out = {"mode": mode, "nodes": list(nodes), "trials": [], "search": None}
    try:
        t0 = time.monotonic()
        if not monitor.wait_for_nodes(nodes, args.startup_timeout, alive=graph.alive):
            out["error"] = (f"nodes not up after {time.monotonic() - t0:.0f} s (alive: {graph.alive()}); "
                            f"subscribed: {sorted(monitor.subscribed_nodes())}; logs in {log_dir}")
            print(f"bench graph: {mode}: {out['error']}", file=sys.stderr)
            return out
        out["startup_s"] = time.monotonic() - t0

        def player_rate(hz):
            return 1.0 if hz is None or math.isnan(bag_hz) else hz / bag_hz

        def trial(hz, label):
            return ros.run_trial(graph, monitor, args.bag, player_rate(hz), args.drain_s, log_dir, env, outputs, label,
                                 max_drain_s=args.max_drain_s)

        first = args.rate_hz if args.rate_hz else None
        for k in range(args.warmup):
            trial(first, f"warm-up {k + 1}")
        if args.search:
            def drop_at(hz):
                worst = 0.0
                for k in range(args.plays):
                    t = trial(hz, f"search {hz:.2f} Hz play {k + 1}")
                    out["trials"].append(t)
                    worst = max(worst, t["worst_drop_fraction"])
                return worst
            best, steps = core.search_max_rate(drop_at, start_hz=bag_hz if not math.isnan(bag_hz) else 10.0,
                                               max_hz=args.max_hz)
            out["search"] = {"max_rate_hz": best, "drop_limit": core.DROP_LIMIT,
                             "trials": [vars(s) for s in steps]}
        else:
            for k in range(args.plays):
                label = f"{args.rate_hz:g} Hz" if args.rate_hz else "recorded timing"
                out["trials"].append(trial(first, f"{label} play {k + 1}"))
            out["pooled"] = core.pooled_topics(out["trials"])
    finally:
        graph.stop()
    return out


MODELS_HELP = """Every registered detection / segmentation model whose weights exist, on every backend
(torch, onnxruntime, onnxruntime-int8, synetgy, ...), side by side in one run: batch-1 latency
(mean, p50, p99; emulated for synetgy, with its host time), fps, mJ/frame with the method that
produced it, and the accuracy change against the fp32 reference on synthetic evaluation frames.
A backend that refuses a model is a row "refused: <reason>". Progress on stderr; a markdown table
and a summary on stdout. Definitions: squeeze_perception/offline/bench_models.py.

    squeeze-perception bench models
    squeeze-perception bench models --models squeezedet,squeezesegv2 --backends torch,onnxruntime
    nice -n 10 squeeze-perception bench models --repeats 5 --det-frames 10 --seg-grids 6 --json out/bench_models.json
"""


def parse_models(argv: list[str]) -> argparse.Namespace:
    from ..bench_models import DEFAULT_DET_DIR, DEFAULT_SEG_DIR

    def names(text: str) -> list[str]:
        return [n.strip() for n in text.split(",") if n.strip()]

    ap = argparse.ArgumentParser(prog="squeeze-perception bench models", description=MODELS_HELP,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=names, default=None, help="comma-separated models (default: every "
                    "detection / segmentation model with weights)")
    ap.add_argument("--backends", type=names, default=None, help="comma-separated backends (default: all registered)")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (each times every backend once)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per backend before the rounds")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of every backend (0: library default)")
    ap.add_argument("--det-frames", type=int, default=20, help="detection evaluation frames")
    ap.add_argument("--det-dir", default=str(DEFAULT_DET_DIR), help="KITTI-layout split (image_2, label_2)")
    ap.add_argument("--seg-grids", type=int, default=10, help="segmentation evaluation grids")
    ap.add_argument("--seg-dir", default=str(DEFAULT_SEG_DIR), help="lidar_2d grids (*.npy)")
    ap.add_argument("--peak-n", type=int, default=1024, help="matmul size for the peak (x bound column); 0: off")
    ap.add_argument("--json", default="", help="also write the full report (strict JSON) here")
    return ap.parse_args(argv)


def main_models(argv: list[str]) -> int:
    from .. import bench_models as bm

    args = parse_models(argv)
    if args.repeats < 1:
        print("bench models: --repeats must be at least 1", file=sys.stderr)
        return 2
    cfg = bm.BenchConfig(models=args.models, backends=args.backends, repeats=args.repeats, warmup=args.warmup,
                         threads=args.threads, det_frames=args.det_frames, det_dir=Path(args.det_dir),
                         seg_grids=args.seg_grids, seg_dir=Path(args.seg_dir), peak_n=args.peak_n)
    report = bm.ModelsBench(cfg, progress=lambda msg: print(f"bench models: {msg}", file=sys.stderr,
                                                            flush=True)).run()
    report["command"] = "squeeze-perception bench models " + " ".join(argv)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(bm.to_json(report))
    print(bm.render_table(report))
    print()
    print(bm.render_summary(report, args.json or None))
    return 0 if report["rows"] else 1


def main(argv: list[str]) -> int:
    if argv and argv[0] == "models":
        return main_models(argv[1:])
    if not argv or argv[0] != "graph":
        print("usage: squeeze-perception bench graph|models [options]  (see --help)", file=sys.stderr)
        return 2
    args = parse(argv[1:])
    if not Path(args.bag).exists():
        print(f"bench graph: bag '{args.bag}' not found", file=sys.stderr)
        return 2
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from ...paths import project_root
    from . import ros

    env = ros.default_env()
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})
    nodes = tuple(n.strip() for n in args.nodes.split(",") if n.strip())
    out_path = Path(args.out)
    log_dir = Path(args.log_dir) if args.log_dir else out_path.with_suffix("").parent / (out_path.stem + "_logs")
    frames = ros.bag_frames(args.bag)
    bag_hz = core.frame_rate_hz(frames.get(ros.itf.TOPIC_POINTS) or frames.get(ros.itf.TOPIC_IMAGE) or [])
    report = {
        "config": {**vars(args), "nodes": list(nodes), "bag_frames": {t: len(v) for t, v in frames.items()},
                   "bag_frame_rate_hz": bag_hz, "python": sys.version.split()[0],
                   "ros_domain_id": os.environ.get("ROS_DOMAIN_ID"), "cpu_count": os.cpu_count(),
                   "definitions": core.__doc__},
        "git": core.git_revision(project_root()), "bag_sha256": core.bag_hash(args.bag),
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "modes": [],
    }
    modes = ("processes", "composed") if args.graph == "both" else (args.graph,)
    monitor = ros.Monitor({t: v for t, v in ros.OUTPUTS.items() if v[2] in nodes})
    try:
        for mode in modes:
            report["modes"].append(run_mode(args, mode, nodes, monitor, bag_hz, env, log_dir))
    finally:
        monitor.close()
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2, default=str))
    print(core.render(report))
    print(f"report: {out_path}")
    return 1 if any("error" in m for m in report["modes"]) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
