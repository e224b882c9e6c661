"""`squeeze-perception soak` and the packet check (docs/reliability.md, "Soak" and "No packet
leaves the machine"): the ROS-free pieces (RSS growth, throughput per half, the verdict, frame
classification on hand-built Ethernet / IP / UDP frames, the stack's ports from /proc) as unit
tests, and one short end-to-end run on the light passthrough node."""
from __future__ import annotations

import json
import math
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from squeeze_perception.offline.graphbench import packets, soak

REPO = Path(__file__).resolve().parents[1]
MB = 2 ** 20


# ---------------------------------------------------------------- memory, throughput, verdict
def test_rss_growth_uses_window_medians_and_the_peak_of_the_whole_run():
    # 0..10 s warm-up at 100 MB with a 300 MB transient, then 100 MB growing to 110 MB at the end;
    # one 500 MB spike inside the end window must not decide the end value (median)
    samples = [(float(t), 100 * MB) for t in range(0, 10)] + [(5.5, 300 * MB)]
    samples += [(float(t), (100 + 10 * (t - 10) / 90) * MB) for t in range(10, 101)] + [(99.5, 500 * MB)]
    samples.sort()
    r = soak.rss_summary(samples, run_start=0.0, warmup_end=10.0, run_end=100.0, window_s=5.0)
    assert r["start_mb"] == pytest.approx(100.0 + 10 * 2.5 / 90, abs=0.05)  # median of 10..15 s
    assert r["end_mb"] == pytest.approx(110.0 - 10 * 2.5 / 90, abs=0.2)  # median of 95..100 s (+ the spike)
    assert r["growth_pct"] == pytest.approx(100 * (r["end_mb"] / r["start_mb"] - 1))
    assert 9.0 < r["growth_pct"] < 10.0
    assert r["peak_mb"] == pytest.approx(500.0)


def test_rss_falls_back_to_the_nearest_sample_when_a_window_is_empty():
    samples = [(0.0, 100 * MB), (50.0, 104 * MB)]
    r = soak.rss_summary(samples, run_start=0.0, warmup_end=1.0, run_end=49.0, window_s=0.5)
    assert (r["start_mb"], r["end_mb"]) == (100.0, 104.0)
    assert r["growth_pct"] == pytest.approx(4.0)
    assert math.isnan(soak.rss_summary([], 0.0, 1.0, 2.0, 1.0)["growth_pct"])


def test_counter_increase_counts_a_restart_from_zero_not_a_negative_step():
    series = [(0.0, 10), (1.0, 20), (2.0, 3), (3.0, 8)]  # restarted between 1 s and 2 s
    assert soak.counter_increase(series, 0, 3) == 10 + 3 + 5


def test_throughput_halves_constant_and_slowing():
    steady = [(float(t), 10.0 * t) for t in range(0, 101)]  # 10 frames/s throughout
    tp = soak.throughput_halves(steady, warmup_end=10.0, run_end=100.0)
    assert tp["first_half_fps"] == pytest.approx(10.0) and tp["second_half_fps"] == pytest.approx(10.0)
    assert tp["ratio"] == pytest.approx(1.0) and tp["first_half_frames"] == tp["second_half_frames"] == 450
    # 10 fps up to 55 s, then 5 fps: the second half (55..100 s) runs at half speed
    slowing = [(float(t), 10.0 * min(t, 55) + 5.0 * max(0, t - 55)) for t in range(0, 101)]
    tp = soak.throughput_halves(slowing, warmup_end=10.0, run_end=100.0)
    assert tp["first_half_fps"] == pytest.approx(10.0) and tp["ratio"] == pytest.approx(0.5)
    # telemetry once a second but at odd times: the samples' own times are the interval
    odd = [(0.3 + t, 10.0 * (0.3 + t)) for t in range(0, 100)]
    assert soak.throughput_halves(odd, 10.0, 100.0)["ratio"] == pytest.approx(1.0)
    assert math.isnan(soak.throughput_halves([], 10.0, 100.0)["ratio"])


def test_default_warmup_is_a_tenth_of_the_run_at_most_a_minute():
    assert soak.default_warmup_s(120.0) == pytest.approx(12.0)
    assert soak.default_warmup_s(1800.0) == 60.0


def _node(growth, ratio, restarts=0, input_only=False):
    return {"rss": {"growth_pct": growth}, "restarts": restarts, "input_only": input_only,
            "throughput": {"first_half_fps": 10.0, "second_half_fps": 10.0 * ratio, "ratio": ratio}}


