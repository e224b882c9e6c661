"""Plumbing check: play a bag into two pass-through nodes in their own namespaces.

    squeeze-perception launch replay_check.launch.py bag:=bags/kitti_real_4frames

Proves the player, the message contract decoding and DDS settings without any model;
the end-to-end test runs this file. Ends with exit code 0 when the bag is finished.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node, SetParameter

from squeeze_perception.paths import bags_dir

PACKAGE = "squeeze_perception"
INPUTS = ("kitti/velo/pointcloud", "kitti/camera_color_left/image_raw")


def generate_launch_description():
    cfg = LaunchConfiguration
    player = Node(package=PACKAGE, executable="bag_player_node", name="bag_player_node", output="screen",
                  parameters=[{"bag": cfg("bag"), "rate": cfg("rate"), "subscriber_nodes": cfg("subscriber_nodes"),
                               "wait_for_subscribers": cfg("wait_for_subscribers"), "use_sim_time": False}])
    passthroughs = [
        Node(package=PACKAGE, executable="passthrough_node", name="passthrough_node", namespace=ns,
             output="screen", remappings=[(topic, "/" + topic) for topic in INPUTS])
        for ns in ("front", "rear")
    ]
    return LaunchDescription([
        DeclareLaunchArgument("bag", default_value=str(bags_dir() / "kitti_real_4frames")),
        DeclareLaunchArgument("rate", default_value="1.0"),
        DeclareLaunchArgument("wait_for_subscribers", default_value="30.0"),
        DeclareLaunchArgument("subscriber_nodes", default_value="2",
                              description="play once this many nodes subscribed (the two pass-throughs)"),
        DeclareLaunchArgument("use_sim_time", default_value="true"),
        SetParameter(name="use_sim_time", value=cfg("use_sim_time")),
        player, *passthroughs,
        RegisterEventHandler(OnProcessExit(target_action=player, on_exit=[
            LogInfo(msg="bag finished"), EmitEvent(event=Shutdown(reason="bag finished"))])),
    ])
