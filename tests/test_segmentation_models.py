"""SqueezeSeg / V2 architecture, recurrent CRF behaviour, losses and registration."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from squeeze_perception.offline.segmentation.losses import (focal_loss, geodesic_correlation_loss,
                                                            intensity_hybrid_loss, render_intensity,
                                                            weighted_cross_entropy)
from squeeze_perception.registry import get_model, model_names
from squeeze_perception.segmentation import constants as K
from squeeze_perception.segmentation.crf import RecurrentCRF
from squeeze_perception.segmentation.models import (ContextAggregation, FireDeconv, build_intensity_renderer,
                                                    build_squeezeseg, build_squeezesegv2)

torch.set_num_threads(1)


def _grid_input(channels: int, width: int = 64) -> torch.Tensor:
    g = torch.rand(2, 5, 64, width) * 10 + 1
    g[:, :, :, : width // 4] = 0  # some empty columns
    if channels == 6:
        g = torch.cat([g, (g[:, 4:5] > 0).float()], 1)
    return g


@pytest.mark.parametrize("build, channels", [(build_squeezeseg, 5), (build_squeezesegv2, 6)])
def test_models_keep_resolution_and_are_fully_convolutional(build, channels):
    net = build().eval()
    assert net.in_channels == channels
    with torch.no_grad():
        out = net.segment(_grid_input(channels, 64))
    assert out.shape == (2, K.NUM_CLASSES, 64, 64)
    assert torch.isfinite(out).all()


def test_v2_has_batchnorm_and_cam_and_v1_has_neither():
    v1, v2 = build_squeezeseg(), build_squeezesegv2()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in v1.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in v2.modules()) > 40
    assert sum(isinstance(m, ContextAggregation) for m in v2.modules()) == 3
    assert not any(isinstance(m, ContextAggregation) for m in v1.modules())


def test_cam_pool_is_the_7x7_max_pool_to_the_bit():
    """The CAM's separated 7x1 + 1x7 max-pool against the 7x7 window it replaces, with negative
    values, ties and the padded borders (the padding never wins: -inf in both)."""
    cam = ContextAggregation(8)
    x = torch.randn(2, 8, 13, 29)
    x[0, :, :3] = -5.0  # ties along the top rows
    x[1, 0] = torch.arange(13 * 29, dtype=torch.float32).view(13, 29) * -1.0  # maxima at a corner
    want = torch.nn.functional.max_pool2d(x, 7, stride=1, padding=3)
    assert torch.equal(cam.pool(x), want)
    assert torch.equal(cam.pool(x.to(torch.bfloat16)), want.to(torch.bfloat16))


def test_fire_deconv_doubles_width_only():
    out = FireDeconv(32, 8, 16, 16)(torch.rand(1, 32, 4, 10))
    assert out.shape == (1, 32, 4, 20)


def test_empty_cells_do_not_reach_the_network_input():
    net = build_squeezeseg()
    x = _grid_input(5)
    x[:, :, 0, 0] = 0
    assert torch.all(net.normalise(x)[:, :, 0, 0] == 0)


def _crf_inputs():
    logits = torch.zeros(1, 4, 3, 5)
    xyz = torch.ones(1, 3, 3, 5) * 5.0
    mask = torch.ones(1, 1, 3, 5)
    return logits, xyz, mask


def test_crf_zero_iterations_is_identity_and_isolated_point_is_unchanged():
    crf = RecurrentCRF()
    logits, xyz, mask = _crf_inputs()
    logits = torch.randn_like(logits)
    assert torch.equal(crf(logits, xyz, mask, iterations=0), logits)
    lonely = torch.zeros_like(mask)
    lonely[..., 1, 2] = 1  # only the centre cell holds a point
    out = crf(logits, xyz, lonely)
    assert torch.allclose(out[..., 1, 2], logits[..., 1, 2])


def test_crf_flips_a_weak_outlier_to_its_confident_coplanar_neighbours():
    crf = RecurrentCRF()
    logits, xyz, mask = _crf_inputs()
    logits[:, 1] = 5.0  # every neighbour is confidently "car"
    logits[:, :, 1, 2] = torch.tensor([0.3, 0.0, 0.0, 0.0])  # the centre weakly prefers unknown
    assert logits[0, :, 1, 2].argmax() == 0
    out = crf(logits, xyz, mask)
    assert out[0, :, 1, 2].argmax() == 1
    # The same outlier far away in 3D (different surface) gets no bilateral support and stays.
    xyz_far = xyz.clone()
    xyz_far[:, :, 1, 2] = 50.0
    crf_bi_only = RecurrentCRF(ang_coef=0.0)
    assert crf_bi_only(logits, xyz_far, mask)[0, :, 1, 2].argmax() == 0


def test_losses_behave_as_defined():
    labels = torch.tensor([[[1, 0]]])
    valid = torch.ones(1, 1, 2)
    perfect = torch.zeros(1, 4, 1, 2)
    perfect[0, 1, 0, 0] = perfect[0, 0, 0, 1] = 20.0
    assert weighted_cross_entropy(perfect, labels, valid) < 1e-6
    uniform = torch.zeros(1, 4, 1, 2)
    ce = weighted_cross_entropy(uniform, labels, valid)
    expected = np.log(4) * (K.CLASS_LOSS_WEIGHTS[1] + K.CLASS_LOSS_WEIGHTS[0]) / 2
    assert ce.item() == pytest.approx(expected, rel=1e-5)
    # gamma 0 focal loss is cross-entropy; gamma 2 scales by (1 - 1/4)^2 for uniform predictions.
    assert focal_loss(uniform, labels, valid, gamma=0.0).item() == pytest.approx(ce.item(), rel=1e-5)
    assert focal_loss(uniform, labels, valid, gamma=2.0).item() == pytest.approx(ce.item() * 0.75 ** 2, rel=1e-5)
    # Invalid cells contribute nothing.
    assert weighted_cross_entropy(uniform, labels, torch.zeros(1, 1, 2)).item() == 0.0


def test_geodesic_loss_zero_for_equal_covariance_and_grows_with_mismatch():
    rng = torch.Generator().manual_seed(0)
    a = torch.randn(500, 4, generator=rng)
    assert geodesic_correlation_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert geodesic_correlation_loss(a, a + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # mean-free
    small = geodesic_correlation_loss(a, a * 1.5).item()
    large = geodesic_correlation_loss(a, a * 4.0).item()
    assert 0 < small < large
    # Both scaled by s: log C differs by 2 log s on the diagonal -> 4 * d * (log s)^2 / (4 d^2).
    assert small == pytest.approx((2 * np.log(1.5)) ** 2 * 4 / (4 * 16), rel=1e-2)


def test_intensity_hybrid_loss_and_rendering_recover_exact_values():
    intensity = torch.tensor([[[0.07, 0.93]]])
    out = torch.zeros(1, 20, 1, 2)
    out[0, 0, 0, 0] = out[0, 9, 0, 1] = 30.0  # right bins
    out[0, 10, 0, 0] = 0.07 - 0.05  # deviation from bin 0 centre
    out[0, 19, 0, 1] = 0.93 - 0.95
    assert torch.allclose(render_intensity(out), intensity, atol=1e-6)
    assert torch.allclose(render_intensity(out, mode="argmax"), intensity, atol=1e-6)
    assert intensity_hybrid_loss(out, intensity, torch.ones(1, 1, 2)).item() < 1e-6


def test_expected_rendering_is_the_mean_of_the_predicted_bins_and_argmax_their_mode():
    out = torch.zeros(1, 20, 1, 1)
    out[0, 2, 0, 0] = np.log(3.0)  # bin 2 (centre 0.25) three times as likely as bin 7 (centre 0.75)
    out[0, 7, 0, 0] = 0.0
    out[0, :10, 0, 0] += torch.tensor([-50.0 if b not in (2, 7) else 0.0 for b in range(10)])
    out[0, 12, 0, 0] = 0.02  # deviation in bin 2
    expected = 0.75 * (0.25 + 0.02) + 0.25 * 0.75
    assert render_intensity(out).item() == pytest.approx(expected, abs=1e-5)
    assert render_intensity(out, mode="argmax").item() == pytest.approx(0.27, abs=1e-6)
    with pytest.raises(ValueError, match="expected"):
        render_intensity(out, mode="median")


def test_registry_lists_both_models_with_expected_inputs():
    names = model_names("segmentation")
    assert {"squeezeseg", "squeezesegv2", "squeezesegv2_da"} <= set(names)
    assert get_model("squeezeseg").input_shape == (5, 64, 512)
    assert get_model("squeezesegv2").input_shape == (6, 64, 512)
    assert build_intensity_renderer().in_channels == 4
