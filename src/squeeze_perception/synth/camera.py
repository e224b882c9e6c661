"""KITTI camera 2 rendered by ray casting: one ray per pixel, procedural textures, sun and sky light.

Shading = base colour x texture x (ambient sky light + sun diffuse x shadow) + a sky reflection on
glossy surfaces, then distance haze, exposure, vignetting, sensor noise and 8-bit quantisation.
Textures come from world coordinates (value noise, lane paint, facade windows, paving), so the
same surface looks the same from frame to frame while the car drives past.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kitti.calib import KittiCalibration
from ..kitti.default_calib import IMAGE_HEIGHT, IMAGE_WIDTH
from .materials import SPECULAR, TEXTURE, TEXTURE_KINDS, Material
from .raycast import RayScene

_TEX = {name: i for i, name in enumerate(TEXTURE_KINDS)}


def _hash(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point (integer hash, vectorised)."""
    h = (ix.astype(np.int64) * 374761393 + iy.astype(np.int64) * 668265263 + seed * 982451653) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * 1274126177) & 0xFFFFFFFF
    return ((h ^ (h >> 16)) & 0xFFFF) / 65536.0


def value_noise(u: np.ndarray, v: np.ndarray, seed: int = 0) -> np.ndarray:
    """Smooth 2D value noise in [0, 1) with unit feature size (hand-written: no noise library here)."""
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    a, b = _hash(iu, iv, seed), _hash(iu + 1, iv, seed)
    c, d = _hash(iu, iv + 1, seed), _hash(iu + 1, iv + 1, seed)
    return (a * (1 - fu) + b * fu) * (1 - fv) + (c * (1 - fu) + d * fu) * fv


def fractal_noise(u: np.ndarray, v: np.ndarray, octaves: int = 3, seed: int = 0) -> np.ndarray:
    total, amp, norm = 0.0, 1.0, 0.0
    for o in range(octaves):
        total = total + amp * value_noise(u * 2 ** o, v * 2 ** o, seed + o)
        norm += amp
        amp *= 0.5
    return total / norm


@dataclass
class Lighting:
    sun_dir: np.ndarray  # unit vector towards the sun, world frame
    sun_colour: np.ndarray
    sky_colour: np.ndarray
    horizon_colour: np.ndarray
    ambient: float
    exposure: float
    haze_distance: float

    @staticmethod
    def random(rng: np.random.Generator) -> "Lighting":
        elevation = np.radians(rng.uniform(15, 65))
        azimuth = rng.uniform(-np.pi, np.pi)
        sun = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
        overcast = rng.random() < 0.3
        return Lighting(
            sun_dir=sun, sun_colour=np.array([1.0, 0.96, 0.88]) * (0.45 if overcast else rng.uniform(0.8, 1.0)),
            sky_colour=np.array([0.55, 0.68, 0.9]) if not overcast else np.array([0.78, 0.8, 0.82]),
            horizon_colour=np.array([0.85, 0.88, 0.92]), ambient=rng.uniform(0.45, 0.6) if overcast else
            rng.uniform(0.3, 0.42), exposure=rng.uniform(0.85, 1.2), haze_distance=rng.uniform(250, 600))


