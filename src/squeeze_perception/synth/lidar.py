"""A Velodyne HDL-64E model: 64 beams at the sensor's elevation angles, one revolution per scan.

Each beam fires ``HDL64E_FIRINGS_PER_REV`` times per revolution from its own height on the
sensor (see ``kitti.hdl64e``). A return is kept when enough light comes back: the echo power
falls with range squared and grows with the surface's reflectivity and the cosine of the
incidence angle, so grazing asphalt far away and dark glass fade out as they do in KITTI.
Surfaces add their own dropout (glass, tyres, foliage), and the KITTI car's own body blocks the
lowest beams ahead of and behind the sensor (``ego_occluded``). Intensity is reflectivity times an incidence term
(sharper for glossy paint), with noise, quantised to KITTI's 0.01 steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kitti.hdl64e import (HDL64E_BEAM_HEIGHT_M, HDL64E_ELEVATION_DEG, HDL64E_FIRINGS_PER_REV,
                            HDL64E_MAX_RANGE_M, HDL64E_ROWS)
from .materials import DROPOUT, IS_PAINT, REFLECTIVITY, Material
from .raycast import RayScene, rotate, take_rows

# Echo power (reflectivity * cos(incidence) / range^2) at which half of the returns are lost,
# and the spread of that threshold in natural-log units.
DETECTION_POWER_HALF = 5.0e-6
DETECTION_LOG_SPREAD = 0.6
RANDOM_DROPOUT = 0.003
RANGE_NOISE_M = 0.015
INTENSITY_NOISE = 0.03


# The KITTI car's own body hides the lowest beams: ahead (the hood) and behind (the rear) within
# these half-angles of azimuth, growing with how steeply the beam points down. Read off the gaps
# that the real KITTI scans show in the same place every frame (elevation deg, front, rear deg).
EGO_OCCLUSION_DEG = np.array([[-21.5, 0.0, 0.0], [-21.9, 9.5, 25.0], [-23.3, 15.0, 27.0], [-25.0, 19.0, 32.0]])


def ego_occluded(elevation_deg: np.ndarray, azimuth_rad: np.ndarray) -> np.ndarray:
    """True for beams (elevation, azimuth in the Velodyne frame) that would hit the KITTI car itself."""
    el = -np.asarray(elevation_deg)
    front = np.interp(el, -EGO_OCCLUSION_DEG[:, 0], EGO_OCCLUSION_DEG[:, 1], left=0.0)
    rear = np.interp(el, -EGO_OCCLUSION_DEG[:, 0], EGO_OCCLUSION_DEG[:, 2], left=0.0)
    az = np.mod(np.degrees(np.asarray(azimuth_rad)) + 180.0, 360.0) - 180.0
    return (np.abs(az) < front) | (np.abs(az) > 180.0 - rear)


@dataclass
class LidarScan:
    points: np.ndarray  # (N, 4) float32 x, y, z, intensity in the Velodyne frame
    rows: np.ndarray  # (N,) int64 beam (0 = top)
    class_id: np.ndarray  # (N,) int32
    instance_id: np.ndarray  # (N,) int32, -1 for none
    material: np.ndarray  # (N,) uint8

    @staticmethod
    def empty() -> "LidarScan":
        return LidarScan(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int32),
                         np.zeros(0, np.int32), np.zeros(0, np.uint8))


class Hdl64e:
    def __init__(self, firings_per_rev: int = HDL64E_FIRINGS_PER_REV, max_range: float = HDL64E_MAX_RANGE_M,
                 nthreads: int = 0):
        self.firings = int(firings_per_rev)
        self.max_range = max_range
        self.nthreads = nthreads
        elev = np.radians(HDL64E_ELEVATION_DEG)
        self._cos_el, self._sin_el = np.cos(elev), np.sin(elev)

    def beam_rays(self, azimuth_offset: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(origins (R,3), unit directions (R,3), rows (R,)) in the Velodyne frame for one revolution,
        leaving out the beams that the KITTI car's body blocks."""
        step = 2 * np.pi / self.firings
        # The HDL-64E's lasers sit at slightly different azimuths on the head; a per-beam offset
        # plus the revolution's start angle keeps rows from lining up exactly.
        beam_offsets = (rng.random(HDL64E_ROWS) - 0.5) * step
        az = azimuth_offset + np.arange(self.firings)[None, :] * step + beam_offsets[:, None]
        cos_az, sin_az = np.cos(az), np.sin(az)
        dirs = np.stack([self._cos_el[:, None] * cos_az, self._cos_el[:, None] * sin_az,
                         np.broadcast_to(self._sin_el[:, None], az.shape)], axis=-1).reshape(-1, 3)
        origins = np.zeros_like(dirs)
        origins[:, 2] = np.repeat(HDL64E_BEAM_HEIGHT_M, self.firings)
        rows = np.repeat(np.arange(HDL64E_ROWS), self.firings)
        free = ~ego_occluded(np.repeat(HDL64E_ELEVATION_DEG, self.firings), az.reshape(-1))
        return origins[free], dirs[free], rows[free]

    def scan(self, scene: RayScene, rotation: np.ndarray, origin: np.ndarray, rng: np.random.Generator,
             lane_paint=None) -> LidarScan:
        """One revolution from the Velodyne at (rotation, origin) in the world.

        lane_paint: optional callable (x, y) -> bool marking road paint at world positions.
        """
        origins_s, dirs_s, rows = self.beam_rays(rng.uniform(0, 2 * np.pi), rng)
        origins_w = rotate(origins_s, rotation)
        origins_w += origin
        dirs_w = rotate(dirs_s, rotation)
        hits = scene.cast(origins_w, dirs_w)
        keep = hits.hit & (hits.t <= self.max_range)
        idx = np.flatnonzero(keep)
        t = hits.t[idx].astype(np.float64)
        tri = hits.triangle[idx]
        material = scene.material[tri].copy()
        d_w = take_rows(dirs_w, idx)
        p_w = origins_w[idx] + d_w * t[:, None]
        if lane_paint is not None:
            on_road = material == Material.ASPHALT
            painted = np.zeros(len(idx), bool)
            painted[on_road] = lane_paint(p_w[on_road, 0], p_w[on_road, 1])
            material[painted] = Material.LANE_PAINT
        cos_inc = np.abs(np.einsum("ij,ij->i", take_rows(hits.normal, idx).astype(np.float64), d_w))
        refl = REFLECTIVITY[material].astype(np.float64)
        paint = IS_PAINT[material]
        if paint.any():
            # Bright paint returns more than dark paint; glossy paint mostly mirrors the pulse away.
            brightness = scene.colour[tri[paint]].mean(axis=1) / 255.0
            refl[paint] = 0.05 + 0.55 * brightness ** 1.5
        refl *= np.exp(rng.normal(0, 0.15, len(idx)))  # surface-to-surface variation
        power = refl * np.maximum(cos_inc, 1e-3) / np.maximum(t, 0.5) ** 2
        p_detect = 1.0 / (1.0 + np.exp(-(np.log(power) - np.log(DETECTION_POWER_HALF)) / DETECTION_LOG_SPREAD))
        p_detect *= (1.0 - DROPOUT[material]) * (1.0 - RANDOM_DROPOUT)
        kept = rng.random(len(idx)) < p_detect
        idx, t, tri, material, refl, cos_inc = idx[kept], t[kept], tri[kept], material[kept], refl[kept], cos_inc[kept]
        t = t + rng.normal(0, RANGE_NOISE_M, len(t))
        xyz = take_rows(origins_s, idx) + take_rows(dirs_s, idx) * t[:, None]
        # Matte surfaces return nearly the same at any angle (KITTI's ground is as bright at 20 m as
        # at 5 m); glossy paint and glass only return near normal incidence, so most car points read ~0.
        glossy = IS_PAINT[material] | (material == Material.GLASS)
        incidence = np.where(glossy, cos_inc ** 3, 0.6 + 0.4 * cos_inc ** 0.7)
        intensity = refl * incidence + rng.normal(0, INTENSITY_NOISE, len(t))
        intensity = np.clip(np.round(intensity, 2), 0.0, 0.99)
        points = np.column_stack([xyz, intensity]).astype(np.float32)
        return LidarScan(points=points, rows=rows[idx], class_id=scene.class_id[tri], instance_id=scene.instance_id[tri],
                         material=material)
