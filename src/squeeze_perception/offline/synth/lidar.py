"""A Velodyne HDL-64E model: 64 beams at the sensor's elevation angles, one revolution per scan.

Each beam fires ``HDL64E_FIRINGS_PER_REV`` times per revolution from its own height on the
sensor (see ``kitti.hdl64e``). A return is kept when enough light comes back: the echo power
falls with range squared and grows with the surface's reflectivity and the cosine of the
incidence angle, so grazing asphalt far away and dark glass fade out as they do in KITTI.
Glass and tyres swallow the pulses of whole faces, foliage lets a share through to what is behind
it, every firing can be lost with the probability measured per ring and azimuth sector on real
KITTI scans (``kitti.hdl64e_dropout``), and the KITTI car's own body blocks the lowest beams ahead
of and behind the sensor (``ego_occluded``). Returns end at 80 m, as KITTI's scans do. Intensity is
reflectivity times an incidence term (sharper for glossy paint), with noise, quantised to KITTI's
0.01 steps, then reported as the real sensor reports it (``reported_intensity``): each laser's gain
and share of zero readings, and the fall of both with range, measured on real scans
(``kitti.hdl64e_intensity``). Clothing reflects anything from 0.1 to 0.7 of a 905 nm pulse, so each
person's clothes draw their own reflectivity.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...kitti.hdl64e import HDL64E_BEAM_HEIGHT_M, HDL64E_ELEVATION_DEG, HDL64E_FIRINGS_PER_REV, HDL64E_ROWS
from ...kitti.hdl64e_dropout import HDL64E_RING_DROPOUT, HDL64E_SECTOR_DROPOUT_FACTOR
from ...kitti.hdl64e_intensity import (HDL64E_RING_INTENSITY_GAIN, HDL64E_RING_ZERO_SHARE, INTENSITY_RANGE_EDGES_M,
                                       INTENSITY_RANGE_GAIN, INTENSITY_RANGE_ZERO_SHARE,
                                       INTENSITY_REFERENCE_ZERO_SHARE)
from ...kitti.noise_map import sector_of_azimuth
from .materials import COHERENT_DROPOUT, DROPOUT, IS_PAINT, PASSES_THROUGH, REFLECTIVITY, Material
from .raycast import RayScene, rotate, take_rows

# Echo power (reflectivity * cos(incidence) / range^2) at which half of the returns are lost,
# and the spread of that threshold in natural-log units.
DETECTION_POWER_HALF = 5.0e-6
DETECTION_LOG_SPREAD = 0.6
RANGE_NOISE_M = 0.015
# KITTI's scans hold no return beyond 80 m (the 7 real full scans in ../shared/data/kitti_real end at
# 78.5-80.0 m), although the HDL-64E is rated to 120 m.
KITTI_RECORDED_RANGE_M = 80.0
# Grass blades and leaves scatter the pulse over their depth: extra range spread on those surfaces.
SURFACE_RANGE_SPREAD_M = {Material.GRASS: 0.03, Material.FOLIAGE: 0.05}
INTENSITY_NOISE = 0.03
# Spread (natural-log units) of one person's clothing reflectivity around CLOTH's: dark to light
# fabrics return roughly 0.1-0.7 at 905 nm (many dyes are transparent in the near infrared, so
# the visible colour says little), which a per-point jitter of 0.15 alone never produced.
CLOTHING_LOG_SPREAD = 0.5


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


# Single lost firings that the physics above already produces in synthetic scans (far fading ground,
# dark faces), per block of rings, measured with the same estimator as the real rate:
# `squeeze-perception synth stats --generate 20 --seed 0 --no-ring-dropout` (docs/synthetic.md).
# The measured real loss is what remains to be added on top, so the total matches KITTI's.
PHYSICAL_RING_LOSS = {"upper": 0.0128, "lower": 0.0003}


def firing_dropout(rows: np.ndarray, azimuth_rad: np.ndarray) -> np.ndarray:
    """Probability that a firing of ring `rows` at sensor azimuth `azimuth_rad` is lost on any
    surface: the rate measured on real KITTI scans (ring rate x azimuth-sector factor) less what
    the scan's physics loses already."""
    rows = np.asarray(rows)
    sector = sector_of_azimuth(azimuth_rad, len(HDL64E_SECTOR_DROPOUT_FACTOR))
    physical = np.where(rows < HDL64E_ROWS // 2, PHYSICAL_RING_LOSS["upper"], PHYSICAL_RING_LOSS["lower"])
    extra = np.maximum(HDL64E_RING_DROPOUT[rows] - physical, 0.0)
    return extra * HDL64E_SECTOR_DROPOUT_FACTOR[sector]


def reported_intensity(intensity: np.ndarray, rows: np.ndarray, distance: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """The sensor's report of a return of `intensity` (surface physics only) on ring `rows` at
    `distance` m: scaled by the ring's gain and the range's, and 0 with the probability measured
    for that ring and range on real KITTI scans (``kitti.hdl64e_intensity``). The range's extra
    zeros are what its share has above the 5-30 m reference the ring table was measured in."""
    rows = np.asarray(rows)
    centres = (INTENSITY_RANGE_EDGES_M[:-1] + INTENSITY_RANGE_EDGES_M[1:]) / 2
    range_zero = np.interp(distance, centres, INTENSITY_RANGE_ZERO_SHARE)
    extra = np.clip(1.0 - (1.0 - range_zero) / (1.0 - INTENSITY_REFERENCE_ZERO_SHARE), 0.0, 1.0)
    p_zero = 1.0 - (1.0 - HDL64E_RING_ZERO_SHARE[rows]) * (1.0 - extra)
    out = intensity * HDL64E_RING_INTENSITY_GAIN[rows] * np.interp(distance, centres, INTENSITY_RANGE_GAIN)
    out = np.clip(np.round(out, 2), 0.0, 0.99)
    out[rng.random(len(out)) < p_zero] = 0.0
    return out


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
    def __init__(self, firings_per_rev: int = HDL64E_FIRINGS_PER_REV, max_range: float = KITTI_RECORDED_RANGE_M,
                 nthreads: int = 0, ring_dropout: bool = True, sensor_intensity: bool = True):
        """ring_dropout=False leaves out the measured per-ring loss (only physics and surfaces drop returns);
        sensor_intensity=False reports the surface physics' intensity as it is (no ring gains or zero
        readings; the generator before 2026-12-05 did so)."""
        self.firings = int(firings_per_rev)
        self.ring_dropout = ring_dropout
        self.sensor_intensity = sensor_intensity
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

    @staticmethod
    def _pass_through(scene: RayScene, hits, origins_w: np.ndarray, dirs_w: np.ndarray,
                      rng: np.random.Generator) -> None:
        """Send the share of rays that slip through foliage on to the next surface (in place)."""
        hit_idx = np.flatnonzero(hits.hit)
        porous = hit_idx[PASSES_THROUGH[scene.material[hits.triangle[hit_idx]]]]
        if not len(porous):
            return
        through = porous[rng.random(len(porous)) < DROPOUT[scene.material[hits.triangle[porous]]]]
        if not len(through):
            return
        step = hits.t[through].astype(np.float64) + 0.05  # just past the leaf it slipped by
        behind = scene.cast(origins_w[through] + dirs_w[through] * step[:, None], dirs_w[through])
        hits.t[through] = np.where(behind.hit, step + behind.t, np.inf)
        hits.hit[through] = behind.hit
        hits.triangle[through] = behind.triangle
        hits.normal[through] = behind.normal

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
        self._pass_through(scene, hits, origins_w, dirs_w, rng)
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
        cloth = material == Material.CLOTH
        if self.sensor_intensity and cloth.any():
            # One draw per person (instance; -1, background cloth, shares one): their clothes' reflectivity.
            instance = scene.instance_id[tri[cloth]]
            garment = np.exp(rng.normal(0, CLOTHING_LOG_SPREAD, int(instance.max()) + 2))
            refl[cloth] = np.minimum(refl[cloth] * garment[instance + 1], 0.9)
        power = refl * np.maximum(cos_inc, 1e-3) / np.maximum(t, 0.5) ** 2
        p_detect = 1.0 / (1.0 + np.exp(-(np.log(power) - np.log(DETECTION_POWER_HALF)) / DETECTION_LOG_SPREAD))
        coherent = COHERENT_DROPOUT[material]
        p_detect *= 1.0 - np.where(coherent | PASSES_THROUGH[material], 0.0, DROPOUT[material])
        if coherent.any():
            dark_faces = rng.random(len(scene.material)) < DROPOUT[scene.material]
            p_detect[coherent & dark_faces[tri]] = 0.0
        if self.ring_dropout:
            p_detect *= 1.0 - firing_dropout(rows[idx], np.arctan2(dirs_s[idx, 1], dirs_s[idx, 0]))
        kept = rng.random(len(idx)) < p_detect
        idx, t, tri, material, refl, cos_inc = idx[kept], t[kept], tri[kept], material[kept], refl[kept], cos_inc[kept]
        noise = rng.normal(0, 1.0, len(t))
        spread = np.full(len(t), RANGE_NOISE_M)
        for surface, extra in SURFACE_RANGE_SPREAD_M.items():
            spread[material == surface] = np.hypot(RANGE_NOISE_M, extra)
        t = t + noise * spread
        xyz = take_rows(origins_s, idx) + take_rows(dirs_s, idx) * t[:, None]
        # Matte surfaces return nearly the same at any angle (KITTI's ground is as bright at 20 m as
        # at 5 m); glossy paint and glass only return near normal incidence, so most car points read ~0.
        glossy = IS_PAINT[material] | (material == Material.GLASS)
        incidence = np.where(glossy, cos_inc ** 3, 0.6 + 0.4 * cos_inc ** 0.7)
        intensity = refl * incidence + rng.normal(0, INTENSITY_NOISE, len(t))
        if self.sensor_intensity:
            intensity = reported_intensity(intensity, rows[idx], t, rng)
        else:
            intensity = np.clip(np.round(intensity, 2), 0.0, 0.99)
        points = np.column_stack([xyz, intensity]).astype(np.float32)
        return LidarScan(points=points, rows=rows[idx], class_id=scene.class_id[tri], instance_id=scene.instance_id[tri],
                         material=material)
