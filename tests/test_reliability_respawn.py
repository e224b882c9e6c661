"""Issue 16, degraded modes: the launch respawns a crashed node (delay, limit; past the limit the
launch fails), in the compatible runner exactly as launch's ExecuteProcess does."""
from __future__ import annotations

import io
from pathlib import Path

from squeeze_perception.launch_runner.runner import load_launch_description, plan_launch, run_plan

REPO = Path(__file__).resolve().parents[1]
VEHICLE = REPO / "launch" / "vehicle.launch.py"

# "Nodes" are shell commands, so crashes and exit codes are exact. The crashing node leaves a
# mark per start; the exit policy is the one vehicle.launch.py uses.
RESPAWN_LAUNCH = """
import runpy
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

exit_policy = runpy.run_path({vehicle!r}, run_name="x")["exit_policy"]

def generate_launch_description():
    loop = "trap 'echo got INT; exit 0' INT; echo ready; while true; do sleep 0.05; done"
    worker = Node(package="sh", executable="sh", name="worker", output="screen", arguments=["-c", loop])
    crasher = Node(package="sh", executable="sh", name="crasher", output="screen",
                   arguments=["-c", "echo start >> {marks}; sleep 0.2; exit 3"],
                   respawn=LaunchConfiguration("respawn"), respawn_delay=0.3, respawn_max_retries=2)
    allowed = 2 if {respawn!r} == "true" else 0
    return LaunchDescription([
        DeclareLaunchArgument("respawn", default_value={respawn!r}),
        worker, crasher,
        RegisterEventHandler(OnProcessExit(target_action=crasher, on_exit=exit_policy("crasher", allowed, 0.3))),
    ])
"""


def _run(tmp_path: Path, respawn: str) -> tuple[int, str, int]:
    marks = tmp_path / "marks"
    lf = tmp_path / "respawn.launch.py"
    lf.write_text(RESPAWN_LAUNCH.format(vehicle=str(VEHICLE), marks=str(marks), respawn=respawn))
    out = io.StringIO()
    (tmp_path / "plan").mkdir()
    plan = plan_launch(load_launch_description(lf), {}, tmp_path / "plan")
    code = run_plan(plan, out=out, sigint_timeout=3.0, install_signal_handlers=False)
    starts = len(marks.read_text().splitlines()) if marks.exists() else 0
    return code, out.getvalue(), starts


def test_crashed_node_is_respawned_up_to_the_limit_then_the_launch_fails(tmp_path):
    code, text, starts = _run(tmp_path, "true")
    assert starts == 3, text  # first start + 2 respawns
    assert "respawning crasher in 0.3 s (respawn 1 of 2)" in text
    assert "crasher exited with code 3; respawn 2 of 2" in text
    assert "required node crasher exited 3 time(s), respawn limit 2" in text
    assert code == 3, text  # past the limit the launch ends as a failure
    assert "[worker] got INT" in text  # the healthy node was stopped cleanly


def test_without_respawn_the_first_crash_ends_the_launch(tmp_path):
    code, text, starts = _run(tmp_path, "false")
    assert starts == 1 and code == 3, text
    assert "respawning" not in text


def test_vehicle_launch_respawns_processing_nodes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plan = plan_launch(load_launch_description(VEHICLE), {"respawn_max_retries": "5", "respawn_delay": "1.5"},
                       tmp_path / "a")
    by_name = {p.name: p for p in plan.processes}
    for name in ("squeezedet_node", "squeezeseg_node", "tracker_node"):
        spec = by_name[name]
        assert (spec.respawn, spec.respawn_delay, spec.respawn_max_retries) == (True, 1.5, 5)
    assert not by_name["bag_player_node"].respawn  # its exit is the end of the bag
    plan = plan_launch(load_launch_description(VEHICLE), {"respawn": "false"}, tmp_path / "b")
    assert not any(p.respawn for p in plan.processes)
