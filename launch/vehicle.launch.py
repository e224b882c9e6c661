"""The whole perception stack on a recorded drive.

    ros2 launch squeeze_perception vehicle.launch.py bag:=/path/to/bag rviz:=true
    squeeze-perception launch vehicle.launch.py bag:=bags/kitti_real_4frames   # without ROS 2 launch

Nodes: bag_player_node (its exit at the end of the bag shuts the launch down with code 0),
squeezedet_node, squeezeseg_node, tracker_node, optional passthrough_node and rviz2. Each node
gets its defaults from config/<node>.yaml, then the launch arguments below. The model nodes are
required: if one dies the launch stops and reports the failure.
"""

import importlib

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, RegisterEventHandler, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PythonExpression
from launch_ros.actions import Node, SetParameter

from squeeze_perception.launch_runner.dds import large_data_profile_path
from squeeze_perception.paths import bags_dir, config_dir

PACKAGE = "squeeze_perception"


def spec_defaults(node_name: str) -> dict:
    """The node's own defaults (its ParamSpec list): the one source of every default, which
    `ros2 run` without a params file gets too; config/*.yaml repeat them (a test keeps them equal)."""
    module = importlib.import_module(f"squeeze_perception.nodes.{node_name}")
    return {spec.name: spec.default for spec in module.PARAMS}


def node_parameters(config_file: str, node_name: str) -> dict:
    """ros__parameters of `node_name` in config/<file> (keys `name`, `/**` or `/**/name`).

    Passed as a dict rather than the file path so the values apply under any namespace
    (a plain `name:` key in a params file matches only the root namespace).
    """
    path = config_dir() / config_file
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    params = {}
    for key in ("/**", f"/**/{node_name}", node_name, f"/{node_name}"):
        params.update((data.get(key) or {}).get("ros__parameters", {}))
    return params


def default_bag() -> str:
    """The full synthetic demo drive when it was built (`make demo-drive`), else its committed
    12-frame preview, else the real 4-frame KITTI bag."""
    for name in ("demo_drive", "demo_drive_preview", "kitti_real_4frames"):
        if (bags_dir() / name).exists():
            return str(bags_dir() / name)
    return str(bags_dir() / "kitti_real_4frames")


def enabled_count(flags: list[str]) -> PythonExpression:
    """Number of the boolean launch arguments `flags` that are true (evaluated at launch time)."""
    terms = []
    for flag in flags:
        terms += ["int('", LaunchConfiguration(flag), "'.lower() in ('true', '1')) + "]
    return PythonExpression(terms + ["0"])


def generate_launch_description():
    cfg = LaunchConfiguration
    det = node_parameters("squeezedet.yaml", "squeezedet_node")
    seg = node_parameters("squeezeseg.yaml", "squeezeseg_node")
    player = node_parameters("bag_player.yaml", "bag_player_node")
    # launch-argument defaults: config/ first (a user may edit it), else the node's own default
    det_default = {**spec_defaults("squeezedet_node"), **det}
    seg_default = {**spec_defaults("squeezeseg_node"), **seg}
    player_default = {**spec_defaults("bag_player_node"), **player}

    arguments = [
        DeclareLaunchArgument("bag", default_value=default_bag(), description="rosbag2 folder or ROS 1 .bag to play"),
        DeclareLaunchArgument("rate", default_value=str(player_default["rate"]), description="playback speed"),
        DeclareLaunchArgument("loop", default_value="false", description="replay the bag forever"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace for all nodes"),
        DeclareLaunchArgument("use_sim_time", default_value="true", description="nodes follow the bag's /clock"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz with config/vehicle.rviz"),
        DeclareLaunchArgument("detector", default_value="true", description="run squeezedet_node"),
        DeclareLaunchArgument("segmenter", default_value="true", description="run squeezeseg_node"),
        DeclareLaunchArgument("tracker", default_value="true", description="run tracker_node"),
        DeclareLaunchArgument("passthrough", default_value="false", description="run passthrough_node"),
        DeclareLaunchArgument("det_model", default_value=str(det_default["model"]),
                              description="detection model (squeeze-perception models)"),
        DeclareLaunchArgument("det_backend", default_value=str(det_default["backend"]),
                              description="detection backend"),
        DeclareLaunchArgument("seg_model", default_value=str(seg_default["model"]),
                              description="segmentation model"),
        DeclareLaunchArgument("seg_backend", default_value=str(seg_default["backend"]),
                              description="segmentation backend"),
    ]

    bag_player = Node(
        package=PACKAGE, executable="bag_player_node", name="bag_player_node", namespace=cfg("namespace"),
        output="screen",
        parameters=[player, {"bag": cfg("bag"), "rate": cfg("rate"), "loop": cfg("loop"),
                             "use_sim_time": False,  # the player is the clock
                             # start when every enabled stage subscribed (models take seconds to load)
                             "subscriber_nodes": enabled_count(["detector", "segmenter", "tracker", "passthrough"]),
                             "wait_for_subscribers": 60.0}])
    detector = Node(
        package=PACKAGE, executable="squeezedet_node", name="squeezedet_node", namespace=cfg("namespace"),
        output="screen", condition=IfCondition(cfg("detector")),
        parameters=[det, {"model": cfg("det_model"), "backend": cfg("det_backend")}])
    segmenter = Node(
        package=PACKAGE, executable="squeezeseg_node", name="squeezeseg_node", namespace=cfg("namespace"),
        output="screen", condition=IfCondition(cfg("segmenter")),
        parameters=[seg, {"model": cfg("seg_model"), "backend": cfg("seg_backend")}])
    tracker = Node(
        package=PACKAGE, executable="tracker_node", name="tracker_node", namespace=cfg("namespace"),
        output="screen", condition=IfCondition(cfg("tracker")),
        parameters=[node_parameters("tracker.yaml", "tracker_node")])
    passthrough = Node(
        package=PACKAGE, executable="passthrough_node", name="passthrough_node", namespace=cfg("namespace"),
        output="screen", condition=IfCondition(cfg("passthrough")),
        parameters=[node_parameters("passthrough.yaml", "passthrough_node")])
    rviz = Node(
        package="rviz2", executable="rviz2", name="rviz2", namespace=cfg("namespace"), output="screen",
        condition=IfCondition(cfg("rviz")), arguments=["-d", str(config_dir() / "vehicle.rviz")])

    def required(node, what: str):
        return RegisterEventHandler(OnProcessExit(target_action=node, on_exit=[
            EmitEvent(event=Shutdown(reason=f"required node {what} exited"))]))

    return LaunchDescription(arguments + [
        # Large camera/LiDAR messages over shared memory (Fast DDS); keeps a user's own profile.
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                               EnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                                                   default_value=str(large_data_profile_path()))),
        SetParameter(name="use_sim_time", value=cfg("use_sim_time")),
        LogInfo(msg=["playing ", cfg("bag"), " at rate ", cfg("rate")]),
        bag_player, detector, segmenter, tracker, passthrough, rviz,
        # End of the bag ends the run, with exit code 0.
        RegisterEventHandler(OnProcessExit(target_action=bag_player, on_exit=[
            LogInfo(msg="bag finished; shutting down"),
            EmitEvent(event=Shutdown(reason="bag finished"))])),
        required(detector, "squeezedet_node"),
        required(segmenter, "squeezeseg_node"),
        required(tracker, "tracker_node"),
    ])
