"""synetgy_node end to end (ROS, subprocesses): a client using `backend:=synetgy` gets its frames'
board time from the node; when the node is killed mid-run the client falls back to its CPU
backend within 1 s, says so once, does not crash, and returns to the node when it is back; the
frames on either side of the switches are counted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

TINY = '''
from squeeze_perception import registry
from squeeze_perception.registry import ModelSpec

SPEC = registry.register_model(ModelSpec(
    "tiny_dirac", "segmentation", "squeeze_perception.accelerator.models:build_diracdeltaseg", None,
    (6, 8, 64), ("unknown", "car", "pedestrian", "cyclist"), builder_kwargs={"widths": (10, 20, 40, 80)}))
'''

# A model process in miniature: the synetgy backend as squeezeseg_node would create it, one frame
# every 100 ms, one JSON line per frame (CLOCK_MONOTONIC is shared between processes).
CLIENT = '''
import json, sys, time
import numpy as np
import rclpy, torch
torch.set_num_threads(1)
import tiny_models
from squeeze_perception.energy import MeteredBackend
from squeeze_perception.registry import get_backend

rclpy.init()
spec = get_backend("synetgy")
backend = spec.create(tiny_models.SPEC, require_weights=False)
meter = MeteredBackend(backend, spec, tiny_models.SPEC)
# The real model's host emulation takes seconds, longer than the board's reply takes to come:
# a slower emulation here keeps that order (the reply waits for the client, not the reverse).
# A frame cannot end before its own computation: the fall-back time is at most the heartbeat
# limit (0.5 s) or the frame's host time, whichever is longer, so this stays well under 1 s.
emulate = backend.emulator.run
backend.emulator.run = lambda x: (time.sleep(0.1), emulate(x))[1]
x = np.random.default_rng(0).normal(size=(1, 6, 8, 64)).astype(np.float32)
x[:, 4] = 1.0
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    t0 = time.monotonic()
    run = meter.infer(x)
    print(json.dumps({"t": time.monotonic(), "emulated": run.emulated, "latency_ms": run.latency_ms,
                      "energy_mj": run.energy_mj, "source": run.energy_source, "counters": run.counters}),
          flush=True)
    time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
backend.close()
rclpy.shutdown()
print("CLIENT DONE", flush=True)
'''

NODE = ("import sys, tiny_models\n"
        "from squeeze_perception.nodes.synetgy_node import main\n"
        "raise SystemExit(main(sys.argv))\n")


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _reader(proc, sink: list) -> threading.Thread:
    def pump():
        for line in proc.stdout:
            sink.append(line)
    t = threading.Thread(target=pump, daemon=True)
    t.start()
    return t


def _frames(lines: list) -> list[dict]:
    return [json.loads(ln) for ln in list(lines) if ln.startswith("{")]


def _wait(pred, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def _start_node(tmp_path, lines):
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "device_node.py"), "--ros-args", "-p", "models:=[tiny_dirac]"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(tmp_path), start_new_session=True)
    _reader(proc, lines)
    return proc


def test_client_falls_back_within_1s_when_synetgy_node_dies_and_returns(tmp_path):
    (tmp_path / "tiny_models.py").write_text(TINY)
    (tmp_path / "client.py").write_text(CLIENT)
    (tmp_path / "device_node.py").write_text(NODE)
    node_lines: list[str] = []
    client_lines: list[str] = []
    node = _start_node(tmp_path, node_lines)
    client = subprocess.Popen([sys.executable, str(tmp_path / "client.py"), "150"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=_env(tmp_path), start_new_session=True)
    _reader(client, client_lines)
    node2 = None
    try:
        ok = _wait(lambda: sum(f["emulated"] for f in _frames(client_lines)) >= 5, 120)
        assert ok, "no frame reached the board:\n" + "".join(node_lines[-20:] + client_lines[-20:])
        on_board = [f for f in _frames(client_lines) if f["emulated"]]
        assert all(f["source"] == "backend" and f["energy_mj"] > 0 and f["latency_ms"] > 0 for f in on_board)

        # a loaded machine can delay heartbeats past the limit before the kill (a real stall):
        # the counts below are those of the kill
        before = _frames(client_lines)[-1]["counters"]
        said_before = sum("synetgy_node lost" in ln for ln in client_lines)
        os.killpg(node.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        node.wait(10)
        assert _wait(lambda: any(not f["emulated"] and f["t"] > killed_at for f in _frames(client_lines)), 30), \
            "".join(client_lines[-20:])
        first_cpu = next(f for f in _frames(client_lines) if not f["emulated"] and f["t"] > killed_at)
        assert first_cpu["t"] - killed_at < 1.0, f"fell back {first_cpu['t'] - killed_at:.2f} s after the kill"
        assert first_cpu["source"] in ("rapl", "model") and first_cpu["energy_mj"] > 0
        print(f"first CPU frame {first_cpu['t'] - killed_at:.3f} s after the kill")
        time.sleep(1.5)  # frames keep coming on the CPU, about every 100 ms (slower on a loaded machine)
        after = [f for f in _frames(client_lines) if f["t"] > killed_at]
        assert len(after) >= 5 and max(b["t"] - a["t"] for a, b in zip(after, after[1:])) < 1.0
        lost_messages = [ln for ln in client_lines if "synetgy_node lost" in ln]
        assert len(lost_messages) == said_before + 1, "".join(lost_messages)  # said once

        node2 = _start_node(tmp_path, node_lines)  # back: the client returns to the board
        back = lambda: any(f["emulated"] and f["t"] > killed_at + 1.0 for f in _frames(client_lines))  # noqa: E731
        assert _wait(back, 120), "".join(client_lines[-20:])
        assert client.poll() is None, "the client crashed:\n" + "".join(client_lines[-30:])
        c = _frames(client_lines)[-1]["counters"]
        assert c["to_cpu"] - before["to_cpu"] == 1 and c["to_device"] - before["to_device"] == 1
        assert c["frames_lost"] - before["frames_lost"] <= 1
        assert c["frames_cpu"] >= 5 and c["frames_device"] >= 6
        assert c["frames_cpu"] + c["frames_device"] == len(_frames(client_lines))
        assert any("is up" in ln for ln in client_lines)
    finally:
        for p in (client, node, node2):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for p in (client, node, node2):
            if p is not None:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)


def test_vehicle_launch_starts_synetgy_node_only_for_a_synetgy_backend(tmp_path):
    import yaml

    from squeeze_perception.launch_runner.runner import load_launch_description, plan_launch

    vehicle = Path(__file__).resolve().parents[1] / "launch" / "vehicle.launch.py"
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    plan = plan_launch(load_launch_description(vehicle), {"tracker": "false"}, tmp_path / "a")
    assert "synetgy_node" not in [p.name for p in plan.processes]
    plan = plan_launch(load_launch_description(vehicle), {"tracker": "false", "seg_backend": "synetgy",
                                                          "seg_model": "diracdeltaseg", "seg_weights": "/w/dds.pt"},
                       tmp_path / "b")

    def params(name):
        proc = next(p for p in plan.processes if p.name == name)
        out = {}
        for f in [proc.cmd[i + 1] for i, a in enumerate(proc.cmd) if a == "--params-file"]:
            for section in (yaml.safe_load(Path(f).read_text()) or {}).values():
                out.update(section.get("ros__parameters", {}))
        return proc, out

    board, board_params = params("synetgy_node")
    assert board_params["models"] == ["diracdeltaseg"]  # the segmenter's model, compiled for the board
    assert board.respawn  # its death does not end the run: the clients fall back meanwhile
    assert params("squeezeseg_node")[1]["weights"] == "/w/dds.pt"
    assert "weights" not in params("squeezedet_node")[1] or params("squeezedet_node")[1]["weights"] == ""
