"""bench graph's ROS-free core: latency / drop / jitter statistics on hand-built recordings,
the rate search on a synthetic graph that drops frames above a known rate, process sampling
from /proc, the bag hash and the CDR header stamp."""
from __future__ import annotations

import math
import os
import struct

import numpy as np
import pytest

from squeeze_perception.offline.graphbench import core


def test_percentiles_match_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100):
        v = rng.exponential(10, n).tolist()
        for q in (50, 95, 99, 100):
            assert core.percentile(v, q) == pytest.approx(np.percentile(v, q))
    assert math.isnan(core.percentile([], 50))


def _recording(lat_ms, drop=(), period=0.1, dup=()):
    rec = core.Recording()
    for k, lat in enumerate(lat_ms):
        stamp = 1_000_000_000 + k * 100_000_000
        t = 50.0 + k * period
        rec.add("inputs", "points", stamp, t)
        if k not in drop:
            rec.add("outputs", "tracks", stamp, t + lat / 1e3)
            if k in dup:
                rec.add("outputs", "tracks", stamp, t + lat / 1e3 + 0.001)
    return rec


def test_topic_stats_latency_drops_and_jitter():
    lat = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    rec = _recording(lat, drop=(3, 7), dup=(5,))
    s = core.topic_stats(rec, {"tracks": "points"})["tracks"]
    kept = [x for k, x in enumerate(lat) if k not in (3, 7)]
    assert (s["frames"], s["published"], s["dropped"], s["duplicates"]) == (10, 8, 2, 1)
    assert s["dropped_fraction"] == pytest.approx(0.2)
    assert s["latency"]["p50_ms"] == pytest.approx(np.percentile(kept, 50))
    assert s["latency"]["p95_ms"] == pytest.approx(np.percentile(kept, 95))
    assert s["latency"]["max_ms"] == pytest.approx(100)
    # outputs every 100 ms + 10 ms growth, drops double an interval; the duplicate adds a 1 ms one
    times = sorted([50.0 + k * 0.1 + x / 1e3 for k, x in enumerate(lat) if k not in (3, 7)] + [50.5 + 0.061])
    assert s["jitter_ms"] == pytest.approx(np.std(np.diff(times) * 1e3))
    assert core.worst_drop_fraction({"tracks": s}) == pytest.approx(0.2)


def test_output_with_unknown_stamp_is_not_a_latency():
    rec = _recording([5, 5, 5])
    rec.add("outputs", "tracks", 42, 99.0)
    s = core.topic_stats(rec, {"tracks": "points"})["tracks"]
    assert s["unmatched_stamps"] == 1 and s["latency"]["count"] == 3 and s["dropped"] == 0


def test_output_before_its_frame_is_a_stale_one_from_the_previous_play():
    rec = _recording([5, 5, 5], drop=(1,))
    stamp1 = 1_000_000_000 + 100_000_000
    rec.add("outputs", "tracks", stamp1, 49.0)  # before frame 1 was played in this run
    s = core.topic_stats(rec, {"tracks": "points"})["tracks"]
    assert s["stale_outputs"] == 1 and s["dropped"] == 1 and s["latency"]["count"] == 2


def test_topic_with_no_output_drops_everything():
    s = core.topic_stats(_recording([5, 5], drop=(0, 1)), {"tracks": "points"})["tracks"]
    assert s["dropped"] == 2 and s["dropped_fraction"] == 1.0 and math.isnan(s["latency"]["p50_ms"])


class FakeGraph:
    """Keeps up below capacity_hz, drops the excess fraction above it."""

    def __init__(self, capacity_hz):
        self.capacity, self.calls = capacity_hz, []

    def __call__(self, rate):
        self.calls.append(rate)
        return max(0.0, 1.0 - self.capacity / rate)


@pytest.mark.parametrize("capacity", [3.0, 10.0, 17.0, 33.0])
def test_rate_search_finds_the_capacity_within_tolerance(capacity):
    g = FakeGraph(capacity)
    best, steps = core.search_max_rate(g, start_hz=10.0, max_hz=100.0, rel_tol=0.05, max_trials=20)
    # passes below capacity / (1 - 5 %) = the real limit of the criterion
    limit = capacity / (1 - core.DROP_LIMIT)
    assert best is not None and best < limit and best > limit / 1.05 ** 2
    assert all(s.passed == (s.drop_fraction < core.DROP_LIMIT) for s in steps)
    assert [s.rate_hz for s in steps] == g.calls


def test_rate_search_caps_at_max_and_reports_none_when_nothing_passes():
    best, steps = core.search_max_rate(FakeGraph(1e9), start_hz=10, max_hz=40)
    assert best == 40 and steps[-1].rate_hz == 40
    # a start rate a rounding below 10 Hz must not run the maximum twice
    best, steps = core.search_max_rate(FakeGraph(1e9), start_hz=9.9999999, max_hz=80)
    assert best == pytest.approx(80) and [round(s.rate_hz) for s in steps] == [10, 20, 40, 80]
    best, steps = core.search_max_rate(FakeGraph(0.01), start_hz=10, max_hz=40)
    assert best is None and len(steps) == 5


