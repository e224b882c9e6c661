"""KITTI camera 2 rendered by ray casting: one ray per pixel, procedural textures, sun and sky light.

Shading = base colour x texture x (ambient sky light + sun diffuse x shadow) + a sky reflection on
glossy surfaces, then distance haze, exposure, vignetting, sensor noise and 8-bit quantisation.
Textures come from world coordinates (value noise, lane paint, facade windows, paving), so the
same surface looks the same from frame to frame while the car drives past.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...kitti.calib import KittiCalibration
from ...kitti.default_calib import IMAGE_HEIGHT, IMAGE_WIDTH
from .materials import SPECULAR, TEXTURE, TEXTURE_KINDS, Material
from .raycast import RayScene, take_rows

_TEX = {name: i for i, name in enumerate(TEXTURE_KINDS)}


def _hash(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer lattice point (a lookup in a fixed random
    table, periodic every NOISE_PERIOD lattice units; the seed shifts where the lookup starts)."""
    ix = np.asarray(ix).astype(np.int32) + np.int32(_SEED_SHIFT[0] * seed)
    iy = np.asarray(iy).astype(np.int32) + np.int32(_SEED_SHIFT[1] * seed)
    return _NOISE_TABLE[(ix & _NOISE_MASK) * (NOISE_PERIOD + 1) + (iy & _NOISE_MASK)]


# Value noise reads a fixed table of random lattice values instead of hashing every corner: four
# gathers per sample instead of ~20 integer operations. The table is padded by one row and column
# (copies of the first) so the +1 neighbours never need a second wrap-around.
NOISE_PERIOD = 1024
_NOISE_MASK = NOISE_PERIOD - 1
_SEED_SHIFT = (389, 631)
_table = np.random.default_rng(20260101).random((NOISE_PERIOD, NOISE_PERIOD), dtype=np.float32)
_NOISE_TABLE = np.pad(_table, ((0, 1), (0, 1)), mode="wrap").ravel()
del _table


def value_noise(u: np.ndarray, v: np.ndarray, seed: int = 0) -> np.ndarray:
    """Smooth 2D value noise in [0, 1) with unit feature size, float32 (hand-written: no noise library here)."""
    u = np.asarray(u, np.float32)
    v = np.asarray(v, np.float32)
    fu, fv = np.floor(u), np.floor(v)
    iu = fu.astype(np.int32)
    iv = fv.astype(np.int32)
    np.subtract(u, fu, out=fu)
    np.subtract(v, fv, out=fv)
    fu = fu * fu * (np.float32(3) - np.float32(2) * fu)
    fv = fv * fv * (np.float32(3) - np.float32(2) * fv)
    iu += np.int32(_SEED_SHIFT[0] * seed)
    iv += np.int32(_SEED_SHIFT[1] * seed)
    iu &= _NOISE_MASK
    iv &= _NOISE_MASK
    k = iu * np.int32(NOISE_PERIOD + 1)
    k += iv
    a = _NOISE_TABLE[k]
    c = _NOISE_TABLE[k + 1]  # (iu, iv + 1)
    k += NOISE_PERIOD + 1
    b = _NOISE_TABLE[k]  # (iu + 1, iv)
    d = _NOISE_TABLE[k + 1]  # (iu + 1, iv + 1)
    ab = a + (b - a) * fu
    cd = c + (d - c) * fu
    out = ab + (cd - ab) * fv
    # Rounding in the last interpolation step can land exactly on 1.0 next to a corner close to 1.
    return np.minimum(out, np.float32(0.99999994), out=out)


def fractal_noise(u: np.ndarray, v: np.ndarray, octaves: int = 3, seed: int = 0) -> np.ndarray:
    u = np.asarray(u, np.float32)
    v = np.asarray(v, np.float32)
    total = value_noise(u, v, seed)
    amp, norm = 1.0, 1.0
    for o in range(1, octaves):
        amp *= 0.5
        norm += amp
        total += np.float32(amp) * value_noise(u * np.float32(2 ** o), v * np.float32(2 ** o), seed + o)
    total *= np.float32(1 / norm)
    return total


