"""Random convolutions (offline/detection/randconv.py): off at probability 0, every image changed
at 1 with its channel statistics kept, the same draws from the same generator state (resume), and
about the asked share of images changed."""
from __future__ import annotations

import torch

from squeeze_perception.offline.detection.randconv import random_convolution


def _batch(n=6):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 24, 40, generator=g) * torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1) + 0.3


def test_probability_zero_is_the_identity():
    x = _batch()
    assert random_convolution(x, torch.Generator().manual_seed(0), 0.0) is x


def test_every_image_changed_at_probability_one_with_its_statistics_kept():
    x = _batch()
    y = random_convolution(x, torch.Generator().manual_seed(0), 1.0)
    assert y.shape == x.shape and y.dtype == x.dtype
    for i in range(len(x)):
        assert not torch.allclose(y[i], x[i], atol=1e-3)
    torch.testing.assert_close(y.mean((2, 3)), x.mean((2, 3)), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std((2, 3)), x.std((2, 3)), atol=1e-4, rtol=1e-4)


def test_same_generator_state_same_output_and_the_share_is_respected():
    x = _batch(64)
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    a = random_convolution(x, g, 0.5)
    g2 = torch.Generator()
    g2.set_state(state)
    torch.testing.assert_close(random_convolution(x, g2, 0.5), a, atol=0, rtol=0)
    changed = sum(not torch.equal(a[i], x[i]) for i in range(len(x)))
    assert 16 <= changed <= 48  # binomial(64, 0.5): outside this range with probability < 1e-4