class Camera:
    """Pinhole camera 2 of a KITTI calibration, rigidly attached to the Velodyne."""

    def __init__(self, calib: KittiCalibration, width: int = IMAGE_WIDTH, height: int = IMAGE_HEIGHT):
        self.calib = calib
        self.width, self.height = width, height
        k = calib.P2[:, :3]
        offset = np.linalg.solve(k, calib.P2[:, 3])  # P2 = K [I | t]: camera 2 sits at -t in rectified coords
        rect_to_velo = np.linalg.inv(calib.velo_to_rect)
        self.origin_velo = (rect_to_velo @ np.append(-offset, 1.0))[:3]
        u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
        dirs_rect = np.linalg.solve(k, pix).T
        dirs_velo = dirs_rect @ rect_to_velo[:3, :3].T
        self.dirs_velo = (dirs_velo / np.linalg.norm(dirs_velo, axis=1, keepdims=True)).astype(np.float32)
        yy, xx = np.mgrid[0:height, 0:width]
        r2 = ((xx - width / 2) / width) ** 2 + ((yy - height / 2) / width) ** 2
        self.vignetting = (1 - 0.5 * r2).astype(np.float32)[..., None]
        # Shadow rays are cast for one pixel in each 2x2 block and shared by the block.
        self.shadow_pixels = ((yy % 2 == 0) & (xx % 2 == 0)).ravel()

    def render(self, scene: RayScene, rotation: np.ndarray, origin: np.ndarray, lighting: Lighting,
               rng: np.random.Generator, lane_paint=None, shadows: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) uint8, instance id per pixel (H, W) int32, -1 for none) from the Velodyne pose."""
        dirs = self.dirs_velo @ rotation.T.astype(np.float32)
        cam_origin = rotation @ self.origin_velo + origin
        hits = scene.cast(cam_origin, dirs)
        n_pix = len(dirs)
        colour = np.zeros((n_pix, 3), np.float32)
        instance = np.full(n_pix, -1, np.int32)

        # Sky: a vertical gradient from the horizon haze up to the sky colour, with soft clouds.
        sky = ~hits.hit
        up = np.clip(dirs[sky, 2], 0, 1)[:, None]
        blend = np.clip(up * 4, 0, 1)
        colour[sky] = lighting.horizon_colour * (1 - blend) + lighting.sky_colour * blend
        clouds = fractal_noise(dirs[sky, 0] / (up[:, 0] + 0.05) * 1.5, dirs[sky, 1] / (up[:, 0] + 0.05) * 1.5, 3, 7)
        colour[sky] += (np.clip(clouds - 0.5, 0, 1) * 0.6)[:, None]

        idx = np.flatnonzero(hits.hit)
        t = hits.t[idx]
        tri = hits.triangle[idx]
        d = dirs[idx]
        p = (cam_origin + d * t[:, None]).astype(np.float32)
        normal = hits.normal[idx]
        normal *= -np.sign(np.einsum("ij,ij->i", normal, d))[:, None]  # face the camera
        material = scene.material[tri].copy()
        if lane_paint is not None:
            road = material == Material.ASPHALT
            paint = np.zeros(len(idx), bool)
            paint[road] = lane_paint(p[road, 0], p[road, 1])
            material[paint] = Material.LANE_PAINT
        base = scene.colour[tri].astype(np.float32) / 255.0
        base[material == Material.LANE_PAINT] = (0.92, 0.92, 0.9)
        base = self._apply_textures(base, material, p, normal)
        instance[idx] = scene.instance_id[tri]

        sun = lighting.sun_dir.astype(np.float32)
        lambert = np.clip(normal @ sun, 0, 1)
        if shadows:
            # Shadow rays towards the sun for one pixel per 2x2 block; the block shares the answer.
            shadow_img = np.zeros(n_pix, bool)
            sample = np.flatnonzero(hits.hit & self.shadow_pixels)
            pos = np.searchsorted(idx, sample)
            origin_s = p[pos] + normal[pos] * 0.03
            shadow_img[sample] = scene.cast(origin_s, np.broadcast_to(sun, (len(sample), 3))).hit
            block = shadow_img.reshape(self.height, self.width)[::2, ::2]
            full = np.repeat(np.repeat(block, 2, axis=0), 2, axis=1)[:self.height, :self.width].ravel()
            lambert[full[idx]] = 0.0
        sky_light = lighting.ambient * (0.75 + 0.25 * np.clip(normal[:, 2], 0, 1))
        sky_tint = (lighting.sky_colour / lighting.sky_colour.max()).astype(np.float32)
        shade = sky_light[:, None] * sky_tint + lambert[:, None] * lighting.sun_colour.astype(np.float32)
        lit_colour = base * shade
        spec = SPECULAR[material]
        glossy = spec > 0.1
        if glossy.any():
            # Mirror the view ray: glossy surfaces show the sky above and the dark ground below.
            refl = d[glossy] - 2 * np.einsum("ij,ij->i", d[glossy], normal[glossy])[:, None] * normal[glossy]
            env = np.where(refl[:, 2:3] > 0, lighting.sky_colour * 0.9 + 0.1, np.array([0.25, 0.25, 0.25]))
            cos_v = np.abs(np.einsum("ij,ij->i", d[glossy], normal[glossy]))
            fresnel = spec[glossy] * (0.25 + 0.75 * (1 - cos_v) ** 3)
            highlight = np.clip(refl @ lighting.sun_dir, 0, 1) ** 40 * lighting.sun_colour.max() * spec[glossy]
            lit_colour[glossy] = lit_colour[glossy] * (1 - fresnel[:, None]) + env * fresnel[:, None] + highlight[:, None]
        haze = 1 - np.exp(-t / lighting.haze_distance)
        colour[idx] = lit_colour * (1 - haze[:, None]) + lighting.horizon_colour * haze[:, None]

        img = colour.reshape(self.height, self.width, 3) * (self.vignetting * np.float32(lighting.exposure))
        img = np.clip(img, 0, 1) ** np.float32(1 / 1.15)
        img = img * 255 + rng.standard_normal(img.shape, dtype=np.float32) * 3.0
        return np.clip(img, 0, 255).astype(np.uint8), instance.reshape(self.height, self.width)

    @staticmethod
    def _apply_textures(base: np.ndarray, material: np.ndarray, p: np.ndarray, normal: np.ndarray) -> np.ndarray:
        tex = TEXTURE[material]
        out = base.copy()
        x, y, z = p[:, 0], p[:, 1], p[:, 2]
        # Along-surface coordinate for vertical faces: x for faces looking along y, y otherwise.
        along = np.where(np.abs(normal[:, 1]) > np.abs(normal[:, 0]), x, y)

        def sel(name: str) -> np.ndarray:
            return tex == _TEX[name]

        m = sel("asphalt")
        if m.any():
            n = fractal_noise(x[m] * 3, y[m] * 3, 3, 11)
            patches = value_noise(x[m] * 0.15, y[m] * 0.15, 12)
            out[m] *= (0.82 + 0.3 * n + 0.15 * (patches - 0.5))[:, None]
        m = sel("concrete")
        if m.any():
            out[m] *= (0.85 + 0.25 * fractal_noise(x[m] * 5, z[m] * 5 + y[m], 2, 13))[:, None]
        m = sel("tiles")
        if m.any():
            gx, gy = np.mod(x[m], 0.4), np.mod(y[m], 0.4)
            grout = (gx < 0.025) | (gy < 0.025)
            out[m] *= np.where(grout, 0.7, 0.9 + 0.2 * value_noise(x[m] * 2.5, y[m] * 2.5, 14))[:, None]
        m = sel("grass")
        if m.any():
            n = fractal_noise(x[m] * 2, y[m] * 2, 3, 15)
            out[m] *= (0.65 + 0.6 * n)[:, None]
            out[m, 0] += 0.08 * value_noise(x[m] * 0.2, y[m] * 0.2, 16)  # dry patches
        m = sel("facade")
        if m.any():
            a, h = along[m], z[m]
            floor_pos = np.mod(h, 3.0)
            bay = np.mod(a, 2.6)
            window = (floor_pos > 0.9) & (floor_pos < 2.4) & (bay > 0.6) & (bay < 2.0) & (h > 0.8) & \
                     (np.abs(normal[m, 2]) < 0.5)
            cell = np.floor(a / 2.6) * 7 + np.floor(h / 3.0)
            glass_tone = 0.18 + 0.25 * _hash(cell, np.zeros_like(cell), 17)
            shade = 0.88 + 0.2 * fractal_noise(a * 1.5, h * 1.5, 2, 18)
            out[m] *= shade[:, None]
            out[m] = np.where(window[:, None], glass_tone[:, None] * np.array([0.8, 0.9, 1.0]), out[m])
        m = sel("bricks")
        if m.any():
            a, h = along[m], z[m]
            row = np.floor(h / 0.25)
            brick = np.mod(a + 0.2 * np.mod(row, 2), 0.5)
            mortar = (np.mod(h, 0.25) < 0.03) | (brick < 0.03)
            out[m] *= np.where(mortar, 1.15, 0.85 + 0.25 * _hash(np.floor((a + 0.2 * np.mod(row, 2)) / 0.5), row, 19))[:, None]
        m = sel("foliage")
        if m.any():
            n = fractal_noise(x[m] * 3 + z[m] * 2, y[m] * 3 - z[m] * 2, 3, 20)
            out[m] *= (0.45 + 0.9 * n)[:, None]
        m = sel("bark")
        if m.any():
            out[m] *= (0.7 + 0.4 * value_noise(along[m] * 20, z[m] * 3, 21))[:, None]
        m = sel("cloth")
        if m.any():
            out[m] *= (0.85 + 0.25 * value_noise(along[m] * 8, z[m] * 8, 22))[:, None]
        m = sel("glass")
        if m.any():
            out[m] *= (0.8 + 0.3 * value_noise(along[m] * 2, z[m] * 2, 23))[:, None]
        m = sel("plain")
        if m.any():
            out[m] *= (0.95 + 0.08 * value_noise(along[m] * 3, z[m] * 3, 24))[:, None]
        return np.clip(out, 0, 1.2)
