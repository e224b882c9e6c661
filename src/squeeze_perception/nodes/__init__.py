"""ROS 2 nodes: thin wrappers that convert messages, read parameters and call the cores."""
