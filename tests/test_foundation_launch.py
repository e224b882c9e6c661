"""Compatible launch runner: arguments, substitutions, conditions, command lines, exit codes, Ctrl-C."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from squeeze_perception.launch_runner import compat as c
from squeeze_perception.launch_runner.runner import (load_launch_description, parse_launch_arguments, plan_launch,
                                                     run_plan, summary_table)

REPO = Path(__file__).resolve().parents[1]
VEHICLE = REPO / "launch" / "vehicle.launch.py"


def ros_args(cmd: list[str]) -> list[str]:
    return cmd[cmd.index("--ros-args") + 1:]


def params_of(cmd: list[str]) -> dict:
    """Merge the params files of a command line in order (later files win, as in rcl)."""
    merged: dict = {}
    args = ros_args(cmd)
    for i, a in enumerate(args):
        if a == "--params-file":
            data = yaml.safe_load(Path(args[i + 1]).read_text())
            for section in data.values():
                merged.update(section["ros__parameters"])
    return merged


def test_parse_launch_arguments():
    assert parse_launch_arguments(["bag:=/a:=b", "rate:=2", "ns:="]) == {"bag": "/a:=b", "rate": "2", "ns": ""}
    with pytest.raises(c.LaunchError, match="name:=value"):
        parse_launch_arguments(["bag=x"])


def test_substitutions_and_conditions():
    ctx = c.LaunchContext({"a": "x", "flag": "True", "zero": "0"})
    assert c.perform_substitutions(ctx, ["pre_", c.LaunchConfiguration("a"), "_post"]) == "pre_x_post"
    assert c.PathJoinSubstitution(["/r", c.LaunchConfiguration("a"), "f.yaml"]).perform(ctx) == "/r/x/f.yaml"
    assert c.LaunchConfiguration("missing", default="d").perform(ctx) == "d"
    with pytest.raises(c.LaunchError, match="missing"):
        c.LaunchConfiguration("missing").perform(ctx)
    assert c.IfCondition(c.LaunchConfiguration("flag")).evaluate(ctx)
    assert c.UnlessCondition(c.LaunchConfiguration("zero")).evaluate(ctx)
    assert c.LaunchConfigurationEquals("a", "x").evaluate(ctx)
    assert c.PythonExpression(["1 + ", c.LaunchConfiguration("zero")]).perform(ctx) == "1"
    with pytest.raises(c.LaunchError, match="true/false"):
        c.IfCondition("maybe").evaluate(ctx)


def test_fake_modules_exist_only_inside_the_block():
    assert "launch_ros.actions" not in sys.modules or not getattr(sys.modules["launch_ros.actions"],
                                                                  "SQUEEZE_PERCEPTION_COMPAT", False)
    with c.installed():
        from launch_ros.actions import Node

        assert Node is c.Node
    assert not getattr(sys.modules.get("launch"), "SQUEEZE_PERCEPTION_COMPAT", False)


def test_vehicle_launch_default_plan(tmp_path):
    plan = plan_launch(load_launch_description(VEHICLE), {"detector": "false", "tracker": "false"}, tmp_path)
    names = [p.name for p in plan.processes]
    assert names == ["bag_player_node", "squeezeseg_node"]  # detector/tracker off, passthrough and rviz off
    player, seg = plan.processes
    assert ros_args(player.cmd)[:2] == ["-r", "__node:=bag_player_node"]
    p = params_of(player.cmd)
    assert p["use_sim_time"] is False  # the player is the clock
    assert p["rate"] == 1.0 and p["loop"] is False and Path(p["bag"]).name in ("demo_drive", "demo_drive_preview", "kitti_real_4frames")
    assert p["subscriber_nodes"] == 1  # only the segmenter consumes the bag: playback waits for it
    s = params_of(seg.cmd)
    assert s["use_sim_time"] is True and s["model"] and s["backend"]
    assert player.env["ROS_AUTOMATIC_DISCOVERY_RANGE"] in ("LOCALHOST", os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"])
    assert Path(player.env["FASTDDS_DEFAULT_PROFILES_FILE"]).exists()
    # The bag player's exit ends the launch; each model node is required.
    targets = [h.target_action for h in plan.handlers]
    assert player.action in targets and seg.action in targets



@pytest.mark.parametrize("code, reason", [(0, "bag finished"),
                                          (1, "bag player failed with exit code 1 (see its log above)")])
def test_vehicle_launch_ends_on_the_players_exit_and_names_a_failure(tmp_path, code, reason):
    """A missing bag makes the player exit 1: the launch's last words must say so, not "bag finished"
    (ros2 launch may still exit 0; scripts read the reason, docs/foundation.md)."""
    plan = plan_launch(load_launch_description(VEHICLE), {"detector": "false", "tracker": "false"}, tmp_path)
    player = plan.processes[0]
    event = c.ProcessExited(action=player.action, name=player.name, cmd=player.cmd, pid=1, returncode=code)
    (handler,) = [h for h in plan.handlers if h.target_action is player.action]
    log, shutdown = handler.actions_for(event, plan.context)
    assert c.perform_substitutions(plan.context, log.msg) == f"{reason}; shutting down"
    assert shutdown.event.reason == reason

def test_vehicle_launch_arguments_reach_the_nodes(tmp_path):
    args = {"namespace": "car1", "rate": "2", "loop": "true", "use_sim_time": "false", "passthrough": "true",
            "seg_model": "squeezeseg", "seg_backend": "onnx", "detector": "false", "tracker": "false",
            "rviz": "true"}
    out = io.StringIO()
    sys_stdout, sys.stdout = sys.stdout, out
    try:
        plan = plan_launch(load_launch_description(VEHICLE), args, tmp_path)
    finally:
        sys.stdout = sys_stdout
    by_name = {p.name: p for p in plan.processes}
    assert set(by_name) == {"car1/bag_player_node", "car1/squeezeseg_node", "car1/passthrough_node"}
    assert "-r" in ros_args(by_name["car1/squeezeseg_node"].cmd)
    assert "__ns:=/car1" in ros_args(by_name["car1/squeezeseg_node"].cmd)
    p = params_of(by_name["car1/bag_player_node"].cmd)
    assert p["rate"] == 2 and p["loop"] is True and p["subscriber_nodes"] == 2
    s = params_of(by_name["car1/squeezeseg_node"].cmd)
    assert (s["model"], s["backend"], s["use_sim_time"]) == ("squeezeseg", "onnx", False)
    assert "rviz2" in out.getvalue() and "unavailable" in out.getvalue()
    assert any("rviz2" in s for s in plan.skipped)


def test_required_argument_and_choices_are_enforced(tmp_path):
    lf = tmp_path / "args.launch.py"
    lf.write_text(textwrap.dedent("""
        from launch import LaunchDescription
        from launch.actions import DeclareLaunchArgument
        def generate_launch_description():
            return LaunchDescription([DeclareLaunchArgument("must"),
                                      DeclareLaunchArgument("mode", default_value="a", choices=["a", "b"])])
    """))
    with pytest.raises(c.LaunchError, match="'must' is required"):
        plan_launch(load_launch_description(lf), {}, tmp_path)
    with pytest.raises(c.LaunchError, match="not one of"):
        plan_launch(load_launch_description(lf), {"must": "1", "mode": "z"}, tmp_path)
    assert plan_launch(load_launch_description(lf), {"must": "1"}, tmp_path).configurations["mode"] == "a"


# A launch file whose "nodes" are shell commands, so exit codes and signals are exact.
SHELL_LAUNCH = """
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

