"""Shift and the other data-movement operators of DiracDeltaNet (thesis 7.2, 7.4), in torch.

None of these has parameters or multiplications; on Synetgy they are address generation
(shift, pooling, split, concatenation, up-sampling) or a CPU memory copy (channel shuffle).
They work on any tensor, including the integer activation codes the quantized network
carries (quant.py), and are exact on them, so the integer emulator can mirror them one to one.

- `Shift`: channel groups moved by `dilation` pixels up / down / left / right, the remaining
  channels not shifted (the 4 cardinal directions + identity of DiracDeltaNet, not the 9 of a
  full 3x3 shift kernel); vacated pixels are zero.
- `ChannelShuffle`: DiracDeltaNet's circular shift along the channel axis (Fig. 7.10b): rolling
  by C/4 leaves each half of the next block's split with half of its channels from each branch,
  while the feature map stays contiguous (a transpose-based shuffle does not).
- `MaxPool`: kernel = stride (2x2 in DiracDeltaNet; (1, 2) along the width only for LiDAR grids,
  as SqueezeSeg down-samples), so no window overlaps and nothing is buffered across tiles.
- `Upsample`: nearest-neighbour repetition (the SqueezeSeg-style decoder here; the accelerator
  reads each pixel repeatedly instead of running a transposed convolution).
- `GlobalSumPool`: sum over H, W (the CPU's global average pool; the 1/(H*W) is folded into the
  next layer's scale so the sum of integer codes stays exact).
"""
from __future__ import annotations

import torch
from torch import nn

DIRECTIONS = ("up", "down", "left", "right")


def shift_groups(channels: int) -> list[tuple[str, int, int]]:
    """[(direction, first, stop)]: C // 5 channels per cardinal direction, the rest identity."""
    g = channels // 5
    groups = [(d, i * g, (i + 1) * g) for i, d in enumerate(DIRECTIONS)]
    groups.append(("identity", 4 * g, channels))
    return groups


class Shift(nn.Module):
    """Per-channel-group spatial shift by `dilation` pixels; zero fill at the borders.

    'up' means the content moves up: out[y] = in[y + d] (so the output at y sees the pixel
    below it), 'down' out[y] = in[y - d], 'left' out[x] = in[x + d], 'right' out[x] = in[x - d].
    """

    def __init__(self, dilation: int = 1):
        super().__init__()
        self.dilation = int(dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dilation
        c = x.shape[1]
        g = c // 5
        out = torch.zeros_like(x)
        out[:, 4 * g:] = x[:, 4 * g:]
        if g == 0:
            return out
        out[:, 0:g, :-d, :] = x[:, 0:g, d:, :]  # up
        out[:, g:2 * g, d:, :] = x[:, g:2 * g, :-d, :]  # down
        out[:, 2 * g:3 * g, :, :-d] = x[:, 2 * g:3 * g, :, d:]  # left
        out[:, 3 * g:4 * g, :, d:] = x[:, 3 * g:4 * g, :, :-d]  # right
        return out


class ChannelShuffle(nn.Module):
    """Circular shift of the channels by C // 4 (Fig. 7.10b)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.roll(x, shifts=x.shape[1] // 4, dims=1)


class MaxPool(nn.Module):
    """Max-pooling with kernel = stride (no overlap)."""

    def __init__(self, kernel=(2, 2)):
        super().__init__()
        self.kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(x, self.kernel, self.kernel)


class Upsample(nn.Module):
    """Nearest-neighbour up-sampling by integer factors (fy, fx)."""

    def __init__(self, factor=(1, 2)):
        super().__init__()
        self.factor = (factor, factor) if isinstance(factor, int) else tuple(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fy, fx = self.factor
        return x.repeat_interleave(fy, dim=2).repeat_interleave(fx, dim=3)


class GlobalSumPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=(2, 3), keepdim=True)
