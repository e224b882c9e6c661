"""Random convolutions of the training images (Xu et al., "Robust and Generalizable Visual
Representation Learning via Random Convolutions", ICLR 2021): a domain-generalisation augmentation
for issue 9's synthetic-to-real gap.

With probability `probability` a (normalised) training image goes through a freshly drawn 3 -> 3
convolution with a random kernel size (1, 3, 5 or 7) and He-like weights N(0, 1 / (3 k^2)), is
mixed with the original by a random alpha ~ U(0, 1), and is brought back to the original image's
per-channel mean and standard deviation. Local texture and colour change from draw to draw while
shapes and edges stay where they were, so the detector is pushed to rank by shape: what the
histogram-level style alignment (style.py) could not change, since the real frames' false boxes
are foliage, rails and poles ranked above cars (docs/detection.md). No real image is used.

Runs in torch on the batch the network sees (after normalisation), drawing from its own
torch.Generator, so a resumed run continues the same draws (train.py restores the generator).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KERNEL_SIZES = (1, 3, 5, 7)


def random_convolution(batch: torch.Tensor, generator: torch.Generator, probability: float,
                       kernel_sizes=KERNEL_SIZES) -> torch.Tensor:
    """(N, 3, H, W) normalised images -> the same shape, each image with probability `probability`
    replaced by alpha * x + (1 - alpha) * conv(x), standardised back to x's channel statistics.
    The draws are made for every image (used or not), so the sequence does not depend on the
    outcome of earlier coin flips."""
    if probability <= 0.0:
        return batch
    out = batch.clone()
    n, c = batch.shape[:2]
    dev = batch.device
    coins = torch.rand(n, generator=generator, device=dev)
    sizes = torch.randint(len(kernel_sizes), (n,), generator=generator, device=dev)
    alphas = torch.rand(n, generator=generator, device=dev)
    for i in range(n):
        k = kernel_sizes[int(sizes[i])]
        weight = torch.randn(c, c, k, k, generator=generator, device=dev) / (c * k * k) ** 0.5
        if float(coins[i]) >= probability:
            continue
        x = batch[i:i + 1].float()
        y = F.conv2d(x, weight, padding=k // 2)
        mixed = alphas[i] * x + (1.0 - alphas[i]) * y
        mean, std = x.mean((2, 3), keepdim=True), x.std((2, 3), keepdim=True)
        m_mean, m_std = mixed.mean((2, 3), keepdim=True), mixed.std((2, 3), keepdim=True).clamp_min(1e-6)
        out[i:i + 1] = ((mixed - m_mean) / m_std * std + mean).to(batch.dtype)
    return out
