"""The client end of synetgy_node: a model node's `synetgy` backend asking the shared emulated
board for time, and falling back to the CPU when the board's node is gone.

`DeviceLink` is the ROS-free decision: device or CPU for the next frame, from the node's
heartbeat and from requests that were not answered, with one message per switch and the frames
on either side counted. `RosDeviceTransport` carries requests and replies as std_msgs/String
JSON on absolute topics (one board per machine, whatever the node namespaces) from a small
node of its own, spun in a background thread: the model node's executor is busy running the
frame that waits for the reply.
"""
from __future__ import annotations

import itertools
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

TOPIC_REQUESTS = "/synetgy/requests"
TOPIC_REPLIES = "/synetgy/replies"
TOPIC_STATUS = "/synetgy/status"  # heartbeat + statistics, JSON, every status_period_s

# Within 1 s of the node dying or stalling (issue 12): its heartbeat (20 Hz) is missed for
# STALE_S, or a request stays unanswered for REPLY_TIMEOUT_S, whichever comes first. 0.3 s gave
# false alarms on a 2-core machine loaded by a training run (heartbeats 0.3-0.4 s late).
STALE_S = 0.5
REPLY_TIMEOUT_S = 0.9


@dataclass
class LinkCounters:
    frames_device: int = 0  # answered by synetgy_node
    frames_cpu: int = 0  # run on the CPU backend (node absent, or after a lost request)
    frames_lost: int = 0  # sent, not answered in time (then run on the CPU: also in frames_cpu)
    to_cpu: int = 0  # switches device -> CPU
    to_device: int = 0  # switches CPU -> device (the first connection included)


class DeviceLink:
    """Device or CPU, per frame. Starts on the CPU until a heartbeat is seen."""

    def __init__(self, stale_s: float = STALE_S, reply_timeout_s: float = REPLY_TIMEOUT_S,
                 log: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic):
        self.stale_s, self.reply_timeout_s = stale_s, reply_timeout_s
        self.log, self.clock = log, clock
        self.last_heartbeat_s: float | None = None
        self.on_device = False
        self.counters = LinkCounters()
        self._lost_at_heartbeat: float | None = None  # heartbeat time when a request was lost

    def heartbeat(self, now_s: float | None = None) -> None:
        self.last_heartbeat_s = self.clock() if now_s is None else now_s

    def alive(self, now_s: float | None = None) -> bool:
        now_s = self.clock() if now_s is None else now_s
        return self.last_heartbeat_s is not None and now_s - self.last_heartbeat_s <= self.stale_s

    def choose(self, now_s: float | None = None) -> str:
        """'device' or 'cpu' for the next frame; logs a switch once."""
        now_s = self.clock() if now_s is None else now_s
        # After a lost request, only a heartbeat newer than the loss brings the device back
        # (a stalled node's last heartbeat can still be fresh).
        fresh = self.alive(now_s) and (self._lost_at_heartbeat is None
                                       or self.last_heartbeat_s > self._lost_at_heartbeat)
        if fresh and not self.on_device:
            self.on_device = True
            self._lost_at_heartbeat = None
            self.counters.to_device += 1
            self.log(f"synetgy_node is up: frames go to the emulated accelerator "
                     f"(after {self.counters.frames_cpu} on the CPU)")
        elif not fresh and self.on_device:
            self._switch_to_cpu(f"no heartbeat from synetgy_node for {self.stale_s:g} s")
        return "device" if self.on_device else "cpu"

    def request_lost(self, why: str) -> None:
        """A frame's request was not answered: that frame and the next ones run on the CPU."""
        self.counters.frames_lost += 1
        self._lost_at_heartbeat = self.last_heartbeat_s if self.last_heartbeat_s is not None else -1.0
        if self.on_device:
            self._switch_to_cpu(why)

    def _switch_to_cpu(self, why: str) -> None:
        self.on_device = False
        self.counters.to_cpu += 1
        self.log(f"synetgy_node lost ({why}): running on the CPU backend until it is back "
                 f"(after {self.counters.frames_device} frames on the accelerator)")

    def frame_done(self, where: str) -> None:
        if where == "device":
            self.counters.frames_device += 1
        else:
            self.counters.frames_cpu += 1


