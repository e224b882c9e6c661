"""Fusion + tracking for one synchronised frame: the core the node and `track eval` share.

LiDAR frame (camera optional):  fuse instances with the camera boxes (class/score
confirmed or corrected), add camera boxes no instance explains as ground-plane position
estimates that may update an existing track but never start one, then step the tracker.

Camera frame while the LiDAR is silent (dropout): the camera boxes alone, as ground-plane
estimates that may also start tracks, keep the tracker going.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import interfaces as itf
from .fusion import FusionParams, fuse, ground_measurements, velo_to_image_matrix
from .tracker import MultiObjectTracker, TrackerConfig


@dataclass
class FrameReport:
    tracks: np.ndarray
    fused: int = 0  # instances matched to a camera box
    corrected: int = 0  # instances whose class the camera changed
    camera_only: int = 0  # ground-plane estimates fed to the tracker


class TrackingPipeline:
    def __init__(self, config: TrackerConfig | None = None, fusion: FusionParams = FusionParams(),
                 use_camera: bool = True, camera_updates: bool = True):
        self.tracker = MultiObjectTracker(config)
        self.fusion = fusion
        self.use_camera = use_camera
        self.camera_updates = camera_updates
        self.velo_to_image: np.ndarray | None = None
        self.image_size: tuple[int, int] | None = None

    def set_camera(self, camera_p: np.ndarray, velo_to_cam: np.ndarray, image_size: tuple[int, int]) -> None:
        self.velo_to_image = velo_to_image_matrix(camera_p, velo_to_cam)
        self.image_size = (int(image_size[0]), int(image_size[1]))

    @property
    def camera_ready(self) -> bool:
        return self.use_camera and self.velo_to_image is not None and self.image_size is not None

    def reset(self) -> None:
        self.tracker.reset()

    def process(self, stamp_s: float, instances: np.ndarray, detections: np.ndarray | None) -> FrameReport:
        if not self.camera_ready or detections is None:
            return FrameReport(self.tracker.step(instances, stamp_s))
        result = fuse(instances, detections, self.velo_to_image, self.image_size, self.fusion)
        meas, std, births = result.instances, None, None
        report = FrameReport(itf.empty(itf.TRACK_DTYPE), fused=int((result.matched_detection >= 0).sum()),
                             corrected=int(np.sum(result.instances["class_id"] != instances["class_id"])))
        if self.camera_updates and len(result.unexplained_detections):
            cam, cam_std = ground_measurements(detections[result.unexplained_detections], self.velo_to_image,
                                               self.fusion.ground_z_m)
            if len(cam):
                lidar_std = np.full((len(meas), 2), np.nan)  # NaN: the tracker's per-class default
                meas = np.concatenate([meas, cam])
                std = np.concatenate([lidar_std, cam_std])
                births = np.concatenate([np.ones(len(result.instances), bool), np.zeros(len(cam), bool)])
                report.camera_only = len(cam)
        report.tracks = self.tracker.step(meas, stamp_s, std, births)
        return report

    def process_camera_only(self, stamp_s: float, detections: np.ndarray) -> FrameReport:
        """LiDAR dropout: track on ground-plane estimates from the camera boxes alone."""
        if not self.camera_ready:
            return FrameReport(self.tracker.step(itf.empty(itf.INSTANCE_DTYPE), stamp_s))
        cam, cam_std = ground_measurements(detections, self.velo_to_image, self.fusion.ground_z_m)
        return FrameReport(self.tracker.step(cam, stamp_s, cam_std), camera_only=len(cam))
