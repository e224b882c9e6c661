"""DiracDeltaNet (thesis 7.4, Table 7.10) and a SqueezeSeg-style segmentation network built from
the same operators, both fake-quantized (quant.py) and runnable on the Synetgy emulator.

Operators: 1x1 convolution (QConv: conv + BN + PACT ActQuant), shift, kernel = stride max-pool,
split / concatenation (concatenative skips: no additions anywhere) and the circular channel
shuffle; the segmentation decoder adds nearest up-sampling. Every model is `preprocess` (host
float code: input normalisation) followed by `body` (what the compiler traces and the
accelerator runs).

DiracDeltaNet at 224 x 224 reproduces the thesis' counts: 330.0 M MACs and 3.27 M weights
(Table 7.11: 330M / 3.3M); the first module has 2144 weights and 30.5 M MACs (section 7.4).
"""
from __future__ import annotations

import torch
from torch import nn

from .quant import InputQuant, QConv
from .shift import ChannelShuffle, GlobalSumPool, MaxPool, Shift, Upsample


class DiracBlock(nn.Module):
    """Stride-1 block (Fig. 7.7b): split in halves; one half passes, the other goes through
    1x1 (doubled width) -> shift -> 1x1; concatenate; circular shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        self.half = c = channels // 2
        self.conv1 = QConv(c, 2 * c)
        self.shift = Shift()
        self.conv2 = QConv(2 * c, c)
        self.shuffle = ChannelShuffle()

    def forward(self, x):
        c = self.half
        y = self.conv2(self.shift(self.conv1(x[:, c:])))
        return self.shuffle(torch.cat([x[:, :c], y], 1))


class DiracDownBlock(nn.Module):
    """Down-sampling block (Fig. 7.7b): both branches see the whole input; the strided 3x3
    depth-wise convolutions of ShuffleNetV2 become max-pool + shift.
    left: pool -> shift -> 1x1 (cin -> cout/2); right: 1x1 (cin -> cout) -> pool -> shift -> 1x1."""

    def __init__(self, cin: int, cout: int, pool=(2, 2)):
        super().__init__()
        half = cout // 2
        self.left_pool, self.left_shift = MaxPool(pool), Shift()
        self.left_conv = QConv(cin, half)
        self.conv1 = QConv(cin, cout)
        self.pool, self.shift = MaxPool(pool), Shift()
        self.conv2 = QConv(cout, half)
        self.shuffle = ChannelShuffle()

    def forward(self, x):
        left = self.left_conv(self.left_shift(self.left_pool(x)))
        right = self.conv2(self.shift(self.pool(self.conv1(x))))
        return self.shuffle(torch.cat([left, right], 1))


def _stage(cin: int, cout: int, repeat: int, pool) -> nn.Sequential:
    return nn.Sequential(DiracDownBlock(cin, cout, pool), *[DiracBlock(cout) for _ in range(repeat)])


class DiracDeltaNetBody(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224,
                 widths=(32, 64, 128, 256, 512, 1024), repeats=(3, 7, 3), input_unit: float = 1 / 32):
        super().__init__()
        w = widths
        self.quant = InputQuant(input_unit)
        self.conv1 = QConv(in_channels, w[0], first=True)
        self.pool1, self.shift1 = MaxPool(2), Shift()
        self.conv2 = QConv(w[0], w[1])
        self.pool2, self.shift2 = MaxPool(2), Shift()
        self.stage2 = _stage(w[1], w[2], repeats[0], 2)
        self.stage3 = _stage(w[2], w[3], repeats[1], 2)
        self.stage4 = _stage(w[3], w[4], repeats[2], 2)
        self.conv5 = QConv(w[4], w[5])
        self.pool = GlobalSumPool()
        final = input_size // 32
        self.fc = QConv(w[5], num_classes, act=False, in_div=final * final)

    def forward(self, x):
        x = self.shift1(self.pool1(self.conv1(self.quant(x))))
        x = self.shift2(self.pool2(self.conv2(x)))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.fc(self.pool(self.conv5(x))).flatten(1)


class DiracDeltaNet(nn.Module):
    """ImageNet DiracDeltaNet (Table 7.10): input normalised RGB (N, 3, 224, 224), 1000 logits."""

    def __init__(self, **kwargs):
        super().__init__()
        self.body = DiracDeltaNetBody(**kwargs)

    def preprocess(self, x):
        return x

    def forward(self, x):
        return self.body(self.preprocess(x))


class CSC(nn.Module):
    """Conv-Shift-Conv module (Fig. 7.3), without the additive residual (concatenative design)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = QConv(cin, cout)
        self.shift = Shift()
        self.conv2 = QConv(cout, cout)

    def forward(self, x):
        return self.conv2(self.shift(self.conv1(x)))


