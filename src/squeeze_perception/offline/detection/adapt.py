"""Unsupervised camera adaptation: batch-norm statistics re-estimated on unlabelled real images.

The detector is trained with batch normalisation on synthetic frames (train.py). Each BN layer
stores the mean and variance of its input over the synthetic data; on real images those
statistics are off (different colours, textures, noise), which shifts every activation. AdaBN
(Li et al., "Revisiting Batch Normalization for Practical Domain Adaptation", 2016) replaces
them with the statistics of the target domain, measured by forward passes over unlabelled
target images; no label is read and no weight is trained. The adapted BNs are then folded into
the convolutions like the synthetic ones, so the deployed network is unchanged in cost.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ...detection.data import augment, letterbox, load_rgb, normalise


def list_images(folders: list[str | Path]) -> list[Path]:
    """Every PNG under the given folders (label files are never opened)."""
    images: list[Path] = []
    for folder in folders:
        images += sorted(Path(folder).rglob("*.png"))
    if not images:
        raise FileNotFoundError(f"no PNG images under {', '.join(map(str, folders))}")
    return images


def letterboxed_frames(images: list[Path], width: int, height: int) -> list[np.ndarray]:
    """The unlabelled images letterboxed to the network's input size."""
    return [letterbox(load_rgb(p), width, height)[0] for p in images]


def unlabelled_crops(frames: list[np.ndarray], indices, rng: np.random.Generator, width: int, height: int,
                     max_shift: tuple[int, int]) -> np.ndarray:
    """(len(indices), 3, height, width) normalised random crops/flips of the given frames (no boxes,
    no photometric change): the batches of AdaBN and of `det train --real-bn-mix`."""
    crops = []
    for i in indices:
        img, _, _ = augment(frames[i], np.zeros((0, 4), np.float32), rng, width, height, max_shift=max_shift)
        crops.append(normalise(img))
    return np.stack(crops)


def adapt_batchnorm(module, images: list[Path], passes: int = 8, batch_size: int = 4, seed: int = 0,
                    mix: float = 1.0, progress=None) -> dict:
    """Re-estimate every BN's running mean/variance on `images` (cumulative average over
    `passes` random crops/flips of each image, so a few frames still give stable statistics).

    mix = 1 uses the target statistics only; 0 < mix < 1 blends them with the source ones
    (mean and variance interpolated), a safer choice when the target images are very few.
    Returns what was done (for the model card)."""
    import torch
    from torch import nn

    rng = np.random.default_rng(seed)
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        raise ValueError("the module has no batch-norm layers to adapt (train with batchnorm)")
    source = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch counts equally
    module.train()  # BN uses (and records) batch statistics; dropout does not touch BN inputs
    frames = letterboxed_frames(images, module.input_width, module.input_height)
    batches = 0
    t0 = time.perf_counter()
    with torch.no_grad():
        for _ in range(passes):
            order = rng.permutation(len(frames))
            for start in range(0, len(order), batch_size):
                batch = unlabelled_crops(frames, order[start:start + batch_size], rng, module.input_width,
                                         module.input_height, max_shift=(60, 20))
                module.features(torch.from_numpy(batch))
                batches += 1
                if progress:
                    progress(batches)
    for bn, (mean_s, var_s) in zip(bns, source):
        bn.running_mean.mul_(mix).add_(mean_s * (1 - mix))
        bn.running_var.mul_(mix).add_(var_s * (1 - mix))
        bn.momentum = 0.1
    module.eval()
    return {"method": "AdaBN (BN statistics re-estimated on unlabelled real images)", "images": len(images),
            "passes": passes, "batches": batches, "mix": mix, "seconds": round(time.perf_counter() - t0, 1),
            "bn_layers": len(bns)}


def load_training_checkpoint(ckpt_path: str | Path, model: str = "squeezedet"):
    """The batch-norm network of a training checkpoint (train.py writes `<out>.ckpt`)."""
    import torch

    from ...registry import get_model
    from .train import build_training_module

    ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    config = ck.get("config", {})
    # "arch": the shared TrainConfig name; checkpoints written before it say "model"
    spec = get_model(config.get("arch", config.get("model", model)), task="detection")
    module = build_training_module(spec, config.get("batchnorm", False))
    module.load_state_dict(ck["state_dict"])
    return module.eval(), spec, ck
