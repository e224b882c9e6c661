"""KITTI-object data for SqueezeDet: image preprocessing, label reading and augmentation.

Preprocessing is a letterbox: the image is scaled by one factor (aspect ratio kept) so it
fits the model input, placed at the top-left corner and the rest is padded with the mean
colour (0 after normalisation). Boxes map back to the original pixels by dividing by that
factor. A 1242x375 image on the 1242x375 model is therefore untouched; a 1224x370 KITTI
image is scaled by 375/370 = 1.0135 to 1241x375 and padded by 1 column on the right.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..interfaces import CLASS_IDS
from ..kitti.labels import ObjectLabel, read_labels

# Per-channel RGB mean / std used to normalise the input (the common ImageNet statistics).
PIXEL_MEAN = np.array([123.7, 116.3, 103.5], dtype=np.float32)
PIXEL_STD = np.array([58.4, 57.1, 57.4], dtype=np.float32)

# KITTI object type -> our class id (car 1, pedestrian 2, cyclist 3); others are not trained.
KITTI_TYPE_TO_CLASS = {"Car": CLASS_IDS["car"], "Pedestrian": CLASS_IDS["pedestrian"],
                       "Cyclist": CLASS_IDS["cyclist"]}


@dataclass(frozen=True)
class Letterbox:
    scale: float  # model pixels per original pixel
    width: int  # original image size
    height: int

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """(N,4) x1,y1,x2,y2 in model-input pixels -> original pixels, clipped to the image."""
        out = np.asarray(boxes, dtype=np.float32) / self.scale
        out[..., [0, 2]] = np.clip(out[..., [0, 2]], 0, self.width)
        out[..., [1, 3]] = np.clip(out[..., [1, 3]], 0, self.height)
        return out


# (x - mean) / std as one multiply-add per channel: written straight into the (3,H,W) planes it
# is 10x faster than the float (H,W,3) temporaries and transpose copy (0.8 vs 8 ms for a 1242x375
# camera frame, one thread; 9 of squeezedet_node's ~94 ms per frame went here). Equal to the
# division to a few float32 ulps (4.8e-7 on random images).
_PIXEL_SCALE = (1.0 / PIXEL_STD).astype(np.float32)
_PIXEL_OFFSET = (-PIXEL_MEAN / PIXEL_STD).astype(np.float32)


def normalise(rgb: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 RGB -> (3,H,W) float32 normalised."""
    out = np.empty((3,) + rgb.shape[:2], dtype=np.float32)
    for c in range(3):
        np.multiply(rgb[..., c], _PIXEL_SCALE[c], out=out[c], dtype=np.float32)
        out[c] += _PIXEL_OFFSET[c]
    return out


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))


def letterbox(rgb: np.ndarray, input_width: int, input_height: int) -> tuple[np.ndarray, Letterbox]:
    """(H,W,3) uint8 RGB (or (H,W) mono) -> ((input_h, input_w, 3) uint8, Letterbox)."""
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    scale = min(input_width / w, input_height / h)
    new_w = min(input_width, max(1, int(round(w * scale))))
    new_h = min(input_height, max(1, int(round(h * scale))))
    canvas = np.empty((input_height, input_width, 3), dtype=np.uint8)
    canvas[:] = PIXEL_MEAN.round().astype(np.uint8)
    canvas[:new_h, :new_w] = _resize(np.ascontiguousarray(rgb[..., :3]).astype(np.uint8), new_w, new_h)
    return canvas, Letterbox(scale, w, h)


def preprocess(rgb: np.ndarray, input_width: int, input_height: int) -> tuple[np.ndarray, Letterbox]:
    """Image -> (1, 3, H, W) float32 batch for the model, and the mapping back."""
    if rgb.shape == (input_height, input_width, 3) and rgb.dtype == np.uint8:
        # Already the model's size (a KITTI camera on SqueezeDet): the letterbox would be an
        # identity copy of the frame (2.4 ms), so normalise the frame itself.
        return normalise(rgb)[None], Letterbox(1.0, input_width, input_height)
    canvas, lb = letterbox(rgb, input_width, input_height)
    return normalise(canvas)[None], lb


