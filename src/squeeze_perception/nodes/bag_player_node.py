"""Bag player node: replays a rosbag2 (mcap/sqlite3) or ROS 1 bag with its recorded timing.

ROS 2 bags are republished as the recorded CDR bytes (`publisher.publish(bytes)`, no
re-serialisation); ROS 1 bags are converted on the fly (bag/source.py). Topics are published
relative (leading slash stripped) so a launch namespace applies, except /clock, /tf and
/tf_static. With `publish_clock` it drives /clock for nodes running with use_sim_time. At the
end of the bag (loop false) the node exits with code 0, which a launch file turns into a clean
shutdown (OnProcessExit -> Shutdown).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..bag.player import Playback, PlaybackOptions
from ..bag.source import BagError, BagMessage, BagSource
from ..node_base import LATCHED_QOS, ParamSpec, PerceptionNode, run_node

GLOBAL_TOPICS = ("/clock", "/tf", "/tf_static")
LATCHED_TYPES = ("sensor_msgs/msg/CameraInfo",)
# Recorded sensor streams: reliable so RViz (reliable by default) and our best-effort
# subscribers both match; deep enough to absorb a burst of camera + LiDAR at the same stamp.
PLAYBACK_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                          depth=10, durability=DurabilityPolicy.VOLATILE)
CLOCK_QOS = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1)

PARAMS = [
    ParamSpec("bag", "", "Path of the bag: a rosbag2 folder (mcap or sqlite3) or a ROS 1 .bag file",
              read_only=True),
    ParamSpec("rate", 1.0, "Playback speed relative to the recording (2.0 = twice as fast)", min=0.01, max=100.0,
              read_only=True),
    ParamSpec("loop", False, "Start again at the end of the bag instead of exiting", read_only=True),
    ParamSpec("start_offset", 0.0, "Seconds of bag time to skip at the start", min=0.0, max=1e6, read_only=True),
    ParamSpec("publish_clock", True, "Publish /clock with the bag time (for use_sim_time)", read_only=True),
    ParamSpec("clock_frequency", 100.0, "/clock updates per second between messages", min=1.0, max=1000.0,
              read_only=True),
    ParamSpec("topics", "", "Comma-separated topics to play (empty = all)", read_only=True),
    ParamSpec("wait_for_subscribers", 3.0,
              "Seconds to wait for every played topic to have a subscriber before starting", min=0.0, max=60.0,
              read_only=True),
    ParamSpec("subscriber_nodes", 0,
              "Start once this many nodes subscribe to the played topics (0: once every topic has a "
              "subscriber); both bounded by wait_for_subscribers", min=0, max=1000, read_only=True),
    ParamSpec("linger", 5.0, "Seconds to keep running after the last message, so it is delivered and slow "
              "model nodes finish their last frames before a launch shuts down",
              min=0.0, max=60.0, read_only=True),
]

_exit_code = 0  # set by the node: non-zero when the bag could not be played


class EndOfPlayback(ExternalShutdownException):
    """Raised in the executor thread to leave spin() with the node intact (run_node prints its summary)."""


def output_topic(bag_topic: str) -> str:
    """/kitti/velo/pointcloud -> kitti/velo/pointcloud (namespace applies); /tf stays global."""
    return bag_topic if bag_topic in GLOBAL_TOPICS else bag_topic.lstrip("/")


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image, or None when the package is absent."""
    package, _, name = msgtype.replace("/msg/", "/").partition("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        return None


class BagPlayerNode(PerceptionNode):
    def __init__(self):
        super().__init__("bag_player_node", PARAMS, stages=("playback",))
        self.publishers_by_topic: dict[str, object] = {}
        self.published: dict[str, int] = {}
        self.playback: Playback | None = None
        self.source: BagSource | None = None
        self.finished = False
        self._thread: threading.Thread | None = None
        self._end_guard = self.create_guard_condition(self._on_end)
        try:
            self.source = self._open()
        except (BagError, ValueError) as exc:
            self._fail(str(exc))
            return
        self._thread = threading.Thread(target=self._play, name="bag_playback", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ setup
    def _fail(self, reason: str) -> None:
        global _exit_code
        _exit_code = 1
        self.report_error("playback", reason)
        self.get_logger().error(f"cannot play: {reason}")
        self.finished = True
        # Exit so a launch notices (the player is the clock of the whole run).
        self._end_guard.trigger()

    def _on_end(self) -> None:
        raise EndOfPlayback()

    def _open(self) -> BagSource:
        bag = self.p["bag"]
        if not bag:
            raise BagError("parameter 'bag' is empty: give a rosbag2 folder or a ROS 1 .bag file")
        topics = [t.strip() for t in self.p["topics"].split(",") if t.strip()]
        source = BagSource(bag, topics)
        if not source.topics:
            raise BagError(f"bag '{bag}' has none of the requested topics {topics}")
        skipped = []
        for topic, info in source.topics.items():
            cls = message_class(info.msgtype)
            if cls is None:
                skipped.append(f"{topic} ({info.msgtype})")
                continue
            # camera_info is latched in our contract (late joiners need it) whatever the recorder chose.
            latched = info.latched or info.msgtype in LATCHED_TYPES or topic == "/tf_static"
            qos = LATCHED_QOS if latched else PLAYBACK_QOS
            self.publishers_by_topic[topic] = self.advertise(cls, output_topic(topic), qos)
        source.restrict(list(self.publishers_by_topic))  # never read or convert what cannot be sent
        if skipped:  # e.g. tf2_msgs has no wheel here; these play on a full ROS 2 install
            self.get_logger().warning(
                f"skipping {len(skipped)} topic(s) whose message package is not importable here: "
                + ", ".join(skipped))
        self.clock_pub = None
        if self.p["publish_clock"]:
            from rosgraph_msgs.msg import Clock

            self.clock_pub = self.create_publisher(Clock, "/clock", CLOCK_QOS)
            self._clock_msg = Clock()
        kind = "ROS 1 (converted on the fly)" if source.is_ros1 else "rosbag2"
        self.get_logger().info(
            f"playing {kind} bag '{bag}': {len(self.publishers_by_topic)} topic(s), "
            f"{source.duration_s:.2f} s at rate {self.p['rate']}"
            + (", looping" if self.p["loop"] else ""))
        return source

    # ------------------------------------------------------------------ playback thread
    def _subscriber_nodes(self) -> set[tuple[str, str]]:
        """Nodes subscribed to the played topics, except this one and hidden nodes (name starting
        with `_`, ROS 2's convention for tools such as `render --live`'s `_render_live`): an
        observer must not make playback start before the processing nodes are up."""
        me = (self.get_namespace(), self.get_name())
        found = set()
        for pub in self.publishers_by_topic.values():
            for info in self.get_subscriptions_info_by_topic(pub.topic_name):
                if not info.node_name.startswith("_"):
                    found.add((info.node_namespace, info.node_name))
        return found - {me}

    def _wait_for_subscribers(self) -> None:
        """Give discovery time so the first frames are not lost, bounded by wait_for_subscribers.

        With subscriber_nodes = N: until N distinct nodes subscribe (model nodes may take seconds
        to load). Otherwise: until every played topic has a subscriber and the counts settled 1 s.
        """
        deadline = time.monotonic() + self.p["wait_for_subscribers"]
        wanted_nodes = self.p["subscriber_nodes"]
        data_pubs = [p for t, p in self.publishers_by_topic.items() if t not in GLOBAL_TOPICS]
        last, stable_since = None, time.monotonic()
        while time.monotonic() < deadline and not self.playback.stop_event.is_set():
            if wanted_nodes:
                if len(self._subscriber_nodes()) >= wanted_nodes:
                    time.sleep(0.5)  # their other subscriptions are matched within moments
                    return
            else:
                counts = [p.get_subscription_count() for p in data_pubs]
                if counts != last:
                    last, stable_since = counts, time.monotonic()
                elif all(counts) and time.monotonic() - stable_since >= 1.0:
                    return
            time.sleep(0.05)
        if wanted_nodes:
            self.get_logger().warning(
                f"starting after {self.p['wait_for_subscribers']:.0f} s with {len(self._subscriber_nodes())} of "
                f"{wanted_nodes} subscriber node(s); early frames may be missed")

    def _publish(self, msg: BagMessage) -> None:
        stats = self.stats["playback"]
        stats.frames_in += 1
        pub = self.publishers_by_topic.get(msg.topic)
        if pub is None:
            return
        t0 = time.perf_counter()
        pub.publish(msg.data)
        stats.add_processing((time.perf_counter() - t0) * 1e3)
        stats.frames_out += 1
        self.published[msg.topic] = self.published.get(msg.topic, 0) + 1

    def _publish_clock(self, bag_ns: int) -> None:
        if self.clock_pub is None:
            return
        self._clock_msg.clock.sec, self._clock_msg.clock.nanosec = divmod(int(bag_ns), 1_000_000_000)
        self.clock_pub.publish(self._clock_msg)

    def _play(self) -> None:
        try:
            options = PlaybackOptions(rate=self.p["rate"], loop=self.p["loop"],
                                      start_offset_s=self.p["start_offset"], clock_hz=self.p["clock_frequency"],
                                      publish_clock=self.p["publish_clock"])
            self.playback = Playback(self.source, self._publish, self._publish_clock, options)
            self._wait_for_subscribers()
            result = self.playback.run()
            if result.stopped:
                return
            self.get_logger().info(f"end of bag: published {result.total} message(s) in {result.passes} pass(es)")
            time.sleep(self.p["linger"])
        except Exception as exc:  # noqa: BLE001 - damaged bag or context gone: report and exit
            if self.context.ok():
                self._fail(f"playback failed: {exc}")
            return
        self.finished = True
        self._end_guard.trigger()  # spin() ends in the executor thread; run_node prints the summary

    # ------------------------------------------------------------------ telemetry / exit
    def diagnostic_status(self, stage: str) -> DiagnosticStatus:
        status = super().diagnostic_status(stage)
        status.values += [KeyValue(key=f"published {t}", value=str(n)) for t, n in self.published.items()]
        return status

    def summary_json(self) -> str:
        data = json.loads(super().summary_json())
        data["topics"] = dict(self.published)
        return json.dumps(data)

    def destroy_node(self):
        if self.playback is not None:
            self.playback.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        if self.published:
            print("bag_player_node: messages published per topic:", flush=True)
            for topic, n in sorted(self.published.items()):
                print(f"  {output_topic(topic):44s} {n:6d}", flush=True)
        if self.source is not None:
            self.source.close()
        return super().destroy_node()


def _cli_to_ros_args(argv: list[str]) -> list[str]:
    """`squeeze-perception play BAG --rate 2 --loop` -> ROS arguments for this node."""
    parser = argparse.ArgumentParser(prog="squeeze-perception play",
                                     description="Play a rosbag2 or ROS 1 bag (the bag_player_node).")
    parser.add_argument("bag")
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--loop", action="store_true")
    parser.add_argument("--start-offset", type=float, default=0.0)
    parser.add_argument("--no-clock", action="store_true")
    parser.add_argument("--topics", default="", help="comma-separated allow-list")
    args, rest = parser.parse_known_args(argv)
    ros = ["bag_player_node", "--ros-args", "-p", f"bag:={args.bag}", "-p", f"rate:={args.rate}",
           "-p", f"loop:={str(args.loop).lower()}", "-p", f"start_offset:={args.start_offset}",
           "-p", f"publish_clock:={str(not args.no_clock).lower()}"]
    if args.topics:
        ros += ["-p", f"topics:={args.topics}"]
    if rest:
        ros += [r for r in rest if r != "--ros-args"]
    return ros


def main(args: list[str] | None = None) -> int:
    if args is not None and "--ros-args" not in args and args[:1] != [sys.argv[0]]:
        args = _cli_to_ros_args(list(args))
    run_node(BagPlayerNode, args)
    return _exit_code


if __name__ == "__main__":
    raise SystemExit(main())
