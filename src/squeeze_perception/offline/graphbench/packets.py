"""Does any packet leave the loopback interface while the stack runs? Counts every *outgoing*
frame on every non-loopback interface with Linux packet sockets (AF_PACKET, ETH_P_ALL, one
socket bound per interface, needs root or CAP_NET_RAW) and sorts them by protocol and port.

Python's stdlib is enough for counting headers: no scapy (a dependency and a slow dissector we
do not need) and no tcpdump (not installed on these machines).

What is counted (docs/reliability.md, "No packet leaves the machine"):
- every frame the kernel hands to a packet socket as PACKET_OUTGOING on an interface other
  than loopback, from any process on the machine (a packet socket cannot tell processes apart);
- `dns`: UDP or TCP to port 53, from anyone (a lookup by onnxruntime's telemetry or a DDS
  locator by host name would be one);
- `rtps`: UDP whose payload starts with b"RTPS" (DDS discovery or data), from anyone, except
  what provably is another program's DDS: neither from a stack port nor to a port of the
  stack's domain (RTPS port mapping 7400 + 250 x domain); those are listed as unrelated
  (`rtps_other_domains`), since other users of this machine run ROS in other domains;
- `stack_port`: any other UDP or TCP frame whose source port is a port held by a socket of one of
  the stack's processes (read from /proc/<pid>/fd and /proc/net/{udp,tcp}{,6} during the run);
- everything else is *unrelated*, listed by protocol and ports: this machine has background
  traffic of its own (the tool connection of the sandbox, for one).
The verdict is about dns + rtps + stack_port only. Incoming frames are not counted; frames
dropped by the socket buffer under load would go uncounted (the kernel's drop counter is
reported as `socket_drops`).

    python -m squeeze_perception.offline.graphbench.packets --seconds 60   # beside a running launch
"""
from __future__ import annotations

import argparse
import os
import select
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ETH_P_ALL = 0x0003
ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x86DD, 0x8100, 0x88A8
ARPHRD_ETHER = 1
PACKET_OUTGOING = getattr(socket, "PACKET_OUTGOING", 4)
IPPROTO_TCP, IPPROTO_UDP = 6, 17
SNAPLEN = 256  # headers and the first payload bytes are all we read
MAX_FLOWS = 4096  # distinct flow keys kept; the rest are counted under one overflow key
LEAK_KINDS = ("dns", "rtps", "stack_port")


@dataclass(frozen=True)
class FrameInfo:
    """What the counter needs of one frame."""
    network: str  # "ipv4" | "ipv6" | "ethertype 0x...."
    transport: str  # "udp" | "tcp" | "proto N" | ""
    src: str = ""
    dst: str = ""
    src_port: int | None = None
    dst_port: int | None = None
    rtps: bool = False

    @property
    def dns(self) -> bool:
        return self.transport in ("udp", "tcp") and self.dst_port == 53


def _transport(proto: int, segment: bytes, network: str, src: str, dst: str) -> FrameInfo:
    if proto in (IPPROTO_UDP, IPPROTO_TCP) and len(segment) >= 4:
        sport, dport = struct.unpack_from("!HH", segment)
        if proto == IPPROTO_UDP:
            return FrameInfo(network, "udp", src, dst, sport, dport, rtps=segment[8:12] == b"RTPS")
        return FrameInfo(network, "tcp", src, dst, sport, dport)
    return FrameInfo(network, f"proto {proto}", src, dst)


