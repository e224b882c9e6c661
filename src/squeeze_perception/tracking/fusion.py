"""Camera-LiDAR fusion for the tracker (after LATTE's sensor fusion, thesis section 5.3).

LATTE projects LiDAR points into the image with the calibration (q = P p + t) and lets the
camera, whose detectors are more mature, tell which points belong to which object. Here
the same idea works on boxes: every LiDAR instance box is projected into the image, its 2D
hull is matched to the SqueezeDet boxes by IoU (Hungarian), and the match

* confirms the instance: class agrees -> score = 1 - (1 - s_lidar)(1 - s_camera);
* corrects it: class disagrees (or LiDAR said unknown) and the camera is more confident ->
  the camera's class and score are taken;
* an instance that projects well inside the image but has no camera box at all is damped
  (score x `unconfirmed_factor`): LiDAR blobs the camera cannot see are often clutter.

Instances outside the camera's view keep their LiDAR class and score, so the tracker runs
LiDAR-only there, and LiDAR-only entirely when no camera data comes in.

`ground_measurements` goes the other way for camera boxes no instance explains: the ray
through the box's bottom centre meets the ground plane, giving a position (with a
range-dependent uncertainty) so a LiDAR dropout does not blind the tracker.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from .. import interfaces as itf

# KITTI raw 2011_09_26 calibration (calib_cam_to_cam.txt / calib_velo_to_cam.txt): the
# defaults when no calibration is given. VELO_TO_RECT = R_rect_00 (4x4) @ [R|T]_velo_to_cam.
KITTI_P_RECT_02 = np.array([721.5377, 0.0, 609.5593, 44.85728, 0.0, 721.5377, 172.854, 0.2163791,
                            0.0, 0.0, 1.0, 0.002745884]).reshape(3, 4)
KITTI_VELO_TO_RECT = np.array([
    0.00023477369814709992, -0.9999441545437641, -0.0105634778110522, -0.0027968169412954,
    0.010449407416592825, 0.010565353641379319, -0.9998895741176487, -0.07510879138296463,
    0.9999453885620024, 0.00012436537838650679, 0.010451302995668946, -0.2721327964058732,
    0.0, 0.0, 0.0, 1.0]).reshape(4, 4)
KITTI_IMAGE_SIZE = (1242, 375)

# Typical (length, width, height) per class for camera-only estimates (KITTI means).
CLASS_SIZE_PRIOR = {0: (1.0, 1.0, 1.5), 1: (3.9, 1.6, 1.5), 2: (0.8, 0.6, 1.75), 3: (1.8, 0.6, 1.7)}


@dataclass(frozen=True)
class FusionParams:
    iou_threshold: float = 0.3
    unconfirmed_factor: float = 0.5
    min_depth_m: float = 1.0  # boxes with a corner closer than this to the camera are not projected
    min_visible_fraction: float = 0.5  # "inside the image" means this much of the hull is in view
    ground_z_m: float = -1.73  # ground plane height in velo_link (KITTI's Velodyne mount height)


@dataclass
class FusionResult:
    instances: np.ndarray  # INSTANCE_DTYPE, class/score after fusion
    matched_detection: np.ndarray  # (N,) index into detections, -1 when unmatched
    in_image: np.ndarray  # (N,) bool: projects (mostly) inside the image
    unexplained_detections: np.ndarray  # indices of detections no instance matched


def velo_to_image_matrix(camera_p: np.ndarray, velo_to_cam: np.ndarray) -> np.ndarray:
    """3x4 P (rectified camera) times 4x4 Velodyne->rectified-camera transform."""
    p = np.asarray(camera_p, dtype=float).reshape(3, 4)
    t = np.asarray(velo_to_cam, dtype=float).reshape(4, 4)
    return p @ t


def box_corners(instances: np.ndarray) -> np.ndarray:
    """(N, 8, 3) corners of yawed boxes centred at (x, y, z) in the instances' frame."""
    n = len(instances)
    half_l = instances["length"].astype(float) / 2
    half_w = instances["width"].astype(float) / 2
    half_h = instances["height"].astype(float) / 2
    sx = np.array([1, 1, -1, -1, 1, 1, -1, -1], float)
    sy = np.array([1, -1, -1, 1, 1, -1, -1, 1], float)
    sz = np.array([1, 1, 1, 1, -1, -1, -1, -1], float)
    lx, ly, lz = sx[None] * half_l[:, None], sy[None] * half_w[:, None], sz[None] * half_h[:, None]
    c, s = np.cos(instances["yaw"].astype(float))[:, None], np.sin(instances["yaw"].astype(float))[:, None]
    out = np.empty((n, 8, 3))
    out[..., 0] = instances["x"][:, None] + c * lx - s * ly
    out[..., 1] = instances["y"][:, None] + s * lx + c * ly
    out[..., 2] = instances["z"][:, None] + lz
    return out


