"""SqueezeDet and SqueezeDet+ (thesis ch. 3, Table 3.5) and their registry entries.

The network is fully convolutional: a SqueezeNet trunk, two extra fire modules and the 3x3
ConvDet layer with K*(5+C) outputs per grid cell. Convolutions and poolings that change the
resolution use no padding ("valid"), which is what gives the 76x22 grid of Table 3.5 for a
1242x375 input. Anchor shapes live in the state_dict (buffer `anchor_shapes`) so a weights
file carries the anchors it was trained with.

`forward` returns decoded predictions (boxes in input pixels, confidence, class
probabilities) so a torch module and its ONNX export give identical outputs; training uses
`forward_raw` (ConvDet deltas and logits).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..interfaces import DETECTION_CLASSES
from ..registry import ModelSpec, register_model

# KITTI input size used throughout the thesis (width, height).
BASE_WIDTH, BASE_HEIGHT = 1242, 375
NUM_ANCHORS = 9

# Trunk layouts: ("conv", out, kernel, stride) | ("pool",) | ("fire", squeeze, expand1x1, expand3x3).
# SqueezeNet v1.1 conv1..fire9, then fire10/fire11 (Table 3.5).
SQUEEZEDET_LAYERS = (
    ("conv", 64, 3, 2), ("pool",),
    ("fire", 16, 64, 64), ("fire", 16, 64, 64), ("pool",),
    ("fire", 32, 128, 128), ("fire", 32, 128, 128), ("pool",),
    ("fire", 48, 192, 192), ("fire", 48, 192, 192), ("fire", 64, 256, 256), ("fire", 64, 256, 256),
    ("fire", 96, 384, 384), ("fire", 96, 384, 384),
)
# SqueezeDet+: the SqueezeNet v1.0-style trunk with squeeze ratio 0.75 (7x7 conv1, pools after
# conv1, fire4 and fire8), then fire10/fire11 of the same width as fire9.
SQUEEZEDET_PLUS_LAYERS = (
    ("conv", 96, 7, 2), ("pool",),
    ("fire", 96, 64, 64), ("fire", 96, 64, 64), ("fire", 192, 128, 128), ("pool",),
    ("fire", 192, 128, 128), ("fire", 288, 192, 192), ("fire", 288, 192, 192),
    ("fire", 384, 256, 256), ("pool",),
    ("fire", 384, 256, 256), ("fire", 384, 256, 256), ("fire", 384, 256, 256),
)
LAYOUTS = {"squeezedet": SQUEEZEDET_LAYERS, "squeezedet_plus": SQUEEZEDET_PLUS_LAYERS}


def default_anchor_shapes(scale: float = 1.0) -> np.ndarray:
    """(9, 2) anchor (width, height) in input pixels used before k-means anchors exist:
    three sizes x three aspect ratios (wide car, square, tall pedestrian) spanning KITTI
    object heights. Training replaces them with k-means shapes (anchors.py)."""
    shapes = [(s * r, s) for s in (40.0, 90.0, 180.0) for r in (0.45, 1.0, 1.9)]
    return np.asarray(shapes, dtype=np.float32) * scale


@dataclass(frozen=True)
class GridGeometry:
    """Where ConvDet outputs sit in the input image: cell (i, j) has its receptive-field centre
    at (offset + stride*i, offset + stride*j) pixels."""

    width: int
    height: int
    stride: int
    offset: float

    def centres(self) -> np.ndarray:
        """(H*W, 2) (x, y) centres in row-major grid order."""
        xs = self.offset + self.stride * np.arange(self.width, dtype=np.float32)
        ys = self.offset + self.stride * np.arange(self.height, dtype=np.float32)
        gx, gy = np.meshgrid(xs, ys)
        return np.stack([gx.ravel(), gy.ravel()], axis=1)


def grid_geometry(layers, input_width: int, input_height: int) -> GridGeometry:
    """Follow sizes, stride and receptive-field centre through the valid convs and pools."""
    w, h, stride, offset = input_width, input_height, 1, 0.0
    for layer in layers:
        if layer[0] in ("conv", "pool"):
            k, s = (layer[2], layer[3]) if layer[0] == "conv" else (3, 2)
            w, h = (w - k) // s + 1, (h - k) // s + 1
            offset += stride * (k - 1) / 2.0
            stride *= s
    return GridGeometry(w, h, stride, offset)


def _build_torch_classes():
    import torch
    from torch import nn

    class Fire(nn.Module):
        """Squeeze 1x1 -> (expand 1x1 || expand 3x3), ReLU after each (SqueezeNet)."""

        def __init__(self, in_ch: int, squeeze: int, e1: int, e3: int, batchnorm: bool = False):
            super().__init__()
            self.squeeze = nn.Conv2d(in_ch, squeeze, 1)
            self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
            self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)
            self.out_channels = e1 + e3
            # Training-time batch normalisation (folded into the convolutions when weights are
            # saved, see fold_batchnorm): identity when off, so the deployed graph is unchanged.
            norm = (lambda c: nn.BatchNorm2d(c)) if batchnorm else (lambda c: nn.Identity())
            self.squeeze_bn, self.expand1x1_bn, self.expand3x3_bn = norm(squeeze), norm(e1), norm(e3)

        def forward(self, x):
            x = torch.relu(self.squeeze_bn(self.squeeze(x)))
            return torch.cat([torch.relu(self.expand1x1_bn(self.expand1x1(x))),
                              torch.relu(self.expand3x3_bn(self.expand3x3(x)))], 1)

        def conv_bn_pairs(self, prefix: str):
            return [(f"{prefix}{c}", f"{prefix}{c}_bn") for c in ("squeeze", "expand1x1", "expand3x3")]

    class SqueezeDet(nn.Module):
        def __init__(self, variant: str = "squeezedet", scale: float = 1.0,
                     num_classes: int = len(DETECTION_CLASSES), num_anchors: int = NUM_ANCHORS,
                     dropout: float = 0.5, batchnorm: bool = False):
            super().__init__()
            layers = LAYOUTS[variant]
            self.batchnorm = batchnorm
            self.variant, self.scale = variant, scale
            self.num_classes, self.num_anchors = num_classes, num_anchors
            self.input_width = int(round(BASE_WIDTH * scale))
            self.input_height = int(round(BASE_HEIGHT * scale))
            trunk, ch, names, n_fire, n_pool = [], 3, [], 1, 0
            for layer in layers:
                if layer[0] == "conv":
                    conv = nn.Conv2d(ch, layer[1], layer[2], stride=layer[3])
                    # With batchnorm the ReLU moves to index 2, so the conv keeps its state_dict key.
                    trunk.append(nn.Sequential(conv, nn.BatchNorm2d(layer[1]), nn.ReLU()) if batchnorm
                                 else nn.Sequential(conv, nn.ReLU()))
                    ch = layer[1]
                    names.append("conv1")
                elif layer[0] == "pool":
                    trunk.append(nn.MaxPool2d(3, 2))
                    n_pool += 1
                    names.append(f"maxpool{n_fire}")
                else:
                    n_fire += 1
                    fire = Fire(ch, *layer[1:], batchnorm=batchnorm)
                    trunk.append(fire)
                    ch = fire.out_channels
                    names.append(f"fire{n_fire}")
            self.layer_names = tuple(names) + ("dropout", "convdet")
            self.features = nn.Sequential(*trunk)
            self.dropout = nn.Dropout(dropout)
            self.convdet = nn.Conv2d(ch, num_anchors * (5 + num_classes), 3, padding=1)
            self.geometry = grid_geometry(layers, self.input_width, self.input_height)
            shapes = default_anchor_shapes(scale)
            if num_anchors != len(shapes):
                shapes = np.resize(shapes, (num_anchors, 2))
            self.register_buffer("anchor_shapes", torch.from_numpy(shapes.copy()))
            self.register_buffer("grid_centres", torch.from_numpy(self.geometry.centres()), persistent=False)
            self._init_weights()

        def _init_weights(self):
            # No ImageNet pretraining is available: He init for the ReLU trunk, and a small
            # Gaussian for ConvDet (as the thesis does for its randomly initialised layers).
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
            nn.init.normal_(self.convdet.weight, std=0.001)
            nn.init.zeros_(self.convdet.bias)

        def conv_bn_pairs(self) -> list[tuple[str, str]]:
            """(conv, batch norm) state_dict prefixes of every normalised convolution."""
            if not self.batchnorm:
                return []
            pairs = []
            for i, layer in enumerate(self.features):
                if isinstance(layer, nn.Sequential) and len(layer) == 3:
                    pairs.append((f"features.{i}.0", f"features.{i}.1"))
                elif isinstance(layer, Fire):
                    pairs += layer.conv_bn_pairs(f"features.{i}.")
            return pairs

        @property
        def num_boxes(self) -> int:
            return self.geometry.width * self.geometry.height * self.num_anchors

        def anchors(self):
            """(A, 4) anchors (cx, cy, w, h); index = (row * W + col) * K + k."""
            centres = self.grid_centres[:, None, :].expand(-1, self.num_anchors, 2)
            shapes = self.anchor_shapes[None].expand(centres.shape[0], -1, 2)
            return torch.cat([centres, shapes], -1).reshape(-1, 4)

        def set_anchor_shapes(self, shapes) -> None:
            shapes = torch.as_tensor(np.asarray(shapes, dtype=np.float32))
            if tuple(shapes.shape) != (self.num_anchors, 2):
                raise ValueError(f"expected ({self.num_anchors}, 2) anchor shapes, got {tuple(shapes.shape)}")
            self.anchor_shapes.copy_(shapes)

        def forward_raw(self, x):
            """ConvDet outputs reshaped per anchor: deltas (N,A,4), confidence logits (N,A),
            class logits (N,A,C)."""
            y = self.convdet(self.dropout(self.features(x)))
            n, _, gh, gw = y.shape
            y = y.reshape(n, self.num_anchors, 5 + self.num_classes, gh, gw).permute(0, 3, 4, 1, 2)
            y = y.reshape(n, gh * gw * self.num_anchors, 5 + self.num_classes)
            return y[..., :4], y[..., 4], y[..., 5:]

        def forward(self, x):
            """(N, A, 5 + C): x1, y1, x2, y2 (input pixels), confidence, class probabilities."""
            deltas, conf_logits, cls_logits = self.forward_raw(x)
            boxes = transform_boxes(self.anchors(), deltas)
            return torch.cat([boxes, torch.sigmoid(conf_logits)[..., None], torch.softmax(cls_logits, -1)], -1)

    return Fire, SqueezeDet


def fold_batchnorm(module) -> dict:
    """State dict of the plain (batch-norm-free) network equivalent to `module` in eval mode:
    each BN's affine map y = gamma (x - mean) / sqrt(var + eps) + beta is folded into the
    weights and bias of the convolution before it. Training with BN converges far faster from
    random initialisation; the deployed model keeps the thesis architecture and cost."""
    import torch

    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    for conv, bn in module.conv_bn_pairs():
        gamma, beta = state.pop(f"{bn}.weight"), state.pop(f"{bn}.bias")
        mean, var = state.pop(f"{bn}.running_mean"), state.pop(f"{bn}.running_var")
        state.pop(f"{bn}.num_batches_tracked", None)
        eps = dict(module.named_modules())[bn].eps
        factor = gamma / torch.sqrt(var + eps)
        state[f"{conv}.weight"] = state[f"{conv}.weight"] * factor[:, None, None, None]
        state[f"{conv}.bias"] = (state[f"{conv}.bias"] - mean) * factor + beta
    return state


def seed_batchnorm_as_identity(module, batches) -> int:
    """Make the fresh BNs of a batch-norm network that holds plain (folded) weights leave the
    network's function unchanged in *training* mode too, so fine-tuning starts where the plain
    weights were instead of from a network whose every layer is suddenly re-normalised.

    Each BN sees the per-channel mean m and variance v of its input on `batches` (collected in
    eval mode with every BN reset, where a BN is the identity up to eps); setting gamma = sqrt(v + eps),
    beta = m and the running statistics to (m, v) makes BN(x) = x for inputs with those
    statistics. Returns the number of BNs seeded."""
    import torch
    from torch import nn

    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    sums = {id(bn): [0.0, 0.0, 0] for bn in bns}

    def record(bn, inputs):
        x = inputs[0].detach().double()  # E[x^2] - E[x]^2 cancels badly in fp32
        acc = sums[id(bn)]
        acc[0] = acc[0] + x.sum(dim=(0, 2, 3))
        acc[1] = acc[1] + (x * x).sum(dim=(0, 2, 3))
        acc[2] += x.numel() // x.shape[1]

    for bn in bns:  # collect through identity BNs whatever they held before
        bn.reset_parameters()
    hooks = [bn.register_forward_pre_hook(record) for bn in bns]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            forward = getattr(module, "forward_raw", module)  # raw outputs: no decoding at crop sizes
            for batch in batches:
                forward(batch)
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    with torch.no_grad():
        for bn in bns:
            total, total_sq, n = sums[id(bn)]
            if not n:
                continue
            mean = total / n
            var = (total_sq / n - mean * mean).clamp_min(0.0)
            bn.running_mean.copy_(mean.float())
            bn.running_var.copy_(var.float())
            bn.weight.copy_(torch.sqrt(var + bn.eps).float())
            bn.bias.copy_(mean.float())
    return len(bns)


# Deltas beyond this are clamped before exp() so an untrained net cannot overflow.
MAX_LOG_SCALE = 4.0


def transform_boxes(anchors, deltas):
    """Eq. 3.1: anchors (A,4) cx,cy,w,h + deltas (...,A,4) -> boxes (...,A,4) x1,y1,x2,y2."""
    import torch

    cx = anchors[..., 0] + anchors[..., 2] * deltas[..., 0]
    cy = anchors[..., 1] + anchors[..., 3] * deltas[..., 1]
    w = anchors[..., 2] * torch.exp(torch.clamp(deltas[..., 2], max=MAX_LOG_SCALE))
    h = anchors[..., 3] * torch.exp(torch.clamp(deltas[..., 3], max=MAX_LOG_SCALE))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


_CLASSES = None


def _classes():
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _build_torch_classes()
    return _CLASSES


def build_squeezedet(variant: str = "squeezedet", scale: float = 1.0, **kwargs):
    """Registry builder: a fresh (untrained) network."""
    return _classes()[1](variant=variant, scale=scale, **kwargs)


def _register(name: str, variant: str, scale: float, description: str) -> None:
    w, h = int(round(BASE_WIDTH * scale)), int(round(BASE_HEIGHT * scale))
    register_model(ModelSpec(
        name=name, task="detection", builder="squeeze_perception.detection.models:build_squeezedet",
        weights=f"{name}.pt", input_shape=(3, h, w), classes=DETECTION_CLASSES,
        description=description, builder_kwargs={"variant": variant, "scale": scale}))


_register("squeezedet", "squeezedet", 1.0, "SqueezeDet (SqueezeNet v1.1 + fire10/11 + ConvDet), 1242x375")
_register("squeezedet_adabn", "squeezedet", 1.0,
          "SqueezeDet with batch-norm statistics adapted to unlabelled real KITTI images (AdaBN), 1242x375")
_register("squeezedet_plus", "squeezedet_plus", 1.0, "SqueezeDet+ (SqueezeNet 0.75 squeeze ratio), 1242x375")
_register("squeezedet_0.75x", "squeezedet", 0.75, "SqueezeDet at 0.75x input scale (932x281)")
_register("squeezedet_1.5x", "squeezedet", 1.5, "SqueezeDet at 1.5x input scale (1863x562)")