class DiracDeltaSegBody(nn.Module):
    """Encoder: DiracDeltaNet's first module and stages 2-3, pooling the width only (1x2, as
    SqueezeSeg keeps the 64 laser rows); decoder: x2 nearest up-sampling along the width,
    concatenation with the encoder feature map of that width, a CSC module; 1x1 classifier."""

    def __init__(self, num_classes: int = 4, in_channels: int = 6, widths=(16, 32, 64, 128),
                 repeats=(1, 2), input_unit: float = 1 / 16):
        super().__init__()
        w, pool = widths, (1, 2)
        self.quant = InputQuant(input_unit)
        self.conv1 = QConv(in_channels, w[0], first=True)
        self.pool1, self.shift1 = MaxPool(pool), Shift()
        self.conv2 = QConv(w[0], w[1])
        self.pool2, self.shift2 = MaxPool(pool), Shift()
        self.stage2 = _stage(w[1], w[2], repeats[0], pool)
        self.stage3 = _stage(w[2], w[3], repeats[1], pool)
        self.up3, self.dec3 = Upsample(pool), CSC(w[3] + w[2], w[2])
        self.up2, self.dec2 = Upsample(pool), CSC(w[2] + w[1], w[1])
        self.up1, self.dec1 = Upsample(pool), CSC(w[1] + w[0], w[0])
        self.up0, self.dec0 = Upsample(pool), CSC(w[0] + w[0], w[0])
        self.classifier = QConv(w[0], num_classes, act=False)

    def forward(self, x):
        c1 = self.conv1(self.quant(x))  # full width
        s1 = self.shift1(self.pool1(c1))  # 1/2
        e1 = self.shift2(self.pool2(self.conv2(s1)))  # 1/4
        e2 = self.stage2(e1)  # 1/8
        e3 = self.stage3(e2)  # 1/16
        d = self.dec3(torch.cat([self.up3(e3), e2], 1))
        d = self.dec2(torch.cat([self.up2(d), e1], 1))
        d = self.dec1(torch.cat([self.up1(d), s1], 1))
        d = self.dec0(torch.cat([self.up0(d), c1], 1))
        return self.classifier(d)


class DiracDeltaSeg(nn.Module):
    """Point-wise LiDAR segmentation on the SqueezeSegV2 input (N, 6, 64, 512): raw x, y, z,
    intensity, range + mask, normalised inside (same statistics as SqueezeSeg); returns class
    logits (N, 4, 64, 512). `crf` holds the recurrent CRF the segmentation pipeline runs after
    the network (as for SqueezeSeg, not part of `forward`)."""

    def __init__(self, num_classes: int | None = None, **kwargs):
        super().__init__()
        from ..segmentation import constants as K
        from ..segmentation.crf import RecurrentCRF

        num_classes = num_classes or K.NUM_CLASSES
        self.register_buffer("input_mean", torch.tensor(K.INPUT_MEAN).view(1, 5, 1, 1))
        self.register_buffer("input_std", torch.tensor(K.INPUT_STD).view(1, 5, 1, 1))
        self.body = DiracDeltaSegBody(num_classes=num_classes, **kwargs)
        self.crf = RecurrentCRF(num_classes)

    def preprocess(self, x):
        mask = (x[:, 4:5] > 0).to(x.dtype)
        return torch.cat([(x[:, :5] - self.input_mean) / self.input_std * mask, mask], 1)

    def forward(self, x):
        return self.body(self.preprocess(x))


def build_diracdeltanet(**kwargs) -> DiracDeltaNet:
    return DiracDeltaNet(**kwargs)


def build_diracdeltaseg(**kwargs) -> DiracDeltaSeg:
    return DiracDeltaSeg(**kwargs)


def _register() -> None:
    from ..interfaces import CLASS_NAMES
    from ..registry import ModelSpec, register_model
    from ..segmentation import constants as K

    register_model(ModelSpec(
        "diracdeltaseg", "segmentation", "squeeze_perception.accelerator.models:build_diracdeltaseg",
        "diracdeltaseg.pt", (6, K.GRID_HEIGHT, K.GRID_WIDTH), tuple(CLASS_NAMES),
        "DiracDeltaNet-style (shift + 1x1 only, w4a4) LiDAR segmentation for the Synetgy accelerator"))
    # The float stage of the same progressive training (seg train --arch diracdeltaseg writes both),
    # so `seg eval --models diracdeltaseg,diracdeltaseg_fp32` reports w4a4 against its own fp32.
    register_model(ModelSpec(
        "diracdeltaseg_fp32", "segmentation", "squeeze_perception.accelerator.models:build_diracdeltaseg",
        "diracdeltaseg_fp32.pt", (6, K.GRID_HEIGHT, K.GRID_WIDTH), tuple(CLASS_NAMES),
        "diracdeltaseg before quantization (its fp32 stage): the float reference of the w4a4 model"))


_register()
