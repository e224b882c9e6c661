"""Clean shutdown of node processes: one or two SIGINTs (a terminal's Ctrl-C under `ros2 launch`
reaches every node twice), SIGTERM, and a signal during start-up end the process with exit
code 0, the node's SUMMARY line (or a start-up line) and no traceback; telemetry and error
reporting never raise once the context is gone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from squeeze_perception.node_base import ParamSpec, PerceptionNode


def _start(node: str, *ros_args: str) -> subprocess.Popen:
    """The node as `ros2 run` starts it: its console entry point, in its own process group."""
    code = f"import sys; from squeeze_perception.nodes.entry import {node}; sys.exit({node}())"
    cmd = [sys.executable, "-c", code] + (["--ros-args", *ros_args] if ros_args else [])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _wait_until_up(ctx, name: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    import rclpy

    watcher = rclpy.create_node("shutdown_test_watcher", context=ctx)
    try:
        deadline = time.monotonic() + timeout
        while name not in watcher.get_node_names():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, f"{name} did not come up in {timeout} s"
            time.sleep(0.2)
    finally:
        watcher.destroy_node()
    time.sleep(1.0)  # past construction: spinning


def _signal(proc: subprocess.Popen, *signals: int, gap: float = 0.05) -> tuple[int, str, str]:
    for sig in signals:
        os.killpg(proc.pid, sig)  # the whole group, as a terminal does
        time.sleep(gap)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def _clean(rc: int, out: str, err: str, summary: bool = True) -> None:
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert rc == 0, (rc, out[-1000:], err[-2000:])
    if summary:
        assert "SUMMARY {" in out, out[-1000:]


@pytest.mark.parametrize("gap", [0.01, 0.5])
def test_two_sigints_to_a_running_node(rclpy_context, gap):
    proc = _start("passthrough_node")
    try:
        _wait_until_up(rclpy_context, "passthrough_node", proc)
        _clean(*_signal(proc, signal.SIGINT, signal.SIGINT, gap=gap))
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_to_a_running_node(rclpy_context):
    proc = _start("tracker_node")
    try:
        _wait_until_up(rclpy_context, "tracker_node", proc)
        _clean(*_signal(proc, signal.SIGTERM))
    finally:
        if proc.poll() is None:
            proc.kill()


def _wait_for_our_handlers(proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Until the entry point installed its handlers (SIGTERM appears among the caught signals in
    /proc; Python itself catches only SIGINT). Before that the interpreter is still starting up
    (site-packages), where no Python code of ours can run."""
    status = Path(f"/proc/{proc.pid}/status")
    if not status.exists():
        pytest.skip("needs /proc")
    bit = 1 << (signal.SIGTERM - 1)
    deadline = time.monotonic() + timeout
    while True:
        caught = next((int(line.split()[1], 16) for line in status.read_text().splitlines()
                       if line.startswith("SigCgt:")), 0)
        if caught & bit:
            return
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)


@pytest.mark.parametrize("after", [0.0, 1.0])
def test_sigint_during_start_up(after):
    """tracker_node's imports (scipy, filterpy, ...) take seconds: Ctrl-C then ends it quietly."""
    proc = _start("tracker_node")
    try:
        _wait_for_our_handlers(proc)
        time.sleep(after)
        rc, out, err = _signal(proc, signal.SIGINT, signal.SIGINT)
        _clean(rc, out, err, summary=False)
        assert "stopped during start-up" in out or "SUMMARY {" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_third_signal_while_stopping_exits_at_once_without_traceback():
    code = ("import os, signal, sys, time\n"
            "from squeeze_perception import shutdown\n"
            "stop = shutdown.install()\n"
            "print('ready', flush=True)\n"
            "while stop.count < 2: time.sleep(0.01)\n"
            "print('stopping', flush=True)\n"
            "time.sleep(60)  # a hung clean-up\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    for _ in range(2):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
    assert proc.stdout.readline().strip() == "stopping"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGINT and "exiting now" in err and "Traceback" not in err


class _Node(PerceptionNode):
    def __init__(self, context):
        super().__init__("shutdown_test_node", [ParamSpec("x", 1.0, "")], stages=("work",), context=context)


def test_report_error_and_telemetry_never_raise_after_the_context_is_gone():
    import rclpy

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    node = _Node(ctx)
    node.publish_telemetry()
    rclpy.shutdown(context=ctx)  # what Ctrl-C does under rclpy's own signal handling
    node.report_error("work", "bad frame")  # first error: publishes at once -> used to raise RCLError
    node.report_error("work", "bad frame")
    node.publish_telemetry()
    assert node.stats["work"].errors == 2
    node.destroy_node()


def test_telemetry_never_raises_when_its_publishers_are_destroyed(rclpy_context):
    node = _Node(rclpy_context)
    try:
        node.destroy_publisher(node._diag_pub)
        node.report_error("work", "bad frame")
        node.publish_telemetry()
        assert node.stats["work"].errors == 1
    finally:
        node.destroy_node()
