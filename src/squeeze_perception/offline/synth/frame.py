"""One synchronised LiDAR + camera frame of a World, with its KITTI-style ground truth."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...interfaces import CLASS_IDS
from ...kitti.calib import KittiCalibration
from ...kitti.default_calib import kitti_calibration
from ...kitti.hdl64e import KITTI_VELODYNE_HEIGHT_M
from ...kitti.labels import ObjectLabel
from .camera import Camera, Lighting
from .lidar import Hdl64e, LidarScan
from .raycast import RayScene, rotate
from .world import Agent, World

LABEL_RADIUS_M = 100.0
MIN_BOX_HEIGHT_PX = 15.0  # smaller objects become DontCare regions, as in KITTI
MIN_VISIBLE_FRACTION = 0.03


@dataclass
class ObjectTruth:
    """Ground truth of one road user in one frame, in the Velodyne frame."""

    agent: Agent
    centre: np.ndarray  # (3,) box centre (not bottom) in the Velodyne frame
    size: np.ndarray  # (3,) length, width, height
    yaw: float  # heading in the Velodyne frame
    velocity: np.ndarray  # (2,) velocity relative to the ego car (what a tracker in velo_link sees), Velodyne axes
    num_points: int
    label: ObjectLabel | None  # camera label (None when not in the image)


@dataclass
class SynthFrame:
    scan: LidarScan
    image: np.ndarray  # (H, W, 3) uint8
    instance_image: np.ndarray  # (H, W) int32
    labels: list[ObjectLabel]  # label_2 lines (including DontCare)
    truths: list[ObjectTruth]
    calib: KittiCalibration
    ego_pose: np.ndarray  # (4, 4) Velodyne pose in the world
    time: float
    ego_velocity: np.ndarray  # (2,) ego car velocity over ground, world axes
    has_lidar: bool = True  # False: camera-only frame (empty scan, num_points 0)


class FrameRenderer:
    """Renders frames of any World with one LiDAR model, camera and calibration."""

    def __init__(self, calib: KittiCalibration | None = None, shadows: bool = True, nthreads: int = 0,
                 lidar: bool = True):
        """lidar=False renders camera-only frames (for detector datasets): the same image and labels
        as with the LiDAR, since the scan and the camera draw from separate random streams."""
        self.calib = calib or kitti_calibration()
        self.lidar = Hdl64e(nthreads=nthreads)
        self.camera = Camera(self.calib)
        self.shadows = shadows
        self.nthreads = nthreads
        self.with_lidar = lidar

    def render(self, world: World, rng: np.random.Generator, lighting: Lighting | None = None) -> SynthFrame:
        rotation, origin = world.sensor_pose(KITTI_VELODYNE_HEIGHT_M)
        agents = world.agents_near(130.0)
        placed = [(a, *a.world_mesh()) for a in agents]
        scene = RayScene(world.static_mesh, [(m, a.class_id if a.class_id else 0, a.instance_id) for a, m, _, _ in placed],
                         self.nthreads)
        lidar_rng, camera_rng = rng.spawn(2)
        if self.with_lidar:
            scan = self.lidar.scan(scene, rotation, origin, lidar_rng, world.layout.on_lane_paint)
        else:
            scan = LidarScan.empty()
        lighting = lighting or Lighting.random(camera_rng)
        image, instance_image = self.camera.render(scene, rotation, origin, lighting, camera_rng,
                                                   world.layout.on_lane_paint, self.shadows)
        point_counts = np.bincount(scan.instance_id[scan.instance_id >= 0], minlength=world._next_instance + 1)
        # Only car / pedestrian / cyclist points carry an instance; vans and trucks are background.
        scan.instance_id[scan.class_id == CLASS_IDS["unknown"]] = -1
        visible_px = np.bincount(instance_image[instance_image >= 0].ravel(), minlength=world._next_instance + 1)
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rotation, origin
        labels, truths = [], []
        for agent, mesh, bottom_w, size in placed:
            bottom_v = rotation.T @ (bottom_w - origin)
            if np.hypot(*bottom_v[:2]) > LABEL_RADIUS_M:
                continue
            yaw_v = float(np.angle(np.exp(1j * (agent.yaw - world.ego.yaw))))
            ego_v = world.ego.speed * np.array([np.cos(world.ego.yaw), np.sin(world.ego.yaw)])
            vel_v = rotation[:2, :2].T @ (np.array([agent.vx, agent.vy]) - ego_v)
            label = self._camera_label(agent, mesh, rotation, origin, bottom_v, size, yaw_v, int(visible_px[agent.instance_id]),
                                       scene)
            if label is not None:
                labels.append(label)
            truths.append(ObjectTruth(agent, bottom_v + [0, 0, size[2] / 2], np.asarray(size, float), yaw_v, vel_v,
                                      int(point_counts[agent.instance_id]),
                                      label if label is not None and label.type != "DontCare" else None))
        ego_v = world.ego.speed * np.array([np.cos(world.ego.yaw), np.sin(world.ego.yaw)])
        return SynthFrame(scan, image, instance_image, labels, truths, self.calib, pose, world.time, ego_v,
                          self.with_lidar)

    def scan_only(self, world: World, rng: np.random.Generator) -> LidarScan:
        """The scan `render(world, rng)` would give, without the camera (statistics, LiDAR-only use)."""
        rotation, origin = world.sensor_pose(KITTI_VELODYNE_HEIGHT_M)
        placed = [(a, a.world_mesh()[0]) for a in world.agents_near(130.0)]
        scene = RayScene(world.static_mesh, [(m, a.class_id if a.class_id else 0, a.instance_id) for a, m in placed],
                         self.nthreads)
        lidar_rng, _ = rng.spawn(2)  # the same stream as render's LiDAR
        scan = self.lidar.scan(scene, rotation, origin, lidar_rng, world.layout.on_lane_paint)
        scan.instance_id[scan.class_id == CLASS_IDS["unknown"]] = -1
        return scan

    def _camera_label(self, agent: Agent, mesh, rotation, origin, bottom_v, size, yaw_v: float, visible: int,
                      scene: RayScene) -> ObjectLabel | None:
        if visible == 0:
            return None
        calib, cam = self.calib, self.camera
        verts_v = (mesh.vertices - origin) @ rotation
        uv, depth = calib.project_velo(verts_v)
        front = depth > 0.1
        if not front.any():
            return None
        u, v = uv[front, 0], uv[front, 1]
        full = np.array([u.min(), v.min(), u.max(), v.max()])
        clipped = np.array([max(full[0], 0.0), max(full[1], 0.0), min(full[2], cam.width - 1.0),
                            min(full[3], cam.height - 1.0)])
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            return None
        area = lambda b: max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)  # noqa: E731
        truncated = 1.0 - area(clipped) / max(area(full), 1e-6)
        truncated = float(np.clip(max(truncated, 1.0 - front.mean()), 0.0, 1.0))
        if clipped[3] - clipped[1] < MIN_BOX_HEIGHT_PX:
            return ObjectLabel("DontCare", -1.0, -1, -10.0, clipped, np.array([-1.0, -1.0, -1.0]),
                               np.array([-1000.0, -1000.0, -1000.0]), -10.0)
        silhouette = self._silhouette_pixels(mesh, rotation, origin, clipped)
        visible_fraction = min(1.0, visible / max(silhouette, 1.0))
        if visible_fraction < MIN_VISIBLE_FRACTION:
            return None
        occluded = 0 if visible_fraction > 0.85 else (1 if visible_fraction > 0.4 else 2)
        loc_rect = calib.velo_to_rect_points(bottom_v[None])[0]
        heading_rect = calib.velo_to_rect[:3, :3] @ np.array([np.cos(yaw_v), np.sin(yaw_v), 0.0])
        rotation_y = float(np.arctan2(-heading_rect[2], heading_rect[0]))
        alpha = float(np.angle(np.exp(1j * (rotation_y - np.arctan2(loc_rect[0], loc_rect[2])))))
        length, width, height = size
        return ObjectLabel(agent.kitti_type, round(truncated, 2), occluded, alpha, clipped,
                           np.array([height, width, length]), loc_rect, rotation_y)

    def _silhouette_pixels(self, mesh, rotation, origin, bbox: np.ndarray, stride: int = 2) -> float:
        """Pixels the object would cover with nothing in front of it (ray cast on a stride grid)."""
        cam = self.camera
        us = np.arange(int(bbox[0]), int(np.ceil(bbox[2])) + 1, stride)
        vs = np.arange(int(bbox[1]), int(np.ceil(bbox[3])) + 1, stride)
        vv, uu = np.meshgrid(vs, us, indexing="ij")
        pix = (vv.ravel() * cam.width + uu.ravel()).astype(np.int64)
        dirs = rotate(cam.dirs_velo[pix], rotation)
        alone = RayScene(mesh, [], self.nthreads)
        hit = alone.cast(rotation @ cam.origin_velo + origin, dirs).hit
        return float(hit.sum() * stride * stride)
