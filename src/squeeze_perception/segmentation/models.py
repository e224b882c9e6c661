"""SqueezeSeg (thesis Fig. 4.3/4.4) and SqueezeSegV2 (section 6.3) in PyTorch, plus registration.

Both take the raw spherical grid (N, C, 64, W) with channels x, y, z, intensity, range
(+ LiDAR mask for V2); input normalisation with the released INPUT_MEAN/STD happens inside the
module so every backend sees the same raw input. `forward` returns the CNN's class logits;
the recurrent CRF is the submodule `crf`, run by the caller (so its time is its own stage and
the ONNX graph stays a plain CNN). `segment()` chains both for training and evaluation.
The encoder down-samples the width only; the decoder uses fireDeconvs with skip additions.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import ModelSpec, register_model
from . import constants as K
from .crf import RecurrentCRF


def _conv(cin: int, cout: int, k, stride=1, padding=0, bn: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Fire(nn.Module):
    """squeeze 1x1 -> (expand 1x1 || expand 3x3), concatenated."""

    def __init__(self, cin: int, squeeze: int, e1: int, e3: int, bn: bool = False):
        super().__init__()
        self.squeeze = _conv(cin, squeeze, 1, bn=bn)
        self.expand1 = _conv(squeeze, e1, 1, bn=bn)
        self.expand3 = _conv(squeeze, e3, 3, padding=1, bn=bn)

    def forward(self, x):
        s = self.squeeze(x)
        return torch.cat([self.expand1(s), self.expand3(s)], 1)


class FireDeconv(nn.Module):
    """squeeze 1x1 -> 1x4 transposed conv doubling the width -> expand (1x1 || 3x3)."""

    def __init__(self, cin: int, squeeze: int, e1: int, e3: int, bn: bool = False):
        super().__init__()
        self.squeeze = _conv(cin, squeeze, 1, bn=bn)
        deconv: list[nn.Module] = [nn.ConvTranspose2d(squeeze, squeeze, (1, 4), stride=(1, 2),
                                                      padding=(0, 1), bias=not bn)]
        if bn:
            deconv.append(nn.BatchNorm2d(squeeze))
        deconv.append(nn.ReLU(inplace=True))
        self.deconv = nn.Sequential(*deconv)
        self.expand1 = _conv(squeeze, e1, 1, bn=bn)
        self.expand3 = _conv(squeeze, e3, 3, padding=1, bn=bn)

    def forward(self, x):
        s = self.deconv(self.squeeze(x))
        return torch.cat([self.expand1(s), self.expand3(s)], 1)


class ContextAggregation(nn.Module):
    """CAM (Fig. 6.3): 7x7 max-pool -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid, times the input."""

    def __init__(self, channels: int, reduction: int = 16, bn: bool = True):
        super().__init__()
        mid = max(channels // reduction, 1)
        # The 7x7 window as a 7x1 then a 1x7 max-pool: a maximum over a rectangle is the maximum
        # of the column maxima, so the function is the same to the bit (tested), with 14
        # comparisons per value instead of 49. In the int8 graph the three CAM pools took 3.5 of
        # SqueezeSegV2's 30 ms; separated, 1.7 ms less (docs/performance.md).
        self.pool = nn.Sequential(nn.MaxPool2d((7, 1), stride=1, padding=(3, 0)),
                                  nn.MaxPool2d((1, 7), stride=1, padding=(0, 3)))
        self.reduce = _conv(channels, mid, 1, bn=bn)
        gate: list[nn.Module] = [nn.Conv2d(mid, channels, 1, bias=not bn)]
        if bn:
            gate.append(nn.BatchNorm2d(channels))
        self.gate = nn.Sequential(*gate)

    def forward(self, x):
        return x * torch.sigmoid(self.gate(self.reduce(self.pool(x))))


class SqueezeSegNet(nn.Module):
    """v2=False: SqueezeSeg; v2=True: batch norm, mask channel, CAM after conv1/fire2/fire3."""

    def __init__(self, num_classes: int = K.NUM_CLASSES, v2: bool = False, in_channels: int | None = None,
                 dropout: float = 0.5, out_channels: int | None = None):
        super().__init__()
        self.v2 = v2
        self.in_channels = in_channels or (6 if v2 else 5)
        bn = v2
        out = out_channels or num_classes
        self.register_buffer("input_mean", torch.tensor(K.INPUT_MEAN).view(1, 5, 1, 1))
        self.register_buffer("input_std", torch.tensor(K.INPUT_STD).view(1, 5, 1, 1))
        cin = self.in_channels
        self.conv1 = _conv(cin, 64, 3, stride=(1, 2), padding=1, bn=bn)
        self.conv1_skip = _conv(cin, 64, 1, bn=bn)
        self.pool1 = nn.MaxPool2d(3, stride=(1, 2), padding=1)
        self.fire2 = Fire(64, 16, 64, 64, bn)
        self.fire3 = Fire(128, 16, 64, 64, bn)
        self.pool3 = nn.MaxPool2d(3, stride=(1, 2), padding=1)
        self.fire4 = Fire(128, 32, 128, 128, bn)
        self.fire5 = Fire(256, 32, 128, 128, bn)
        self.pool5 = nn.MaxPool2d(3, stride=(1, 2), padding=1)
        self.fire6 = Fire(256, 48, 192, 192, bn)
        self.fire7 = Fire(384, 48, 192, 192, bn)
        self.fire8 = Fire(384, 64, 256, 256, bn)
        self.fire9 = Fire(512, 64, 256, 256, bn)
        self.fire10 = FireDeconv(512, 64, 128, 128, bn)
        self.fire11 = FireDeconv(256, 32, 64, 64, bn)
        self.fire12 = FireDeconv(128, 16, 32, 32, bn)
        self.fire13 = FireDeconv(64, 16, 32, 32, bn)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv14 = nn.Conv2d(64, out, 3, padding=1)
        if v2:
            self.cam1 = ContextAggregation(64)
            self.cam2 = ContextAggregation(128)
            self.cam3 = ContextAggregation(128)
        self.crf = RecurrentCRF(num_classes)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x[:, 4:5] > 0).to(x.dtype)
        feats = (x[:, :5] - self.input_mean) / self.input_std * mask  # empty cells stay 0
        if self.in_channels == 6:
            feats = torch.cat([feats, mask], 1)
        elif self.in_channels == 4:  # no intensity (x, y, z, range), the domain-adaptation ablation
            feats = feats[:, [0, 1, 2, 4]]
        return feats

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last decoder feature map (N, 64, H, W) before dropout and conv14."""
        x = self.normalise(x)
        c1 = self.conv1(x)
        if self.v2:
            c1 = self.cam1(c1)
        skip = self.conv1_skip(x)
        f2 = self.fire2(self.pool1(c1))
        if self.v2:
            f2 = self.cam2(f2)
        f3 = self.fire3(f2)
        if self.v2:
            f3 = self.cam3(f3)
        f5 = self.fire5(self.fire4(self.pool3(f3)))
        f9 = self.fire9(self.fire8(self.fire7(self.fire6(self.pool5(f5)))))
        f10 = self.fire10(f9) + f5
        f11 = self.fire11(f10) + f3
        f12 = self.fire12(f11) + c1
        return self.fire13(f12) + skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv14(self.drop(self.features(x)))

    def segment(self, x: torch.Tensor, crf: bool = True) -> torch.Tensor:
        """CNN + recurrent CRF logits, differentiable end to end."""
        logits = self.forward(x)
        if not crf:
            return logits
        mask = (x[:, 4:5] > 0).to(x.dtype)
        return self.crf(logits, x[:, :3], mask)


