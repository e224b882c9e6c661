"""KITTI calibration files (object benchmark and raw drives) as numpy matrices."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class CalibrationError(ValueError):
    pass


def _read_key_values(path: Path) -> dict[str, np.ndarray]:
    if not Path(path).exists():
        raise CalibrationError(f"calibration file '{path}' not found")
    out: dict[str, np.ndarray] = {}
    for line in Path(path).read_text().splitlines():
        if ":" not in line:
            continue
        key, _, rest = line.partition(":")
        try:
            out[key.strip()] = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            continue  # e.g. calib_time: 09-Jan-2012 13:57:47
    return out


def _homogeneous(rt_3x4: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :4] = rt_3x4.reshape(3, 4)
    return m


@dataclass(frozen=True)
class KittiCalibration:
    """P2 (3x4, rectified cam 2), R0_rect (4x4) and Tr_velo_to_cam (4x4)."""

    P2: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    P3: np.ndarray | None = None
    Tr_imu_to_velo: np.ndarray | None = None

    @property
    def velo_to_rect(self) -> np.ndarray:
        """4x4: Velodyne -> rectified camera-0 coordinates (where KITTI labels live)."""
        return self.R0_rect @ self.Tr_velo_to_cam

    @property
    def velo_to_image(self) -> np.ndarray:
        """3x4: Velodyne -> image-2 pixel (homogeneous)."""
        return self.P2 @ self.velo_to_rect

    @property
    def cam2_to_velo(self) -> np.ndarray:
        """4x4 pose of rectified camera 2's optical frame in the Velodyne frame (for TF)."""
        shift = np.eye(4)
        shift[0, 3] = self.P2[0, 3] / self.P2[0, 0]  # P2 = K [I | t]: baseline of cam 2
        return np.linalg.inv(shift @ self.velo_to_rect)

    @property
    def intrinsics(self) -> np.ndarray:
        return self.P2[:3, :3]

    def project_velo(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,3) Velodyne points -> ((N,2) pixels, (N,) depth in camera)."""
        hom = np.hstack([pts[:, :3], np.ones((len(pts), 1))])
        uvw = hom @ self.velo_to_image.T
        depth = uvw[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = uvw[:, :2] / depth[:, None]
        return uv, depth

    def rect_to_velo(self, pts_rect: np.ndarray) -> np.ndarray:
        hom = np.hstack([pts_rect[:, :3], np.ones((len(pts_rect), 1))])
        return (hom @ np.linalg.inv(self.velo_to_rect).T)[:, :3]

    def velo_to_rect_points(self, pts: np.ndarray) -> np.ndarray:
        hom = np.hstack([pts[:, :3], np.ones((len(pts), 1))])
        return (hom @ self.velo_to_rect.T)[:, :3]


def load_object_calib(path: str | Path) -> KittiCalibration:
    """Object-benchmark calib/NNNNNN.txt."""
    kv = _read_key_values(Path(path))
    try:
        r0 = np.eye(4)
        r0[:3, :3] = kv["R0_rect"].reshape(3, 3)
        return KittiCalibration(
            P2=kv["P2"].reshape(3, 4), R0_rect=r0, Tr_velo_to_cam=_homogeneous(kv["Tr_velo_to_cam"]),
            P3=kv["P3"].reshape(3, 4) if "P3" in kv else None,
            Tr_imu_to_velo=_homogeneous(kv["Tr_imu_to_velo"]) if "Tr_imu_to_velo" in kv else None)
    except (KeyError, ValueError) as exc:
        raise CalibrationError(f"calibration file '{path}' is missing or has a malformed entry: {exc}") from exc


def load_raw_calib(calib_dir: str | Path, camera: int = 2) -> KittiCalibration:
    """Raw-drive calib_cam_to_cam.txt + calib_velo_to_cam.txt (+ calib_imu_to_velo.txt)."""
    d = Path(calib_dir)
    cam = _read_key_values(d / "calib_cam_to_cam.txt")
    velo = _read_key_values(d / "calib_velo_to_cam.txt")
    try:
        r0 = np.eye(4)
        r0[:3, :3] = cam["R_rect_00"].reshape(3, 3)
        tr = np.eye(4)
        tr[:3, :3] = velo["R"].reshape(3, 3)
        tr[:3, 3] = velo["T"]
        imu = None
        if (d / "calib_imu_to_velo.txt").exists():
            kv = _read_key_values(d / "calib_imu_to_velo.txt")
            imu = np.eye(4)
            imu[:3, :3] = kv["R"].reshape(3, 3)
            imu[:3, 3] = kv["T"]
        return KittiCalibration(P2=cam[f"P_rect_0{camera}"].reshape(3, 4), R0_rect=r0, Tr_velo_to_cam=tr,
                                P3=cam["P_rect_03"].reshape(3, 4) if "P_rect_03" in cam else None,
                                Tr_imu_to_velo=imu)
    except (KeyError, ValueError) as exc:
        raise CalibrationError(f"raw calibration in '{d}' is missing or has a malformed entry: {exc}") from exc


def image_size_from_raw_calib(calib_dir: str | Path, camera: int = 2) -> tuple[int, int]:
    """(width, height) of the rectified image from S_rect_0X."""
    cam = _read_key_values(Path(calib_dir) / "calib_cam_to_cam.txt")
    w, h = cam[f"S_rect_0{camera}"]
    return int(w), int(h)


def write_object_calib(path: str | Path, calib: KittiCalibration) -> None:
    p3 = calib.P3 if calib.P3 is not None else calib.P2
    imu = calib.Tr_imu_to_velo if calib.Tr_imu_to_velo is not None else np.eye(4)
    rows = {
        "P0": calib.P2.copy(), "P1": calib.P2.copy(), "P2": calib.P2, "P3": p3,
        "R0_rect": calib.R0_rect[:3, :3], "Tr_velo_to_cam": calib.Tr_velo_to_cam[:3, :4],
        "Tr_imu_to_velo": imu[:3, :4],
    }
    rows["P0"][:, 3] = 0.0
    rows["P1"][:, 3] = 0.0
    Path(path).write_text("".join(f"{k}: {' '.join(f'{v:.12e}' for v in m.reshape(-1))}\n" for k, m in rows.items()))