def test_process_sampling_from_proc_and_psutil_agree_on_this_process():
    t0 = os.times()
    proc = core.read_proc(os.getpid())
    assert proc is not None
    cpu, rss = proc
    assert abs(cpu - (t0.user + t0.system)) < 0.5 and rss > 10 * 2 ** 20
    u = core.ProcessUsage("me", os.getpid())
    u.sample()
    x = 0
    end = os.times().user + 0.3
    while os.times().user < end:  # burn CPU 
        x += 1
    u.sample()
    s = u.summary()
    # the CPU burnt between the samples is seen (the machine may be loaded: no bound on the %)
    assert s["samples"] == 2 and s["cpu_s"] >= 0.25 and s["rss_max_mb"] > 10
    assert s["cpu_percent"] == pytest.approx(100 * s["cpu_s"] / s["wall_s"])
    assert core.read_proc(2 ** 22 + 12345) is None
    # the window starts at the last sample before t_from
    w = core.ProcessUsage("w", 1, samples=[(0.0, 0.0, 1), (10.0, 1.0, 5 * 2 ** 20), (12.0, 2.0, 3 * 2 ** 20)])
    s = w.summary(t_from=11.0)
    assert s["cpu_percent"] == pytest.approx(50.0) and s["rss_max_mb"] == pytest.approx(5.0) and s["samples"] == 2
    assert w.summary()["cpu_percent"] == pytest.approx(2.0 / 12.0 * 100)


def test_bag_hash_changes_with_content(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.mcap").write_bytes(b"abc")
    (tmp_path / "b" / "metadata.yaml").write_text("m")
    h1 = core.bag_hash(tmp_path / "b")
    (tmp_path / "b" / "x.mcap").write_bytes(b"abd")
    assert core.bag_hash(tmp_path / "b") != h1 and len(h1) == 64


def test_header_stamp_from_cdr():
    le = b"\x00\x01\x00\x00" + struct.pack("<iI", 1317038400, 123456789) + b"\x05\x00\x00\x00velo\x00"
    assert core.header_stamp_ns(le) == 1317038400_123456789
    be = b"\x00\x00\x00\x00" + struct.pack(">iI", 7, 8) + b"rest"
    assert core.header_stamp_ns(be) == 7_000_000_008
    seq = b"\x00\x01\x00\x00" + struct.pack("<I", 1) + struct.pack("<iI", 3, 4)
    assert core.header_stamp_ns(seq, first_is_sequence=True) == 3_000_000_004
    assert core.header_stamp_ns(b"\x00\x01\x00\x00" + struct.pack("<I", 0) + b"\0" * 8, first_is_sequence=True) is None


def test_frame_rate_and_render_of_a_minimal_report():
    assert core.frame_rate_hz([0, 100_000_000, 200_000_000, 300_000_000]) == pytest.approx(10.0)
    stats = core.topic_stats(_recording([10, 20]), {"tracks": "points"})
    report = {"config": {"bag": "b"}, "bag_sha256": "0" * 64, "git": {"commit": "abc", "dirty": False},
              "load_average": [1, 1, 1],
              "modes": [{"mode": "processes", "search": None, "trials": [
                  {"label": "t", "input_rate_hz": 10.0, "player_rate": 1.0, "worst_drop_fraction": 0.0,
                   "topics": stats, "processes": [core.ProcessUsage("n", os.getpid()).summary()]}]}]}
    text = core.render(report)
    assert "tracks" in text and "processes" in text


def test_param_overrides_reach_the_nodes_after_their_own_params_files(tmp_path):
    """`bench graph -p backend:=onnxruntime-int8` must win over config/<node>.yaml (a plain `-p`
    or a "/**" section loses against the node's own section there and was silently ignored)."""
    import yaml

    from squeeze_perception.offline.graphbench.ros import ros_args

    nodes = ("squeezedet_node", "squeezeseg_node")
    args = ros_args(nodes, ["backend:=onnxruntime-int8", "num_threads:=1", "annotate:=false"],
                    tmp_path / "overrides.yaml")
    files = [args[i + 1] for i, a in enumerate(args) if a == "--params-file"]
    assert files[-1] == str(tmp_path / "overrides.yaml") and len(files) == 3  # the overrides last
    assert "-p" not in args[3:]  # only use_sim_time stays a plain -p
    data = yaml.safe_load((tmp_path / "overrides.yaml").read_text())
    assert set(data) == set(nodes)  # node-named sections, not "/**"
    assert data["squeezeseg_node"]["ros__parameters"] == {"backend": "onnxruntime-int8", "num_threads": 1,
                                                          "annotate": False}
    assert "&" not in (tmp_path / "overrides.yaml").read_text()  # no YAML aliases: rcl refuses them


def test_plays_pool_into_one_latency_distribution_and_render():
    first = core.topic_stats(_recording([10, 20, 30, 40, 50, 60, 70, 80, 90, 100], drop=(3,)), {"tracks": "points"})
    second = core.topic_stats(_recording([15, 25, 35, 500]), {"tracks": "points"})
    trials = [{"label": f"play {k}", "input_rate_hz": 10.0, "player_rate": 1.0, "worst_drop_fraction": 0.0,
               "topics": t, "processes": []} for k, t in enumerate((first, second))]
    pooled = core.pooled_topics(trials)["tracks"]
    every = [10, 20, 30, 50, 60, 70, 80, 90, 100, 15, 25, 35, 500]
    assert (pooled["plays"], pooled["frames"], pooled["dropped"]) == (2, 14, 1)
    assert pooled["latency"]["count"] == 13
    assert pooled["latency"]["p95_ms"] == pytest.approx(np.percentile(every, 95))
    assert pooled["latency"]["max_ms"] == pytest.approx(500)
    report = {"config": {"bag": "b"}, "bag_sha256": "0" * 64, "git": {"commit": "abc", "dirty": False},
              "load_average": [1, 1, 1], "modes": [{"mode": "processes", "search": None, "trials": trials,
                                                     "pooled": core.pooled_topics(trials)}]}
    assert "all 2 plays pooled" in core.render(report)