def test_verdict_thresholds_and_reasons():
    t = soak.Thresholds(max_rss_growth_pct=5.0, min_throughput_ratio=0.95)
    assert soak.verdict({"a": _node(4.9, 0.96), "b": _node(-2.0, 1.3)}, t) == []
    failures = soak.verdict({"a": _node(5.1, 0.96), "b": _node(1.0, 0.94), "c": _node(0.0, 1.0, restarts=1)}, t)
    assert len(failures) == 3
    assert "a: RSS grew 5.1%" in failures[0] and "b: second-half throughput 94.0%" in failures[1]
    assert "c: restarted 1" in failures[2]
    # the player's throughput is informational; a node that processed nothing fails
    assert soak.verdict({"bag_player_node": _node(0.0, 0.5, input_only=True)}, t) == []
    assert "no throughput" in soak.verdict({"d": _node(0.0, math.nan)}, t)[0]
    # thresholds are options
    assert soak.verdict({"a": _node(5.1, 0.9)}, soak.Thresholds(10.0, 0.8)) == []


def test_verdict_fails_on_leaked_packets_but_not_on_unrelated_traffic():
    t = soak.Thresholds()
    clean = {"leaks": {"dns": 0, "rtps": 0, "stack_port": 0}, "unrelated_total": 250}
    assert soak.verdict({}, t, clean) == []
    dirty = {"leaks": {"dns": 2, "rtps": 0, "stack_port": 1}, "unrelated_total": 0}
    assert soak.verdict({}, t, dirty) == ["packet check: 2 outgoing dns frame(s) on non-loopback interfaces",
                                          "packet check: 1 outgoing stack_port frame(s) on non-loopback interfaces"]
    assert "cannot" in soak.verdict({}, t, {"error": "cannot capture", "leaks": {}})[0]


# ---------------------------------------------------------------- packet classification
def _ipv4(proto: int, src: str, dst: str, payload: bytes, frag_offset: int = 0) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, frag_offset, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header + payload


def _udp(sport: int, dport: int, data: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data


def _tcp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 65535, 0, 0)


def _ether(payload: bytes, ethertype: int = 0x0800, vlan: int | None = None) -> bytes:
    head = b"\x02\x00\x00\x00\x00\x01" + b"\x02\x00\x00\x00\x00\x02"
    if vlan is not None:
        head += struct.pack("!HH", 0x8100, vlan)
    return head + struct.pack("!H", ethertype) + payload


RTPS_HEADER = b"RTPS\x02\x03\x01\x0f" + bytes(12)


def test_classifies_dns_rtps_and_other_frames():
    dns = packets.parse_frame(_ether(_ipv4(17, "192.0.2.2", "192.0.2.53", _udp(40000, 53, b"\x12\x34" + bytes(10)))))
    assert dns.dns and not dns.rtps and (dns.transport, dns.src_port, dns.dst) == ("udp", 40000, "192.0.2.53")
    rtps = packets.parse_frame(_ether(_ipv4(17, "192.0.2.2", "239.255.0.1", _udp(7412, 7400, RTPS_HEADER))))
    assert rtps.rtps and not rtps.dns and rtps.dst_port == 7400
    # RTPS on any port (it is the payload that says so), behind a VLAN tag
    tagged = packets.parse_frame(_ether(_ipv4(17, "10.0.0.1", "10.0.0.2", _udp(5000, 6000, RTPS_HEADER)), vlan=7))
    assert tagged.rtps
    tcp_dns = packets.parse_frame(_ether(_ipv4(6, "192.0.2.2", "192.0.2.53", _tcp(41000, 53))))
    assert tcp_dns.dns and tcp_dns.transport == "tcp"
    https = packets.parse_frame(_ether(_ipv4(6, "192.0.2.2", "198.51.100.1", _tcp(41001, 443))))
    assert not https.dns and not https.rtps and packets.flow_key(https) == "ipv4/tcp :41001 -> 198.51.100.1:443"
    arp = packets.parse_frame(_ether(bytes(28), ethertype=0x0806))
    assert arp.network == "ethertype 0x0806" and not arp.dns
    # a later IPv4 fragment has no UDP header: never read its payload as ports
    frag = packets.parse_frame(_ether(_ipv4(17, "192.0.2.2", "192.0.2.9", b"RTPS" + bytes(20), frag_offset=185)))
    assert frag.transport == "fragment" and not frag.rtps