def parse_ip(packet: bytes) -> FrameInfo:
    """An IPv4 or IPv6 packet (no link header). IPv6 extension headers other than the
    transport are not followed (reported as their next-header number)."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 20:
        ihl = (packet[0] & 0x0F) * 4
        frag_offset = struct.unpack_from("!H", packet, 6)[0] & 0x1FFF
        src, dst = socket.inet_ntop(socket.AF_INET, packet[12:16]), socket.inet_ntop(socket.AF_INET, packet[16:20])
        if frag_offset:  # a later fragment has no transport header
            return FrameInfo("ipv4", "fragment", src, dst)
        return _transport(packet[9], packet[ihl:], "ipv4", src, dst)
    if version == 6 and len(packet) >= 40:
        src, dst = socket.inet_ntop(socket.AF_INET6, packet[8:24]), socket.inet_ntop(socket.AF_INET6, packet[24:40])
        return _transport(packet[6], packet[40:], "ipv6", src, dst)
    return FrameInfo(f"ip version {version}", "")


def parse_frame(frame: bytes, link_type: int = ARPHRD_ETHER) -> FrameInfo:
    """An Ethernet frame (VLAN tags skipped), or a bare IP packet for interfaces without a link
    header (tun, some cloud NICs)."""
    if link_type != ARPHRD_ETHER:
        return parse_ip(frame)
    if len(frame) < 14:
        return FrameInfo("short frame", "")
    offset, ethertype = 12, struct.unpack_from("!H", frame, 12)[0]
    while ethertype in (ETH_P_8021Q, ETH_P_8021AD) and len(frame) >= offset + 6:
        offset += 4
        ethertype = struct.unpack_from("!H", frame, offset)[0]
    payload = frame[offset + 2:]
    if ethertype in (ETH_P_IP, ETH_P_IPV6):
        return parse_ip(payload)
    return FrameInfo(f"ethertype 0x{ethertype:04x}", "")


def rtps_domain(port: int | None) -> int | None:
    """The DDS domain whose well-known ports contain `port` (RTPS default port mapping: 7400 +
    250 x domain + offsets below 250); None outside the mapped range."""
    if port is None or port < 7400:
        return None
    domain = (port - 7400) // 250
    return domain if domain <= 232 else None


def flow_key(info: FrameInfo) -> str:
    """How an unrelated frame is listed: protocol, source port, destination and port."""
    if info.transport in ("udp", "tcp"):
        return f"{info.network}/{info.transport} :{info.src_port} -> {info.dst}:{info.dst_port}"
    return f"{info.network}/{info.transport or '-'} -> {info.dst or '-'}"


@dataclass
class PacketCounts:
    """Outgoing frames per flow, classified at the end against the stack's ports (which are
    only all known once the run is over)."""
    kinds: dict[str, int] = field(default_factory=lambda: {"dns": 0, "rtps": 0})
    flows: dict[tuple, int] = field(default_factory=dict)  # (kind, key, transport, src_port) -> frames
    interfaces_seen: set[str] = field(default_factory=set)
    total: int = 0

    def add(self, info: FrameInfo, interface: str = "") -> str:
        """Count one outgoing frame; returns its kind ('dns', 'rtps' or 'flow')."""
        self.total += 1
        if interface:
            self.interfaces_seen.add(interface)
        kind = "dns" if info.dns else "rtps" if info.rtps else "flow"
        if kind != "flow":
            self.kinds[kind] += 1
        key = (kind, flow_key(info), info.transport, info.src_port, info.dst_port)
        if key not in self.flows and len(self.flows) >= MAX_FLOWS:
            key = (kind, "(more flows)", "", None, None)
        self.flows[key] = self.flows.get(key, 0) + 1
        return kind

    def report(self, stack_ports: set[tuple[str, int]], domain_id: int | None = None) -> dict:
        """{'leaks': {dns, rtps, stack_port}, 'leak_flows', 'unrelated_total', 'unrelated_flows', ...}.
        stack_ports: (transport, local port) of the stack's sockets. DNS counts whoever sent it.
        RTPS counts unless it provably is another program's DDS: neither from a stack port nor
        to a port of the stack's domain `domain_id` (those go to `rtps_other_domains`, listed).
        Each flow says whether its source port was the stack's (`from_stack`)."""
        leak_flows, unrelated = [], []
        stack_port_frames = other_domain_rtps = 0
        kinds = dict(self.kinds)
        for (kind, key, transport, sport, dport), n in self.flows.items():
            from_stack = (transport, sport) in stack_ports
            if kind == "flow" and not from_stack:
                unrelated.append({"key": key, "frames": n})
                continue
            if kind == "rtps" and not from_stack and domain_id is not None:
                domain = rtps_domain(dport)
                if domain is not None and domain != domain_id:
                    kinds["rtps"] -= n
                    other_domain_rtps += n
                    unrelated.append({"key": f"rtps of domain {domain} {key}", "frames": n})
                    continue
            if kind == "flow":
                stack_port_frames += n
            leak_flows.append({"kind": kind if kind != "flow" else "stack_port", "key": key, "frames": n,
                               "from_stack": from_stack})
        leak_flows.sort(key=lambda f: -f["frames"])
        unrelated.sort(key=lambda f: -f["frames"])
        return {"leaks": {**kinds, "stack_port": stack_port_frames}, "rtps_other_domains": other_domain_rtps,
                "domain_id": domain_id,
                "leak_flows": leak_flows[:50], "unrelated_total": sum(f["frames"] for f in unrelated),
                "unrelated_flows": unrelated[:50], "total_outgoing": self.total,
                "interfaces_seen": sorted(self.interfaces_seen)}


# ---------------------------------------------------------------- the stack's ports from /proc
def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(int(link[8:-1]))
    except OSError:
        pass
    return inodes


