"""squeeze_perception: SqueezeDet / SqueezeSeg ROS 2 perception with ROS-free cores."""
__version__ = "0.1.0"