class RosDeviceTransport:
    """Requests out, replies and heartbeats in, from a node of its own in a background thread."""

    _ids = itertools.count(1)

    def __init__(self, link: DeviceLink):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        self.link = link
        self._String = String
        # Global arguments (a launch's `-r __node:=squeezeseg_node`) are not applied: they would
        # give this helper the model node's name.
        self.client_id = f"synetgy_client_{os.getpid()}_{next(self._ids)}"
        self.node = rclpy.create_node(self.client_id, use_global_arguments=False,
                                      start_parameter_services=False)
        reliable = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                              depth=50, durability=DurabilityPolicy.VOLATILE)
        self.pub = self.node.create_publisher(String, TOPIC_REQUESTS, reliable)
        self.node.create_subscription(String, TOPIC_REPLIES, self._on_reply, reliable)
        self.node.create_subscription(String, TOPIC_STATUS, self._on_status, reliable)
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[threading.Event, list]] = {}
        self._next_request = itertools.count(1)
        self.device_status: dict = {}
        self._stop = threading.Event()
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=self.client_id, daemon=True)
        self._thread.start()
        # Stop spinning when the process's ROS context shuts down (the model node's Ctrl-C): a
        # thread still inside rclpy's C++ wait at interpreter exit aborts the process
        # ("terminate called without an active exception").
        self.node.context.on_shutdown(self._halt)

    def _spin(self) -> None:
        while not self._stop.is_set():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - context shut down (Ctrl-C): the thread just ends
                return

    def _on_status(self, msg) -> None:
        try:
            self.device_status = json.loads(msg.data)
        except ValueError:
            return
        self.link.heartbeat()

    def _on_reply(self, msg) -> None:
        try:
            reply = json.loads(msg.data)
        except ValueError:
            return
        if reply.get("client") != self.client_id:
            return
        # Left in _pending for wait() to collect: the reply often comes while the client is
        # still emulating its frame (the board takes 20 ms, the host emulation seconds).
        with self._lock:
            waiter = self._pending.get(int(reply.get("id", -1)))
        if waiter is not None:
            waiter[1].append(reply)
            waiter[0].set()

    def send(self, model: str, frames: int) -> int:
        rid = next(self._next_request)
        with self._lock:
            self._pending[rid] = (threading.Event(), [])
        self.pub.publish(self._String(data=json.dumps(
            {"client": self.client_id, "id": rid, "model": model, "frames": int(frames)})))
        return rid

    def wait(self, rid: int, sent_s: float) -> tuple[dict | None, str]:
        """The reply, or None and why not: no reply within the timeout, or the heartbeat stopped
        meanwhile (a dead node is noticed after STALE_S, not after the whole timeout)."""
        with self._lock:
            waiter = self._pending.get(rid)
        if waiter is None:
            return None, "unknown request"
        event, box = waiter
        link = self.link
        while True:
            if event.wait(0.02):
                with self._lock:
                    self._pending.pop(rid, None)
                return box[0], ""
            now = link.clock()
            why = ""
            if now - sent_s > link.reply_timeout_s:
                why = f"request not answered within {link.reply_timeout_s:g} s"
            elif not link.alive(now):
                why = f"no heartbeat for {link.stale_s:g} s while waiting"
            if why:
                with self._lock:
                    self._pending.pop(rid, None)
                return None, why

    def _halt(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=1.0)

    def close(self) -> None:
        self._halt()
        try:
            self.executor.shutdown(timeout_sec=0.5)
            self.node.destroy_node()
        except Exception:  # noqa: BLE001 - the context may be gone already (shutdown)
            pass


def ros_is_running() -> bool:
    """True inside a process that initialised rclpy (a ROS node): the backend then uses the
    shared synetgy_node; elsewhere (benchmarks, tests, offline tools) the in-process emulator."""
    try:
        import rclpy
    except ImportError:
        return False
    try:
        return rclpy.ok()
    except Exception:  # noqa: BLE001
        return False
