"""Read rosbag2 (mcap, sqlite3) and ROS 1 bags as a stream of CDR-serialised messages.

ROS-free. rosbag2 messages are handed on as the recorded CDR bytes (no re-serialisation);
ROS 1 messages (e.g. bags made by the old ROS 1 `kitti2bag`) are converted to ROS 2 CDR on
the fly with rosbags' converter, which also drops the ROS 1 Header `seq` field.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence


class BagError(RuntimeError):
    """The bag cannot be opened or read; the message names the path."""


@dataclass(frozen=True)
class TopicInfo:
    name: str
    msgtype: str  # ROS 2 form, e.g. sensor_msgs/msg/Image
    count: int
    latched: bool


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    timestamp_ns: int
    data: bytes  # CDR, little endian


def _is_latched(connection) -> bool:
    ext = connection.ext
    if hasattr(ext, "latching"):  # ROS 1
        return bool(ext.latching)
    return any(getattr(q.durability, "name", "") == "TRANSIENT_LOCAL" for q in ext.offered_qos_profiles)


class BagSource:
    """An opened bag: topic list, time span and a time-ordered message iterator."""

    def __init__(self, path: str | Path, topics: Sequence[str] = ()):
        from rosbags.highlevel import AnyReader, AnyReaderError

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"bag '{self.path}' not found")
        try:
            self._reader = AnyReader([self.path])
            self._reader.open()
        except (AnyReaderError, OSError, ValueError, KeyError) as exc:
            raise BagError(f"cannot open bag '{self.path}': {exc}") from exc
        self.is_ros1 = not self._reader.is2
        wanted = {"/" + t.lstrip("/") for t in topics}  # 'a/b' and '/a/b' name the same topic
        self._connections = [c for c in self._reader.connections
                             if not wanted or "/" + c.topic.lstrip("/") in wanted]
        self.topics: dict[str, TopicInfo] = {}
        for c in self._connections:
            prev = self.topics.get(c.topic)
            self.topics[c.topic] = TopicInfo(c.topic, c.msgtype, c.msgcount + (prev.count if prev else 0),
                                             _is_latched(c) or (prev.latched if prev else False))
        self.start_ns = int(self._reader.start_time)
        self.end_ns = int(self._reader.end_time)
        self._converters: dict[str, Callable[[bytes], bytes]] = {}

    def restrict(self, topics: Sequence[str]) -> None:
        """Read only these topics from now on (e.g. those the player can publish)."""
        keep = set(topics)
        self._connections = [c for c in self._connections if c.topic in keep]

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> "BagSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _to_cdr(self, msgtype: str) -> Callable[[bytes], bytes]:
        conv = self._converters.get(msgtype)
        if conv is None:
            if not self.is_ros1:
                conv = bytes
            else:
                from rosbags.convert.converter import generate_message_converter
                from rosbags.typesys import Stores, get_typestore

                dst = get_typestore(Stores.ROS2_KILTED)
                if msgtype not in dst.fielddefs:
                    raise BagError(f"ROS 1 message type {msgtype} has no ROS 2 equivalent in the typestore")
                raw_conv = generate_message_converter(self._reader.typestore, dst, msgtype, msgtype, {},
                                                      src_is2=False, dst_is2=True)
                conv = lambda data, c=raw_conv: bytes(c(data))  # noqa: E731
            self._converters[msgtype] = conv
        return conv

    def messages(self, start_ns: int | None = None, stop_ns: int | None = None,
                 topics: Sequence[str] | None = None) -> Iterator[BagMessage]:
        """Messages in recording order with start_ns <= bag time < stop_ns, optionally only `topics`."""
        conns = self._connections if topics is None else [c for c in self._connections if c.topic in topics]
        if not conns:
            return
        try:
            for conn, stamp, raw in self._reader.messages(connections=conns, start=start_ns, stop=stop_ns):
                yield BagMessage(conn.topic, conn.msgtype, int(stamp), self._to_cdr(conn.msgtype)(raw))
        except BagError:
            raise
        except Exception as exc:  # noqa: BLE001 - rosbags raises several types for damaged files
            raise BagError(f"error while reading bag '{self.path}': {exc}") from exc