def build_squeezeseg(**kwargs) -> SqueezeSegNet:
    return SqueezeSegNet(v2=False, **kwargs)


def build_squeezesegv2(**kwargs) -> SqueezeSegNet:
    return SqueezeSegNet(v2=True, **kwargs)


def build_intensity_renderer(**kwargs) -> SqueezeSegNet:
    """Learned intensity rendering network (section 6.4): SqueezeSeg without CRF, input
    x, y, z, range, output 10 bin logits + 10 per-bin deviations."""
    return SqueezeSegNet(v2=True, in_channels=4, out_channels=2 * K.INTENSITY_BINS, dropout=0.0, **kwargs)


_SHAPE_V1 = (5, K.GRID_HEIGHT, K.GRID_WIDTH)
_SHAPE_V2 = (6, K.GRID_HEIGHT, K.GRID_WIDTH)
_BUILD_V1 = "squeeze_perception.segmentation.models:build_squeezeseg"
_BUILD_V2 = "squeeze_perception.segmentation.models:build_squeezesegv2"

SQUEEZESEG = register_model(ModelSpec(
    "squeezeseg", "segmentation", _BUILD_V1, "squeezeseg.pt", _SHAPE_V1, K.CLASS_NAMES,
    "SqueezeSeg (ICRA 2018), weighted cross-entropy, trained on synthetic lidar_2d"))


