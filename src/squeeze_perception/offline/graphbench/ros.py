"""The ROS side of `bench graph`, kept thin: a monitor node that notes (stamp, arrival time) of
every sensor and output message (raw CDR, only the header stamp is read), the node processes
(one per node, or all in one process: offline/graphbench/compose.py), and the bag player per trial.
Statistics, the rate search and the report are offline/graphbench/core.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ... import interfaces as itf
from ...paths import config_dir
from . import core

NODES = ("squeezedet_node", "squeezeseg_node", "tracker_node")
INPUTS = {itf.TOPIC_IMAGE: "sensor_msgs/msg/Image", itf.TOPIC_POINTS: "sensor_msgs/msg/PointCloud2"}
# output topic -> (message type, source input topic, node that publishes it)
OUTPUTS = {
    itf.TOPIC_DETECTIONS: ("sensor_msgs/msg/PointCloud2", itf.TOPIC_IMAGE, "squeezedet_node"),
    itf.TOPIC_DETECTIONS_IMAGE: ("sensor_msgs/msg/Image", itf.TOPIC_IMAGE, "squeezedet_node"),
    itf.TOPIC_LABELLED_POINTS: ("sensor_msgs/msg/PointCloud2", itf.TOPIC_POINTS, "squeezeseg_node"),
    itf.TOPIC_INSTANCES: ("sensor_msgs/msg/PointCloud2", itf.TOPIC_POINTS, "squeezeseg_node"),
    itf.TOPIC_TRACKS: ("sensor_msgs/msg/PointCloud2", itf.TOPIC_POINTS, "tracker_node"),
    "perception/passthrough/points": ("sensor_msgs/msg/PointCloud2", itf.TOPIC_POINTS, "passthrough_node"),
    "perception/passthrough/image": ("sensor_msgs/msg/Image", itf.TOPIC_IMAGE, "passthrough_node"),
}


def _msg_class(type_name: str):
    import importlib

    pkg, _, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


class Monitor:
    """An rclpy node in its own context and thread recording arrivals into a core.Recording."""

    def __init__(self, outputs: dict, inputs: dict | None = None, diagnostics: bool = False):
        """inputs: sensor topics to record (default INPUTS; {} for none, as the soak wants: it
        would copy every cloud for nothing); diagnostics: also keep every node's /diagnostics
        counters over time (self.diagnostics, for the soak)."""
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        self.ctx = rclpy.context.Context()
        rclpy.init(context=self.ctx, args=["--ros-args", "-p", "use_sim_time:=false"])
        self.node = rclpy.create_node("graph_bench_monitor", context=self.ctx)
        qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=50,
                         durability=DurabilityPolicy.VOLATILE)
        self.rec = core.Recording()
        self.lock = threading.Lock()
        self.recording = False
        self.last_arrival = time.monotonic()
        for topic, type_name in (INPUTS if inputs is None else inputs).items():
            self.node.create_subscription(_msg_class(type_name), topic, self._cb("inputs", topic), qos, raw=True)
        # (node, stage) -> [(monotonic time, {counter: value})], from the nodes' telemetry
        self.diagnostics: dict[tuple[str, str], list[tuple[float, dict]]] = {}
        if diagnostics:
            from diagnostic_msgs.msg import DiagnosticArray

            # best effort matches the nodes' reliable publishers; a lost report costs nothing
            # (the counters are cumulative)
            diag_qos = QoSProfile(reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST,
                                  depth=50, durability=DurabilityPolicy.VOLATILE)
            self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, diag_qos)
        for topic, (type_name, _, _) in outputs.items():
            self.node.create_subscription(_msg_class(type_name), topic, self._cb("outputs", topic), qos, raw=True)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        while self.ctx.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - shutting down
                break

    def _on_diagnostics(self, msg) -> None:
        t = time.monotonic()
        with self.lock:
            for status in msg.status:
                node, stage = parse_status_name(status.name)
                self.diagnostics.setdefault((node, stage), []).append((t, parse_counters(status.values)))

    def _cb(self, kind: str, topic: str):
        def on_msg(data: bytes):
            t = time.monotonic()
            stamp = core.header_stamp_ns(data)
            if stamp is None or not self.recording:
                return
            with self.lock:
                self.rec.add(kind, topic, stamp, t)
                self.last_arrival = t
        return on_msg

    def complete(self, outputs: dict) -> bool:
        """Every output topic has a message for every frame of its source seen so far."""
        with self.lock:
            for topic, (_, source, _) in outputs.items():
                want = {s for s, _ in self.rec.inputs.get(source, [])}
                if not want <= {s for s, _ in self.rec.outputs.get(topic, [])}:
                    return False
        return True

    def subscribed_nodes(self) -> set[str]:
        """Names of the nodes (other than the monitor) subscribed to a sensor or output topic."""
        found = set()
        for topic in [*INPUTS, *OUTPUTS]:
            for info in self.node.get_subscriptions_info_by_topic("/" + topic):
                found.add(info.node_name)
        return found - {self.node.get_name()}

    def wait_for_nodes(self, names, timeout: float, alive=lambda: True) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            if set(names) <= self.subscribed_nodes():
                return True
            time.sleep(0.5)
        return set(names) <= self.subscribed_nodes()

    def start(self) -> None:
        with self.lock:
            self.rec = core.Recording()
        self.recording = True

    def stop(self) -> core.Recording:
        self.recording = False
        with self.lock:
            return self.rec

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)
        self.thread.join(timeout=2.0)


def parse_status_name(name: str) -> tuple[str, str]:
    """'/ns/squeezedet_node: detect' (node_base.diagnostic_status) -> ('squeezedet_node', 'detect')."""
    node, _, stage = name.rpartition(": ")
    return (node.rsplit("/", 1)[-1], stage) if node else (name, "")


def parse_counters(values) -> dict:
    """Integer-valued KeyValues of a diagnostic status (the frame counters); floats are left out."""
    out = {}
    for kv in values:
        try:
            out[kv.key] = int(kv.value)
        except ValueError:
            pass
    return out


@dataclass
class Graph:
    """The processing nodes as running processes."""
    mode: str  # "processes" | "composed"
    procs: list[tuple[subprocess.Popen, tuple[str, ...]]] = field(default_factory=list)
    log_dir: Path | None = None

    def usage(self) -> list[core.ProcessUsage]:
        return [core.ProcessUsage(name="+".join(n) if len(n) > 1 else n[0], pid=p.pid, nodes=n) for p, n in self.procs]

    def alive(self) -> bool:
        return all(p.poll() is None for p, _ in self.procs)

    def stop(self, timeout: float = 15.0) -> None:
        for p, _ in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        for p, _ in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def overrides_file(params: list[str], path: Path, nodes: tuple[str, ...]) -> Path:
    """The `-p NAME:=VALUE` overrides as a params file naming each node. A plain `-p` on the
    command line, or a "/**" section, loses against the nodes' own sections in their params files
    (config/<node>.yaml, where `backend`, `num_threads`... are set): the overrides go in
    node-named sections of a params file given after those, which wins. Values are typed as YAML
    types them (1 -> int, true -> bool)."""
    import yaml

    values = {}
    for item in params:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise ValueError(f"parameter override '{item}' is not NAME:=VALUE")
        values[name] = yaml.safe_load(value) if value else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    # one dict per node: shared ones would be written as YAML aliases, which rcl refuses
    path.write_text(yaml.safe_dump({n: {"ros__parameters": dict(values)} for n in nodes}, sort_keys=False))
    return path


def ros_args(nodes: tuple[str, ...], params: list[str], overrides: Path) -> list[str]:
    args = ["--ros-args", "-p", "use_sim_time:=true"]
    for n in nodes:
        f = config_dir() / f"{n.removesuffix('_node')}.yaml"
        if f.exists():
            args += ["--params-file", str(f)]
    if params:
        args += ["--params-file", str(overrides_file(params, overrides, nodes))]
    return args


def start_graph(mode: str, nodes: tuple[str, ...], params: list[str], log_dir: Path, env: dict) -> Graph:
    """One process per node (`python -m squeeze_perception.nodes.<node>`) or all of them in one
    rclpy executor (`python -m squeeze_perception.offline.graphbench.compose`)."""
    g = Graph(mode=mode, log_dir=log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    groups = [(n,) for n in nodes] if mode == "processes" else [tuple(nodes)]
    for group in groups:
        overrides = log_dir / f"{mode}_{'+'.join(group)}_overrides.yaml"
        if len(group) == 1 and mode == "processes":
            cmd = [sys.executable, "-m", f"squeeze_perception.nodes.{group[0]}",
                   *ros_args(group, params, overrides)]
        else:
            cmd = [sys.executable, "-m", "squeeze_perception.offline.graphbench.compose", *group,
                   *ros_args(group, params, overrides)]
        log = open(log_dir / f"{mode}_{'+'.join(group)}.log", "w")
        g.procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), group))
    return g


def play(bag: str, rate: float, subscriber_nodes: int, log: Path, env: dict, timeout: float) -> int:
    """Play the bag once (player process), waiting until `subscriber_nodes` nodes subscribed."""
    cmd = [sys.executable, "-m", "squeeze_perception.nodes.bag_player_node", "--ros-args",
           "-p", f"bag:={bag}", "-p", f"rate:={rate:.6g}", "-p", f"subscriber_nodes:={subscriber_nodes}",
           "-p", "wait_for_subscribers:=60.0", "-p", "linger:=0.5", "-p", "use_sim_time:=false"]
    with open(log, "a") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGINT)
            try:
                return p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                return p.wait()


def bag_frames(bag: str) -> dict[str, list[int]]:
    """Header stamps of the sensor topics in the bag (what a full play publishes)."""
    from ...bag.source import BagSource

    out: dict[str, list[int]] = {t: [] for t in INPUTS}
    wanted = {"/" + t: t for t in INPUTS}
    with BagSource(bag) as src:
        for m in src.messages():
            t = wanted.get(m.topic) or (m.topic if m.topic in INPUTS else None)
            if t is not None:
                s = core.header_stamp_ns(m.data)
                if s is not None:
                    out[t].append(s)
    return out


def run_trial(graph: Graph, monitor: Monitor, bag: str, rate: float, drain_s: float, log_dir: Path, env: dict,
              outputs: dict, label: str, sample_period: float = 0.25, max_drain_s: float = 120.0) -> dict:
    """One play of the bag at player rate `rate`: statistics per output topic and per process."""
    usage = graph.usage()
    for u in usage:
        u.sample()
    monitor.start()
    done = threading.Event()
    result = {}

    def player():
        result["rc"] = play(bag, rate, len(graph_nodes(graph)) + 1, log_dir / "player.log", env, timeout=600)
        done.set()

    th = threading.Thread(target=player, daemon=True)
    th.start()
    while not done.wait(sample_period):
        for u in usage:
            u.sample()
    # drain: outputs of the last frames still in flight; ends when every frame has its outputs,
    # after drain_s without any message, or after max_drain_s
    t_end = time.monotonic()
    while not monitor.complete(outputs) and time.monotonic() - max(monitor.last_arrival, t_end) < drain_s \
            and time.monotonic() - t_end < max_drain_s:
        for u in usage:
            u.sample()
        time.sleep(sample_period)
    for u in usage:
        u.sample()
    rec = monitor.stop()
    stats = core.topic_stats(rec, {t: src for t, (_, src, _) in outputs.items()})
    stamps = [s for s, _ in rec.inputs.get(itf.TOPIC_POINTS, [])]
    arrivals = [t for msgs in rec.inputs.values() for _, t in msgs]
    first_frame = min(arrivals) if arrivals else None  # CPU% from here: not the player's start-up
    return {"label": label, "player_rate": rate, "player_rc": result.get("rc"),
            "input_rate_hz": core.frame_rate_hz(stamps) * rate if stamps else float("nan"),
            "topics": stats, "worst_drop_fraction": core.worst_drop_fraction(stats),
            "processes": [u.summary(t_from=first_frame) for u in usage], "graph_alive": graph.alive()}


def graph_nodes(graph: Graph) -> list[str]:
    return [n for _, group in graph.procs for n in group]


def default_env() -> dict:
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    try:
        from ...launch_runner.dds import apply_dds_defaults

        apply_dds_defaults(env)
    except ImportError:
        pass
    return env
