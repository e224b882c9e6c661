"""`squeeze-perception soak`: run the default stack (launch/vehicle.launch.py under the
compatible launch runner: the bag player looping the bag, squeezedet, squeezeseg, tracker) for
a long time and report, per node, resident memory at start / end / peak and its growth,
throughput (frames processed per second) in the first vs the second half, the honest
counters of every stage, and optionally (--capture) every frame that left the machine on a
non-loopback interface. Exit code 1 when memory grew or throughput fell beyond the thresholds
(or a node restarted, or the capture saw DNS / RTPS / stack traffic); 2 when the stack did not
come up. Definitions: offline/graphbench/soak.py; packet counting: offline/graphbench/packets.py.

    squeeze-perception soak --minutes 30 --capture --out out/soak_30min.json
    squeeze-perception soak --seconds 20 --nodes passthrough_node          # a quick look
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import math
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from . import core, soak

PROCESSING_NODES = {"squeezedet_node": "detector", "squeezeseg_node": "segmenter", "tracker_node": "tracker",
                    "passthrough_node": "passthrough"}  # node -> vehicle.launch.py flag that enables it


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="squeeze-perception soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    length = ap.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="length of the run, warm-up included (default 30)")
    length.add_argument("--seconds", type=float, help="the same in seconds (short checks)")
    ap.add_argument("--bag", default="", help="bag to loop (default: vehicle.launch.py's, the demo drive)")
    ap.add_argument("--rate-hz", type=float, default=10.0,
                    help="sensor frame rate to play at (player rate scaled from the bag's own); 0 = recorded timing")
    ap.add_argument("--nodes", default="squeezedet_node,squeezeseg_node,tracker_node",
                    help=f"processing nodes to run, of {', '.join(PROCESSING_NODES)}")
    ap.add_argument("-a", "--launch-arg", action="append", default=[], metavar="NAME:=VALUE",
                    help="further vehicle.launch.py argument (e.g. det_backend:=onnxruntime); repeatable")
    ap.add_argument("--capture", action="store_true",
                    help="count outgoing frames on every non-loopback interface (root / CAP_NET_RAW)")
    ap.add_argument("--warmup-s", type=float, help="unmeasured start of the run (default 10%% of it, at most 60 s)")
    ap.add_argument("--rss-window-s", type=float, default=10.0,
                    help="RSS at start / end: median over this long after the warm-up / before the end")
    ap.add_argument("--sample-s", type=float, default=2.0, help="resident-memory sampling period")
    ap.add_argument("--progress-s", type=float, help="progress line period (default 60 s, shorter for short runs)")
    ap.add_argument("--max-rss-growth-pct", type=float, default=5.0, help="fail above this RSS growth of any process")
    ap.add_argument("--min-throughput-ratio", type=float, default=0.95,
                    help="fail when a node's second-half throughput is below this fraction of its first half")
    ap.add_argument("--startup-timeout", type=float, default=600.0,
                    help="seconds for every node to process its first frame")
    ap.add_argument("--out", default="out/soak.json", help="JSON report (the launch's output beside it, *.log)")
    args = ap.parse_args(argv)
    args.run_s = args.seconds if args.seconds is not None else 60.0 * (args.minutes if args.minutes is not None else 30.0)
    if args.run_s <= 0:
        ap.error("the run must last more than 0 s")
    args.node_list = [n.strip() for n in args.nodes.split(",") if n.strip()]
    unknown = [n for n in args.node_list if n not in PROCESSING_NODES]
    if unknown or not args.node_list:
        ap.error(f"--nodes: unknown {unknown}; choose from {', '.join(PROCESSING_NODES)}")
    if args.warmup_s is None:
        args.warmup_s = soak.default_warmup_s(args.run_s)
    if args.progress_s is None:
        args.progress_s = min(60.0, max(2.0, args.run_s / 10))
    return args


def launch_arguments(args, rate: float | None) -> dict[str, str]:
    from ...launch_runner.runner import parse_launch_arguments

    arguments = {"loop": "true", **{flag: str(node in args.node_list).lower() for node, flag in PROCESSING_NODES.items()}}
    if args.bag:
        arguments["bag"] = args.bag
    if rate is not None:
        arguments["rate"] = f"{rate:.6g}"
    arguments.update(parse_launch_arguments(args.launch_arg))
    return arguments


def plan_stack(args):
    """The launch plan of vehicle.launch.py for this soak, and the player rate it uses."""
    from ...launch_runner.runner import load_launch_description, plan_launch
    from ...paths import launch_dir
    from . import ros

    description = load_launch_description(launch_dir() / "vehicle.launch.py")
    with contextlib.redirect_stdout(io.StringIO()):  # its LogInfo lines would print twice
        probe = plan_launch(description, launch_arguments(args, None))  # which bag the launch file picks
    shutil.rmtree(probe.tmpdir, ignore_errors=True)
    bag = probe.configurations["bag"]
    if not Path(bag).exists():
        raise FileNotFoundError(f"bag '{bag}' not found")
    frames = ros.bag_frames(bag)
    bag_hz = core.frame_rate_hz(frames.get(ros.itf.TOPIC_POINTS) or frames.get(ros.itf.TOPIC_IMAGE) or [])
    rate = None if not args.rate_hz or math.isnan(bag_hz) else args.rate_hz / bag_hz
    plan = plan_launch(description, launch_arguments(args, rate))
    return plan, bag, bag_hz, frames


def counter_series(monitor, node: str, stage: str) -> list[tuple[float, float]]:
    """(time, cumulative throughput counter) of one node's stage from its telemetry."""
    counter = soak.throughput_counter(node)
    with monitor.lock:
        return [(t, c.get(counter, 0)) for t, c in monitor.diagnostics.get((node, stage), [])]