def _squeezesegv2_weights(name: str, summary: str) -> ModelSpec:
    """A SqueezeSegV2 checkpoint models/<name>.pt: the same network, weights of another training or adaptation."""
    return register_model(ModelSpec(name, "segmentation", _BUILD_V2, f"{name}.pt", _SHAPE_V2, SQUEEZESEG.classes,
                                    summary))


SQUEEZESEGV2 = _squeezesegv2_weights(
    "squeezesegv2", "SqueezeSegV2: BN + mask + focal loss + CAM, trained on synthetic lidar_2d")
SQUEEZESEGV2_BIG = _squeezesegv2_weights(
    "squeezesegv2_big",
    "SqueezeSegV2 fine-tuned from squeezesegv2 on 6,000 full-width synthetic scans (the current generator)")
SQUEEZESEGV2_BIG_PDC = _squeezesegv2_weights(
    "squeezesegv2_big_pdc", "squeezesegv2_big + progressive domain calibration on unlabelled real scans")
SQUEEZESEGV2_FURNITURE = _squeezesegv2_weights(
    "squeezesegv2_furniture",
    "squeezesegv2_big fine-tuned on 8,000 synthetic scans with street furniture (unlabelled bicycles, bins, hedges)")
SQUEEZESEGV2_FURNITURE_PDC = _squeezesegv2_weights(
    "squeezesegv2_furniture_pdc", "squeezesegv2_furniture + progressive domain calibration on unlabelled real scans")
SQUEEZESEGV2_FURNITURE_ISQRT = _squeezesegv2_weights(
    "squeezesegv2_furniture_isqrt",
    "squeezesegv2_furniture fine-tuned 30 min with inverse-square-root-frequency class weights (0.29, 1, 4.5, 6.8)")
SQUEEZESEGV2_FURNITURE_ISQRT_PDC = _squeezesegv2_weights(
    "squeezesegv2_furniture_isqrt_pdc", "squeezesegv2_furniture_isqrt + progressive domain calibration on real scans")
SQUEEZESEGV2_HEDGES_ISQRT = _squeezesegv2_weights(
    "squeezesegv2_hedges_isqrt",
    "squeezesegv2_furniture_isqrt fine-tuned 42 min on 6,000 scans with overgrown hedges and car underbodies "
    "(weights not shipped: docs/segmentation.md makes them)")
SQUEEZESEGV2_HEDGES_ISQRT_PDC = _squeezesegv2_weights(
    "squeezesegv2_hedges_isqrt_pdc",
    "squeezesegv2_hedges_isqrt + progressive domain calibration on real scans (not shipped: no clear gain)")