SENSOR_NOISE_DN = 3.0
_NOISE_BANK: np.ndarray | None = None


def sensor_noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Gaussian sensor noise (sigma SENSOR_NOISE_DN) for an image of this shape, float32.

    A window at a random offset in a fixed bank of twice the image's size: every pixel's noise is
    still an independent N(0, sigma) draw within the frame, for 0.2 ms instead of 15 ms.
    """
    global _NOISE_BANK
    n = int(np.prod(shape))
    if _NOISE_BANK is None or len(_NOISE_BANK) < 2 * n:
        _NOISE_BANK = np.random.default_rng(31337).standard_normal(2 * n, dtype=np.float32) * np.float32(SENSOR_NOISE_DN)
    start = int(rng.integers(0, len(_NOISE_BANK) - n + 1))
    return _NOISE_BANK[start:start + n].reshape(shape)


def _binomial_blur(img: np.ndarray) -> np.ndarray:
    """3x3 binomial ([1 2 1] / 4 each way) blur of an (H, W, C) float image, edges repeated."""
    out = img * np.float32(0.5)
    out[:, 1:] += img[:, :-1] * np.float32(0.25)
    out[:, :-1] += img[:, 1:] * np.float32(0.25)
    out[:, 0] += img[:, 0] * np.float32(0.25)
    out[:, -1] += img[:, -1] * np.float32(0.25)
    res = out * np.float32(0.5)
    res[1:] += out[:-1] * np.float32(0.25)
    res[:-1] += out[1:] * np.float32(0.25)
    res[0] += out[0] * np.float32(0.25)
    res[-1] += out[-1] * np.float32(0.25)
    return res


@dataclass
class Lighting:
    """Sun, sky and camera settings of one frame (object frames) or one drive."""

    sun_dir: np.ndarray  # unit vector towards the sun, world frame
    sun_colour: np.ndarray
    sky_colour: np.ndarray
    horizon_colour: np.ndarray
    ambient: float
    exposure: float
    haze_distance: float
    cloud_cover: float = 0.5  # cloud value-noise threshold: lower = more cloud
    white_balance: np.ndarray = field(default_factory=lambda: np.ones(3))  # per-channel camera gain
    noise_sigma: float = SENSOR_NOISE_DN  # sensor noise, DN
    blur: bool = False  # slight defocus / motion blur (3x3 binomial)

    @staticmethod
    def random(rng: np.random.Generator) -> "Lighting":
        """Low morning sun to high noon, clear to overcast; sky hue, exposure, white balance, noise, blur."""
        elevation_deg = rng.uniform(6, 70)
        elevation = np.radians(elevation_deg)
        azimuth = rng.uniform(-np.pi, np.pi)
        sun = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
        overcast = rng.random() < 0.3
        # Low sun is warmer and weaker.
        warm = float(np.clip((25 - elevation_deg) / 20, 0, 1))
        sun_colour = np.array([1.0, 0.96, 0.88]) * (1 - warm) + np.array([1.0, 0.82, 0.62]) * warm
        strength = rng.uniform(0.3, 0.55) if overcast else rng.uniform(0.65, 1.1) * (1 - 0.25 * warm)
        if overcast:
            sky = np.array([0.78, 0.8, 0.82]) * rng.uniform(0.85, 1.1)
        else:
            sky = np.clip(np.array([0.55, 0.68, 0.9]) + rng.normal(0, 0.05, 3) + rng.uniform(-0.05, 0.15), 0.2, 1.0)
        horizon = np.clip(np.array([0.85, 0.88, 0.92]) + rng.normal(0, 0.03, 3) + warm * np.array([0.08, 0.02, -0.06]),
                          0.3, 1.0)
        return Lighting(
            sun_dir=sun, sun_colour=sun_colour * strength, sky_colour=sky, horizon_colour=horizon,
            ambient=rng.uniform(0.45, 0.62) if overcast else rng.uniform(0.28, 0.45),
            exposure=rng.uniform(0.75, 1.3), haze_distance=rng.uniform(200, 700),
            cloud_cover=rng.uniform(0.3, 0.45) if overcast else rng.uniform(0.4, 0.75),
            white_balance=1 + rng.normal(0, 0.03, 3), noise_sigma=rng.uniform(2.0, 5.0), blur=bool(rng.random() < 0.2))


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
        self._dirs_soa = np.ascontiguousarray(self.dirs_velo.T)  # x, y, z rows: rotating them is ~3x cheaper
        yy, xx = np.mgrid[0:height, 0:width]
        r2 = ((xx - width / 2) / width) ** 2 + ((yy - height / 2) / width) ** 2
        self.vignetting = (1 - 0.5 * r2).astype(np.float32)[..., None]
        # Shadow rays are cast for one pixel in each 2x2 block and shared by the block.
        self.shadow_pixels = ((yy % 2 == 0) & (xx % 2 == 0)).ravel()

    def render(self, scene: RayScene, rotation: np.ndarray, origin: np.ndarray, lighting: Lighting,
               rng: np.random.Generator, lane_paint=None, shadows: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) uint8, instance id per pixel (H, W) int32, -1 for none) from the Velodyne pose.

        Everything per pixel is float32 and written without BLAS calls (a (N, 3) @ (3, 3) product
        costs ~10x more CPU than the element-wise sum, most of it OpenBLAS threads spinning).
        """
        f32 = np.float32
        n_pix = len(self.dirs_velo)
        cam_origin = (rotation @ self.origin_velo + origin).astype(f32)
        r = rotation.astype(f32)
        dx, dy, dz = self._dirs_soa
        dirs = np.empty((n_pix, 3), f32)
        for k in range(3):
            dirs[:, k] = dx * r[k, 0] + dy * r[k, 1] + dz * r[k, 2]
        rays = np.empty((n_pix, 6), f32)
        rays[:, :3] = cam_origin
        rays[:, 3:] = dirs
        hits = scene.cast_rays(rays)
        colour = np.empty((n_pix, 3), f32)
        instance = np.full(n_pix, -1, np.int32)
        horizon = lighting.horizon_colour.astype(f32)
        sky_colour = lighting.sky_colour.astype(f32)

        # Sky: a vertical gradient from the horizon haze up to the sky colour, with soft clouds.
        sky = np.flatnonzero(~hits.hit)
        if len(sky):
            ds = take_rows(dirs, sky)
            up = np.clip(ds[:, 2], 0, 1)
            blend = np.minimum(up * f32(4), f32(1))[:, None]
            sky_rgb = horizon + (sky_colour - horizon) * blend
            inv = f32(1.5) / (up + f32(0.05))
            clouds = fractal_noise(ds[:, 0] * inv, ds[:, 1] * inv, 3, 7)
            cover = f32(lighting.cloud_cover)
            sky_rgb += (np.clip(clouds - cover, 0, 1) * f32(0.3 / (1 - lighting.cloud_cover)))[:, None]
            colour[sky] = sky_rgb

        idx = np.flatnonzero(hits.hit)
        t = hits.t[idx]
        tri = hits.triangle[idx]
        d = take_rows(dirs, idx)
        p = d * t[:, None]
        p += cam_origin
        normal = take_rows(hits.normal, idx)
        normal *= -np.sign(np.einsum("ij,ij->i", normal, d))[:, None]  # face the camera
        material = scene.material[tri]
        if lane_paint is not None:
            road = np.flatnonzero(material == Material.ASPHALT)
            paint = road[lane_paint(p[road, 0], p[road, 1])]
            if len(paint):
                material = material.copy()
                material[paint] = Material.LANE_PAINT
        base = take_rows(scene.colour, tri).astype(f32)
        base *= f32(1 / 255)
        base[material == Material.LANE_PAINT] = (0.92, 0.92, 0.9)
        base = self._apply_textures(base, material, p, normal)
        instance[idx] = scene.instance_id[tri]

        sun = lighting.sun_dir.astype(f32)
        lambert = normal[:, 0] * sun[0] + normal[:, 1] * sun[1] + normal[:, 2] * sun[2]
        np.clip(lambert, 0, 1, out=lambert)
        if shadows:
            # Shadow rays towards the sun for one pixel per 2x2 block (only where the surface faces
            # the sun: the others are dark anyway); the block shares the answer.
            sample = np.flatnonzero(self.shadow_pixels[idx] & (lambert > 0))
            shadow_rays = np.empty((len(sample), 6), f32)
            shadow_rays[:, :3] = p[sample] + normal[sample] * f32(0.03)
            shadow_rays[:, 3:] = sun
            shadow_img = np.zeros(n_pix, bool)
            shadow_img[idx[sample[scene.cast_rays(shadow_rays).hit]]] = True
            block = shadow_img.reshape(self.height, self.width)[::2, ::2]
            full = np.repeat(np.repeat(block, 2, axis=0), 2, axis=1)[:self.height, :self.width].ravel()
            lambert[full[idx]] = 0.0
        sky_light = f32(lighting.ambient) * (f32(0.75) + f32(0.25) * np.clip(normal[:, 2], 0, 1))
        sky_tint = (lighting.sky_colour / lighting.sky_colour.max()).astype(f32)
        lit = base * (sky_light[:, None] * sky_tint + lambert[:, None] * lighting.sun_colour.astype(f32))
        spec = SPECULAR[material]
        glossy = np.flatnonzero(spec > 0.1)
        if len(glossy):
            # Mirror the view ray: glossy surfaces show the sky above and the dark ground below.
            dg, ng, sg = d[glossy], normal[glossy], spec[glossy]
            dn = np.einsum("ij,ij->i", dg, ng)
            refl = dg - f32(2) * dn[:, None] * ng
            env = np.where(refl[:, 2:3] > 0, sky_colour * f32(0.9) + f32(0.1), f32(0.25))
            fresnel = sg * (f32(0.25) + f32(0.75) * (f32(1) - np.abs(dn)) ** 3)
            sun_dot = np.clip(refl[:, 0] * sun[0] + refl[:, 1] * sun[1] + refl[:, 2] * sun[2], 0, 1)
            highlight = sun_dot ** 40 * f32(lighting.sun_colour.max()) * sg
            lit[glossy] = lit[glossy] * (f32(1) - fresnel[:, None]) + env * fresnel[:, None] + highlight[:, None]
        haze = f32(1) - np.exp(-t / f32(lighting.haze_distance))
        lit += (horizon - lit) * haze[:, None]
        colour[idx] = lit

        img = colour.reshape(self.height, self.width, 3)
        img *= self.vignetting * f32(lighting.exposure)
        img *= np.asarray(lighting.white_balance, f32)
        np.clip(img, 0, 1, out=img)
        np.power(img, f32(1 / 1.15), out=img)
        if lighting.blur:
            img = _binomial_blur(img)
        img *= f32(255)
        noise = sensor_noise(img.shape, rng)
        img += noise * f32(lighting.noise_sigma / SENSOR_NOISE_DN) if lighting.noise_sigma != SENSOR_NOISE_DN else noise
        np.clip(img, 0, 255, out=img)
        return img.astype(np.uint8), instance.reshape(self.height, self.width)

    @staticmethod
    def _apply_textures(base: np.ndarray, material: np.ndarray, p: np.ndarray, normal: np.ndarray) -> np.ndarray:
        """base colour x procedural texture; each texture is evaluated only on its own pixels.

        Most textures scale the colour: they write one factor per pixel, applied once at the end.
        """
        f32 = np.float32
        tex = TEXTURE[material]
        factor = np.ones(len(base), f32)
        windows = red_add = None

        def coords(name: str, along: bool = False):
            m = np.flatnonzero(tex == _TEX[name])
            if not len(m):
                return m, None
            pm = p[m]
            x, y, z = pm[:, 0], pm[:, 1], pm[:, 2]
            if not along:
                return m, (x, y, z)
            # Along-surface coordinate for vertical faces: x for faces looking along y, y otherwise.
            nm = normal[m]
            return m, (np.where(np.abs(nm[:, 1]) > np.abs(nm[:, 0]), x, y), z, nm)

        m, c = coords("asphalt")
        if len(m):
            x, y, _ = c
            n = fractal_noise(x * f32(3), y * f32(3), 3, 11)
            patches = value_noise(x * f32(0.15), y * f32(0.15), 12)
            factor[m] = f32(0.82) + f32(0.3) * n + f32(0.15) * (patches - f32(0.5))
        m, c = coords("concrete")
        if len(m):
            x, y, z = c
            factor[m] = f32(0.85) + f32(0.25) * fractal_noise(x * f32(5), z * f32(5) + y, 2, 13)
        m, c = coords("tiles")
        if len(m):
            x, y, _ = c
            grout = (np.mod(x, f32(0.4)) < 0.025) | (np.mod(y, f32(0.4)) < 0.025)
            factor[m] = np.where(grout, f32(0.7), f32(0.9) + f32(0.2) * value_noise(x * f32(2.5), y * f32(2.5), 14))
        m, c = coords("grass")
        if len(m):
            x, y, _ = c
            factor[m] = f32(0.65) + f32(0.6) * fractal_noise(x * f32(2), y * f32(2), 3, 15)
            red_add = (m, f32(0.08) * value_noise(x * f32(0.2), y * f32(0.2), 16))  # dry patches
        m, c = coords("facade", along=True)
        if len(m):
            a, h, nm = c
            floor_pos = np.mod(h, f32(3.0))
            bay = np.mod(a, f32(2.6))
            window = (floor_pos > 0.9) & (floor_pos < 2.4) & (bay > 0.6) & (bay < 2.0) & (h > 0.8) & \
                     (np.abs(nm[:, 2]) < 0.5)
            factor[m] = f32(0.88) + f32(0.2) * fractal_noise(a * f32(1.5), h * f32(1.5), 2, 18)
            w = np.flatnonzero(window)
            if len(w):
                cell = np.floor(a[w] / f32(2.6)) * 7 + np.floor(h[w] / f32(3.0))
                glass_tone = f32(0.18) + f32(0.25) * _hash(cell, np.zeros_like(cell), 17)
                windows = (m[w], glass_tone[:, None] * np.array([0.8, 0.9, 1.0], f32))
        m, c = coords("bricks", along=True)
        if len(m):
            a, h, _ = c
            row = np.floor(h / f32(0.25))
            shifted = a + f32(0.2) * np.mod(row, 2)
            mortar = (np.mod(h, f32(0.25)) < 0.03) | (np.mod(shifted, f32(0.5)) < 0.03)
            factor[m] = np.where(mortar, f32(1.15), f32(0.85) + f32(0.25) * _hash(np.floor(shifted / f32(0.5)), row, 19))
        m, c = coords("foliage")
        if len(m):
            x, y, z = c
            factor[m] = f32(0.45) + f32(0.9) * fractal_noise(x * f32(3) + z * f32(2), y * f32(3) - z * f32(2), 3, 20)
        for name, scale, offset, amp, seed in (("bark", (20, 3), 0.7, 0.4, 21), ("cloth", (8, 8), 0.85, 0.25, 22),
                                                ("glass", (2, 2), 0.8, 0.3, 23), ("plain", (3, 3), 0.95, 0.08, 24)):
            m, c = coords(name, along=True)
            if len(m):
                a, h, _ = c
                factor[m] = f32(offset) + f32(amp) * value_noise(a * f32(scale[0]), h * f32(scale[1]), seed)
        out = base * factor[:, None]
        if red_add is not None:
            out[red_add[0], 0] += red_add[1]
        if windows is not None:
            out[windows[0]] = windows[1]
        return np.clip(out, 0, 1.2, out=out)
