"""Photometric (style) alignment between the synthetic training images and a real camera.

Issue 9's unsupervised camera adaptation: the detector is trained on synthetic frames, whose
tone and colour statistics differ from a real camera's (measured on the unlabelled KITTI images:
per-channel standard deviation about 81 grey levels against 57 for our renderer; real frames
have deep shadows and bright skies). Two uses, both from histograms of *unlabelled* images:

- **training** (`det train --style-images`): a share of the synthetic crops takes on the tone of
  a random real image before the usual photometric augmentation, so the network learns on
  real-looking contrast;
- **evaluation** (`det eval --align-images`): real images are mapped onto the training
  images' statistics before the network sees them (no weight changes).

Mappings (all monotone lookup tables on 256 levels):

- ``luma``: histogram specification of the luminance (BT.601 Y), applied as a per-pixel gain on
  R, G and B so hues are kept; the default, because matching channels independently turns grey
  facades yellow or blue;
- ``channels``: histogram specification of R, G and B independently;
- ``moments``: per channel, the affine map that matches mean and standard deviation.

Offline only: a vehicle runs the network on its camera's images as they are.
"""
from __future__ import annotations

import numpy as np

METHODS = ("luma", "channels", "moments")
_LEVELS = np.arange(256, dtype=np.float64)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    return rgb


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 BT.601 luminance of an RGB image."""
    return np.clip(np.rint(_check_rgb(rgb).astype(np.float32) @ _LUMA), 0, 255).astype(np.uint8)


def histograms(images, method: str = "luma") -> np.ndarray:
    """Summed histograms of RGB images: (1, 256) of the luminance for ``luma``, else (3, 256)."""
    rows = 1 if method == "luma" else 3
    hist = np.zeros((rows, 256), dtype=np.int64)
    for rgb in images:
        planes = [luma(rgb)] if method == "luma" else [_check_rgb(rgb)[..., c] for c in range(3)]
        for r, plane in enumerate(planes):
            hist[r] += np.bincount(plane.ravel(), minlength=256)
    return hist


def histogram_lut(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Histogram specification, one row per plane: source level -> target level of equal
    cumulative frequency (mid-bin, so a histogram matched onto itself gives the identity)."""
    source, target = np.atleast_2d(source).astype(np.float64), np.atleast_2d(target).astype(np.float64)
    lut = np.empty(source.shape, dtype=np.uint8)
    for r in range(len(source)):
        if source[r].sum() <= 0 or target[r].sum() <= 0:
            raise ValueError("empty histogram")
        cdf_s = (np.cumsum(source[r]) - 0.5 * source[r]) / source[r].sum()
        cdf_t = (np.cumsum(target[r]) - 0.5 * target[r]) / target[r].sum()
        used = target[r] > 0  # levels the target never takes are skipped: the map stays monotone
        lut[r] = np.clip(np.rint(np.interp(cdf_s, cdf_t[used], _LEVELS[used])), 0, 255)
    return lut


def moments_lut(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per plane, the affine map that gives the source's levels the target's mean and std."""
    def moments(h):
        h = np.atleast_2d(h).astype(np.float64)
        mean = (h * _LEVELS).sum(1) / h.sum(1)
        std = np.sqrt(np.maximum((h * (_LEVELS - mean[:, None]) ** 2).sum(1) / h.sum(1), 1e-12))
        return mean, std

    (mean_s, std_s), (mean_t, std_t) = moments(source), moments(target)
    lut = (_LEVELS[None] - mean_s[:, None]) * (std_t / std_s)[:, None] + mean_t[:, None]
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


def apply_lut(rgb: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map an RGB image through a (3, 256) per-channel table or a (1, 256) luminance table."""
    rgb = _check_rgb(rgb)
    lut = np.atleast_2d(lut)
    if lut.shape == (3, 256):
        out = np.empty_like(rgb)
        for c in range(3):
            np.take(lut[c], rgb[..., c], out=out[..., c])
        return out
    if lut.shape != (1, 256):
        raise ValueError(f"lookup table of shape {lut.shape}: expected (3, 256) or (1, 256)")
    y = luma(rgb)
    # Gain per pixel so the luminance lands on the table's level and the hue stays; +0.5 keeps
    # black pixels finite (they take the target's black level as grey).
    gain = (lut[0].astype(np.float32) + 0.5) / (_LEVELS.astype(np.float32) + 0.5)
    return np.clip(np.rint(rgb.astype(np.float32) * gain[y][..., None]), 0, 255).astype(np.uint8)


def fit_lut(source: np.ndarray, target: np.ndarray, method: str = "luma") -> np.ndarray:
    """The table mapping images of histogram `source` onto histogram `target` (both from
    `histograms(..., method)`)."""
    if method not in METHODS:
        raise ValueError(f"unknown alignment method {method!r} (one of {', '.join(METHODS)})")
    return moments_lut(source, target) if method == "moments" else histogram_lut(source, target)


def match_to(rgb: np.ndarray, target: np.ndarray, method: str = "luma") -> np.ndarray:
    """`rgb` with its own histogram matched onto `target` (one image's style transferred)."""
    return apply_lut(rgb, fit_lut(histograms([rgb], method), target, method))
