"""Recurrent CRF (mean-field iterations unrolled as an RNN), thesis section 4.3 / Fig. 4.5.

Message passing is a locally connected layer over a 3x5 window of the spherical grid:
an angular Gaussian (grid offsets only) and a bilateral Gaussian (grid offsets and the
Cartesian distance between the two points). The compatibility transform is a learned
1x1 convolution per kernel.

Implementation (written by hand because no library provides a locally connected CRF over a
LiDAR range image; torch is used for autograd, so training runs it end to end):

- the 3x5 window is 14 shifted slices of a zero-padded tensor (the centre sends nothing), not
  an unfold/im2col: nothing of size C x 15 x H x W is ever materialised;
- the bilateral weights are computed once per frame (not per iteration) and only for 7 of the 14
  offsets: w(i, i+d) = w(i+d, i), so the weights of offset -d are those of +d shifted by d
  (bitwise the same numbers, no second exp);
- the bilateral range kernel is floored at exp(-40) = 4e-18 (far neighbours): no float32
  denormals, whose exp and arithmetic are ~30x slower on x86; outputs move by < 1e-16;
- per iteration the bilateral message is 14 fused multiply-adds (addcmul) over (B, C, H, W)
  slices and the angular message, whose kernel does not depend on the data, is one depthwise
  3x5 convolution (torch's conv2d with groups=C, i.e. a library kernel).

Inference (no gradient needed, CPU float32) runs the same mathematics as one fused C kernel,
segmentation/_crf_native.py (SQUEEZE_PERCEPTION_NATIVE_CRF=0 turns it off); this torch code is
its reference and the training path.

The mathematics is that of the previous unfold-based version (kept in
tests/test_segmentation_crf.py as the reference; equal to 1e-5, gradients included).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import _crf_native
from . import constants as K

EXP_CUTOFF = 40.0  # bilateral kernel exp(-a) floored at exp(-40) = 4.2e-18 (no denormals)


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
        # Buffer names and shapes are part of the checkpoint format ('crf.*' keys): keep them.
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
        kh, kw = window
        self._pad = (kh // 2, kw // 2)
        # Window position p <-> grid offset (dr, dc); "forward" offsets (later in raster order)
        # get their own weights, each backward offset -d reuses those of +d.
        centre_p = (kh * kw) // 2
        self._forward = [(p, int(offsets[p, 0]), int(offsets[p, 1])) for p in range(centre_p + 1, kh * kw)]
        self._mirror = {p: kh * kw - 1 - p for p, _, _ in self._forward}  # index of -d

    # ------------------------------------------------------------------ helpers
    def _shift(self, padded: torch.Tensor, dr: int, dc: int, h: int, w: int) -> torch.Tensor:
        """View of the neighbour at grid offset (dr, dc) of every cell (zero beyond the border)."""
        ph, pw = self._pad
        return padded[..., ph + dr:ph + dr + h, pw + dc:pw + dc + w]

    def pair_weights(self, xyz: torch.Tensor, mask: torch.Tensor) -> dict[int, torch.Tensor]:
        """Bilateral weight (B, C, H, W) per window position p (centre excluded): kernel towards
        the neighbour at offset p; zero towards empty neighbours, from empty cells and beyond
        the grid border."""
        b, _, h, w = xyz.shape
        ph, pw = self._pad
        xyz_p = F.pad(xyz, (pw, pw, ph, ph))
        mask_p = F.pad(mask, (pw, pw, ph, ph))
        inv = self.inv_two_theta_r_sq.view(1, -1, 1, 1)
        out: dict[int, torch.Tensor] = {}
        for p, dr, dc in self._forward:
            dist_sq = ((self._shift(xyz_p, dr, dc, h, w) - xyz) ** 2).sum(1, keepdim=True)  # (B, 1, H, W)
            nmask = self._shift(mask_p, dr, dc, h, w) * mask
            # The kernel is floored at exp(-EXP_CUTOFF) = 4e-18 instead of decaying to 0: the
            # exp of large arguments and arithmetic on float32 denormals take x86's slow paths
            # (30x slower); the reference's values there are < 4e-18, so nothing visible changes.
            wp = torch.exp(-(dist_sq * inv).clamp_(max=EXP_CUTOFF)) * \
                self.bilateral_angular[:, p].view(1, -1, 1, 1) * nmask
            out[p] = wp
            # Mirror: w_{-d}(i) = w_{+d}(i - d); beyond the border it is 0 (nmask there is 0).
            wm = wp.new_zeros(wp.shape)
            r0, r1 = max(dr, 0), h + min(dr, 0)
            c0, c1 = max(dc, 0), w + min(dc, 0)
            wm[..., r0:r1, c0:c1] = wp[..., r0 - dr:r1 - dr, c0 - dc:c1 - dc]
            out[self._mirror[p]] = wm
        return out

    def bilateral_weights(self, xyz: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, C, P, H, W) bilateral kernel (centre 0), the layout of the unfold formulation;
        for inspection and tests only, the forward pass never builds it."""
        pw = self.pair_weights(xyz, mask)
        any_w = next(iter(pw.values()))
        zero = torch.zeros_like(any_w)
        return torch.stack([pw.get(p, zero) for p in range(self.window[0] * self.window[1])], 2)

    # ------------------------------------------------------------------ forward
    def forward(self, logits: torch.Tensor, xyz: torch.Tensor, mask: torch.Tensor,
                iterations: int | None = None) -> torch.Tensor:
        """logits (B, C, H, W) from the CNN, xyz (B, 3, H, W) in metres, mask (B, 1, H, W) -> logits."""
        n_iter = self.iterations if iterations is None else iterations
        if n_iter <= 0:
            return logits
        if self._native_allowed(logits, xyz, mask):
            out = _crf_native.crf_forward(self, logits, xyz, mask, n_iter, EXP_CUTOFF)
            if out is not None:
                return out
        _, c, h, w = logits.shape
        ph, pw = self._pad
        bi_w = self.pair_weights(xyz, mask)
        kh, kw = self.window
        ang_kernel = self.angular_kernel.view(c, 1, kh, kw)  # depthwise conv weights, centre 0
        offsets = [(p, *self._offset(p)) for p in sorted(bi_w)]
        out = logits
        for _ in range(n_iter):
            q = torch.softmax(out, dim=1) * mask  # empty cells send no messages
            msg_ang = F.conv2d(q, ang_kernel, padding=(ph, pw), groups=c) * mask
            q_p = F.pad(q, (pw, pw, ph, ph))
            msg_bi = None
            for p, dr, dc in offsets:
                nb = self._shift(q_p, dr, dc, h, w)
                msg_bi = bi_w[p] * nb if msg_bi is None else msg_bi.addcmul_(bi_w[p], nb)
            pairwise = self.compat_angular(self.ang_coef * msg_ang) + \
                self.compat_bilateral(self.bi_coef * msg_bi)
            out = logits - pairwise
        return out

    def _native_allowed(self, logits: torch.Tensor, xyz: torch.Tensor, mask: torch.Tensor) -> bool:
        """The C kernel (segmentation/_crf_native.py) computes outputs only, no autograd graph:
        it runs when nothing here needs a gradient; training keeps the torch path."""
        if torch.is_grad_enabled() and any(t.requires_grad for t in (
                logits, xyz, mask, self.compat_angular.weight, self.compat_bilateral.weight)):
            return False
        return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (logits, xyz, mask))

    def _offset(self, p: int) -> tuple[int, int]:
        kw = self.window[1]
        return p // kw - self._pad[0], p % kw - self._pad[1]
