"""KITTI formats: calibration, labels, Velodyne scans, dataset layouts (ROS-free)."""