SQUEEZESEGV2_INTENSITY_ISQRT = _squeezesegv2_weights(
    "squeezesegv2_intensity_isqrt",
    "squeezesegv2_furniture_isqrt fine-tuned 42 min on 6,000 scans whose intensity is reported as the real sensor's "
    "(measured ring gains, zero readings by ring and range, per-person clothing)")
# The node's default on 2026-12-05 until the intensity-gain run (docs/segmentation.md).
SQUEEZESEGV2_INTENSITY_ISQRT_PDC = _squeezesegv2_weights(
    "squeezesegv2_intensity_isqrt_pdc",
    "squeezesegv2_intensity_isqrt + progressive domain calibration on unlabelled real scans")
SQUEEZESEGV2_GAIN_ISQRT = _squeezesegv2_weights(
    "squeezesegv2_gain_isqrt",
    "squeezesegv2_intensity_isqrt fine-tuned 46 min more on the same scans, each with a random intensity gain "
    "(x0.5 to x2): class from shape and contrast, not the sensor's absolute intensity level")
# The node's default on 2026-12-05 until the real-BN-mix run (docs/segmentation.md, "Intensity gain augmentation").
SQUEEZESEGV2_GAIN_ISQRT_PDC = _squeezesegv2_weights(
    "squeezesegv2_gain_isqrt_pdc", "squeezesegv2_gain_isqrt + progressive domain calibration on unlabelled real scans")
SQUEEZESEGV2_BNMIX_ISQRT = _squeezesegv2_weights(
    "squeezesegv2_bnmix_isqrt",
    "squeezesegv2_gain_isqrt's run with 2 unlabelled real grids in every batch's forward pass (batch norm over "
    "both domains, loss on synthetic scans only)")
# The node's default since 2026-12-05 (docs/segmentation.md, "Batch norm over both domains").
SQUEEZESEGV2_BNMIX_ISQRT_PDC = _squeezesegv2_weights(
    "squeezesegv2_bnmix_isqrt_pdc",
    "squeezesegv2_bnmix_isqrt + progressive domain calibration on unlabelled real scans")
SQUEEZESEGV2_BNMIX2_ISQRT = _squeezesegv2_weights(
    "squeezesegv2_bnmix2_isqrt",
    "squeezesegv2_bnmix_isqrt trained 62 min more the same way (other batches, half the learning rate)")
SQUEEZESEGV2_BNMIX2_ISQRT_PDC = _squeezesegv2_weights(
    "squeezesegv2_bnmix2_isqrt_pdc",
    "squeezesegv2_bnmix2_isqrt + progressive domain calibration on unlabelled real scans")
SQUEEZESEGV2_MIX_ISQRT = _squeezesegv2_weights(
    "squeezesegv2_mix_isqrt",
    "squeezesegv2_bnmix2_isqrt trained 62 min more the same way on 12,000 scans (6,000 new from the current generator; "
    "weights not shipped: docs/segmentation.md makes them)")
SQUEEZESEGV2_MIX_ISQRT_PDC = _squeezesegv2_weights(
    "squeezesegv2_mix_isqrt_pdc",
    "squeezesegv2_mix_isqrt + progressive domain calibration on unlabelled real scans (not shipped: its rule chose the "
    "default)")
SQUEEZESEGV2_LIR = _squeezesegv2_weights(
    "squeezesegv2_lir", "SqueezeSegV2 trained on synthetic scans with learned-rendered intensity (+LIR)")
SQUEEZESEGV2_GCA = _squeezesegv2_weights(
    "squeezesegv2_gca", "SqueezeSegV2 +LIR +geodesic correlation alignment to unlabelled real scans")
SQUEEZESEGV2_DA = _squeezesegv2_weights(
    "squeezesegv2_da", "SqueezeSegV2 +LIR +GCA +progressive domain calibration (full adaptation pipeline)")
