"""The C CRF kernel (segmentation/_crf_native.py) computes what the torch CRF computes.

The torch path of RecurrentCRF (SQUEEZE_PERCEPTION_NATIVE_CRF=0) is the definition; outputs are
held equal to 1e-5 and labels identical, on the range-image scenes of test_segmentation_crf.py
and on the real KITTI lidar_2d grids with the trained CRF of models/squeezesegv2.pt. Every
comparison also checks that the kernel did run (a spy on `crf_forward`) and that the CRF moved
the logits by far more than the tolerance, so a kernel that returned its input, dropped a
message or misplaced a neighbour fails here.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from squeeze_perception.segmentation import _crf_native
from squeeze_perception.segmentation import constants as K
from squeeze_perception.segmentation.crf import RecurrentCRF
# the scenes and the frozen reference of the rewrite's tests (prepend import mode puts tests/ on sys.path)
from test_segmentation_crf import ReferenceCRF, _pair, _scene  # noqa: E402

TOL = 1e-5


@pytest.fixture(autouse=True)
def native_enabled(monkeypatch):
    monkeypatch.delenv(_crf_native.ENV_SWITCH, raising=False)
    if _crf_native.load() is None:
        pytest.skip(f"no C kernel: {_crf_native.load_error()}")


@pytest.fixture()
def spy(monkeypatch):
    """Results of every `crf_forward` call: True where the kernel produced the output."""
    calls: list[bool] = []
    real = _crf_native.crf_forward

    def recording(*a, **k):
        out = real(*a, **k)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(_crf_native, "crf_forward", recording)
    return calls


def _torch_path(crf, monkeypatch, *args, **kw):
    monkeypatch.setenv(_crf_native.ENV_SWITCH, "0")
    try:
        with torch.inference_mode():
            return crf(*args, **kw)
    finally:
        monkeypatch.delenv(_crf_native.ENV_SWITCH)


def _assert_same(native, torch_out, logits):
    assert native.shape == torch_out.shape and native.dtype == torch.float32
    diff = (native - torch_out).abs().max().item()
    assert torch.allclose(native, torch_out, atol=TOL, rtol=TOL), diff
    assert torch.equal(native.argmax(1), torch_out.argmax(1))
    return diff


@pytest.mark.parametrize("shape", [(1, 64, 512), (1, 64, 2048), (2, 64, 512), (2, 8, 40),
                                   (1, 1, 1), (1, 2, 7), (1, 3, 5), (1, 5, 3), (3, 4, 9)])
def test_native_equals_torch_path_on_range_image_scenes(shape, spy, monkeypatch):
    b, h, w = shape
    crf, ref = _pair(seed=h + w)
    logits, xyz, mask = _scene(b, h, w, seed=h * w)
    for it in ((3,) if h * w > 10000 else (1, 2, 3, 5)):
        with torch.inference_mode():
            native = crf(logits, xyz, mask, iterations=it)
        assert spy[-1] is True
        _assert_same(native, _torch_path(crf, monkeypatch, logits, xyz, mask, iterations=it), logits)
        with torch.inference_mode():  # and the frozen unfold reference the torch path is held to
            assert torch.allclose(native, ref(logits, xyz, mask, iterations=it), atol=TOL, rtol=TOL)
    if h * w >= 15:  # the CRF changes the logits by far more than the tolerance
        assert (native - logits).abs().max().item() > 1e-2


def test_native_takes_the_pipelines_channel_slice(spy, monkeypatch):
    """run_crf passes xyz as x[:, :3] of the (B, 5, H, W) input: frames not contiguous."""
    crf, _ = _pair(seed=4)
    logits, xyz, mask = _scene(2, 16, 64, seed=9)
    x = torch.cat([xyz, torch.rand(2, 1, 16, 64), mask], 1)
    with torch.inference_mode():
        native = crf(logits, x[:, :3], (x[:, 4:5] > 0).float())
    assert spy == [True] and not x[:, :3].is_contiguous()
    _assert_same(native, _torch_path(crf, monkeypatch, logits, xyz, mask), logits)


@pytest.mark.parametrize("empty", ["all", "rows", "columns", "single"])
def test_empty_masks(empty, spy, monkeypatch):
    crf, _ = _pair(seed=6)
    logits, xyz, mask = _scene(1, 12, 40, seed=2)
    mask = mask.clone()
    if empty == "all":
        mask.zero_()
    elif empty == "rows":
        mask[..., ::2, :] = 0
    elif empty == "columns":
        mask[..., :, 1::3] = 0
    else:
        mask.zero_()
        mask[..., 5, 7] = 1
    with torch.inference_mode():
        native = crf(logits, xyz, mask)
    assert spy == [True]
    _assert_same(native, _torch_path(crf, monkeypatch, logits, xyz, mask), logits)
    if empty in ("all", "single"):  # nobody sends or receives a message: the logits pass through
        assert torch.equal(native, logits)


@pytest.mark.parametrize("window, kw", [((3, 3), {}), ((5, 7), {}), ((1, 3), {}), ((3, 5), {"num_classes": 3}),
                                        ((3, 5), {"num_classes": 5}), ((3, 5), {"bi_coef": 1.0, "ang_coef": 0.7}),
                                        ((3, 5), {"bilateral_theta_r": np.array([0.5, 0.2, 1.0, 0.05])}),
                                        # equal theta_r, different angular widths: classes must
                                        # not share weights on theta_r alone
                                        ((3, 5), {"bilateral_theta_r": np.full(4, 0.3, np.float32)})])
def test_other_windows_classes_and_kernels_take_the_generic_kernel(window, kw, spy, monkeypatch):
    c = kw.get("num_classes", K.NUM_CLASSES)
    if c != K.NUM_CLASSES:
        theta = np.linspace(0.6, 0.9, c).astype(np.float32)
        kw = {**kw, "bilateral_theta_a": theta, "angular_theta": theta,
              "bilateral_theta_r": np.linspace(0.01, 0.02, c).astype(np.float32)}
    crf, _ = _pair(seed=1, window=window, **kw)
    logits, xyz, mask = _scene(2, 16, 40, seed=3)
    logits = logits[:, :1].repeat(1, c, 1, 1) + torch.randn(2, c, 16, 40, generator=torch.Generator().manual_seed(c))
    with torch.inference_mode():
        native = crf(logits, xyz, mask)
    assert spy == [True]
    _assert_same(native, _torch_path(crf, monkeypatch, logits, xyz, mask), logits)


def test_unsupported_configuration_falls_back_to_torch(spy, monkeypatch):
    c = _crf_native.MAX_CLASSES + 1
    theta = np.full(c, 0.9, np.float32)
    crf = RecurrentCRF(num_classes=c, bilateral_theta_a=theta, angular_theta=theta,
                       bilateral_theta_r=np.full(c, 0.015, np.float32)).eval()
    logits, xyz, mask = _scene(1, 6, 10, seed=1)
    logits = torch.randn(1, c, 6, 10)
    with torch.inference_mode():
        out = crf(logits, xyz, mask)
    assert spy == [False]
    assert torch.equal(out, _torch_path(crf, monkeypatch, logits, xyz, mask))
    del spy[:]
    with torch.inference_mode():  # float64 inputs: torch path, the kernel is not asked
        crf64 = RecurrentCRF().double().eval()
        lg, x, m = _scene(1, 6, 10, seed=1, dtype=torch.float64)
        assert crf64(lg, x, m).dtype == torch.float64
    assert spy == []


def test_env_var_disables_the_kernel(spy, monkeypatch):
    crf, ref = _pair(seed=3)
    logits, xyz, mask = _scene(1, 8, 30, seed=4)
    monkeypatch.setenv(_crf_native.ENV_SWITCH, "0")
    assert _crf_native.load() is None
    with torch.inference_mode():
        out = crf(logits, xyz, mask)
        assert torch.allclose(out, ref(logits, xyz, mask), atol=TOL, rtol=TOL)
    assert spy == [False]  # asked, refused: the torch path computed it
    monkeypatch.setenv(_crf_native.ENV_SWITCH, "1")
    with torch.inference_mode():
        assert torch.allclose(crf(logits, xyz, mask), out, atol=TOL, rtol=TOL)
    assert spy == [False, True]


def test_training_keeps_the_torch_path_and_its_gradients(spy):
    crf, ref = _pair(seed=2)
    crf.train(), ref.train()
    logits, xyz, mask = _scene(2, 12, 40, seed=5)
    grads = []
    for m in (crf, ref):
        lg = logits.clone().requires_grad_(True)
        out = m(lg, xyz, mask)
        assert out.requires_grad
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((lg.grad, m.compat_angular.weight.grad, m.compat_bilateral.weight.grad))
    assert spy == []  # the kernel was not even asked
    for a, r in zip(*grads):
        assert a is not None and torch.allclose(a, r, atol=1e-5, rtol=1e-4), (a - r).abs().max()
    # eval mode but autograd on and learnable compatibilities: still differentiable
    crf.eval()
    out = crf(logits, xyz, mask)
    assert out.grad_fn is not None and spy == []
    with torch.no_grad():
        crf(logits, xyz, mask)
    assert spy == [True]
    # autograd on, nothing requires a gradient: the kernel
    for p in crf.parameters():
        p.requires_grad_(False)
    assert crf(logits, xyz, mask).grad_fn is None and spy == [True, True]


def _released_crf():
    from squeeze_perception.backends import load_state_dict
    from squeeze_perception.registry import get_model

    path = get_model("squeezesegv2").weights_path()
    if path is None or not path.exists():
        pytest.skip("no squeezesegv2 weights")
    crf = RecurrentCRF()
    crf.load_state_dict({k[4:]: v for k, v in load_state_dict(path).items() if k.startswith("crf.")})
    return crf.eval()


def test_released_checkpoint_on_real_kitti_grids(kitti_real, spy, monkeypatch):
    """The trained CRF on each real 64x512 lidar_2d grid and on the four side by side (64x2048),
    with random and with peaked logits; also a batch of two grids through pipeline.run_crf's
    input layout."""
    files = sorted((kitti_real / "lidar_2d").glob("*.npy"))
    if not files:
        pytest.skip("no real lidar_2d grid")
    crf = _released_crf()
    grids = [torch.from_numpy(np.load(f).astype(np.float32)).permute(2, 0, 1)[None] for f in files]
    views = grids + [torch.cat(grids, -1)]
    g = torch.Generator().manual_seed(0)
    for grid in views:
        xyz, mask = grid[:, :3], (grid[:, 4:5] > 0).float()
        for scale in (2.0, 8.0):
            logits = scale * torch.randn(1, K.NUM_CLASSES, *grid.shape[2:], generator=g)
            with torch.inference_mode():
                native = crf(logits, xyz, mask)
            assert spy[-1] is True
            _assert_same(native, _torch_path(crf, monkeypatch, logits, xyz, mask), logits)
            assert (native - logits).abs().max().item() > 1e-2
    if len(grids) >= 2:
        batch = torch.cat(grids[:2], 0)[:, :5].contiguous()
        logits = 2.0 * torch.randn(2, K.NUM_CLASSES, *batch.shape[2:], generator=g)
        mask = (batch[:, 4:5] > 0).float()
        with torch.inference_mode():
            native = crf(logits, batch[:, :3], mask)
        assert spy[-1] is True
        _assert_same(native, _torch_path(crf, monkeypatch, logits, batch[:, :3], mask), logits)
        with torch.inference_mode():  # per frame = batched
            for i in range(2):
                one = crf(logits[i:i + 1], batch[i:i + 1, :3], mask[i:i + 1])
                assert torch.allclose(one, native[i:i + 1], atol=TOL, rtol=TOL)


def test_pipeline_run_crf_uses_the_kernel(spy, monkeypatch):
    """run_crf (inference_mode, numpy in and out) goes through the kernel."""
    from squeeze_perception.segmentation.pipeline import SegmentationPipeline

    pipe = SegmentationPipeline.__new__(SegmentationPipeline)
    crf, _ = _pair(seed=8)
    pipe.use_crf, pipe.crf = True, crf
    logits, xyz, mask = _scene(1, 16, 64, seed=8)
    batch = torch.cat([xyz, torch.rand(1, 1, 16, 64), mask], 1).numpy()
    out = pipe.run_crf(logits.numpy(), batch)
    assert spy == [True]
    _assert_same(torch.from_numpy(out), _torch_path(crf, monkeypatch, logits, xyz, mask), logits)
