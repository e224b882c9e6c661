"""`squeeze-perception bench graph`: the node graph measured the way ros2_benchmark does
(core.py: ROS-free statistics and rate search; ros.py: monitor, processes, player;
compose.py: all nodes in one process; cli.py: the command)."""