def load_rgb(path: str | Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


@dataclass
class Sample:
    image_path: Path
    label_path: Path | None
    name: str

    def labels(self) -> list[ObjectLabel]:
        return read_labels(self.label_path) if self.label_path is not None and self.label_path.exists() else []


def list_samples(split_dir: str | Path, require_labels: bool = False) -> list[Sample]:
    """Frames of a KITTI object split folder (image_2/*.png with label_2/*.txt if present;
    with require_labels, frames without a label file are left out)."""
    root = Path(split_dir)
    images = sorted((root / "image_2").glob("*.png"))
    samples = [Sample(p, root / "label_2" / f"{p.stem}.txt", p.stem) for p in images]
    if require_labels:
        samples = [s for s in samples if s.label_path.exists()]
    if not samples:
        raise FileNotFoundError(f"no {'labelled ' if require_labels else ''}images in {root / 'image_2'}")
    return samples


def training_boxes(labels: list[ObjectLabel]) -> tuple[np.ndarray, np.ndarray]:
    """(N,4) boxes and (N,) class ids (1..3) of the trained classes."""
    rows = [(lab.bbox, KITTI_TYPE_TO_CLASS[lab.type]) for lab in labels if lab.type in KITTI_TYPE_TO_CLASS]
    if not rows:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    return (np.stack([r[0] for r in rows]).astype(np.float32), np.asarray([r[1] for r in rows], np.int64))


def augment(rgb: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, out_width: int, out_height: int,
            max_shift: tuple[int, int] = (150, 50), flip: bool = True,
            min_visible: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random crop (a shifted window of out_width x out_height, padded with the mean colour
    where it leaves the image) and random horizontal flip.

    The window is placed uniformly over the image when the image is larger than the window,
    otherwise shifted by up to max_shift pixels. Boxes are clipped to the window; a box
    keeping less than `min_visible` of its area is dropped. Returns (image, boxes, kept).
    """
    h, w = rgb.shape[:2]
    def offset(size, out, shift):
        if size > out:
            return int(rng.integers(-shift, size - out + shift + 1))
        return int(rng.integers(-shift, shift + 1)) if shift > 0 else 0
    ox, oy = offset(w, out_width, max_shift[0]), offset(h, out_height, max_shift[1])
    canvas = np.empty((out_height, out_width, 3), dtype=np.uint8)
    canvas[:] = PIXEL_MEAN.round().astype(np.uint8)
    sx0, sy0 = max(ox, 0), max(oy, 0)
    sx1, sy1 = min(ox + out_width, w), min(oy + out_height, h)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - oy:sy1 - oy, sx0 - ox:sx1 - ox] = rgb[sy0:sy1, sx0:sx1]
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) - np.array([ox, oy, ox, oy], np.float32)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    clipped = b.copy()
    clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], 0, out_width)
    clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], 0, out_height)
    visible = (clipped[:, 2] - clipped[:, 0]).clip(0) * (clipped[:, 3] - clipped[:, 1]).clip(0)
    kept = np.flatnonzero((visible >= min_visible * np.maximum(area, 1e-6)) & (visible > 0))
    clipped = clipped[kept]
    if flip and rng.random() < 0.5:
        canvas = np.ascontiguousarray(canvas[:, ::-1])
        clipped = np.stack([out_width - clipped[:, 2], clipped[:, 1], out_width - clipped[:, 0], clipped[:, 3]], 1)
    return canvas, clipped.astype(np.float32), kept


_NOISE_BANK: np.ndarray | None = None


def _noise_slice(size: int, rng: np.random.Generator) -> np.ndarray:
    """Standard normal samples: a random window of a fixed bank drawn once (drawing 1.4 M fresh
    normals per frame costs more than the rest of the augmentation together)."""
    global _NOISE_BANK
    if _NOISE_BANK is None or len(_NOISE_BANK) < 2 * size:
        _NOISE_BANK = np.random.default_rng(12345).standard_normal(4 * size, dtype=np.float32)
    start = int(rng.integers(0, len(_NOISE_BANK) - size))
    return _NOISE_BANK[start:start + size]


@dataclass(frozen=True)
class PhotometricDraw:
    """One image's random photometric change, drawn by `draw_photometric` and applied by
    `apply_photometric` (numpy, in a loader) or `apply_photometric_torch` (on the training device)."""

    gain: tuple[float, float, float]  # exposure x colour balance, per channel
    contrast: float  # about the image's mean level
    gamma: float
    saturation: float
    noise_sigma: float  # sensor noise, grey levels
    blur_sigma: float  # defocus blur, pixels (0: none)


def draw_photometric(rng: np.random.Generator, strength: float = 1.0) -> PhotometricDraw | None:
    """The random exposure, colour balance, contrast, gamma, saturation, noise and blur of one
    image: what a detector must not rely on (the synthetic renderer's lighting is narrower than a
    real camera's). None when strength is 0."""
    if strength <= 0:
        return None
    gain = np.exp(rng.normal(0.0, 0.25 * strength)) * np.exp(rng.normal(0.0, 0.08 * strength, 3))
    contrast = float(np.exp(rng.normal(0.0, 0.2 * strength)))
    gamma = float(np.exp(rng.normal(0.0, 0.15 * strength)))
    saturation = float(np.exp(rng.normal(0.0, 0.3 * strength)))
    noise_sigma = float(rng.uniform(0, 4 * strength))
    blur_sigma = float(rng.uniform(0.3, 1.2)) if rng.random() < 0.3 * strength else 0.0
    return PhotometricDraw(tuple(float(g) for g in gain), contrast, gamma, saturation, noise_sigma, blur_sigma)


def apply_photometric(rgb: np.ndarray, draw: PhotometricDraw | None, rng: np.random.Generator) -> np.ndarray:
    """`draw` applied to an (H,W,3) uint8 image (rng gives the noise).

    The per-channel tone changes (exposure x balance, contrast about the image mean, gamma) are
    one 256-entry lookup table per channel, so a 1242x375 frame costs a few milliseconds."""
    if draw is None:
        return rgb
    from PIL import Image, ImageFilter

    levels = np.arange(256, dtype=np.float64) / 255.0
    mean = float((rgb[::4, ::4, :3].reshape(-1, 3).mean(0) / 255.0 * np.asarray(draw.gain)).mean())
    luts = [np.clip((levels * g - mean) * draw.contrast + mean, 0.0, 1.0) ** draw.gamma * 255.0 for g in draw.gain]
    img = np.stack([np.take(luts[c].astype(np.float32), rgb[..., c]) for c in range(3)], axis=-1)
    grey = (img[..., 0] + img[..., 1] + img[..., 2])[..., None] * np.float32(1.0 / 3.0)
    img = grey + (img - grey) * np.float32(draw.saturation)
    img += _noise_slice(img.size, rng).reshape(img.shape) * np.float32(draw.noise_sigma)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if draw.blur_sigma > 0:
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(draw.blur_sigma)))
    return out


def photometric(rgb: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """A random photometric change (`draw_photometric`) applied to an (H,W,3) uint8 image;
    strength 0 returns the image unchanged."""
    return apply_photometric(rgb, draw_photometric(rng, strength), rng)


def gaussian_kernel_1d(sigma: float):
    """Normalised 1-D Gaussian taps out to 3 sigma (torch float32)."""
    import torch

    radius = max(1, int(np.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def apply_photometric_torch(images, draws: list[PhotometricDraw | None], generator=None):
    """The GPU twin of `apply_photometric` for a batch: images (N,H,W,3) uint8 tensor on any
    device -> (N,H,W,3) uint8 on that device. Same tone curve, saturation and noise maths (the
    numpy path evaluates the curve on the 256 levels, this one on the pixels: the same numbers);
    the blur is a separable Gaussian out to 3 sigma where PIL approximates one with box filters,
    written here because torchvision is not a dependency. Used when training on an accelerator,
    where the loader's photometric step was the largest per-image CPU cost."""
    import torch
    import torch.nn.functional as F

    out = images.clone()
    for i, draw in enumerate(draws):
        if draw is None:
            continue
        x = images[i].float()
        gain = torch.tensor(draw.gain, dtype=torch.float32, device=x.device)
        mean = (x[::4, ::4].reshape(-1, 3).mean(0) / 255.0 * gain).mean()
        img = (((x / 255.0) * gain - mean) * draw.contrast + mean).clamp(0.0, 1.0) ** draw.gamma * 255.0
        grey = img.mean(-1, keepdim=True)
        img = grey + (img - grey) * draw.saturation
        noise = torch.randn(img.shape, generator=generator, device=img.device, dtype=img.dtype)
        img = (img + noise * draw.noise_sigma).clamp(0, 255).to(torch.uint8)
        if draw.blur_sigma > 0:
            k = gaussian_kernel_1d(draw.blur_sigma).to(img.device)
            r = (len(k) - 1) // 2
            chw = img.permute(2, 0, 1)[None].float()
            chw = F.conv2d(F.pad(chw, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
            chw = F.conv2d(F.pad(chw, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
            img = chw[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)
        out[i] = img
    return out


def normalise_torch(images):
    """(N,H,W,3) uint8 tensor -> (N,3,H,W) float32 normalised like `normalise` (on images' device)."""
    import torch

    mean = torch.as_tensor(PIXEL_MEAN, device=images.device)
    std = torch.as_tensor(PIXEL_STD, device=images.device)
    return ((images.float() - mean) / std).permute(0, 3, 1, 2)