def test_classifies_ipv6_and_bare_ip_links():
    udp = _udp(50000, 53, bytes(12))
    ipv6 = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, socket.inet_pton(socket.AF_INET6, "fd00::2"),
                       socket.inet_pton(socket.AF_INET6, "fd00::53")) + udp
    info = packets.parse_frame(_ether(ipv6, ethertype=0x86DD))
    assert info.network == "ipv6" and info.dns and info.dst == "fd00::53"
    # an interface without a link header (tun): the frame is the IP packet
    bare = packets.parse_frame(_ipv4(17, "10.8.0.2", "10.8.0.1", _udp(7000, 7001, RTPS_HEADER)), link_type=0xFFFE)
    assert bare.rtps
    assert packets.parse_frame(b"\x00" * 5).network == "short frame"


def test_counts_split_into_leaks_and_unrelated_flows_by_the_stacks_ports():
    counts = packets.PacketCounts()
    frames = [_ether(_ipv4(17, "192.0.2.2", "192.0.2.53", _udp(40000, 53, bytes(12)))),
              _ether(_ipv4(17, "192.0.2.2", "239.255.0.1", _udp(7412, 7400, RTPS_HEADER))),
              _ether(_ipv4(17, "192.0.2.2", "198.51.100.9", _udp(43210, 9999, b"x"))),  # a stack socket
              _ether(_ipv4(6, "192.0.2.2", "198.51.100.1", _tcp(41001, 443))),  # background traffic
              _ether(_ipv4(6, "192.0.2.2", "198.51.100.1", _tcp(41001, 443)))]
    kinds = [counts.add(packets.parse_frame(f), "eth0") for f in frames]
    assert kinds == ["dns", "rtps", "flow", "flow", "flow"]
    report = counts.report(stack_ports={("udp", 43210), ("udp", 7412), ("tcp", 7000)})
    assert report["leaks"] == {"dns": 1, "rtps": 1, "stack_port": 1}
    # DNS and RTPS count whoever sent them; their flows say whether the source port was the stack's
    flows = {f["kind"]: f for f in report["leak_flows"]}
    assert flows["rtps"] == {"kind": "rtps", "key": "ipv4/udp :7412 -> 239.255.0.1:7400", "frames": 1,
                             "from_stack": True}
    assert not flows["dns"]["from_stack"] and flows["stack_port"]["from_stack"]
    assert report["unrelated_total"] == 2 and report["total_outgoing"] == 5
    assert report["unrelated_flows"] == [{"key": "ipv4/tcp :41001 -> 198.51.100.1:443", "frames": 2}]
    assert report["interfaces_seen"] == ["eth0"]
    # RTPS of another DDS domain from a port not the stack's is someone else's: listed, not judged
    other = packets.parse_frame(_ether(_ipv4(17, "192.0.2.2", "239.255.0.1", _udp(38637, 49400, RTPS_HEADER))))
    counts.add(other, "eth0")
    assert packets.rtps_domain(49400) == 168 and packets.rtps_domain(7400) == 0 and packets.rtps_domain(53) is None
    report = counts.report(stack_ports={("udp", 43210)}, domain_id=152)  # both RTPS flows: other domains
    assert report["leaks"]["rtps"] == 0 and report["rtps_other_domains"] == 2
    assert any(f["key"].startswith("rtps of domain 168") for f in report["unrelated_flows"])
    assert counts.report(stack_ports=set(), domain_id=168)["leaks"]["rtps"] == 1  # to domain 168's ports
    assert counts.report(stack_ports={("udp", 7412)}, domain_id=152)["leaks"]["rtps"] == 1  # from a stack port
    assert counts.report(stack_ports=set())["leaks"]["rtps"] == 2  # no domain given: every RTPS frame counts
    # a port of the stack counts for its own transport only
    assert counts.report(stack_ports={("tcp", 43210)})["leaks"]["stack_port"] == 0


def test_ports_by_inode_reads_proc_net_tables(tmp_path):
    head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    (tmp_path / "udp").write_text(head + "   1: 0100007F:1CE8 00000000:0000 07 00000000:00000000 00:00000000 "
                                  "00000000     0        0 4242 2 0000000000000000 0\n")
    (tmp_path / "tcp6").write_text(head + "   0: 00000000000000000000000000000000:1F90 "
                                   "00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 "
                                   "00000000     0        0 777 1 0000000000000000 100 0 0 10 0\n")
    assert packets.ports_by_inode(tmp_path) == {4242: ("udp", 7400), 777: ("tcp", 8080)}


