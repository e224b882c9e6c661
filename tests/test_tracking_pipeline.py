"""TrackingPipeline: camera boxes update but never start tracks while the LiDAR runs; camera-only
mode starts and keeps tracks; without a camera it is the plain tracker."""
from __future__ import annotations

import numpy as np

from squeeze_perception import interfaces as itf
from squeeze_perception.offline.tracking import scenarios as sc
from squeeze_perception.tracking.fusion import (KITTI_IMAGE_SIZE, KITTI_P_RECT_02, KITTI_VELO_TO_RECT,
                                                project_boxes, velo_to_image_matrix)
from squeeze_perception.tracking.pipeline import TrackingPipeline

M = velo_to_image_matrix(KITTI_P_RECT_02, KITTI_VELO_TO_RECT)


def _pipeline(**kw) -> TrackingPipeline:
    p = TrackingPipeline(**kw)
    p.set_camera(KITTI_P_RECT_02, KITTI_VELO_TO_RECT, KITTI_IMAGE_SIZE)
    return p


def _detections(gt):
    boxes, valid, _ = project_boxes(gt, M, KITTI_IMAGE_SIZE)
    det = np.zeros(int(valid.sum()), itf.DETECTION_DTYPE)
    det["u_min"], det["v_min"], det["u_max"], det["v_max"] = boxes[valid].T
    det["class_id"], det["score"] = gt["class_id"][valid], 0.9
    return det


def test_camera_box_alone_never_starts_a_track_while_lidar_runs():
    seq = sc.occlusion_gap(gap_frames=0, n_frames=10, cls=2)
    pipe = _pipeline()
    for t, gt in zip(seq.stamps_s, seq.frames):
        report = pipe.process(float(t), itf.empty(itf.INSTANCE_DTYPE), _detections(gt))
        assert report.camera_only == 1
    assert len(pipe.tracker.tracks) == 0


def test_camera_box_keeps_a_track_alive_when_the_instance_is_missed():
    seq = sc.occlusion_gap(gap_frames=0, n_frames=30, cls=2)
    pipe = _pipeline()
    for k, (t, gt) in enumerate(zip(seq.stamps_s, seq.frames)):
        inst = sc.gt_to_instances(gt) if k < 5 else itf.empty(itf.INSTANCE_DTYPE)  # LiDAR loses it
        out = pipe.process(float(t), inst, _detections(gt)).tracks
    assert out["track_id"].tolist() == [1]
    assert np.hypot(out["x"][0] - seq.frames[-1]["x"][0], out["y"][0] - seq.frames[-1]["y"][0]) < 1.0
    # the same without camera updates: the track is gone after max_coast_s
    pipe = _pipeline(camera_updates=False)
    for k, (t, gt) in enumerate(zip(seq.stamps_s, seq.frames)):
        inst = sc.gt_to_instances(gt) if k < 5 else itf.empty(itf.INSTANCE_DTYPE)
        out = pipe.process(float(t), inst, _detections(gt)).tracks
    assert len(out) == 0 and len(pipe.tracker.tracks) == 0


def test_camera_only_mode_starts_tracks():
    seq = sc.occlusion_gap(gap_frames=0, n_frames=8, cls=1)
    pipe = _pipeline()
    for t, gt in zip(seq.stamps_s, seq.frames):
        out = pipe.process_camera_only(float(t), _detections(gt)).tracks
    assert out["track_id"].tolist() == [1] and out["class_id"].tolist() == [1]


def test_without_camera_it_is_the_plain_tracker():
    seq = sc.occlusion_gap(gap_frames=0, n_frames=8)
    pipe = _pipeline(use_camera=False)
    for t, gt in zip(seq.stamps_s, seq.frames):
        report = pipe.process(float(t), sc.gt_to_instances(gt), _detections(gt))
    assert report.fused == 0 and report.camera_only == 0 and len(report.tracks) == 1
