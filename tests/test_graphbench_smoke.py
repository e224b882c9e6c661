"""Smoke test of `squeeze-perception bench graph` (short: the 4-frame real bag, the light
passthrough node, no warm-up): both graph layouts run, the JSON report has per-topic latency,
drops and per-process CPU / memory, the git revision and the bag hash."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from squeeze_perception.offline.graphbench import core

REPO = Path(__file__).resolve().parents[1]
BAG = REPO / "bags" / "kitti_real_4frames"

pytestmark = pytest.mark.smoke


def test_bench_graph_on_two_frames_both_layouts(tmp_path):
    pytest.importorskip("rclpy")
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(70 + os.getpid() % 10)
    out = tmp_path / "graph.json"
    cmd = [sys.executable, "-m", "squeeze_perception.cli", "bench", "graph", "--bag", str(BAG),
           "--nodes", "passthrough_node", "--graph", "both", "--warmup", "0", "--plays", "1",
           "--drain-s", "1.5", "--startup-timeout", "120", "--out", str(out)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["bag_sha256"] == core.bag_hash(BAG)
    assert report["git"]["commit"] and len(report["git"]["commit"]) == 40
    assert report["config"]["bag_frames"]["kitti/velo/pointcloud"] == 4
    assert [m["mode"] for m in report["modes"]] == ["processes", "composed"]
    for mode in report["modes"]:
        (trial,) = mode["trials"]
        topics = trial["topics"]
        assert set(topics) == {"perception/passthrough/points", "perception/passthrough/image"}
        for s in topics.values():
            assert s["frames"] == 4 and s["published"] + s["dropped"] == 4
            assert s["published"] >= 2  # a couple of frames made it through
            assert s["latency"]["count"] == s["published"] and 0 < s["latency"]["p50_ms"] <= s["latency"]["max_ms"]
        (proc,) = trial["processes"]
        assert proc["nodes"] == ["passthrough_node"] and proc["rss_max_mb"] > 20 and proc["samples"] >= 2
    assert "passthrough" in res.stdout and "p95" in res.stdout