def first_frames_done(monitor, nodes: list[str]) -> list[str]:
    """Nodes whose primary stage has not processed a frame yet."""
    return [n for n in nodes if not any(v > 0 for _, v in counter_series(monitor, n, soak.PRIMARY_STAGE[n]))]


class ProcessTracker:
    """RSS samples per launched process, across respawns (a new pid counts a restart)."""

    def __init__(self, group):
        self.group = group
        self.usage: dict[str, core.ProcessUsage] = {}
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self.pids: dict[str, list[int]] = {}

    def sample(self) -> None:
        now = time.monotonic()
        for name, proc in list(self.group.procs.items()):
            if proc.poll() is not None:
                continue
            if name not in self.usage or self.usage[name].pid != proc.pid:
                self.usage[name] = core.ProcessUsage(name=name, pid=proc.pid)
                self.pids.setdefault(name, []).append(proc.pid)
            u = self.usage[name]
            u.sample(now)
            if u.samples and u.samples[-1][0] == now:
                self.samples.setdefault(name, []).append((now, float(u.samples[-1][2])))

    def live_pids(self) -> list[int]:
        return [p.pid for p in self.group.procs.values() if p.poll() is None]


def short(node: str) -> str:
    return node.removesuffix("_node")


def progress_line(elapsed: float, args, phase: str, tracker: ProcessTracker, monitor, sniffer, since: float) -> str:
    parts = []
    for name, samples in tracker.samples.items():
        mb = samples[-1][1] / 2 ** 20 if samples else math.nan
        stage = soak.PRIMARY_STAGE.get(name)
        fps = soak.rate_between(counter_series(monitor, name, stage), since, time.monotonic()) if stage else math.nan
        parts.append(f"{short(name)} {soak.fmt(mb, 0)} MB {soak.fmt(fps)} fps")
    line = f"[soak {elapsed:6.0f}/{args.run_s:.0f} s {phase}] " + " | ".join(parts)
    if sniffer is not None:
        s = sniffer.snapshot()
        line += f" | out: dns {s['dns']} rtps {s['rtps']} all {s['total']}"
    return line


