"""The KITTI 2011_09_26 raw-drive calibration as package data.

Copied (values only) from the official calib_cam_to_cam.txt / calib_velo_to_cam.txt /
calib_imu_to_velo.txt of that date, so the synthetic world uses the real camera 2 intrinsics
and Velodyne->camera extrinsics even where ../shared/data/kitti_real is absent.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .calib import KittiCalibration

IMAGE_WIDTH = 1242
IMAGE_HEIGHT = 375

R_RECT_00 = np.array([9.999239e-01, 9.837760e-03, -7.445048e-03, -9.869795e-03, 9.999421e-01, -4.278459e-03,
                      7.402527e-03, 4.351614e-03, 9.999631e-01]).reshape(3, 3)
P_RECT = {
    0: np.array([7.215377e+02, 0.0, 6.095593e+02, 0.0, 0.0, 7.215377e+02, 1.728540e+02, 0.0, 0.0, 0.0, 1.0, 0.0]),
    1: np.array([7.215377e+02, 0.0, 6.095593e+02, -3.875744e+02, 0.0, 7.215377e+02, 1.728540e+02, 0.0,
                 0.0, 0.0, 1.0, 0.0]),
    2: np.array([7.215377e+02, 0.0, 6.095593e+02, 4.485728e+01, 0.0, 7.215377e+02, 1.728540e+02, 2.163791e-01,
                 0.0, 0.0, 1.0, 2.745884e-03]),
    3: np.array([7.215377e+02, 0.0, 6.095593e+02, -3.395242e+02, 0.0, 7.215377e+02, 1.728540e+02, 2.199936e+00,
                 0.0, 0.0, 1.0, 2.729905e-03]),
}
VELO_TO_CAM_R = np.array([7.533745e-03, -9.999714e-01, -6.166020e-04, 1.480249e-02, 7.280733e-04, -9.998902e-01,
                          9.998621e-01, 7.523790e-03, 1.480755e-02]).reshape(3, 3)
VELO_TO_CAM_T = np.array([-4.069766e-03, -7.631618e-02, -2.717806e-01])
IMU_TO_VELO_R = np.array([9.999976e-01, 7.553071e-04, -2.035826e-03, -7.854027e-04, 9.998898e-01, -1.482298e-02,
                          2.024406e-03, 1.482454e-02, 9.998881e-01]).reshape(3, 3)
IMU_TO_VELO_T = np.array([-8.086759e-01, 3.195559e-01, -7.997231e-01])


def _rt(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = trans
    return m


def kitti_calibration() -> KittiCalibration:
    """Camera 2 calibration of the KITTI 2011_09_26 drives."""
    r0 = np.eye(4)
    r0[:3, :3] = R_RECT_00
    return KittiCalibration(P2=P_RECT[2].reshape(3, 4).copy(), R0_rect=r0,
                            Tr_velo_to_cam=_rt(VELO_TO_CAM_R, VELO_TO_CAM_T),
                            P3=P_RECT[3].reshape(3, 4).copy(), Tr_imu_to_velo=_rt(IMU_TO_VELO_R, IMU_TO_VELO_T))


def _fmt(values: np.ndarray) -> str:
    return " ".join(f"{v:.6e}" for v in np.asarray(values, dtype=np.float64).reshape(-1))


def write_raw_calib(calib_dir: str | Path, calib: KittiCalibration | None = None,
                    image_size: tuple[int, int] = (IMAGE_WIDTH, IMAGE_HEIGHT)) -> None:
    """Write calib_cam_to_cam.txt, calib_velo_to_cam.txt and calib_imu_to_velo.txt (KITTI raw layout).

    Only the rectified entries are meaningful (the images are already rectified); the unrectified
    K/D/R/T entries are written as the rectified camera so readers that expect them find them.
    """
    calib = calib or kitti_calibration()
    d = Path(calib_dir)
    d.mkdir(parents=True, exist_ok=True)
    width, height = image_size
    p_rect = {0: P_RECT[0].reshape(3, 4), 1: P_RECT[1].reshape(3, 4), 2: calib.P2,
              3: calib.P3 if calib.P3 is not None else P_RECT[3].reshape(3, 4)}
    lines = ["calib_time: synthetic", "corner_dist: 9.950000e-02"]
    for cam in range(4):
        p = p_rect[cam]
        lines += [f"S_{cam:02d}: {_fmt([width, height])}", f"K_{cam:02d}: {_fmt(p[:3, :3])}",
                  f"D_{cam:02d}: {_fmt(np.zeros(5))}", f"R_{cam:02d}: {_fmt(np.eye(3))}",
                  f"T_{cam:02d}: {_fmt(np.zeros(3))}", f"S_rect_{cam:02d}: {_fmt([width, height])}",
                  f"R_rect_{cam:02d}: {_fmt(calib.R0_rect[:3, :3] if cam == 0 else np.eye(3))}",
                  f"P_rect_{cam:02d}: {_fmt(p)}"]
    (d / "calib_cam_to_cam.txt").write_text("\n".join(lines) + "\n")
    tr = calib.Tr_velo_to_cam
    (d / "calib_velo_to_cam.txt").write_text(
        f"calib_time: synthetic\nR: {_fmt(tr[:3, :3])}\nT: {_fmt(tr[:3, 3])}\n"
        f"delta_f: 0.000000e+00 0.000000e+00\ndelta_c: 0.000000e+00 0.000000e+00\n")
    imu = calib.Tr_imu_to_velo if calib.Tr_imu_to_velo is not None else _rt(IMU_TO_VELO_R, IMU_TO_VELO_T)
    (d / "calib_imu_to_velo.txt").write_text(f"calib_time: synthetic\nR: {_fmt(imu[:3, :3])}\nT: {_fmt(imu[:3, 3])}\n")