def generate_launch_description():
    loop = "trap 'echo got INT; exit 0' INT; echo ready; while true; do sleep 0.05; done"
    worker = Node(package="sh", executable="sh", name="worker", output="screen", arguments=["-c", loop])
    required = Node(package="sh", executable="sh", name="required", output="screen",
                    arguments=["-c", LaunchConfiguration("script")])
    return LaunchDescription([
        DeclareLaunchArgument("script", default_value=loop),
        worker, required,
        RegisterEventHandler(OnProcessExit(target_action=required, on_exit=[
            LogInfo(msg="required node ended"), EmitEvent(event=Shutdown(reason="required exited"))])),
    ])
"""


def test_required_node_exit_code_becomes_the_launch_exit_code(tmp_path):
    lf = tmp_path / "shell.launch.py"
    lf.write_text(SHELL_LAUNCH)
    for script, expected in (("sleep 0.5; exit 3", 3), ("sleep 0.5; exit 0", 0)):
        out = io.StringIO()
        plan = plan_launch(load_launch_description(lf), {"script": script}, tmp_path / script[-1])
        code = run_plan(plan, out=out, sigint_timeout=3.0, install_signal_handlers=False)
        text = out.getvalue()
        assert code == expected, text
        assert "[launch] required node ended" in text
        assert f"required exit code {expected}" in text
        assert "[worker] got INT" in text  # the other node was stopped with SIGINT, not killed


def test_nodes_stop_on_sigint_even_when_the_launcher_ignores_it(tmp_path):
    """Started in the background of a script (`... &`), a launcher ignores SIGINT, and its
    children would inherit that: they could not be stopped with SIGINT, only killed."""
    lf = tmp_path / "shell.launch.py"
    lf.write_text(SHELL_LAUNCH)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        out = io.StringIO()
        plan = plan_launch(load_launch_description(lf), {"script": "sleep 0.5; exit 3"}, tmp_path / "ign")
        code = run_plan(plan, out=out, sigint_timeout=3.0, install_signal_handlers=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 3 and "[worker] got INT" in out.getvalue(), out.getvalue()


def test_ctrl_c_stops_every_node_cleanly(tmp_path):
    lf = tmp_path / "shell.launch.py"
    lf.write_text(SHELL_LAUNCH)
    proc = subprocess.Popen([sys.executable, "-m", "squeeze_perception.cli", "launch", str(lf), "--compat"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "[worker] ready" in line or "[required] ready" in line:
            ready = sum("ready" in ln for ln in lines)
            if ready == 2:
                break
    proc.send_signal(signal.SIGINT)
    out = "".join(lines) + proc.communicate(timeout=20)[0]
    assert proc.returncode == 0, out
    assert "[worker] got INT" in out and "[required] got INT" in out and "SIGINT" in out
    assert "still running" not in out  # nobody needed SIGTERM/SIGKILL


def test_unsupported_action_is_named(tmp_path):
    lf = tmp_path / "odd.launch.py"
    lf.write_text("from launch import LaunchDescription\n"
                  "class TimerAction: condition = None\n"
                  "def generate_launch_description():\n    return LaunchDescription([TimerAction()])\n")
    with pytest.raises(c.LaunchError, match="TimerAction"):
        plan_launch(load_launch_description(lf), {}, tmp_path)


def test_summary_table_lists_stages_and_player_topics():
    table = summary_table({
        "bag_player_node": {"node": "bag_player_node", "stages": {"playback": {"frames_in": 13, "frames_out": 12}},
                            "topics": {"/kitti/velo/pointcloud": 4}},
        "seg": {"node": "seg", "stages": {"lidar": {"frames_in": 4, "frames_out": 3, "frames_dropped": 1,
                                                   "latency_ms_mean": 12.25, "latency_ms_p99": 20.0,
                                                   "processing_ms_mean": 8.5}}}},
        {"bag_player_node": 0, "seg": 0, "crashed": 1})
    rows = {ln.split()[0] + ":" + ln.split()[1]: ln.split() for ln in table.splitlines()[2:] if ln.strip()}
    assert rows["seg:lidar"][2:8] == ["4", "3", "1", "12.2", "20.0", "8.50"]
    assert rows["seg:lidar"][8:10] == ["-", "117.6"]  # no inference time; fps = 1000 / 8.5 ms processing
    assert "crashed" in table and "exit code 1" in table
    assert "/kitti/velo/pointcloud" in table and "4 published" in table


def test_rviz_config_shows_the_contract_topics_in_velo_link():
    from squeeze_perception import interfaces as itf

    rviz = yaml.safe_load((REPO / "config" / "vehicle.rviz").read_text())["Visualization Manager"]
    assert rviz["Global Options"]["Fixed Frame"] == itf.FRAME_VELODYNE
    topics = {d["Topic"]["Value"]: d for d in rviz["Displays"] if "Topic" in d}
    assert {itf.TOPIC_LABELLED_POINTS, itf.TOPIC_INSTANCE_MARKERS, itf.TOPIC_TRACK_MARKERS,
            itf.TOPIC_DETECTIONS_IMAGE, itf.TOPIC_POINTS} <= set(topics)
    labelled = topics[itf.TOPIC_LABELLED_POINTS]
    assert labelled["Channel Name"] == "label" and labelled["Max Intensity"] == len(itf.CLASS_NAMES) - 1
    # Sensor topics are viewed best effort, results reliable (docs/interfaces.md QoS).
    assert topics[itf.TOPIC_POINTS]["Topic"]["Reliability Policy"] == "Best Effort"
    assert topics[itf.TOPIC_TRACK_MARKERS]["Topic"]["Reliability Policy"] == "Reliable"
