"""Recurrent CRF (mean-field iterations unrolled as an RNN), thesis section 4.3 / Fig. 4.5.

Message passing is a locally connected layer over a 3x5 window of the spherical grid:
an angular Gaussian (grid offsets only) and a bilateral Gaussian (grid offsets and the
Cartesian distance between the two points). The compatibility transform is a learned
1x1 convolution per kernel. Written with torch.nn.functional.unfold because no library
provides a locally connected CRF over a LiDAR range image.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import constants as K


def _window_offsets(window: tuple[int, int]) -> np.ndarray:
    kh, kw = window
    dr, dc = np.meshgrid(np.arange(kh) - kh // 2, np.arange(kw) - kw // 2, indexing="ij")
    return np.stack([dr.ravel(), dc.ravel()], axis=-1).astype(np.float32)  # (kh*kw, 2)


class RecurrentCRF(nn.Module):
    def __init__(self, num_classes: int = K.NUM_CLASSES, iterations: int = K.CRF_ITERATIONS,
                 window: tuple[int, int] = K.CRF_WINDOW,
                 bilateral_theta_a=K.BILATERAL_THETA_A, bilateral_theta_r=K.BILATERAL_THETA_R,
                 angular_theta=K.ANG_THETA_A, bi_coef: float = K.BI_FILTER_COEF,
                 ang_coef: float = K.ANG_FILTER_COEF):
        super().__init__()
        self.num_classes = num_classes
        self.iterations = iterations
        self.window = window
        self.bi_coef = bi_coef
        self.ang_coef = ang_coef
        offsets = _window_offsets(window)
        sq = (offsets ** 2).sum(-1)  # (P,)
        centre = sq == 0
        ang = np.exp(-sq[None, :] / (2 * np.asarray(angular_theta)[:, None] ** 2))
        ang[:, centre] = 0.0  # a point sends no message to itself
        bi_ang = np.exp(-sq[None, :] / (2 * np.asarray(bilateral_theta_a)[:, None] ** 2))
        bi_ang[:, centre] = 0.0
        self.register_buffer("angular_kernel", torch.from_numpy(ang.astype(np.float32)))  # (C, P)
        self.register_buffer("bilateral_angular", torch.from_numpy(bi_ang.astype(np.float32)))
        self.register_buffer("inv_two_theta_r_sq",
                             torch.from_numpy((1.0 / (2 * np.asarray(bilateral_theta_r) ** 2)).astype(np.float32)))
        # Potts-model start: penalise disagreeing labels, not agreeing ones; learned afterwards.
        potts = (1.0 - torch.eye(num_classes)).view(num_classes, num_classes, 1, 1)
        self.compat_angular = nn.Conv2d(num_classes, num_classes, 1, bias=False)
        self.compat_bilateral = nn.Conv2d(num_classes, num_classes, 1, bias=False)
        with torch.no_grad():
            self.compat_angular.weight.copy_(potts)
            self.compat_bilateral.weight.copy_(potts)

    def _unfold(self, t: torch.Tensor) -> torch.Tensor:
        b, c, h, w = t.shape
        kh, kw = self.window
        return F.unfold(t, (kh, kw), padding=(kh // 2, kw // 2)).view(b, c, kh * kw, h, w)

    def bilateral_weights(self, xyz: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, C, P, H, W) bilateral kernel; zero towards empty neighbours and from empty cells."""
        neighbours = self._unfold(xyz)  # (B, 3, P, H, W)
        dist_sq = ((neighbours - xyz.unsqueeze(2)) ** 2).sum(1)  # (B, P, H, W)
        nmask = self._unfold(mask)[:, 0] * mask  # (B, P, H, W)
        w = torch.exp(-dist_sq.unsqueeze(1) * self.inv_two_theta_r_sq.view(1, -1, 1, 1, 1))
        return w * self.bilateral_angular.view(1, -1, w.shape[2], 1, 1) * nmask.unsqueeze(1)

    def forward(self, logits: torch.Tensor, xyz: torch.Tensor, mask: torch.Tensor,
                iterations: int | None = None) -> torch.Tensor:
        """logits (B, C, H, W) from the CNN, xyz (B, 3, H, W) in metres, mask (B, 1, H, W) -> logits."""
        n_iter = self.iterations if iterations is None else iterations
        if n_iter <= 0:
            return logits
        bi_w = self.bilateral_weights(xyz, mask)
        ang_w = self.angular_kernel.view(1, self.num_classes, -1, 1, 1)
        out = logits
        for _ in range(n_iter):
            q = torch.softmax(out, dim=1) * mask  # empty cells send no messages
            q_nb = self._unfold(q)  # (B, C, P, H, W)
            msg_ang = (q_nb * ang_w).sum(2) * mask
            msg_bi = (q_nb * bi_w).sum(2)
            pairwise = self.compat_angular(self.ang_coef * msg_ang) + \
                self.compat_bilateral(self.bi_coef * msg_bi)
            out = logits - pairwise
        return out