def project_boxes(instances: np.ndarray, velo_to_image: np.ndarray, image_size: tuple[int, int],
                  min_depth_m: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2D hulls of projected 3D boxes.

    Returns (boxes (N,4) [u_min, v_min, u_max, v_max] clipped to the image, valid (N,) all
    corners in front of the camera and the hull overlapping the image, visible_fraction (N,)).
    """
    n = len(instances)
    if n == 0:
        return np.zeros((0, 4)), np.zeros(0, bool), np.zeros(0)
    corners = box_corners(instances).reshape(-1, 3)
    uvw = np.hstack([corners, np.ones((len(corners), 1))]) @ np.asarray(velo_to_image, float).T
    depth = uvw[:, 2].reshape(n, 8)
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (uvw[:, :2] / uvw[:, 2:3]).reshape(n, 8, 2)
    raw = np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)
    width, height = image_size
    clipped = raw.copy()
    clipped[:, [0, 2]] = np.clip(raw[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(raw[:, [1, 3]], 0, height)
    in_front = np.all(depth >= min_depth_m, axis=1)  # "closer than" min_depth_m is excluded
    area_raw = (raw[:, 2] - raw[:, 0]) * (raw[:, 3] - raw[:, 1])
    area_clip = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        visible = np.where(in_front & (area_raw > 0), area_clip / area_raw, 0.0)
    valid = in_front & (area_clip > 0)
    return clipped, valid, np.nan_to_num(visible)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of axis-aligned [u_min, v_min, u_max, v_max] boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def detection_boxes(detections: np.ndarray) -> np.ndarray:
    return np.stack([detections["u_min"], detections["v_min"], detections["u_max"], detections["v_max"]],
                    axis=1).astype(float) if len(detections) else np.zeros((0, 4))


def fuse(instances: np.ndarray, detections: np.ndarray | None, velo_to_image: np.ndarray | None,
         image_size: tuple[int, int] | None, params: FusionParams = FusionParams()) -> FusionResult:
    """Confirm or correct instance classes/scores with camera detections (see module doc)."""
    out = instances.copy()
    n = len(instances)
    matched = np.full(n, -1, int)
    in_image = np.zeros(n, bool)
    if detections is None or velo_to_image is None or image_size is None:
        return FusionResult(out, matched, in_image, np.zeros(0, int))
    boxes, valid, visible = project_boxes(instances, velo_to_image, image_size, params.min_depth_m)
    in_image = valid & (visible >= params.min_visible_fraction)
    det_boxes = detection_boxes(detections)
    iou = iou_matrix(boxes, det_boxes)
    iou[~valid] = 0.0
    if n and len(detections):
        rows, cols = linear_sum_assignment(-iou)
        good = iou[rows, cols] >= params.iou_threshold
        matched[rows[good]] = cols[good]
    for i in range(n):
        j = matched[i]
        s_lidar = float(out["score"][i])
        if j >= 0:
            s_cam = float(detections["score"][j])
            c_cam = int(detections["class_id"][j])
            if c_cam == int(out["class_id"][i]):
                out["score"][i] = 1.0 - (1.0 - s_lidar) * (1.0 - s_cam)
            elif int(out["class_id"][i]) == 0 or s_cam > s_lidar:
                out["class_id"][i] = c_cam
                out["score"][i] = s_cam
        elif in_image[i]:
            out["score"][i] = s_lidar * params.unconfirmed_factor
    unexplained = np.setdiff1d(np.arange(len(detections)), matched[matched >= 0])
    return FusionResult(out, matched, in_image, unexplained)


def ground_measurements(detections: np.ndarray, velo_to_image: np.ndarray,
                        ground_z_m: float = -1.73, pixel_std: float = 2.0,
                        max_range_m: float = 60.0) -> tuple[np.ndarray, np.ndarray]:
    """Camera-only positions: bottom-centre ray of each box meets the plane z = ground_z_m.

    Solves M [x, y, ground_z, 1]^T = w [u, v, 1]^T for (x, y, w) with M the 3x4
    velo->image matrix. The returned position is the box's near face, so half a class-prior
    length is added along the ray. Position noise grows with range squared (a pixel of
    error in v moves the ground point by about range^2 / (f * camera height)).
    Returns (INSTANCE_DTYPE rows, (N, 2) position std in metres); rows whose ray misses the
    ground ahead of the camera, or lands beyond max_range_m, are dropped.
    """
    m = np.asarray(velo_to_image, float).reshape(3, 4)
    rows, stds = [], []
    # Row 0 of M[:, :3] is fx * r0 + cx * r2 with r2 the optical axis (row 2): remove r2 to get fx.
    axis = m[2, :3] / max(np.linalg.norm(m[2, :3]), 1e-12)
    focal = float(np.linalg.norm(m[0, :3] - (m[0, :3] @ axis) * axis))
    for d in detections:
        u = 0.5 * (float(d["u_min"]) + float(d["u_max"]))
        v = float(d["v_max"])
        a = np.column_stack([m[:, 0], m[:, 1], -np.array([u, v, 1.0])])
        b = -(m[:, 2] * ground_z_m + m[:, 3])
        try:
            x, y, w = np.linalg.solve(a, b)
        except np.linalg.LinAlgError:
            continue
        rng = float(np.hypot(x, y))
        if w <= 0 or not np.isfinite(rng) or rng > max_range_m:
            continue
        cls = int(d["class_id"]) if 0 <= int(d["class_id"]) < len(itf.CLASS_NAMES) else 0
        length, width, height = CLASS_SIZE_PRIOR[cls]
        direction = np.array([x, y]) / max(rng, 1e-6)
        cx, cy = np.array([x, y]) + direction * length / 2
        row = np.zeros(1, itf.INSTANCE_DTYPE)[0]
        row["instance_id"], row["class_id"] = -1, cls
        row["x"], row["y"], row["z"] = cx, cy, ground_z_m + height / 2
        row["length"], row["width"], row["height"] = length, width, height
        row["yaw"] = float(np.arctan2(direction[1], direction[0]))
        row["num_points"], row["score"] = 0, float(d["score"])
        rows.append(row)
        camera_height = max(abs(ground_z_m), 0.5)
        along = pixel_std * rng * rng / (focal * camera_height) + 0.1 * length
        stds.append((max(along, 0.3), max(0.05 * rng, 0.3)))
    if not rows:
        return np.zeros(0, itf.INSTANCE_DTYPE), np.zeros((0, 2))
    # Noise is along/across the ray; the tracker takes an axis-aligned std, so use the larger.
    std = np.array(stds)
    iso = np.max(std, axis=1)
    return np.array(rows, dtype=itf.INSTANCE_DTYPE), np.stack([iso, iso], axis=1)
