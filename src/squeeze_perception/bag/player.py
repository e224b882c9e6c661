"""Timing core of the bag player: recorded timing scaled by `rate`, loop, start offset, clock.

ROS-free so it is tested with a fake clock; the node passes in its publish functions.
Hand-written (not `ros2 bag play`): rosbag2's player has no Python wheel here.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .source import BagMessage, BagSource


@dataclass(frozen=True)
class PlaybackOptions:
    rate: float = 1.0  # 2.0 = twice as fast as recorded
    loop: bool = False
    start_offset_s: float = 0.0  # skip this much bag time at the start of every pass
    clock_hz: float = 100.0  # /clock updates while waiting between messages
    publish_clock: bool = True

    def __post_init__(self):
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.start_offset_s < 0:
            raise ValueError(f"start_offset must be >= 0, got {self.start_offset_s}")
        if not self.clock_hz > 0:
            raise ValueError(f"clock frequency must be > 0, got {self.clock_hz}")


@dataclass
class PlaybackResult:
    passes: int = 0
    published: dict[str, int] = field(default_factory=dict)
    stopped: bool = False  # interrupted before the end

    @property
    def total(self) -> int:
        return sum(self.published.values())


class Playback:
    """Publishes a bag's messages at their recorded times (divided by rate) on one thread."""

    def __init__(self, source: BagSource, publish: Callable[[BagMessage], None],
                 publish_clock: Callable[[int], None] | None = None,
                 options: PlaybackOptions = PlaybackOptions(),
                 now: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.source = source
        self.publish = publish
        self.publish_clock = publish_clock if options.publish_clock else None
        self.options = options
        self.now, self.sleep = now, sleep
        self.stop_event = threading.Event()
        self.result = PlaybackResult()

    def stop(self) -> None:
        self.stop_event.set()

    def _emit(self, msg: BagMessage) -> None:
        self.publish(msg)
        self.result.published[msg.topic] = self.result.published.get(msg.topic, 0) + 1

    def _wait_until(self, target_wall: float, wall0: float, bag0: int) -> bool:
        """Sleep until target_wall, ticking /clock; False when stopped."""
        period = 1.0 / self.options.clock_hz
        while not self.stop_event.is_set():
            remaining = target_wall - self.now()
            if remaining <= 0:
                return True
            if self.publish_clock is not None:
                self.publish_clock(bag0 + int((self.now() - wall0) * self.options.rate * 1e9))
            self.sleep(min(remaining, period))
        return False

    def run_pass(self) -> bool:
        """One pass over the bag; False when stopped early."""
        bag0 = self.source.start_ns + int(round(self.options.start_offset_s * 1e9))
        if bag0 > self.source.start_ns:
            # Latched data recorded before the offset (static transforms) is still needed.
            latched = [t for t, info in self.source.topics.items() if info.latched]
            for msg in self.source.messages(stop_ns=bag0, topics=latched):
                self._emit(msg)
        wall0 = self.now()
        for msg in self.source.messages(start_ns=bag0):
            target = wall0 + (msg.timestamp_ns - bag0) / 1e9 / self.options.rate
            if not self._wait_until(target, wall0, bag0):
                return False
            if self.publish_clock is not None:
                self.publish_clock(msg.timestamp_ns)
            self._emit(msg)
        return not self.stop_event.is_set()

    def run(self) -> PlaybackResult:
        while not self.stop_event.is_set():
            before = self.result.total
            completed = self.run_pass()
            self.result.passes += int(completed)
            if not completed or not self.options.loop or self.result.total == before:
                break  # an empty pass (offset past the end) would loop forever
        self.result.stopped = self.stop_event.is_set()
        return self.result