def ports_by_inode(proc_net: Path = Path("/proc/net")) -> dict[int, tuple[str, int]]:
    """socket inode -> (transport, local port) for every UDP/TCP socket of this network namespace."""
    out = {}
    for name, transport in (("udp", "udp"), ("udp6", "udp"), ("tcp", "tcp"), ("tcp6", "tcp")):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9:
                out[int(cols[9])] = (transport, int(cols[1].rsplit(":", 1)[1], 16))
    return out


def process_ports(pids) -> set[tuple[str, int]]:
    """(transport, local port) of every UDP/TCP socket the processes hold now."""
    table = ports_by_inode()
    return {table[i] for pid in pids for i in socket_inodes(pid) if i in table}


def non_loopback_interfaces() -> list[str]:
    names = []
    for _, name in socket.if_nameindex():
        try:
            flags = int(Path(f"/sys/class/net/{name}/flags").read_text(), 16)
        except (OSError, ValueError):
            flags = 0
        if name != "lo" and not flags & 0x8:  # IFF_LOOPBACK
            names.append(name)
    return names


# ---------------------------------------------------------------- the sniffer
class OutgoingSniffer:
    """A thread counting outgoing frames on every non-loopback interface into PacketCounts.
    Raises PermissionError / OSError at start when packet sockets are not allowed."""

    def __init__(self, interfaces: list[str] | None = None):
        self.interfaces = non_loopback_interfaces() if interfaces is None else interfaces
        self.counts = PacketCounts()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.sockets: list[socket.socket] = []
        self.thread: threading.Thread | None = None
        self.socket_drops = 0

    def start(self) -> "OutgoingSniffer":
        try:
            for name in self.interfaces:
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                s.bind((name, ETH_P_ALL))
                self.sockets.append(s)
        except OSError:
            self.close()
            raise
        self.thread = threading.Thread(target=self._loop, name="outgoing-sniffer", daemon=True)
        self.thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set() and self.sockets:
            ready, _, _ = select.select(self.sockets, [], [], 0.2)
            for s in ready:
                try:
                    frame, addr = s.recvfrom(SNAPLEN)
                except OSError:
                    continue
                interface, _, pkttype, link_type = addr[:4]
                if pkttype != PACKET_OUTGOING:
                    continue
                info = parse_frame(frame, link_type)
                with self.lock:
                    self.counts.add(info, interface)

    def _read_drops(self) -> None:
        # PACKET_STATISTICS (getsockopt SOL_PACKET 6): (packets, drops) since the last read
        for s in self.sockets:
            try:
                _, drops = struct.unpack("II", s.getsockopt(263, 6, 8))
                self.socket_drops += drops
            except OSError:
                pass

    def snapshot(self) -> dict:
        with self.lock:
            return {"dns": self.counts.kinds["dns"], "rtps": self.counts.kinds["rtps"], "total": self.counts.total}

    def stop(self, stack_ports: set[tuple[str, int]], domain_id: int | None = None) -> dict:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout=2.0)
        self._read_drops()
        self.close()
        with self.lock:
            report = self.counts.report(stack_ports, domain_id)
        report.update({"interfaces": self.interfaces, "socket_drops": self.socket_drops,
                       "stack_ports": sorted(f"{t}/{p}" for t, p in stack_ports)})
        return report

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets = []


def processes_matching(pattern: str) -> list[int]:
    """Pids (not this one) whose command line contains `pattern`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if pattern.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m squeeze_perception.offline.graphbench.packets", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to count")
    ap.add_argument("--stack-pattern", default="squeeze_perception",
                    help="processes whose command line contains this are the stack (their ports -> stack_port)")
    args = ap.parse_args(argv)
    try:
        sniffer = OutgoingSniffer().start()
    except OSError as exc:
        print(f"packet check: cannot open packet sockets ({exc}); run as root or with CAP_NET_RAW", file=sys.stderr)
        return 2
    ports: set[tuple[str, int]] = set()
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:  # sockets come and go: collect their ports all along
        ports |= process_ports(processes_matching(args.stack_pattern))
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    report = sniffer.stop(ports, domain_id=int(os.environ.get("ROS_DOMAIN_ID", "0") or 0))
    print(f"outgoing frames on {', '.join(report['interfaces'])} in {args.seconds:g} s: "
          + ", ".join(f"{k} {v}" for k, v in report["leaks"].items())
          + f"; unrelated {report['unrelated_total']}; socket drops {report['socket_drops']}")
    for flow in report["leak_flows"][:10]:
        print(f"  {flow['frames']:6d} x {flow['kind']} {flow['key']}{' (a stack port)' if flow['from_stack'] else ''}")
    for flow in report["unrelated_flows"][:10]:
        print(f"  {flow['frames']:6d} x {flow['key']}")
    return 1 if any(report["leaks"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
