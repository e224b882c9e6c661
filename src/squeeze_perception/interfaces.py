"""The message contract as numpy dtypes, class ids, frames and default topic names.

ROS-free: nodes turn these structured arrays into PointCloud2 tables (see msgs_conv) and
docs/interfaces.md documents the same names. Change a dtype here and the docs together.
"""
from __future__ import annotations

import numpy as np

# Class ids shared by every stage (SqueezeSeg's label convention; SqueezeDet uses 1..3).
CLASS_NAMES: tuple[str, ...] = ("unknown", "car", "pedestrian", "cyclist")
CLASS_IDS: dict[str, int] = {n: i for i, n in enumerate(CLASS_NAMES)}
DETECTION_CLASSES: tuple[str, ...] = ("car", "pedestrian", "cyclist")

# Frames (kitti2bag naming).
FRAME_BASE = "base_link"
FRAME_VELODYNE = "velo_link"
FRAME_CAMERA = "camera_color_left"
FRAME_IMU = "imu_link"
FRAME_WORLD = "world"

# Default topics, relative so a launch namespace applies; remap freely.
TOPIC_IMAGE = "kitti/camera_color_left/image_raw"
TOPIC_CAMERA_INFO = "kitti/camera_color_left/camera_info"
TOPIC_POINTS = "kitti/velo/pointcloud"
TOPIC_DETECTIONS = "perception/camera/detections"
TOPIC_DETECTIONS_IMAGE = "perception/camera/detections_image"
TOPIC_LABELLED_POINTS = "perception/lidar/labelled_points"
TOPIC_INSTANCES = "perception/lidar/instances"
TOPIC_INSTANCE_MARKERS = "perception/lidar/instance_markers"
TOPIC_TRACKS = "perception/tracks"
TOPIC_TRACK_MARKERS = "perception/track_markers"
TOPIC_DIAGNOSTICS = "/diagnostics"
# vision_msgs arrays beside the tables, published only where vision_msgs is installed (apt ROS 2).
TOPIC_DETECTIONS_2D = "perception/camera/detections_2d"
TOPIC_INSTANCES_3D = "perception/lidar/instances_3d"
TOPIC_TRACKS_3D = "perception/tracks_3d"

# Every output topic of the nodes and every sensor input -> its ROS 2 message type. RViz configs
# and docs/interfaces.md are checked against this (tests/test_ros_user_rviz_contract.py).
TOPIC_TYPES: dict[str, str] = {
    TOPIC_IMAGE: "sensor_msgs/msg/Image",
    TOPIC_CAMERA_INFO: "sensor_msgs/msg/CameraInfo",
    TOPIC_POINTS: "sensor_msgs/msg/PointCloud2",
    TOPIC_DETECTIONS: "sensor_msgs/msg/PointCloud2",
    TOPIC_DETECTIONS_IMAGE: "sensor_msgs/msg/Image",
    TOPIC_LABELLED_POINTS: "sensor_msgs/msg/PointCloud2",
    TOPIC_INSTANCES: "sensor_msgs/msg/PointCloud2",
    TOPIC_INSTANCE_MARKERS: "visualization_msgs/msg/MarkerArray",
    TOPIC_TRACKS: "sensor_msgs/msg/PointCloud2",
    TOPIC_TRACK_MARKERS: "visualization_msgs/msg/MarkerArray",
    TOPIC_DIAGNOSTICS: "diagnostic_msgs/msg/DiagnosticArray",
    TOPIC_DETECTIONS_2D: "vision_msgs/msg/Detection2DArray",
    TOPIC_INSTANCES_3D: "vision_msgs/msg/Detection3DArray",
    TOPIC_TRACKS_3D: "vision_msgs/msg/Detection3DArray",
}
# Topics that exist only when vision_msgs is importable.
VISION_TOPICS: tuple[str, ...] = (TOPIC_DETECTIONS_2D, TOPIC_INSTANCES_3D, TOPIC_TRACKS_3D)

# Raw Velodyne input: x, y, z, intensity (float32). Extra fields (ring, time) are allowed.
POINT_FIELDS_REQUIRED = ("x", "y", "z", "intensity")
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4")])

LABELLED_POINT_DTYPE = np.dtype(
    [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"),
     ("label", "<i4"), ("instance", "<i4")]  # instance -1 = none
)

# One row per 2D box, pixel coordinates of the input image.
DETECTION_DTYPE = np.dtype(
    [("u_min", "<f4"), ("v_min", "<f4"), ("u_max", "<f4"), ("v_max", "<f4"),
     ("score", "<f4"), ("class_id", "<i4")]
)

# One row per LiDAR instance: box centre/size/yaw in the cloud's frame.
INSTANCE_DTYPE = np.dtype(
    [("instance_id", "<i4"), ("class_id", "<i4"), ("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
     ("length", "<f4"), ("width", "<f4"), ("height", "<f4"), ("yaw", "<f4"),
     ("num_points", "<i4"), ("score", "<f4")]
)

# One row per confirmed track, in the tracking frame.
TRACK_DTYPE = np.dtype(
    [("track_id", "<i4"), ("class_id", "<i4"), ("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
     ("length", "<f4"), ("width", "<f4"), ("height", "<f4"), ("yaw", "<f4"),
     ("vx", "<f4"), ("vy", "<f4"), ("score", "<f4"), ("age", "<i4")]
)


def empty(dtype: np.dtype) -> np.ndarray:
    return np.zeros(0, dtype=dtype)
