"""The recurrent CRF rewrite (14 shifted slices, weights once per frame) computes what the
original unfold-based CRF computed: outputs, gradients and checkpoint keys.

`ReferenceCRF` below is a verbatim copy of segmentation/crf.py as of commit 655149a (the last
unfold version), kept here, frozen, as the definition the fast version is tested against.
The benchmark (`squeeze-perception seg bench --crf-compare`) loads it from this file to
report old vs new side by side.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from squeeze_perception.segmentation import constants as K
from squeeze_perception.segmentation.crf import RecurrentCRF
from squeeze_perception.segmentation.crf import _window_offsets as fast_window_offsets


# ---------------------------------------------------------------- frozen reference (do not edit)
def _window_offsets(window: tuple[int, int]) -> np.ndarray:
    kh, kw = window
    dr, dc = np.meshgrid(np.arange(kh) - kh // 2, np.arange(kw) - kw // 2, indexing="ij")
    return np.stack([dr.ravel(), dc.ravel()], axis=-1).astype(np.float32)  # (kh*kw, 2)


class ReferenceCRF(nn.Module):
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


# ---------------------------------------------------------------- tests
@pytest.fixture(autouse=True)
def torch_path(monkeypatch):
    """This file holds the torch path to the reference; inference would otherwise take the C
    kernel, which tests/test_segmentation_crf_native.py holds to both."""
    monkeypatch.setenv("SQUEEZE_PERCEPTION_NATIVE_CRF", "0")


def _scene(b=1, h=64, w=512, seed=0, empty=0.3, dtype=torch.float32):
    """A range-image-like input: smooth surfaces (so the bilateral kernel is not all ~0), a share
    of empty cells, exact duplicates of neighbouring points, random logits."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.linspace(-0.4, 0.05, h).view(1, 1, h, 1)
    cols = torch.linspace(-0.78, 0.78, w).view(1, 1, 1, w)
    rng = 5.0 + 20.0 * torch.rand(b, 1, h, -(-w // 8), generator=g).repeat_interleave(8, dim=3)[..., :w]
    rng = rng + 0.003 * torch.randn(b, 1, h, w, generator=g)  # ~3 mm noise: theta_r = 1-1.5 cm
    xyz = torch.cat([rng * torch.cos(rows) * torch.cos(cols), rng * torch.cos(rows) * torch.sin(cols),
                     rng * torch.sin(rows)], 1)
    mask = (torch.rand(b, 1, h, w, generator=g) > empty).to(dtype)
    xyz = xyz * mask
    xyz[..., 3 % h, 10:14] = xyz[..., 3 % h, 10:11]  # exact duplicates: distance 0, weight = angular only
    logits = 3.0 * torch.randn(b, K.NUM_CLASSES, h, w, generator=g)
    return logits.to(dtype), xyz.to(dtype), mask


def _pair(seed=0, **kw):
    new, ref = RecurrentCRF(**kw), ReferenceCRF(**kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # learned (non-Potts) compatibilities, identical in both
        for m in (new, ref):
            g.manual_seed(seed)
            m.compat_angular.weight.copy_(torch.randn(m.compat_angular.weight.shape, generator=g))
            m.compat_bilateral.weight.copy_(torch.randn(m.compat_bilateral.weight.shape, generator=g))
    return new.eval(), ref.eval()


@pytest.mark.parametrize("shape", [(1, 64, 512), (1, 64, 2048), (4, 8, 64), (1, 3, 5), (1, 1, 1), (1, 2, 7)])
def test_fast_crf_equals_reference_unfold_crf(shape):
    b, h, w = shape
    new, ref = _pair(seed=h + w)
    logits, xyz, mask = _scene(b, h, w, seed=h * w)
    with torch.inference_mode():
        for it in ((3,) if h * w > 10000 else (1, 2, 3)):
            a, r = new(logits, xyz, mask, iterations=it), ref(logits, xyz, mask, iterations=it)
            assert torch.allclose(a, r, atol=1e-5, rtol=1e-5), (a - r).abs().max()
        assert torch.allclose(new.bilateral_weights(xyz, mask), ref.bilateral_weights(xyz, mask), atol=1e-6)


@pytest.mark.parametrize("window, kw", [((3, 5), {}), ((3, 3), {}), ((5, 7), {}),
                                        ((3, 5), {"bilateral_theta_r": np.array([0.5, 0.2, 1.0, 0.05])}),
                                        ((3, 5), {"bi_coef": 1.0, "ang_coef": 0.7})])
def test_fast_crf_equals_reference_for_other_windows_and_kernels(window, kw):
    new, ref = _pair(seed=1, window=window, **kw)
    logits, xyz, mask = _scene(2, 16, 40, seed=3)
    with torch.inference_mode():
        a, r = new(logits, xyz, mask), ref(logits, xyz, mask)
    assert torch.allclose(a, r, atol=1e-5, rtol=1e-5), (a - r).abs().max()


def test_fast_crf_gradients_equal_reference_gradients():
    new, ref = _pair(seed=2)
    new.train(), ref.train()
    logits, xyz, mask = _scene(2, 12, 40, seed=5)
    grads = []
    for m in (new, ref):
        lg = logits.clone().requires_grad_(True)
        out = m(lg, xyz, mask)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((lg.grad, m.compat_angular.weight.grad, m.compat_bilateral.weight.grad))
    for a, r in zip(*grads):
        assert torch.allclose(a, r, atol=1e-5, rtol=1e-4), (a - r).abs().max()


def test_checkpoint_keys_unchanged_and_load_into_each_other():
    new, ref = RecurrentCRF(), ReferenceCRF()
    assert new.state_dict().keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        assert torch.equal(new.state_dict()[k], v), k
    new.load_state_dict(ref.state_dict(), strict=True)


def test_released_checkpoint_gives_reference_labels_on_a_real_grid(kitti_real):
    """The trained CRF weights of models/squeezesegv2.pt on a real KITTI lidar_2d grid."""
    from squeeze_perception.backends import load_state_dict
    from squeeze_perception.registry import get_model

    grids = sorted((kitti_real / "lidar_2d").glob("*.npy"))
    path = get_model("squeezesegv2").weights_path()
    if not grids or path is None or not path.exists():
        pytest.skip("no real lidar_2d grid or no squeezesegv2 weights")
    state = {k[4:]: v for k, v in load_state_dict(path).items() if k.startswith("crf.")}
    new, ref = RecurrentCRF(), ReferenceCRF()
    new.load_state_dict(state), ref.load_state_dict(state)
    grid = torch.from_numpy(np.load(grids[0]).astype(np.float32)).permute(2, 0, 1)[None]
    xyz, mask = grid[:, :3], (grid[:, 4:5] > 0).float()
    logits = 2.0 * torch.randn(1, K.NUM_CLASSES, *grid.shape[2:], generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, r = new(logits, xyz, mask), ref(logits, xyz, mask)
    assert torch.allclose(a, r, atol=1e-5, rtol=1e-5)
    assert torch.equal(a.argmax(1), r.argmax(1))


def test_window_offsets_are_row_major_like_unfold():
    off = fast_window_offsets((3, 5))
    assert np.array_equal(off, _window_offsets((3, 5)))
    assert off.shape == (15, 2) and tuple(off[0]) == (-1, -2) and tuple(off[7]) == (0, 0)
    assert tuple(off[14]) == (1, 2)


# ---------------------------------------------------------------- issue 17: mutation gaps
def test_num_classes_is_kept_for_the_benchmark_reference():
    # `seg bench --crf-compare` builds the reference CRF from crf.num_classes.
    assert RecurrentCRF(num_classes=5).num_classes == 5
    assert RecurrentCRF().num_classes == K.NUM_CLASSES


@pytest.mark.parametrize("window", [(3, 5), (3, 3), (5, 7)])
def test_bilateral_kernel_is_evaluated_for_half_of_the_offsets(window, monkeypatch):
    # Module docstring: the bilateral weights are computed only for 7 of the 14 offsets of the
    # 3x5 window (half of the kh*kw - 1 neighbours); the other half are the same numbers shifted,
    # "no second exp".
    crf = RecurrentCRF(num_classes=3, window=window)
    calls = []
    real_exp = torch.exp

    def counting_exp(x, *a, **k):
        calls.append(tuple(x.shape))
        return real_exp(x, *a, **k)

    monkeypatch.setattr(torch, "exp", counting_exp)
    torch.manual_seed(0)
    xyz = torch.randn(1, 3, 6, 9)
    mask = torch.ones(1, 1, 6, 9)
    weights = crf.pair_weights(xyz, mask)
    kh, kw = window
    assert len(calls) == (kh * kw - 1) // 2
    assert sorted(weights) == [p for p in range(kh * kw) if p != (kh * kw) // 2]