def test_process_ports_finds_a_socket_of_this_process():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        assert ("udp", s.getsockname()[1]) in packets.process_ports([os.getpid()])


def test_diagnostic_status_names_and_counters_parse():
    pytest.importorskip("rclpy")
    from diagnostic_msgs.msg import KeyValue

    from squeeze_perception.offline.graphbench import ros

    assert ros.parse_status_name("/ns/squeezedet_node: detect") == ("squeezedet_node", "detect")
    assert ros.parse_status_name("/tracker_node: tracking") == ("tracker_node", "tracking")
    values = [KeyValue(key="frames_processed", value="12"), KeyValue(key="latency_ms_mean", value="3.500")]
    assert ros.parse_counters(values) == {"frames_processed": 12}


def test_render_lists_nodes_counters_packets_and_verdict():
    node = _node(1.0, 1.0)
    node.update({"rss": {"start_mb": 100.0, "end_mb": 101.0, "growth_pct": 1.0, "peak_mb": 102.0}, "stage": "points",
                 "counters": {"points": {"frames_in": 5, "frames_skipped": 1, "frames_processed": 4, "frames_out": 4,
                                         "frames_failed": 0}}})
    report = {"config": {"nodes": ["passthrough_node"], "bag": "b", "rate_hz": 10.0}, "bag_sha256": "ab" * 32,
              "git": {"commit": "c" * 40, "dirty": False}, "run": {"run_s": 60.0, "warmup_s": 6.0},
              "nodes": {"passthrough_node": node}, "load_average": [1.0, 1.0, 1.0],
              "packets": {"leaks": {"dns": 0, "rtps": 0, "stack_port": 0}, "unrelated_total": 3,
                          "unrelated_flows": [{"key": "ipv4/tcp :1 -> x:443", "frames": 3}], "interfaces_seen": ["eth0"]},
              "verdict": {"failures": []}}
    text = soak.render(report)
    assert "passthrough_node" in text and "1.00%" in text and "verdict: PASS" in text
    assert "dns 0, rtps 0, stack_port 0" in text and "3 x ipv4/tcp" in text


# ---------------------------------------------------------------- end to end
@pytest.mark.smoke
def test_soak_end_to_end_on_the_passthrough_node(tmp_path):
    """~25 s: the looping demo preview through the passthrough node for 12 s, the report and the
    exit code (generous thresholds: 12 s on a shared 2-core machine is no memory verdict)."""
    pytest.importorskip("rclpy")
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(150 + os.getpid() % 10)
    out = tmp_path / "soak.json"
    capture = os.geteuid() == 0  # packet sockets need root / CAP_NET_RAW
    cmd = [sys.executable, "-m", "squeeze_perception.cli", "soak", "--seconds", "12", "--warmup-s", "3",
           "--rss-window-s", "2", "--nodes", "passthrough_node", "--max-rss-growth-pct", "50",
           "--min-throughput-ratio", "0.5", "--startup-timeout", "120", "--out", str(out)] + (["--capture"] if capture else [])
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["verdict"]["passed"] and report["git"]["commit"] and len(report["bag_sha256"]) == 64
    assert report["config"]["nodes"] == ["passthrough_node"] and report["run"]["run_s"] >= 11.5
    assert set(report["nodes"]) == {"bag_player_node", "passthrough_node"}
    node = report["nodes"]["passthrough_node"]
    assert node["rss"]["start_mb"] > 20 and node["rss"]["peak_mb"] >= node["rss"]["end_mb"]
    assert node["throughput"]["first_half_fps"] > 1 and node["throughput"]["second_half_fps"] > 1
    assert node["counters_source"] == "SUMMARY" and node["counters"]["points"]["frames_processed"] > 20
    assert "[soak" in res.stdout and "verdict: PASS" in res.stdout  # progress lines and the table
    if capture:
        assert report["packets"]["leaks"]["rtps"] == 0 and report["packets"]["leaks"]["stack_port"] == 0
        assert report["packets"]["stack_ports"]  # the stack's own (loopback) sockets were found
    # the same measurements under strict thresholds: the verdict is computed from them, not stored
    strict = soak.verdict(report["nodes"], soak.Thresholds(max_rss_growth_pct=-100.0, min_throughput_ratio=0.95))
    assert any("RSS grew" in f for f in strict)
