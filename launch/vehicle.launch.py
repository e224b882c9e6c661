"""The whole perception stack on a recorded drive.

    ros2 launch squeeze_perception vehicle.launch.py bag:=/path/to/bag rviz:=true
    squeeze-perception launch vehicle.launch.py bag:=bags/kitti_real_4frames   # without ROS 2 launch

Nodes: bag_player_node (its exit at the end of the bag shuts the launch down with code 0),
squeezedet_node, squeezeseg_node, tracker_node, optional passthrough_node and rviz2, and
synetgy_node (the shared emulated accelerator, docs/accelerator.md) when det_backend or
seg_backend is synetgy: it compiles those models for its board; its death does not end the run
(the model nodes fall back to their CPU backend and return when it is respawned). Each node
gets its defaults from config/<node>.yaml, then the launch arguments below. The processing nodes
(squeezedet, squeezeseg, tracker) are respawned when they die, after `respawn_delay` s and at most
`respawn_max_retries` times; the tracker goes on with the remaining sensor meanwhile. One exit more
(or any exit with respawn:=false) ends the launch as a failure. docs/reliability.md.
"""

import importlib

import yaml
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler,
                            SetEnvironmentVariable)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PythonExpression
from launch_ros.actions import Node, SetParameter

from squeeze_perception.launch_runner.dds import profile_path_for
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


def exit_policy(what: str, allowed: int, delay: float):
    """OnProcessExit callable for a respawning node: it may exit `allowed` times (launch respawns
    it each time); the exit after that ends the launch. Same counting as launch's
    respawn_max_retries, so the launch stops exactly when the respawns run out."""
    exits = [0]

    def on_exit(event, context):
        exits[0] += 1
        if getattr(context, "is_shutdown", False):
            return None  # the launch is stopping anyway: no respawn, nothing to add
        if exits[0] > allowed:
            return [EmitEvent(event=Shutdown(
                reason=f"required node {what} exited {exits[0]} time(s), respawn limit {allowed}"))]
        return [LogInfo(msg=f"{what} exited with code {event.returncode}; respawn {exits[0]} of {allowed} "
                            f"in {delay:g} s")]
    return on_exit


def player_exit(event, context):
    """OnProcessExit callable for the bag player: the end of the bag ends the run; a player that
    failed (missing or corrupt bag) ends it too, and says so in the last lines it prints, because
    `ros2 launch` itself may still exit 0 (docs/foundation.md: how scripts detect a failed run)."""
    if event.returncode == 0:
        reason = "bag finished"
    else:
        reason = f"bag player failed with exit code {event.returncode} (see its log above)"
    return [LogInfo(msg=f"{reason}; shutting down"), EmitEvent(event=Shutdown(reason=reason))]


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
        DeclareLaunchArgument("det_weights", default_value=str(det_default["weights"]),
                              description="detection weights file ('' = models/<det_model>.pt)"),
        DeclareLaunchArgument("seg_weights", default_value=str(seg_default["weights"]),
                              description="segmentation weights file ('' = models/<seg_model>.pt)"),
        DeclareLaunchArgument("respawn", default_value="true",
                              description="restart a crashed squeezedet / squeezeseg / tracker node"),
        DeclareLaunchArgument("respawn_delay", default_value="2.0", description="seconds before a restart"),
        DeclareLaunchArgument("respawn_max_retries", default_value="3",
                              description="restarts per node; the exit after the last one ends the launch"),
    ]

    bag_player = Node(
        package=PACKAGE, executable="bag_player_node", name="bag_player_node", namespace=cfg("namespace"),
        output="screen",
        parameters=[player, {"bag": cfg("bag"), "rate": cfg("rate"), "loop": cfg("loop"),
                             "use_sim_time": False,  # the player is the clock
                             # start when every enabled stage subscribed (models take seconds to load)
                             "subscriber_nodes": enabled_count(["detector", "segmenter", "tracker", "passthrough"]),
                             "wait_for_subscribers": 60.0}])

    def processing_nodes(context):
        """squeezedet, squeezeseg, tracker with respawn settings from the launch arguments
        (launch wants a bool / float / int there, hence evaluated here)."""
        respawn = cfg("respawn").perform(context).strip().lower() in ("true", "1")
        delay = float(cfg("respawn_delay").perform(context))
        retries = int(cfg("respawn_max_retries").perform(context)) if respawn else 0
        entities = []

        def weights_override(argument: str) -> dict:
            """Only a non-empty file is passed: an empty string substitution would reach the node
            as a YAML null under ros2 launch, and '' is the node's own default anyway."""
            path = cfg(argument).perform(context).strip()
            return {"weights": path} if path else {}

        for executable, flag, params in (
                ("squeezedet_node", "detector", [det, {"model": cfg("det_model"), "backend": cfg("det_backend"),
                                                       **weights_override("det_weights")}]),
                ("squeezeseg_node", "segmenter", [seg, {"model": cfg("seg_model"), "backend": cfg("seg_backend"),
                                                        **weights_override("seg_weights")}]),
                ("tracker_node", "tracker", [node_parameters("tracker.yaml", "tracker_node")])):
            node = Node(package=PACKAGE, executable=executable, name=executable, namespace=cfg("namespace"),
                        output="screen", condition=IfCondition(cfg(flag)), parameters=params,
                        respawn=respawn, respawn_delay=delay, respawn_max_retries=retries)
            entities += [node, RegisterEventHandler(OnProcessExit(
                target_action=node, on_exit=exit_policy(executable, retries, delay)))]
        on_board = [cfg(model).perform(context) for flag, model, backend in
                    (("detector", "det_model", "det_backend"), ("segmenter", "seg_model", "seg_backend"))
                    if cfg(flag).perform(context).strip().lower() in ("true", "1")
                    and cfg(backend).perform(context) == "synetgy"]
        if on_board:
            entities.append(Node(package=PACKAGE, executable="synetgy_node", name="synetgy_node",
                                 namespace=cfg("namespace"), output="screen",
                                 parameters=[{"models": sorted(set(on_board))}],
                                 respawn=respawn, respawn_delay=delay, respawn_max_retries=retries))
        return entities
    passthrough = Node(
        package=PACKAGE, executable="passthrough_node", name="passthrough_node", namespace=cfg("namespace"),
        output="screen", condition=IfCondition(cfg("passthrough")),
        parameters=[node_parameters("passthrough.yaml", "passthrough_node")])
    rviz = Node(
        package="rviz2", executable="rviz2", name="rviz2", namespace=cfg("namespace"), output="screen",
        condition=IfCondition(cfg("rviz")), arguments=["-d", str(config_dir() / "vehicle.rviz")])

    return LaunchDescription(arguments + [
        # Large camera/LiDAR messages over shared memory (Fast DDS); UDP on loopback only when
        # ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (docs/reliability.md); keeps a user's own profile.
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                               EnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                                                   default_value=str(profile_path_for()))),
        SetParameter(name="use_sim_time", value=cfg("use_sim_time")),
        LogInfo(msg=["playing ", cfg("bag"), " at rate ", cfg("rate")]),
        bag_player, OpaqueFunction(function=processing_nodes), passthrough, rviz,
        # End of the bag ends the run (exit code 0); a failed player ends it as a failure.
        RegisterEventHandler(OnProcessExit(target_action=bag_player, on_exit=player_exit)),
    ])