def main(argv: list[str]) -> int:
    args = parse(argv)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from ...launch_runner.compat import LaunchError
    from ...launch_runner.runner import ProcessGroup
    from ...paths import project_root
    from . import packets, ros

    env = ros.default_env()
    os.environ.update({k: v for k, v in env.items() if k not in os.environ})  # the monitor's DDS = the nodes'
    try:
        plan, bag, bag_hz, frames = plan_stack(args)
    except (LaunchError, FileNotFoundError) as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    log_path = out_path.with_suffix(".log")
    report = {
        "config": {**{k: v for k, v in vars(args).items() if k != "node_list"}, "nodes": args.node_list, "bag": bag,
                   "bag_frames": {t: len(v) for t, v in frames.items()}, "bag_frame_rate_hz": bag_hz,
                   "launch_arguments": plan.configurations, "python": sys.version.split()[0],
                   "ros_domain_id": os.environ.get("ROS_DOMAIN_ID"),
                   "ros_automatic_discovery_range": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE"),
                   "cpu_count": os.cpu_count(), "definitions": soak.__doc__,
                   "packet_definitions": packets.__doc__ if args.capture else None},
        "git": core.git_revision(project_root()), "bag_sha256": core.bag_hash(bag),
        "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    sniffer = None
    if args.capture:  # before the launch: discovery at start-up is the likeliest leak
        try:
            sniffer = packets.OutgoingSniffer().start()
        except OSError as exc:
            print(f"soak: --capture: cannot open packet sockets ({exc}); run as root or with CAP_NET_RAW",
                  file=sys.stderr)
            shutil.rmtree(plan.tmpdir, ignore_errors=True)
            return 2
    monitor = ros.Monitor(outputs={}, inputs={}, diagnostics=True)
    log = open(log_path, "w")
    group = ProcessGroup(plan, out=log, sigint_timeout=10.0)
    launch_thread = threading.Thread(target=group.run, name="launch", daemon=True)
    tracker = ProcessTracker(group)
    stack_ports: set[tuple[str, int]] = set()
    interrupted, error = False, None
    t_launch = time.monotonic()
    run_start = warmup_end = run_end = math.nan

    def collect():
        tracker.sample()
        if sniffer is not None:  # sockets come and go: their ports are collected all along
            stack_ports.update(packets.process_ports([*tracker.live_pids(), os.getpid()]))

    print(f"soak: {args.run_s:.0f} s of {', '.join(args.node_list)} on {bag} at "
          f"{args.rate_hz:g} Hz (player rate {plan.configurations.get('rate')}), warm-up {args.warmup_s:.0f} s; "
          f"launch output in {log_path}", flush=True)
    try:
        launch_thread.start()
        next_note = time.monotonic()
        while (waiting := first_frames_done(monitor, args.node_list)):
            if not launch_thread.is_alive():
                error = f"the launch ended before every node processed a frame ({group.shutdown_reason})"
                break
            if time.monotonic() - t_launch > args.startup_timeout:
                error = f"no frame processed by {waiting} after {args.startup_timeout:.0f} s"
                break
            collect()
            if time.monotonic() >= next_note:
                print(f"[soak start-up {time.monotonic() - t_launch:5.0f} s] waiting for the first frame of "
                      f"{', '.join(map(short, waiting))}", flush=True)
                next_note += 30.0
            time.sleep(0.5)
        if error is None:
            run_start = time.monotonic()
            report["startup_s"] = run_start - t_launch
            warmup_end, run_end = run_start + args.warmup_s, run_start + args.run_s
            next_progress, since = run_start + args.progress_s, run_start
            print(f"[soak      0/{args.run_s:.0f} s] every node processed a frame after "
                  f"{report['startup_s']:.0f} s; running", flush=True)
            while (now := time.monotonic()) < run_end:
                if not launch_thread.is_alive():
                    error = f"the launch ended during the run ({group.shutdown_reason})"
                    run_end = now
                    break
                collect()
                if now >= next_progress:
                    phase = "warm-up" if now < warmup_end else "1st half" if now < 0.5 * (warmup_end + run_end) else "2nd half"
                    print(progress_line(now - run_start, args, phase, tracker, monitor, sniffer, since), flush=True)
                    next_progress, since = next_progress + args.progress_s, now
                time.sleep(min(args.sample_s, max(0.0, run_end - now)))
            collect()
    except KeyboardInterrupt:
        interrupted = True
        run_end = time.monotonic()
        print("soak: interrupted; reporting what was measured", flush=True)
    finally:
        group.request_shutdown("soak finished" if not interrupted else "soak interrupted")
        launch_thread.join(timeout=60.0)
        shutil.rmtree(plan.tmpdir, ignore_errors=True)
        log.close()
        monitor.close()
    packet_report = (sniffer.stop(stack_ports, domain_id=int(os.environ.get("ROS_DOMAIN_ID", "0") or 0))
                     if sniffer is not None else None)

    nodes = {}
    for name in sorted(set(tracker.samples) | set(group.summaries)):
        stage = soak.PRIMARY_STAGE.get(name)
        series = counter_series(monitor, name, stage) if stage else []
        last_telemetry = {}
        for (node, st), values in monitor.diagnostics.items():
            if node == name and values:
                last_telemetry[st] = values[-1][1]
        counters = (group.summaries.get(name) or {}).get("stages") or last_telemetry
        keep = ("frames_in", "frames_skipped", "frames_processed", "frames_out", "frames_failed", "frames_dropped",
                "stamps_rejected")
        nodes[name] = {
            "pids": tracker.pids.get(name, []), "restarts": max(0, len(tracker.pids.get(name, [])) - 1),
            "exit_code": group.exit_codes.get(name), "stage": stage, "input_only": name in soak.INPUT_NODES,
            "rss": soak.rss_summary(tracker.samples.get(name, []), run_start, warmup_end, run_end, args.rss_window_s),
            "throughput": soak.throughput_halves(series, warmup_end, run_end) if stage else None,
            "counters": {st: {k: c.get(k, 0) for k in keep} for st, c in counters.items()},
            "counters_source": "SUMMARY" if name in group.summaries else "last telemetry",
            "rss_series_mb": [(round(t - run_start, 1), round(v / 2 ** 20, 2))
                              for t, v in tracker.samples.get(name, [])] if not math.isnan(run_start) else [],
        }
    report.update({
        "run": {"run_s": (run_end - run_start) if not math.isnan(run_start) else 0.0, "warmup_s": args.warmup_s,
                "requested_s": args.run_s, "interrupted": interrupted, "error": error},
        "nodes": nodes, "packets": packet_report,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    })
    thresholds = soak.Thresholds(args.max_rss_growth_pct, args.min_throughput_ratio)
    failures = ([error] if error else []) + (["interrupted before the end"] if interrupted else []) \
        + soak.verdict(nodes, thresholds, packet_report)
    report["verdict"] = {"passed": not failures, "failures": failures, "thresholds": vars(thresholds)}
    out_path.write_text(json.dumps(report, indent=2, default=str))
    print()
    print(soak.render(report))
    print(f"report: {out_path}")
    if error and math.isnan(run_start):
        return 2
    return 0 if not failures else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
